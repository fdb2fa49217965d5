"""Synthetic push logs from a known user-response model (ground truth for tests and scale).

The true model, per push of promotion a to a user with features x, segment s,
at display position p, after h pushes to that user in the last `fatigue_window_days`:

    logit P(click)  = base + xᵀ W z_a + b_a + segment_effect[s, a] - position_decay * p - fatigue * h
    P(conversion | click) = sigmoid(conv_base + xᵀ v)
    revenue | conversion  ~ LogNormal with mean revenue_mean[a]

Decisions are logged from a chosen logging policy (uniform, softmax over the
true click logits, ε-greedy, or deterministic argmax) with exact propensities.
`SyntheticTruth` keeps every parameter, so any policy's true value is computable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pushrl.envs.catalogue import Catalogue
from pushrl.envs.logged_data import LoggedData
from pushrl.envs.probabilities import sigmoid, softmax
from pushrl.envs.schema import LogSchema

LOGGING_POLICIES = ("uniform", "softmax", "epsilon_greedy", "deterministic")
START = pd.Timestamp("2026-01-01", tz="UTC")
REVENUE_SIGMA = 0.5


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and dynamics of a synthetic shop. Every field is validated."""

    n_rows: int = 20_000
    n_users: int = 2_000
    n_actions: int = 10
    n_positions: int = 1
    n_user_features: int = 4
    n_segments: int = 3
    n_action_features: int = 3
    n_categories: int = 4
    days: float = 28.0
    base_logit: float = -2.5
    interaction_scale: float = 0.6
    position_decay: float = 0.3
    fatigue: float = 0.15
    fatigue_window_days: float = 3.0
    conv_base: float = -1.0
    logging: str = "uniform"
    logging_temperature: float = 1.0
    logging_epsilon: float = 0.1
    feature_driven: bool = False  # promotion bias and segment effects explained by promotion features (cold start)
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("n_rows", "n_users", "n_actions", "n_positions", "n_user_features", "n_segments",
                    "n_action_features", "n_categories", "days", "fatigue_window_days", "logging_temperature")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"SyntheticConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.logging not in LOGGING_POLICIES:
            raise ValueError(f"SyntheticConfig.logging must be one of {LOGGING_POLICIES}, got {self.logging!r}")
        if not 0 <= self.logging_epsilon <= 1:
            raise ValueError(f"SyntheticConfig.logging_epsilon must be in [0, 1], got {self.logging_epsilon}")
        if self.fatigue < 0 or self.position_decay < 0:
            raise ValueError("SyntheticConfig.fatigue and position_decay must be >= 0")


