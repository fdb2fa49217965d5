"""A learned user-response model: P(click), P(conversion | click), E[revenue | conversion].

One head per reward, each a small factorization machine (two towers meeting in
a dot product) over shapes (n rows, d context features, q promotion features,
k = embedding_dim, A promotions):

    eta(x, a, p, h) = offset + pos[p] + w_h * h / h_scale + x.w_u + b_id[a] * seen[a] + z_a.w_z
                      + (x P) . (E_id[a] * seen[a] + z_a Q)

x is the ContextEncoder output (fitted on training rows, `recent_pushes_column`
excluded), z_a the one-hot / standardised catalogue features of promotion a,
`seen[a]` = 1 if a had training rows (a promotion without rows is scored from
its features only). Each reward is its own head on all rows: a binary one with
a logit link, a non-negative continuous one (revenue) with a log link and a
Poisson-deviance loss, which is consistent for the mean; organic purchases
(conversion without a click) are fine. Only a declared `reward_chain`, e.g.
(click, conversion, revenue), makes each reward of the chain after the first
conditional on the one before it being positive; `predict` then returns the
unconditional product, e.g. revenue = P(click) P(conv | click) E[rev | conv].

Shrinkage toward the base rate: `offset` starts at the training log-odds (log
mean for revenue) and is the only unpenalised weight; every other weight has a
Gaussian prior of precision `l2` (penalty l2 / (2 n_train) * |theta|^2 added to
the mean loss, i.e. MAP) and starts at zero, except the user factors P
(N(0, init_std^2)), so the untrained model is exactly the base rate. Early
stopping on the validation split keeps the best epoch, that base-rate
model (epoch 0) included; a trained epoch must beat that base rate on
validation by `stop_se` standard errors to be kept (see `ResponseModelConfig`).
After training, the offset is re-solved from its score equation on the training
rows (calibration in the large). Inputs x are clipped to +-`context_clip`.
A log without a recent-push column teaches no fatigue effect (w_h stays 0).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from pushrl.envs.atomic import write_json, write_with
from pushrl.envs.catalogue import Catalogue
from pushrl.envs.features import ContextEncoder
from pushrl.envs.logged_data import LoggedData
from pushrl.envs.probabilities import logit
from pushrl.envs.schema import BINARY_REWARDS

FORMAT_VERSION = 1
CHUNK = 262_144
STRUCTURAL_ZERO_EVENTS = 20.0
"""An action whose training rows would hold this many events of a reward at the log's overall rate, yet hold
none, has that outcome structurally zero (e.g. an open without a message sent): P(no event) ~ e^-20 otherwise."""


@dataclass(frozen=True)
class ResponseModelConfig:
    """Hyper-parameters of `ResponseModel.fit`; every field is validated.

    Attributes:
        embedding_dim: k, size of the user and promotion factors.
        epochs: most passes over the training rows (early stopping may end sooner).
        batch_size: rows per gradient step.
        learning_rate: Adam step size.
        l2: prior precision on every weight but the offset (shrinkage toward the base rate).
        patience: epochs without a lower mean validation loss before stopping (each such
            epoch also halves the step size).
        min_delta: improvement in mean validation loss that counts.
        stop_se: significance gate: an epoch can be kept only if its paired per-row gain over
            the base-rate model (epoch 0) on validation exceeds `min_delta` + `stop_se`
            standard errors; the kept epoch is the gated one with the lowest validation loss
            (0: plain early stopping). With a few dozen events, validation noise otherwise
            picks states that fit noise; this keeps the base rate unless the data say more.
        context_clip: encoded context values are clipped to [-c, c] inside the model, so a
            rare feature with a huge standardised value cannot memorise a single row.
        init_std: standard deviation of the initial user factors (promotion factors start at 0).
        ips_weighted: weight each row's loss by 1/pscore (normalised to mean 1).
        id_dropout: share of training rows (per batch, at random) on which the promotion's id
            terms (b_id, E_id) are switched off, so its features alone must explain its effect
            (DropoutNet, Volkovs et al. 2017). Trains the content half used for promotions with no
            rows (cold start): 0.5 brings a new promotion's predicted click rate within 20% of the
            truth in a feature-driven synthetic shop (tests/test_cold_start.py) at ~0.5% worse
            held-out log loss on known promotions when features do not explain them. 0: off.
        recent_pushes_column: log column with the user's recent push count (None: none).
        reward_chain: rewards modelled as a chain, e.g. ("click", "conversion"): each one after the
            first is fitted on the rows where the one before it is positive, and predicted as the
            product (P(click) P(conversion | click)). Empty: every reward is its own head on all rows
            (organic conversions without a click are fine).
        seed: one seed for initialisation and batch order.
        progress: show a tqdm bar per head.
    """

    embedding_dim: int = 8
    epochs: int = 40
    batch_size: int = 1024
    learning_rate: float = 0.01
    l2: float = 10.0
    patience: int = 4
    min_delta: float = 0.0
    stop_se: float = 1.0
    context_clip: float = 5.0
    init_std: float = 0.01
    ips_weighted: bool = False
    id_dropout: float = 0.0
    recent_pushes_column: str | None = "recent_pushes"
    reward_chain: tuple[str, ...] = ()
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"ResponseModelConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        for name in ("embedding_dim", "epochs", "batch_size", "patience", "seed"):
            v = getattr(self, name)
            low = 0 if name in ("patience", "seed") else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise bad(name, f"an int >= {low}")
        for name, positive in (("learning_rate", True), ("l2", False), ("min_delta", False), ("stop_se", False),
                               ("context_clip", True), ("init_std", False)):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0 or (positive and v == 0):
                raise bad(name, "a finite number " + ("> 0" if positive else ">= 0"))
        if not isinstance(self.id_dropout, int | float) or isinstance(self.id_dropout, bool) \
                or not 0 <= self.id_dropout < 1:
            raise bad("id_dropout", "a number in [0, 1)")
        for name in ("ips_weighted", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "a bool")
        if self.recent_pushes_column is not None and not isinstance(self.recent_pushes_column, str):
            raise bad("recent_pushes_column", "a column name or None")
        if isinstance(self.reward_chain, str) or not all(isinstance(r, str) for r in self.reward_chain):
            raise bad("reward_chain", "a list of reward names")
        object.__setattr__(self, "reward_chain", tuple(self.reward_chain))


class _Head(nn.Module):
    """One reward's factorization machine (see the module docstring)."""

    def __init__(self, d: int, q: int, n_actions: int, n_positions: int, k: int, link: str, clip: float) -> None:
        super().__init__()
        self.link = link
        self.clip = clip
        self.offset = nn.Parameter(torch.zeros(()))
        self.pos = nn.Parameter(torch.zeros(n_positions))
        self.w_h = nn.Parameter(torch.zeros(()))
        self.w_u = nn.Parameter(torch.zeros(d))
        self.b_id = nn.Parameter(torch.zeros(n_actions))
        self.w_z = nn.Parameter(torch.zeros(q))
        self.P = nn.Parameter(torch.zeros(d, k))
        self.E_id = nn.Parameter(torch.zeros(n_actions, k))
        self.Q = nn.Parameter(torch.zeros(q, k))

    def init_(self, std: float, gen: torch.Generator, offset: float) -> None:
        with torch.no_grad():
            self.offset.fill_(offset)
            # only the user tower starts random: the promotion tower starts at zero, so the
            # untrained model is exactly the base rate, yet both towers get gradients
            self.P.copy_(torch.randn(self.P.shape, generator=gen) * std)

    def items(self, z: torch.Tensor, seen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A,) promotion bias and (A, k) promotion factors."""
        return self.b_id * seen + z @ self.w_z, self.E_id * seen[:, None] + z @ self.Q

    def user(self, x: torch.Tensor, pos: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n,) user bias and (n, k) user factors."""
        x = x.clamp(-self.clip, self.clip)
        return self.offset + self.pos[pos] + self.w_h * h + x @ self.w_u, x @ self.P

    def rows(self, x: torch.Tensor, pos: torch.Tensor, h: torch.Tensor, a: torch.Tensor, z: torch.Tensor,
             seen: torch.Tensor, drop_id: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) linear predictor of the logged (row, action) pairs; rows with `drop_id` use features only."""
        ub, uf = self.user(x, pos, h)
        ib, vf = self.items(z, seen)
        ib, vf = ib[a], vf[a]
        if drop_id is not None:
            fb, fv = self.items(z, torch.zeros_like(seen))
            ib = torch.where(drop_id, fb[a], ib)
            vf = torch.where(drop_id[:, None], fv[a], vf)
        return ub + ib + (uf * vf).sum(1)

    def all_actions(self, x: torch.Tensor, pos: torch.Tensor, h: torch.Tensor, z: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """(n, A) linear predictor for every promotion."""
        ub, uf = self.user(x, pos, h)
        ib, vf = self.items(z, seen)
        return ub[:, None] + ib[None, :] + uf @ vf.T

    def mean(self, eta: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(eta) if self.link == "logit" else torch.exp(eta)

    def loss(self, eta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-row loss: binary cross-entropy (logit) or Poisson deviance up to a constant (log)."""
        if self.link == "logit":
            return nn.functional.binary_cross_entropy_with_logits(eta, y, reduction="none")
        return torch.exp(eta) - y * eta


