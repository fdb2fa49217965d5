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

Unsubscribes: a log with an unsubscribe column (`LogSchema.unsubscribe`) gets one more logit head,
P(unsubscribe | push a) = sigmoid(offset + pos[p] + w_h h / h_scale + x.w_u + b_id[a] seen[a] + z_a.w_z):
context, promotion and fatigue (h) dependent, the first-order terms of a head (its factors stay 0: a
penalised logistic regression, as rare an outcome as this cannot feed an interaction). It is fitted to its
exact MAP (same loss, prior and significance gate as a binary head; full-batch L-BFGS instead of
mini-batch early stopping, which keeps a lucky early epoch on rare events:
`response_training.train_glm_head`) on the rows where the outcome is observed (a user's rows after
their first unsubscribe are not), with its own structural zeros (e.g. the no-push action). It is an
outcome, not a reward: never in `reward_names` or `predict`; `has_unsubscribe`, `predict_unsubscribe`
(n, A) and `predict_unsubscribe_rows` (n,) expose it (the simulator's churn, `pushrl.envs.sim.push_env`).

The pieces: `response_config` (the validated hyper-parameters), `response_net` (the heads),
`response_training` (fitting), `response_io` (save / load); this module holds `ResponseModel`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pushrl.envs.common.probabilities import logit
from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.features import ContextEncoder
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.validation import UNSUBSCRIBE
from pushrl.envs.model.response_config import ResponseModelConfig
from pushrl.envs.model.response_io import plain_json, read_model, save_model
from pushrl.envs.model.response_net import CHUNK, Head, Net
from pushrl.envs.model.response_training import (
    encode_log,
    find_structural_zeros,
    resolve_chain,
    train_glm_head,
    train_head,
    training_rows,
)

__all__ = ["ResponseModel", "ResponseModelConfig"]


class ResponseModel:
    """A fitted response model; implements `pushrl.envs.model.response.ResponseFunction`.

    `contexts` given to `predict` must be `self.encoder.transform(raw_features)`
    (the log's features without the recent-push column).
    """

    def __init__(self, net: Net, encoder: ContextEncoder, catalogue_encoder: ContextEncoder, catalogue_ids: list,
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
        self.unsubscribe_zeros: list[int] = []  # actions whose unsubscribe probability is exactly 0
        self.unsubscribe_history: list[dict[str, float]] = []
        self._unsub_keep: torch.Tensor | None = None

    def set_structural_zeros(self, zeros: dict[str, list[int]]) -> None:
        """Outcomes that cannot happen for some actions (see STRUCTURAL_ZERO_EVENTS): predicted exactly 0."""
        self.structural_zeros = {r: sorted(int(a) for a in idx) for r, idx in zeros.items() if len(idx)}
        self._keep = {}
        for r, idx in self.structural_zeros.items():
            keep = torch.ones(self.n_actions)
            keep[idx] = 0.0
            self._keep[r] = keep

    def set_unsubscribe_zeros(self, zeros: list[int]) -> None:
        """Actions whose unsubscribe is structurally zero (no event where the overall rate predicts >= 20)."""
        self.unsubscribe_zeros = sorted(int(a) for a in zeros)
        self._unsub_keep = None
        if self.unsubscribe_zeros:
            self._unsub_keep = torch.ones(self.n_actions)
            self._unsub_keep[self.unsubscribe_zeros] = 0.0

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
        return plain_json({
            "context_encoder": self.encoder.to_dict(),
            "catalogue_encoder": self.catalogue_encoder.to_dict(),
            "catalogue_ids": self.catalogue_ids,
            "reward_names": list(self.reward_names),
            "reward_chain": [list(c) for c in self.chain],
            "n_positions": self.n_positions,
            "recent_pushes_column": self.config.recent_pushes_column,
        } | ({"structural_zeros": {r: [self.catalogue_ids[a] for a in idx] for r, idx in self.structural_zeros.items()}}
             if self.structural_zeros else {})
          | ({"unsubscribe": {"structural_zeros": [self.catalogue_ids[a] for a in self.unsubscribe_zeros]}}
             if self.has_unsubscribe else {}))

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
        a = self._actions(action, len(p))
        out = {r: np.empty(x.shape[0]) for r in self.reward_names}
        for lo in range(0, x.shape[0], CHUNK):
            sl = slice(lo, lo + CHUNK)
            for r, v in self._means(x[sl], p[sl], h[sl], a[sl], conditional).items():
                out[r][sl] = v.double().numpy()
        return out

    def _actions(self, action: np.ndarray, n: int) -> torch.Tensor:
        a = torch.from_numpy(np.array(action, dtype=np.int64).reshape(-1))
        if a.shape != (n,) or (len(a) and (int(a.min()) < 0 or int(a.max()) >= self.n_actions)):
            raise ValueError(f"action must be ({n},) ints in [0, {self.n_actions}), got shape {tuple(a.shape)}")
        return a

    # unsubscribe (an outcome, not a reward) ------------------------------------------------
    @property
    def has_unsubscribe(self) -> bool:
        """Whether the model has an unsubscribe head (its training log had an unsubscribe column)."""
        return self.net.unsubscribe is not None

    def _unsubscribe_head(self) -> Head:
        if self.net.unsubscribe is None:
            raise ValueError("this response model has no unsubscribe head: its training log had no unsubscribe "
                             "column (data.unsubscribe); check model.has_unsubscribe first")
        return self.net.unsubscribe

    @torch.no_grad()
    def predict_unsubscribe(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray) -> np.ndarray:
        """(n, A) float64 P(unsubscribe | pushed a) = sigmoid(eta_u(x, a, p, h)), 0 for structural zeros."""
        head = self._unsubscribe_head()
        x, p, h = self._inputs(contexts, recent_pushes, position)
        out = np.empty((x.shape[0], self.n_actions))
        step = max(1, CHUNK // max(1, self.n_actions))
        for lo in range(0, x.shape[0], step):
            sl = slice(lo, lo + step)
            m = head.mean(head.all_actions(x[sl], p[sl], h[sl], self.net.z, self.net.seen))
            out[sl] = (m if self._unsub_keep is None else m * self._unsub_keep[None, :]).double().numpy()
        return out

    @torch.no_grad()
    def predict_unsubscribe_rows(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray,
                                 action: np.ndarray) -> np.ndarray:
        """(n,) float64 P(unsubscribe | pushed action[i]) for given (row, action) pairs."""
        head = self._unsubscribe_head()
        x, p, h = self._inputs(contexts, recent_pushes, position)
        a = self._actions(action, len(p))
        out = np.empty(x.shape[0])
        for lo in range(0, x.shape[0], CHUNK):
            sl = slice(lo, lo + CHUNK)
            m = head.mean(head.rows(x[sl], p[sl], h[sl], a[sl], self.net.z, self.net.seen))
            out[sl] = (m if self._unsub_keep is None else m * self._unsub_keep[a[sl]]).double().numpy()
        return out

    # the ResponseFunction protocol's optional churn methods (`pushrl.envs.model.response`)
    unsubscribe_probability = predict_unsubscribe
    unsubscribe_probability_rows = predict_unsubscribe_rows

    def predict_unsubscribe_log(self, data: LoggedData) -> np.ndarray:
        """(n,) P(unsubscribe) of each logged row's own action at its position."""
        self._check_catalogue(data)
        x, h = self.encode(data)
        return self.predict_unsubscribe_rows(x, h, data.position, data.action)

    def encode(self, data: LoggedData) -> tuple[np.ndarray, np.ndarray]:
        """(contexts (n, d) float32, recent pushes (n,)) of a log's rows."""
        return encode_log(data, self.encoder, self.config.recent_pushes_column)

    def predict_log(self, data: LoggedData, conditional: bool = False) -> dict[str, np.ndarray]:
        """{reward: (n,)} expected reward of each logged row's own action at its position."""
        self._check_catalogue(data)
        x, h = self.encode(data)
        return self.predict_rows(x, h, data.position, data.action, conditional)

    def _check_catalogue(self, data: LoggedData) -> None:
        ids = plain_json(data.catalogue.ids.tolist())
        if ids != self.catalogue_ids:
            raise ValueError(f"the log's catalogue ({len(ids)} ids, first {ids[:3]}) differs from the model's "
                             f"({self.n_actions} ids, first {self.catalogue_ids[:3]}); use model.with_catalogue(...)")

    # new promotions ----------------------------------------------------------------------
    def with_catalogue(self, catalogue: Catalogue) -> ResponseModel:
        """A copy scoring `catalogue`: known ids keep their id weights, new ids are scored from features."""
        z = self.catalogue_encoder.transform(catalogue.features.reset_index(drop=True)).astype(np.float32)
        old = {i: k for k, i in enumerate(self.catalogue_ids)}
        ids = plain_json(catalogue.ids.tolist())
        src = np.array([old.get(i, -1) for i in ids])
        net = copy.deepcopy(self.net)
        known = torch.as_tensor(src >= 0)
        src_t = torch.as_tensor(np.maximum(src, 0))
        with torch.no_grad():
            for head in net.all_heads():
                head.b_id = nn.Parameter(torch.where(known, head.b_id[src_t], 0.0))
                head.E_id = nn.Parameter(torch.where(known[:, None], head.E_id[src_t], 0.0))
            net.z = torch.as_tensor(z)
            net.seen = torch.where(known, net.seen[src_t], 0.0)
        model = ResponseModel(net, self.encoder, self.catalogue_encoder, ids, self.chain, self.n_positions, self.config)
        model.history = self.history
        model.unsubscribe_history = self.unsubscribe_history
        # known ids keep their structural zeros; a new promotion has none (nothing was logged for it)
        model.set_structural_zeros({r: [k for k, old_k in enumerate(src.tolist()) if old_k in set(idx)]
                                    for r, idx in self.structural_zeros.items()})
        model.set_unsubscribe_zeros([k for k, old_k in enumerate(src.tolist()) if old_k in set(self.unsubscribe_zeros)])
        return model

    # fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(cls, train: LoggedData, validation: LoggedData | None = None,
            config: ResponseModelConfig | None = None) -> ResponseModel:
        """Fit every head on `train`, early-stopping each on `validation` (None: run all epochs)."""
        config = config or ResponseModelConfig()
        chain = resolve_chain(train, config.reward_chain)
        recent = config.recent_pushes_column
        numeric = [c for c in train.columns.numeric_features if c != recent]
        encoder = ContextEncoder.fit(train.frame, numeric, list(train.columns.categorical_features))
        cat = train.catalogue
        cat_encoder = ContextEncoder.fit(cat.features.reset_index(drop=True), list(cat.numeric_features),
                                         list(cat.categorical_features))
        z = cat_encoder.transform(cat.features.reset_index(drop=True)).astype(np.float32)
        seen = np.bincount(train.action, minlength=cat.n_actions)[: cat.n_actions] > 0
        unsub = train.has_unsubscribe
        tr = training_rows(train, encoder, recent, chain, config.ips_weighted, unsubscribe=unsub)
        h_scale = max(1.0, float(tr.h.std())) if len(tr.h) > 1 else 1.0
        tr.h /= h_scale
        va = None
        if validation is not None:
            if plain_json(validation.catalogue.ids.tolist()) != plain_json(cat.ids.tolist()):
                raise ValueError("validation and train logs must share one catalogue")
            va = training_rows(validation, encoder, recent, chain, config.ips_weighted, unsubscribe=unsub)
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
            head = Head(encoder.n_features, z.shape[1], cat.n_actions, train.n_positions, config.embedding_dim, link,
                         config.context_clip)
            head.init_(config.init_std, gen, off)
            heads[r] = head
            scales.append(scale)
        unsub_head = None
        if unsub:  # initialised after the reward heads: their random draws are those of a log without the column
            seen_u = tr.observed[UNSUBSCRIBE].numpy()
            yu, wu = tr.y[UNSUBSCRIBE].numpy()[seen_u].astype(np.float64), tr.w.numpy()[seen_u].astype(np.float64)
            rate = float(np.sum(wu * yu) / np.sum(wu)) if seen_u.any() else 0.5
            unsub_head = Head(encoder.n_features, z.shape[1], cat.n_actions, train.n_positions, config.embedding_dim,
                              "logit", config.context_clip)
            unsub_head.init_(0.0, gen, logit(rate))  # a logistic regression: its factors stay 0
        net = Net(heads, z, seen, h_scale, scales, unsub_head)
        model = cls(net, encoder, cat_encoder, plain_json(cat.ids.tolist()), chain, train.n_positions, config)
        model.set_structural_zeros(find_structural_zeros(tr, chain, cat.n_actions))
        rngs = [np.random.default_rng(s) for s in ss.spawn(len(chain))]
        for i, (r, prev, _) in enumerate(chain):
            model.history[r] = train_head(net, r, prev, scales[i], tr, va, config, rngs[i],
                                          skip_actions=model.structural_zeros.get(r, []))
        if unsub_head is not None:
            model.set_unsubscribe_zeros(find_structural_zeros(tr, [(UNSUBSCRIBE, None, "logit")], cat.n_actions)[UNSUBSCRIBE])
            model.unsubscribe_history = train_glm_head(net, unsub_head, UNSUBSCRIBE, tr, va, config,
                                                       skip_actions=model.unsubscribe_zeros)
        net.eval()
        return model

    # persistence -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write `path/model.pt` (state_dict) and `path/schema.json` (feature schema + config), each atomically."""
        return save_model(Path(path), self.net, self.schema, self.config, self.encoder.n_features)

    @classmethod
    def load(cls, path: str | Path, expected_schema: dict[str, Any] | None = None) -> ResponseModel:
        """Load a saved model; refuse (ValueError naming the key) if its schema differs from `expected_schema`."""
        folder = Path(path)
        schema, config, net = read_model(folder, expected_schema)
        encoder = ContextEncoder.from_dict(schema["context_encoder"])
        cat_encoder = ContextEncoder.from_dict(schema["catalogue_encoder"])
        chain = [(r, p, link) for r, p, link in schema["reward_chain"]]
        model = cls(net, encoder, cat_encoder, schema["catalogue_ids"], chain, schema["n_positions"], config)
        index = {json.dumps(i): k for k, i in enumerate(schema["catalogue_ids"])}
        model.set_structural_zeros({r: [index[json.dumps(i)] for i in ids]
                                    for r, ids in schema.get("structural_zeros", {}).items()})
        if "unsubscribe" in schema:
            model.set_unsubscribe_zeros([index[json.dumps(i)] for i in schema["unsubscribe"]["structural_zeros"]])
        return model