@dataclass(frozen=True, eq=False)
class SyntheticTruth:
    """The parameters logs were drawn from; computes true expected rewards."""

    config: SyntheticConfig
    user_features: np.ndarray  # (n_users, du)
    user_segment: np.ndarray  # (n_users,) int
    action_features: np.ndarray  # (n_actions, da)
    action_category: np.ndarray  # (n_actions,) int
    interaction: np.ndarray  # W (du, da)
    action_bias: np.ndarray  # (n_actions,)
    segment_effect: np.ndarray  # (n_segments, n_actions)
    conv_weights: np.ndarray  # (du,)
    revenue_mean: np.ndarray  # (n_actions,)

    @property
    def user_feature_names(self) -> list[str]:
        return [f"u{i}" for i in range(self.config.n_user_features)]

    def click_logits(self, x: np.ndarray, segment: np.ndarray, recent: np.ndarray, position: np.ndarray) -> np.ndarray:
        """(n, n_actions) true click logits."""
        c = self.config
        score = x @ self.interaction @ self.action_features.T + self.action_bias
        score = score + self.segment_effect[segment]
        offset = c.base_logit - c.position_decay * position - c.fatigue * recent
        return score + offset[:, None]

    def expected_rewards(
        self, x: np.ndarray, segment: np.ndarray, recent: np.ndarray, position: np.ndarray, reward: str = "click"
    ) -> np.ndarray:
        """(n, n_actions) true expected reward of each action."""
        return self.expected_all(x, segment, recent, position, (reward,))[reward]

    def expected_all(
        self, x: np.ndarray, segment: np.ndarray, recent: np.ndarray, position: np.ndarray,
        rewards: tuple[str, ...] = ("click", "conversion", "revenue"),
    ) -> dict[str, np.ndarray]:
        """{reward: (n, n_actions)} true expected rewards, sharing one logit computation."""
        unknown = set(rewards) - {"click", "conversion", "revenue"}
        if unknown:
            raise ValueError(f"reward must be 'click', 'conversion' or 'revenue', got {sorted(unknown)}")
        p_click = sigmoid(self.click_logits(x, segment, recent, position))
        out = {"click": p_click}
        if "conversion" in rewards or "revenue" in rewards:
            out["conversion"] = p_click * sigmoid(self.config.conv_base + x @ self.conv_weights)[:, None]
            out["revenue"] = out["conversion"] * self.revenue_mean[None, :]
        return {r: out[r] for r in rewards}

    def row_inputs(self, data: LoggedData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, segment, recent_pushes, position) of each logged row."""
        f = data.frame
        x = f[self.user_feature_names].to_numpy(dtype=np.float64)
        seg = f["segment"].str.slice(1).astype(int).to_numpy()
        return x, seg, f["recent_pushes"].to_numpy(dtype=np.float64), data.position

    def expected_rewards_for(self, data: LoggedData, reward: str = "click", positions: bool = True) -> np.ndarray:
        """True q for the log's rows: (n, n_actions, n_positions) if `positions` else (n, n_actions) at the logged slot."""
        x, seg, recent, pos = self.row_inputs(data)
        if not positions:
            return self.expected_rewards(x, seg, recent, pos, reward)
        return np.stack(
            [self.expected_rewards(x, seg, recent, np.full_like(pos, k), reward) for k in range(data.n_positions)], axis=2
        )

    def policy_value(self, data: LoggedData, action_dist: np.ndarray, reward: str = "click") -> float:
        """True value of a policy on the log's contexts (each row at its logged position)."""
        q = self.expected_rewards_for(data, reward, positions=False)
        pi = action_dist[np.arange(data.n_rounds), :, data.position]
        return float(np.mean(np.sum(pi * q, axis=1)))

    def logging_probabilities(self, x: np.ndarray, segment: np.ndarray, recent: np.ndarray, position: np.ndarray) -> np.ndarray:
        """(n, n_actions) the logging policy's action probabilities."""
        c = self.config
        n, a = x.shape[0], c.n_actions
        if c.logging == "uniform":
            return np.full((n, a), 1.0 / a)
        logits = self.click_logits(x, segment, recent, position)
        if c.logging == "softmax":
            return softmax(logits / c.logging_temperature)
        greedy = np.zeros((n, a))
        greedy[np.arange(n), logits.argmax(axis=1)] = 1.0
        if c.logging == "deterministic":
            return greedy
        return (1 - c.logging_epsilon) * greedy + c.logging_epsilon / a