class _Net(nn.Module):
    def __init__(self, heads: dict[str, _Head], z: np.ndarray, seen: np.ndarray, h_scale: float, scales: list[float]):
        super().__init__()
        self.heads = nn.ModuleDict(heads)
        self.register_buffer("z", torch.as_tensor(z, dtype=torch.float32))
        self.register_buffer("seen", torch.as_tensor(seen, dtype=torch.float32))
        self.register_buffer("h_scale", torch.tensor(float(h_scale)))
        self.register_buffer("scales", torch.as_tensor(scales, dtype=torch.float32))


@dataclass
class _Rows:
    """Training tensors of one log (float32 / int64, n rows)."""

    x: torch.Tensor
    pos: torch.Tensor
    h: torch.Tensor
    a: torch.Tensor
    w: torch.Tensor
    y: dict[str, torch.Tensor]

    def take(self, idx: torch.Tensor, target: str) -> tuple[torch.Tensor, ...]:
        return self.x[idx], self.pos[idx], self.h[idx], self.a[idx], self.w[idx], self.y[target][idx]


def _reward_chain(data: LoggedData, declared: tuple[str, ...] = ()) -> list[tuple[str, str | None, str]]:
    """(reward, reward it is conditional on or None, link) for each reward of the log.

    Every reward is modelled on its own (on all rows) unless `declared` names a chain, e.g.
    ("click", "conversion"): then each reward of the chain after the first is modelled on the rows
    where the one before it is positive, and predicted as the product. A binary (0/1) reward gets a
    logit link, a non-negative continuous one a log link.
    """
    names = list(data.reward_names)
    declared = tuple(declared)
    unknown = [r for r in declared if r not in names]
    if unknown:
        raise ValueError(f"data.reward_chain names {unknown}, which are not declared rewards of the log {names}")
    if len(set(declared)) != len(declared):
        raise ValueError(f"data.reward_chain repeats a reward: {list(declared)}")
    links: dict[str, str] = {}
    for r in names:
        values = data.reward(r)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            raise ValueError(f"reward {r!r} has negative or non-finite values at rows {np.flatnonzero(bad)[:5].tolist()}: "
                             "rewards must be 0/1 or non-negative amounts")
        links[r] = "logit" if (r in BINARY_REWARDS or bool(np.isin(values, (0.0, 1.0)).all())) else "log"
    parent = {r: (declared[i - 1] if i > 0 else None) for i, r in enumerate(declared)}
    for r in declared[:-1]:
        if links[r] == "log":
            raise ValueError(f"data.reward_chain: {r!r} is continuous, so nothing can be conditional on it; "
                             f"only the last reward of the chain may be continuous (chain {list(declared)})")
    for r, prev in parent.items():
        if prev is None:
            continue
        stray = (data.reward(r) != 0) & (data.reward(prev) <= 0)
        if stray.any():
            raise ValueError(
                f"data.reward_chain: reward {r!r} is nonzero where {prev!r} is zero at rows "
                f"{np.flatnonzero(stray)[:5].tolist()} (e.g. purchases without a click), so it cannot be modelled "
                f"conditional on {prev!r}; drop the chain (data.reward_chain=[]) to model each reward on its own")
    return [(r, parent.get(r), links[r]) for r in names]


