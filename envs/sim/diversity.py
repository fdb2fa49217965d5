"""Diversity and exposure metrics of push logs, computed one way for every agent.

Input vocabulary (numpy, batch first):
    actions (n_users, T) or (n_users, T, k) int: the catalogue index of each pushed promotion,
        -1 where nothing was pushed (a slot left empty, a refused push, or after the episode ended);
        one row per user episode, k = slate positions. `info["promotions"]` of the envs stacked over
        time is exactly this.
    categories (n_actions,) int: category code of each promotion.
    unsubscribed (n_users,) or (n_users, T) bool.
A "push" is one time step with at least one promotion (a slate is one push message).
Metrics with nothing to measure (no pushes, no slate with two items) return nan.
"""

from __future__ import annotations

import numpy as np

DEFAULT_DECAY = 0.8  # PushEnvConfig.history_decay's default


def as_slates(actions: np.ndarray) -> np.ndarray:
    """actions as an (n_users, T, k) int64 array (k = 1 for 2-D input)."""
    a = np.asarray(actions)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"actions must be (n_users, T) or (n_users, T, k), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"actions must be integers (catalogue index, -1 = no push), got dtype {a.dtype}")
    if a.size and a.min() < -1:
        raise ValueError(f"actions must be >= -1 (-1 = no push), got minimum {a.min()}")
    return a.astype(np.int64, copy=False)


def _check_n_actions(a: np.ndarray, n_actions: int) -> None:
    if n_actions < 1 or (a.size and a.max() >= n_actions):
        raise ValueError(f"actions must be < n_actions={n_actions}, got maximum {a.max() if a.size else None}")


def pushes_per_user(actions: np.ndarray) -> float:
    """Mean number of push messages (steps with >= 1 promotion) per user."""
    a = as_slates(actions)
    return float((a >= 0).any(axis=2).sum(axis=1).mean()) if a.shape[0] else float("nan")


def catalogue_coverage(actions: np.ndarray, n_actions: int) -> float:
    """Share of the catalogue's promotions pushed at least once."""
    a = as_slates(actions)
    _check_n_actions(a, n_actions)
    return float(np.unique(a[a >= 0]).size / n_actions)


def exposure_counts(actions: np.ndarray, n_actions: int) -> np.ndarray:
    """(n_actions,) how often each promotion was pushed."""
    a = as_slates(actions)
    _check_n_actions(a, n_actions)
    return np.bincount(a[a >= 0], minlength=n_actions)


def exposure_gini(actions: np.ndarray, n_actions: int) -> float:
    """Gini coefficient of the pushes per promotion: 0 = equal exposure, (n-1)/n = one promotion only."""
    x = np.sort(exposure_counts(actions, n_actions)).astype(np.float64)
    total = x.sum()
    if total == 0:
        return float("nan")
    n = len(x)
    return float(2.0 * np.sum(np.arange(1, n + 1) * x) / (n * total) - (n + 1) / n)


def intra_list_diversity(actions: np.ndarray, categories: np.ndarray | None = None,
                         features: np.ndarray | None = None) -> float:
    """Mean over slates with >= 2 promotions of the mean pairwise distance within the slate.

    Distance: 1 if the two promotions' categories differ, else 0 (`categories`), or
    1 - cosine similarity of their feature rows (`features` (n_actions, f)). Give exactly one.
    """
    if (categories is None) == (features is None):
        raise ValueError("give exactly one of categories (n_actions,) or features (n_actions, f)")
    a = as_slates(actions)
    k = a.shape[2]
    flat = a.reshape(-1, k)
    valid = flat >= 0
    safe = np.where(valid, flat, 0)
    total = np.zeros(len(flat))
    pairs = np.zeros(len(flat))
    if categories is not None:
        cat = np.asarray(categories)[safe]
    else:
        f = np.asarray(features, dtype=np.float64)
        norm = np.linalg.norm(f, axis=1, keepdims=True)
        unit = f / np.where(norm > 0, norm, 1.0)
    for i in range(k):
        for j in range(i + 1, k):
            both = valid[:, i] & valid[:, j]
            if categories is not None:
                dist = (cat[:, i] != cat[:, j]).astype(np.float64)
            else:
                dist = 1.0 - np.sum(unit[safe[:, i]] * unit[safe[:, j]], axis=1)
            total += both * dist
            pairs += both
    ok = pairs > 0
    return float(np.mean(total[ok] / pairs[ok])) if ok.any() else float("nan")


def novelty_per_push(actions: np.ndarray, categories: np.ndarray, decay: float = DEFAULT_DECAY) -> np.ndarray:
    """(n_users, T, k) category novelty of each pushed promotion (nan where nothing was pushed).

    novelty = 1 / (1 + h), h = Σ_{s<t} decay^(t-1-s) × (pushes of the category on day s)
    + earlier promotions of the category in the same slate (as PushEnv's diversity term).
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    a = as_slates(actions)
    cats = np.asarray(categories, dtype=np.int64)
    _check_n_actions(a, len(cats))
    n, steps, k = a.shape
    n_cat = int(cats.max()) + 1 if len(cats) else 1
    counts = np.zeros((n, n_cat))
    rows = np.arange(n)
    out = np.full(a.shape, np.nan)
    for t in range(steps):
        valid = a[:, t] >= 0
        cat = cats[np.where(valid, a[:, t], 0)]
        h = counts[rows[:, None], cat]
        for j in range(1, k):
            h[:, j] += ((cat[:, :j] == cat[:, j:j + 1]) & valid[:, :j]).sum(axis=1)
        out[:, t] = np.where(valid, 1.0 / (1.0 + h), np.nan)
        counts *= decay
        for j in range(k):
            counts[rows, cat[:, j]] += valid[:, j]
    return out


def category_novelty(actions: np.ndarray, categories: np.ndarray, decay: float = DEFAULT_DECAY) -> float:
    """Mean category novelty over all pushed promotions (see `novelty_per_push`)."""
    nov = novelty_per_push(actions, categories, decay)
    return float(np.nanmean(nov)) if np.isfinite(nov).any() else float("nan")


def unsubscribe_rate(unsubscribed: np.ndarray) -> float:
    """Share of users who unsubscribed (at any step for an (n_users, T) input)."""
    u = np.asarray(unsubscribed, dtype=bool)
    if u.ndim == 2:
        u = u.any(axis=1)
    if u.ndim != 1:
        raise ValueError(f"unsubscribed must be (n_users,) or (n_users, T), got shape {u.shape}")
    return float(u.mean()) if len(u) else float("nan")


def diversity_report(actions: np.ndarray, categories: np.ndarray, decay: float = DEFAULT_DECAY,
                     unsubscribed: np.ndarray | None = None) -> dict[str, float]:
    """Every metric above in one dict (the comparison-table columns); n_actions = len(categories)."""
    n_actions = len(categories)
    report = {
        "catalogue_coverage": catalogue_coverage(actions, n_actions),
        "intra_list_diversity": intra_list_diversity(actions, categories=categories),
        "category_novelty": category_novelty(actions, categories, decay),
        "exposure_gini": exposure_gini(actions, n_actions),
        "pushes_per_user": pushes_per_user(actions),
    }
    if unsubscribed is not None:
        report["unsubscribe_rate"] = unsubscribe_rate(unsubscribed)
    return report