def make_truth(config: SyntheticConfig) -> SyntheticTruth:
    """Draw the true model's parameters from the config's seed."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    du, da, a = config.n_user_features, config.n_action_features, config.n_actions
    if config.feature_driven:  # every promotion effect is a function of its features: new ones are predictable
        z = rng.normal(size=(a, da))
        return SyntheticTruth(
            config=config,
            user_features=rng.normal(size=(config.n_users, du)),
            user_segment=rng.integers(0, config.n_segments, size=config.n_users),
            action_features=z,
            action_category=np.arange(a) % config.n_categories,
            interaction=rng.normal(scale=config.interaction_scale / np.sqrt(da), size=(du, da)),
            action_bias=z @ rng.normal(scale=0.5 / np.sqrt(da), size=da),
            segment_effect=rng.normal(scale=0.5 / np.sqrt(da), size=(config.n_segments, da)) @ z.T,
            conv_weights=rng.normal(scale=0.5, size=du),
            revenue_mean=rng.uniform(20.0, 120.0, size=a),
        )
    return SyntheticTruth(
        config=config,
        user_features=rng.normal(size=(config.n_users, du)),
        user_segment=rng.integers(0, config.n_segments, size=config.n_users),
        action_features=rng.normal(size=(a, da)),
        action_category=np.arange(a) % config.n_categories,
        interaction=rng.normal(scale=config.interaction_scale / np.sqrt(da), size=(du, da)),
        action_bias=rng.normal(scale=0.5, size=a),
        segment_effect=rng.normal(scale=0.5, size=(config.n_segments, a)),
        conv_weights=rng.normal(scale=0.5, size=du),
        revenue_mean=rng.uniform(20.0, 120.0, size=a),
    )


def recent_push_counts(user: np.ndarray, time_days: np.ndarray, window_days: float) -> np.ndarray:
    """For each push, how many earlier pushes the same user got within `window_days` (vectorised)."""
    order = np.lexsort((time_days, user))
    span = float(time_days.max() - time_days.min()) + window_days + 1.0
    key = user[order].astype(np.float64) * span + (time_days[order] - time_days.min())
    counts_sorted = np.arange(len(key)) - np.searchsorted(key, key - window_days, side="left")
    counts = np.empty_like(counts_sorted)
    counts[order] = counts_sorted
    return counts


def catalogue_frame(truth: SyntheticTruth) -> pd.DataFrame:
    """The promotion catalogue: id, numeric features f0.., categorical `category`."""
    frame = pd.DataFrame(truth.action_features, columns=[f"f{i}" for i in range(truth.action_features.shape[1])])
    frame.insert(0, "action", np.arange(truth.config.n_actions))
    frame["category"] = [f"c{k}" for k in truth.action_category]
    return frame


def simulate_rows(truth: SyntheticTruth, seed_offset: int = 0) -> pd.DataFrame:
    """Draw the raw log table (one row per push) from the truth and its logging policy."""
    c = truth.config
    rng = np.random.default_rng(np.random.SeedSequence([c.seed, 2, seed_offset]))
    n = c.n_rows
    user = rng.integers(0, c.n_users, size=n)
    t = np.sort(rng.uniform(0.0, c.days, size=n))
    recent = recent_push_counts(user, t, c.fatigue_window_days).astype(np.float64)
    position = rng.integers(0, c.n_positions, size=n)
    x = truth.user_features[user]
    seg = truth.user_segment[user]
    action = np.empty(n, dtype=np.int64)
    propensity = np.empty(n)
    p_click = np.empty(n)
    for lo in range(0, n, 250_000):  # bounded memory: (chunk, n_actions) at a time
        sl = slice(lo, min(lo + 250_000, n))
        probs = truth.logging_probabilities(x[sl], seg[sl], recent[sl], position[sl])
        u = rng.random((probs.shape[0], 1))
        chosen = np.minimum((u >= np.cumsum(probs, axis=1)).sum(axis=1), c.n_actions - 1)
        action[sl] = chosen
        propensity[sl] = probs[np.arange(len(chosen)), chosen]
        logits = truth.click_logits(x[sl], seg[sl], recent[sl], position[sl])
        p_click[sl] = sigmoid(logits[np.arange(len(chosen)), chosen])
    click = (rng.random(n) < p_click).astype(np.float64)
    p_conv = sigmoid(c.conv_base + x @ truth.conv_weights)
    conversion = click * (rng.random(n) < p_conv)
    mu = np.log(truth.revenue_mean[action]) - REVENUE_SIGMA**2 / 2
    revenue = conversion * np.round(rng.lognormal(mu, REVENUE_SIGMA), 2)
    frame = pd.DataFrame(x, columns=truth.user_feature_names)
    frame.insert(0, "user_id", user)
    frame.insert(0, "timestamp", START + pd.to_timedelta(t, unit="D"))
    frame["segment"] = np.char.add("s", seg.astype(str))
    frame["recent_pushes"] = recent
    frame["action"] = action
    frame["position"] = position
    frame["propensity"] = propensity
    frame["click"] = click
    frame["conversion"] = conversion
    frame["revenue"] = revenue
    return frame


SCHEMA = LogSchema(rewards=("click",), optional_rewards=("conversion", "revenue"))


def generate_log(config: SyntheticConfig | None = None) -> tuple[LoggedData, SyntheticTruth]:
    """A validated synthetic log and the truth that generated it."""
    config = config or SyntheticConfig()
    truth = make_truth(config)
    frame = simulate_rows(truth)
    catalogue = Catalogue.from_frame(catalogue_frame(truth), id_column="action")
    data = LoggedData.from_frame(frame, schema=SCHEMA, catalogue=catalogue, n_positions=config.n_positions,
                                 name=f"synthetic_{config.logging}_seed{config.seed}")
    return data.with_notes(f"synthetic log: {config}"), truth
