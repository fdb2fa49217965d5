"""Fitting the response model's heads: reward chain, training tensors, MAP training with noise-aware early stopping,
offset re-calibration and structural zeros. The unsubscribe head (target `UNSUBSCRIBE`) trains like a binary reward
head on the rows where the outcome is observed (`LoggedData.unsubscribe_observed`)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pushrl.envs.data.features import ContextEncoder
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.schema import BINARY_REWARDS
from pushrl.envs.data.validation import UNSUBSCRIBE
from pushrl.envs.model.response_config import ResponseModelConfig
from pushrl.envs.model.response_net import CHUNK, Head, Net

STRUCTURAL_ZERO_EVENTS = 20.0
"""An action whose training rows would hold this many events of a reward at the log's overall rate, yet hold
none, has that outcome structurally zero (e.g. an open without a message sent): P(no event) ~ e^-20 otherwise."""


@dataclass
class Rows:
    """Training tensors of one log (float32 / int64, n rows)."""

    x: torch.Tensor
    pos: torch.Tensor
    h: torch.Tensor
    a: torch.Tensor
    w: torch.Tensor
    y: dict[str, torch.Tensor]
    observed: dict[str, torch.Tensor] = field(default_factory=dict)
    """{target: (n,) bool rows where it is observed}; a target without an entry is observed on every row."""

    def take(self, idx: torch.Tensor, target: str) -> tuple[torch.Tensor, ...]:
        return self.x[idx], self.pos[idx], self.h[idx], self.a[idx], self.w[idx], self.y[target][idx]


def resolve_chain(data: LoggedData, declared: tuple[str, ...] = ()) -> list[tuple[str, str | None, str]]:
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


def find_structural_zeros(rows: Rows, chain: list[tuple[str, str | None, str]], n_actions: int) -> dict[str, list[int]]:
    """{reward: actions with no event on training rows where the overall rate predicts >= STRUCTURAL_ZERO_EVENTS}."""
    a = rows.a.numpy()
    n_a = np.bincount(a, minlength=n_actions)[:n_actions].astype(np.float64)
    out = {}
    for r, _, _ in chain:
        event = rows.y[r].numpy() > 0
        n_r = n_a
        rate = float(event.mean()) if len(event) else 0.0
        if r in rows.observed:  # only the rows where the outcome is observed count
            seen = rows.observed[r].numpy()
            event &= seen
            n_r = np.bincount(a[seen], minlength=n_actions)[:n_actions].astype(np.float64)
            rate = float(event.sum()) / float(seen.sum()) if seen.any() else 0.0
        pos = np.bincount(a[event], minlength=n_actions)[:n_actions]
        out[r] = np.flatnonzero((pos == 0) & (n_r * rate >= STRUCTURAL_ZERO_EVENTS)).tolist()
    return out


def encode_log(data: LoggedData, encoder: ContextEncoder, recent: str | None) -> tuple[np.ndarray, np.ndarray]:
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


def training_rows(data: LoggedData, encoder: ContextEncoder, recent: str | None,
          chain: list[tuple[str, str | None, str]], ips: bool, unsubscribe: bool = False) -> Rows:
    """The tensors of a log; with `unsubscribe` (and the log's column) also the target `UNSUBSCRIBE` and its
    observed rows."""
    x, h = encode_log(data, encoder, recent)
    if ips:
        if data.pscore is None:
            raise ValueError(f"ips_weighted=True needs logged propensities; log {data.name!r} has none")
        w = 1.0 / data.pscore
        w = (w / w.mean()).astype(np.float32)
    else:
        w = np.ones(data.n_rounds, dtype=np.float32)
    y = {r: torch.from_numpy(data.reward(r).astype(np.float32)) for r, _, _ in chain}
    observed = {}
    if unsubscribe and data.has_unsubscribe:
        y[UNSUBSCRIBE] = torch.from_numpy(data.unsubscribe.astype(np.float32))
        observed[UNSUBSCRIBE] = torch.from_numpy(data.unsubscribe_observed.copy())
    return Rows(torch.from_numpy(x), torch.from_numpy(data.position.copy()), torch.from_numpy(h),
                 torch.from_numpy(data.action.copy()), torch.from_numpy(w), y, observed)


@torch.no_grad()
def _row_losses(net: Net, head: Head, rows: Rows, idx: torch.Tensor, target: str, scale: float) -> np.ndarray:
    """(m,) weighted per-row loss (weight * loss) of the rows `idx`."""
    out = np.empty(len(idx))
    for lo in range(0, len(idx), CHUNK):
        x, p, h, a, w, y = rows.take(idx[lo: lo + CHUNK], target)
        out[lo: lo + CHUNK] = (w * head.loss(head.rows(x, p, h, a, net.z, net.seen), y / scale)).double().numpy()
    return out


def train_head(net: Net, target: str, prev: str | None, scale: float, tr: Rows, va: Rows | None,
                config: ResponseModelConfig, rng: np.random.Generator, skip_actions: list[int] | None = None,
                ) -> list[dict[str, float]]:
    """Mini-batch Adam on the MAP objective; noise-aware early stopping (epoch 0 is a candidate)."""
    head = net.heads[target]
    head.train()

    skip = torch.as_tensor(list(skip_actions or []), dtype=torch.int64)

    def subset(rows: Rows) -> torch.Tensor:
        """The rows this head learns from: all (or where the previous reward of its chain is positive), less the
        actions whose outcome is structurally zero (predicted 0, whatever the head says)."""
        return _subset(rows, target, prev, skip)

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


def _subset(rows: Rows, target: str, prev: str | None, skip: torch.Tensor) -> torch.Tensor:
    """Indices of the rows a head learns from: all, or where `prev` is positive; where `target` is observed; less
    the actions `skip` (structural zeros)."""
    keep = torch.ones(len(rows.a), dtype=torch.bool) if prev is None else rows.y[prev] > 0
    if target in rows.observed:
        keep &= rows.observed[target]
    if len(skip):
        keep &= ~torch.isin(rows.a, skip)
    return torch.nonzero(keep).flatten()


GLM_PARAMETERS = ("offset", "pos", "w_h", "w_u", "b_id", "w_z")
"""The first-order weights of a head (its factorization-machine factors P, E_id, Q are left at zero)."""


def train_glm_head(net: Net, head: Head, target: str, tr: Rows, va: Rows | None, config: ResponseModelConfig,
                   skip_actions: list[int] | None = None, max_iter: int = 100) -> list[dict[str, float]]:
    """A logit head's first-order terms fitted to their exact MAP: full-batch L-BFGS on the mean weighted binary
    cross-entropy of the observed rows + l2 / (2 n) |theta|^2 (the offset unpenalised), from the base rate.

    For a rare outcome (unsubscribes) mini-batch early stopping on a small validation set keeps a lucky early
    epoch (half the fatigue slope on a 20k-row log); this is logistic regression with the heads' Gaussian prior.
    The same significance gate as `train_head`: the fit is kept only if its paired per-row gain over the base
    rate on validation exceeds min_delta + stop_se standard errors, else the base rate stays. Each L-BFGS
    iteration is a pass over the rows (at most `max_iter`, plus line-search passes; history's "iterations")."""
    skip = torch.as_tensor(list(skip_actions or []), dtype=torch.int64)
    tr_idx = _subset(tr, target, None, skip)
    if va is not None and target not in va.y:
        va = None
    va_idx = _subset(va, target, None, skip) if va is not None else None
    if len(tr_idx) == 0:
        return []
    use_val = va_idx is not None and len(va_idx) > 0
    head.train()
    for name in ("P", "E_id", "Q"):
        with torch.no_grad():
            getattr(head, name).zero_()
    params = [getattr(head, n) for n in GLM_PARAMETERS]
    penalised = params[1:]
    w_sum = float(tr.w[tr_idx].sum())
    decay = config.l2 / len(tr_idx)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        total = 0.0
        for lo in range(0, len(tr_idx), CHUNK):
            x, p, h, a, w, y = tr.take(tr_idx[lo: lo + CHUNK], target)
            part = (w * head.loss(head.rows(x, p, h, a, net.z, net.seen), y)).sum() / w_sum
            part.backward()
            total += float(part.detach())
        penalty = 0.5 * decay * sum((q * q).sum() for q in penalised)
        penalty.backward()
        return torch.tensor(total + float(penalty.detach()))

    base_state = copy.deepcopy(head.state_dict())
    base_rows = _row_losses(net, head, va, va_idx, target, 1.0) if use_val else None
    train0 = float(_row_losses(net, head, tr, tr_idx, target, 1.0).sum() / w_sum)
    va_w = va.w[va_idx].double().numpy() if use_val else None
    history = [{"epoch": 0, "train_loss": train0, "val_loss": float(base_rows.sum() / va_w.sum()) if use_val else math.nan,
                "kept": 1.0, "seconds": 0.0}]
    start = time.perf_counter()
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, tolerance_grad=1e-8, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")
    opt.step(closure)
    iterations = float(opt.state[params[0]].get("n_iter", 0))
    head.eval()
    train1 = float(_row_losses(net, head, tr, tr_idx, target, 1.0).sum() / w_sum)
    kept, val = True, math.nan
    if use_val:
        rows = _row_losses(net, head, va, va_idx, target, 1.0)
        val = float(rows.sum() / va_w.sum())
        gain = (base_rows - rows) / va_w.mean()
        se = float(gain.std(ddof=1) / math.sqrt(len(gain))) if len(gain) > 1 else 0.0
        kept = float(gain.mean()) > config.min_delta + config.stop_se * se
    history.append({"epoch": 1, "train_loss": train1, "val_loss": val, "kept": float(kept),
                    "seconds": time.perf_counter() - start, "iterations": iterations})
    if not kept:
        history[0]["kept"] = 1.0
        head.load_state_dict(base_state)
    else:
        history[0]["kept"] = 0.0
    _refit_offset(net, head, tr, tr_idx, target, 1.0)
    return history


@torch.no_grad()
def _refit_offset(net: Net, head: Head, rows: Rows, idx: torch.Tensor, target: str, scale: float) -> None:
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