def _first_difference(expected: Any, actual: Any, path: str = "") -> str | None:
    """Dotted path of the first place two JSON values differ (None if equal)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in expected or key not in actual:
                return sub
            found = _first_difference(expected[key], actual[key], sub)
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{path} (length {len(expected)} vs {len(actual)})"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            found = _first_difference(e, a, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if expected == actual else path or "<root>"


def _json(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


class ResponseModel:
    """A fitted response model; implements `pushrl.envs.response.ResponseFunction`.

    `contexts` given to `predict` must be `self.encoder.transform(raw_features)`
    (the log's features without the recent-push column).
    """

    def __init__(self, net: _Net, encoder: ContextEncoder, catalogue_encoder: ContextEncoder, catalogue_ids: list,
                 chain: list[tuple[str, str | None, str]], n_positions: int, config: ResponseModelConfig) -> None:
        self.net = net.eval()
        self.encoder = encoder
        self.catalogue_encoder = catalogue_encoder
        self.catalogue_ids = list(catalogue_ids)
        self.chain = chain
        self.n_positions = n_positions
        self.config = config
        self.history: dict[str, list[dict[str, float]]] = {}
        self.structural_zeros: dict[str, list[int]] = {}  # reward -> action indices predicted exactly 0
        self._keep: dict[str, torch.Tensor] = {}

    def set_structural_zeros(self, zeros: dict[str, list[int]]) -> None:
        """Outcomes that cannot happen for some actions (see STRUCTURAL_ZERO_EVENTS): predicted exactly 0."""
        self.structural_zeros = {r: sorted(int(a) for a in idx) for r, idx in zeros.items() if len(idx)}
        self._keep = {}
        for r, idx in self.structural_zeros.items():
            keep = torch.ones(self.n_actions)
            keep[idx] = 0.0
            self._keep[r] = keep

    # ResponseFunction ------------------------------------------------------------------
    @property
    def reward_names(self) -> tuple[str, ...]:
        return tuple(r for r, _, _ in self.chain)

    @property
    def n_actions(self) -> int:
        return len(self.catalogue_ids)

    @property
    def reward_kinds(self) -> dict[str, str]:
        """{reward: "binary" | "continuous"} from each head's link (logit: binary)."""
        return {r: "binary" if link == "logit" else "continuous" for r, _, link in self.chain}

    @property
    def schema(self) -> dict[str, Any]:
        """The feature schema saved with the model and checked by `load`."""
        return _json({
            "context_encoder": self.encoder.to_dict(),
            "catalogue_encoder": self.catalogue_encoder.to_dict(),
            "catalogue_ids": self.catalogue_ids,
            "reward_names": list(self.reward_names),
            "reward_chain": [list(c) for c in self.chain],
            "n_positions": self.n_positions,
            "recent_pushes_column": self.config.recent_pushes_column,
        } | ({"structural_zeros": {r: [self.catalogue_ids[a] for a in idx] for r, idx in self.structural_zeros.items()}}
             if self.structural_zeros else {}))

    def _inputs(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray) -> tuple[torch.Tensor, ...]:
        x = np.asarray(contexts, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.encoder.n_features:
            raise ValueError(f"contexts must be (n, {self.encoder.n_features}) (model.encoder.transform output), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"contexts has NaN or infinite values at rows {np.flatnonzero(~np.isfinite(x).all(1))[:5].tolist()}")
        n = x.shape[0]
        h = np.asarray(recent_pushes, dtype=np.float32).reshape(-1)
        p = np.asarray(position).reshape(-1)
        if h.shape != (n,) or p.shape != (n,):
            raise ValueError(f"recent_pushes and position must be ({n},), got {h.shape} and {p.shape}")
        if n and (p.min() < 0 or p.max() >= self.n_positions or not np.issubdtype(p.dtype, np.integer)):
            raise ValueError(f"position must be ints in [0, {self.n_positions}), got values in [{p.min()}, {p.max()}] ({p.dtype})")
        return torch.from_numpy(x), torch.from_numpy(p.astype(np.int64)), torch.from_numpy(h) / self.net.h_scale

    def _means(self, x: torch.Tensor, p: torch.Tensor, h: torch.Tensor, a: torch.Tensor | None,
               conditional: bool) -> dict[str, torch.Tensor]:
        """Each head's mean (times the ones before it unless `conditional`): (n, A) if a is None else (n,)."""
        out: dict[str, torch.Tensor] = {}
        for i, (r, prev, _) in enumerate(self.chain):
            head, net = self.net.heads[r], self.net
            eta = head.all_actions(x, p, h, net.z, net.seen) if a is None else head.rows(x, p, h, a, net.z, net.seen)
            m = head.mean(eta) * net.scales[i]
            if r in self._keep:  # structurally impossible outcomes of some actions
                m = m * (self._keep[r][None, :] if a is None else self._keep[r][a])
            out[r] = m if (prev is None or conditional) else out[prev] * m
        return out

    @torch.no_grad()
    def predict(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
        """{reward: (n, A) float64} unconditional expected reward of every promotion."""
        x, p, h = self._inputs(contexts, recent_pushes, position)
        out = {r: np.empty((x.shape[0], self.n_actions)) for r in self.reward_names}
        step = max(1, CHUNK // max(1, self.n_actions))
        for lo in range(0, x.shape[0], step):
            sl = slice(lo, lo + step)
            for r, v in self._means(x[sl], p[sl], h[sl], None, False).items():
                out[r][sl] = v.double().numpy()
        return out

    @torch.no_grad()
    def predict_rows(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray, action: np.ndarray,
                     conditional: bool = False) -> dict[str, np.ndarray]:
        """{reward: (n,)} for given (row, action) pairs; `conditional` gives each head's own mean."""
        x, p, h = self._inputs(contexts, recent_pushes, position)
        a = torch.from_numpy(np.array(action, dtype=np.int64).reshape(-1))
        if a.shape != p.shape or (len(a) and (int(a.min()) < 0 or int(a.max()) >= self.n_actions)):
            raise ValueError(f"action must be ({len(p)},) ints in [0, {self.n_actions}), got shape {tuple(a.shape)}")
        out = {r: np.empty(x.shape[0]) for r in self.reward_names}
        for lo in range(0, x.shape[0], CHUNK):
            sl = slice(lo, lo + CHUNK)
            for r, v in self._means(x[sl], p[sl], h[sl], a[sl], conditional).items():
                out[r][sl] = v.double().numpy()
        return out

    def encode(self, data: LoggedData) -> tuple[np.ndarray, np.ndarray]:
        """(contexts (n, d) float32, recent pushes (n,)) of a log's rows."""
        return _encode(data, self.encoder, self.config.recent_pushes_column)

    def predict_log(self, data: LoggedData, conditional: bool = False) -> dict[str, np.ndarray]:
        """{reward: (n,)} expected reward of each logged row's own action at its position."""
        self._check_catalogue(data)
        x, h = self.encode(data)
        return self.predict_rows(x, h, data.position, data.action, conditional)

    def _check_catalogue(self, data: LoggedData) -> None:
        ids = _json(data.catalogue.ids.tolist())
        if ids != self.catalogue_ids:
            raise ValueError(f"the log's catalogue ({len(ids)} ids, first {ids[:3]}) differs from the model's "
                             f"({self.n_actions} ids, first {self.catalogue_ids[:3]}); use model.with_catalogue(...)")

    # new promotions ----------------------------------------------------------------------
    def with_catalogue(self, catalogue: Catalogue) -> ResponseModel:
        """A copy scoring `catalogue`: known ids keep their id weights, new ids are scored from features."""
        z = self.catalogue_encoder.transform(catalogue.features.reset_index(drop=True)).astype(np.float32)
        old = {i: k for k, i in enumerate(self.catalogue_ids)}
        ids = _json(catalogue.ids.tolist())
        src = np.array([old.get(i, -1) for i in ids])
        net = copy.deepcopy(self.net)
        known = torch.as_tensor(src >= 0)
        src_t = torch.as_tensor(np.maximum(src, 0))
        with torch.no_grad():
            for head in net.heads.values():
                head.b_id = nn.Parameter(torch.where(known, head.b_id[src_t], 0.0))
                head.E_id = nn.Parameter(torch.where(known[:, None], head.E_id[src_t], 0.0))
            net.z = torch.as_tensor(z)
            net.seen = torch.where(known, net.seen[src_t], 0.0)
        model = ResponseModel(net, self.encoder, self.catalogue_encoder, ids, self.chain, self.n_positions, self.config)
        model.history = self.history
        # known ids keep their structural zeros; a new promotion has none (nothing was logged for it)
        model.set_structural_zeros({r: [k for k, old_k in enumerate(src.tolist()) if old_k in set(idx)]
                                    for r, idx in self.structural_zeros.items()})
        return model

    # fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(cls, train: LoggedData, validation: LoggedData | None = None,
            config: ResponseModelConfig | None = None) -> ResponseModel:
        """Fit every head on `train`, early-stopping each on `validation` (None: run all epochs)."""
        config = config or ResponseModelConfig()
        chain = _reward_chain(train, config.reward_chain)
        recent = config.recent_pushes_column
        numeric = [c for c in train.columns.numeric_features if c != recent]
        encoder = ContextEncoder.fit(train.frame, numeric, list(train.columns.categorical_features))
        cat = train.catalogue
        cat_encoder = ContextEncoder.fit(cat.features.reset_index(drop=True), list(cat.numeric_features),
                                         list(cat.categorical_features))
        z = cat_encoder.transform(cat.features.reset_index(drop=True)).astype(np.float32)
        seen = np.bincount(train.action, minlength=cat.n_actions)[: cat.n_actions] > 0
        tr = _rows(train, encoder, recent, chain, config.ips_weighted)
        h_scale = max(1.0, float(tr.h.std())) if len(tr.h) > 1 else 1.0
        tr.h /= h_scale
        va = None
        if validation is not None:
            if _json(validation.catalogue.ids.tolist()) != _json(cat.ids.tolist()):
                raise ValueError("validation and train logs must share one catalogue")
            va = _rows(validation, encoder, recent, chain, config.ips_weighted)
            va.h /= h_scale
        ss = np.random.SeedSequence(config.seed)
        gen = torch.Generator().manual_seed(int(ss.generate_state(1)[0]))
        heads, scales = {}, []
        for r, prev, link in chain:
            mask = np.ones(len(tr.a), bool) if prev is None else tr.y[prev].numpy() > 0
            yr = tr.y[r].numpy()[mask].astype(np.float64)
            wr = tr.w.numpy()[mask].astype(np.float64)
            mean = float(np.sum(wr * yr) / np.sum(wr)) if mask.any() else (0.5 if link == "logit" else 1.0)
            scale = 1.0 if link == "logit" else max(mean, 1e-12)
            off = logit(mean) if link == "logit" else 0.0
            head = _Head(encoder.n_features, z.shape[1], cat.n_actions, train.n_positions, config.embedding_dim, link,
                         config.context_clip)
            head.init_(config.init_std, gen, off)
            heads[r] = head
            scales.append(scale)
        net = _Net(heads, z, seen, h_scale, scales)
        model = cls(net, encoder, cat_encoder, _json(cat.ids.tolist()), chain, train.n_positions, config)
        model.set_structural_zeros(_structural_zeros(tr, chain, cat.n_actions))
        rngs = [np.random.default_rng(s) for s in ss.spawn(len(chain))]
        for i, (r, prev, _) in enumerate(chain):
            model.history[r] = _train_head(net, r, prev, scales[i], tr, va, config, rngs[i],
                                           skip_actions=model.structural_zeros.get(r, []))
        net.eval()
        return model

    # persistence -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write `path/model.pt` (state_dict) and `path/schema.json` (feature schema + config), each atomically."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        write_with(folder / "model.pt", lambda tmp: torch.save(self.net.state_dict(), tmp))
        doc = {"format_version": FORMAT_VERSION, "feature_schema": self.schema, "config": asdict(self.config),
               "shapes": {"d": self.encoder.n_features, "q": int(self.net.z.shape[1])}}
        write_json(folder / "schema.json", doc)
        return folder

    @classmethod
    def load(cls, path: str | Path, expected_schema: dict[str, Any] | None = None) -> ResponseModel:
        """Load a saved model; refuse (ValueError naming the key) if its schema differs from `expected_schema`."""
        folder = Path(path)
        doc = json.loads((folder / "schema.json").read_text(encoding="utf-8"))
        if doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{folder}: format_version {doc.get('format_version')!r}, this pushrl reads {FORMAT_VERSION}")
        schema = doc["feature_schema"]
        if expected_schema is not None:
            where = _first_difference(_json(expected_schema), schema)
            if where is not None:
                raise ValueError(f"{folder}: feature schema mismatch at key '{where}': the saved model was fitted on a different schema")
        known = {f.name for f in fields(ResponseModelConfig)}
        config = ResponseModelConfig(**{k: v for k, v in doc["config"].items() if k in known})
        encoder = ContextEncoder.from_dict(schema["context_encoder"])
        cat_encoder = ContextEncoder.from_dict(schema["catalogue_encoder"])
        chain = [(r, p, link) for r, p, link in schema["reward_chain"]]
        a, d, q, k = len(schema["catalogue_ids"]), doc["shapes"]["d"], doc["shapes"]["q"], config.embedding_dim
        heads = {r: _Head(d, q, a, schema["n_positions"], k, link, config.context_clip) for r, _, link in chain}
        net = _Net(heads, np.zeros((a, q)), np.zeros(a), 1.0, [1.0] * len(chain))
        state = torch.load(folder / "model.pt", weights_only=True)
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{folder}/model.pt does not match its schema.json: {err}") from err
        model = cls(net, encoder, cat_encoder, schema["catalogue_ids"], chain, schema["n_positions"], config)
        index = {json.dumps(i): k for k, i in enumerate(schema["catalogue_ids"])}
        model.set_structural_zeros({r: [index[json.dumps(i)] for i in ids]
                                    for r, ids in schema.get("structural_zeros", {}).items()})
        return model


def _structural_zeros(rows: _Rows, chain: list[tuple[str, str | None, str]], n_actions: int) -> dict[str, list[int]]:
    """{reward: actions with no event on training rows where the overall rate predicts >= STRUCTURAL_ZERO_EVENTS}."""
    a = rows.a.numpy()
    n_a = np.bincount(a, minlength=n_actions)[:n_actions].astype(np.float64)
    out = {}
    for r, _, _ in chain:
        event = rows.y[r].numpy() > 0
        rate = float(event.mean()) if len(event) else 0.0
        pos = np.bincount(a[event], minlength=n_actions)[:n_actions]
        out[r] = np.flatnonzero((pos == 0) & (n_a * rate >= STRUCTURAL_ZERO_EVENTS)).tolist()
    return out


def _encode(data: LoggedData, encoder: ContextEncoder, recent: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, d) float32, recent pushes (n,) float32), encoded in chunks to bound memory."""
    n = data.n_rounds
    x = np.empty((n, encoder.n_features), dtype=np.float32)
    cols = encoder.input_fields
    for lo in range(0, n, 1_000_000):
        x[lo: lo + 1_000_000] = encoder.transform(data.frame[cols].iloc[lo: lo + 1_000_000])
    if recent is not None and recent in data.frame.columns:
        h = pd.to_numeric(data.frame[recent]).to_numpy(dtype=np.float32)
    else:
        h = np.zeros(n, dtype=np.float32)
    return x, h


def _rows(data: LoggedData, encoder: ContextEncoder, recent: str | None,
          chain: list[tuple[str, str | None, str]], ips: bool) -> _Rows:
    x, h = _encode(data, encoder, recent)
    if ips:
        if data.pscore is None:
            raise ValueError(f"ips_weighted=True needs logged propensities; log {data.name!r} has none")
        w = 1.0 / data.pscore
        w = (w / w.mean()).astype(np.float32)
    else:
        w = np.ones(data.n_rounds, dtype=np.float32)
    y = {r: torch.from_numpy(data.reward(r).astype(np.float32)) for r, _, _ in chain}
    return _Rows(torch.from_numpy(x), torch.from_numpy(data.position.copy()), torch.from_numpy(h),
                 torch.from_numpy(data.action.copy()), torch.from_numpy(w), y)


@torch.no_grad()
def _row_losses(net: _Net, head: _Head, rows: _Rows, idx: torch.Tensor, target: str, scale: float) -> np.ndarray:
    """(m,) weighted per-row loss (weight * loss) of the rows `idx`."""
    out = np.empty(len(idx))
    for lo in range(0, len(idx), CHUNK):
        x, p, h, a, w, y = rows.take(idx[lo: lo + CHUNK], target)
        out[lo: lo + CHUNK] = (w * head.loss(head.rows(x, p, h, a, net.z, net.seen), y / scale)).double().numpy()
    return out


def _train_head(net: _Net, target: str, prev: str | None, scale: float, tr: _Rows, va: _Rows | None,
                config: ResponseModelConfig, rng: np.random.Generator, skip_actions: list[int] | None = None) -> list[dict[str, float]]:
    """Mini-batch Adam on the MAP objective; noise-aware early stopping (epoch 0 is a candidate)."""
    head = net.heads[target]
    head.train()

    skip = torch.as_tensor(list(skip_actions or []), dtype=torch.int64)

    def subset(rows: _Rows) -> torch.Tensor:
        """The rows this head learns from: all (or where the previous reward of its chain is positive), less the
        actions whose outcome is structurally zero (predicted 0, whatever the head says)."""
        keep = torch.ones(len(rows.a), dtype=torch.bool) if prev is None else rows.y[prev] > 0
        if len(skip):
            keep &= ~torch.isin(rows.a, skip)
        return torch.nonzero(keep).flatten()

    tr_idx = subset(tr)
    va_idx = subset(va) if va is not None else None
    history: list[dict[str, float]] = []
    if len(tr_idx) == 0:
        return history
    use_val = va_idx is not None and len(va_idx) > 0
    # Adam's (coupled) weight_decay adds decay * theta to the gradient: the MAP penalty l2 / (2n) |theta|^2
    opt = torch.optim.Adam([{"params": [head.offset], "weight_decay": 0.0},
                            {"params": [q for n, q in head.named_parameters() if n != "offset"],
                             "weight_decay": config.l2 / len(tr_idx)}],
                           lr=config.learning_rate)
    va_w = va.w[va_idx].double().numpy() if use_val else None

    def val_rows() -> np.ndarray:
        return _row_losses(net, head, va, va_idx, target, scale) if use_val else np.array([math.nan])

    def mean(v: np.ndarray) -> float:
        return float(v.sum() / va_w.sum()) if use_val else math.nan

    base_rows = val_rows()  # epoch 0: the base-rate model
    best_mean, kept_mean = mean(base_rows), mean(base_rows)
    best_state = copy.deepcopy(head.state_dict())
    train0 = float(_row_losses(net, head, tr, tr_idx, target, scale).sum() / tr.w[tr_idx].sum())
    history.append({"epoch": 0, "train_loss": train0, "val_loss": best_mean, "kept": 1.0, "seconds": 0.0})
    bad_epochs = 0
    bar = tqdm(range(1, config.epochs + 1), desc=f"fit {target}", disable=not config.progress, leave=False)
    for epoch in bar:
        start = time.perf_counter()
        perm = tr_idx[torch.from_numpy(rng.permutation(len(tr_idx)))]
        total = 0.0
        for lo in range(0, len(perm), config.batch_size):
            x, p, h, a, w, y = tr.take(perm[lo: lo + config.batch_size], target)
            drop = torch.from_numpy(rng.random(len(a)) < config.id_dropout) if config.id_dropout > 0 else None
            data_loss = (w * head.loss(head.rows(x, p, h, a, net.z, net.seen, drop), y / scale)).sum() / len(w)
            opt.zero_grad(set_to_none=True)
            data_loss.backward()
            opt.step()
            total += float(data_loss.detach()) * len(w)
        seconds = time.perf_counter() - start
        rows = val_rows()
        val = mean(rows)
        kept = not use_val
        if use_val:
            gain = (base_rows - rows) / va_w.mean()  # per-row paired gain over the base-rate model
            se = float(gain.std(ddof=1) / math.sqrt(len(gain))) if len(gain) > 1 else 0.0
            kept = float(gain.mean()) > config.min_delta + config.stop_se * se and val < kept_mean
        history.append({"epoch": epoch, "train_loss": total / len(perm), "val_loss": val, "kept": float(kept),
                        "seconds": seconds})
        bar.set_postfix(train=f"{total / len(perm):.5f}", val=f"{val:.5f}")
        if kept:
            kept_mean = val
            best_state = copy.deepcopy(head.state_dict())
        if not use_val or val < best_mean - config.min_delta:
            best_mean, bad_epochs = val if use_val else best_mean, 0
            continue
        bad_epochs += 1
        if bad_epochs >= config.patience:
            break
        for group in opt.param_groups:  # no progress: smaller steps, less Adam noise
            group["lr"] *= 0.5
    bar.close()
    head.load_state_dict(best_state)
    head.eval()
    _refit_offset(net, head, tr, tr_idx, target, scale)
    return history


@torch.no_grad()
def _refit_offset(net: _Net, head: _Head, rows: _Rows, idx: torch.Tensor, target: str, scale: float) -> None:
    """Solve the intercept's score equation sum_i w_i (mean_i - y_i) = 0 with the rest fixed.

    The MAP optimum satisfies it (the offset is unpenalised); stochastic steps leave
    it slightly off, which shows as miscalibration in the large.
    """
    eta = torch.empty(len(idx), dtype=torch.float64)
    for lo in range(0, len(idx), CHUNK):
        x, p, h, a, _, _ = rows.take(idx[lo: lo + CHUNK], target)
        eta[lo: lo + CHUNK] = (head.rows(x, p, h, a, net.z, net.seen) - head.offset).double()
    w = rows.w[idx].double()
    y = rows.y[target][idx].double() / scale
    if head.link == "log":
        head.offset.fill_(math.log(max(float((w * y).sum()), 1e-300) / float((w * torch.exp(eta)).sum())))
        return
    b = float(head.offset)
    for _ in range(50):  # Newton on a convex 1-D problem
        m = torch.sigmoid(eta + b)
        step = float((w * (m - y)).sum()) / max(float((w * m * (1 - m)).sum()), 1e-300)
        b -= step
        if abs(step) < 1e-10:
            break
    head.offset.fill_(b)
