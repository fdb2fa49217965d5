"""Synthetic push logs from a known user-response model (ground truth for tests and scale).

The true model, per push of promotion a to a user with features x, segment s,
at display position p, after h pushes to that user in the last `fatigue_window_days`:

    logit P(click)  = base + xᵀ W z_a + b_a + segment_effect[s, a] - position_decay * p - fatigue * h
    P(conversion | click) = sigmoid(conv_base + xᵀ v + c_a)
    revenue | conversion  ~ LogNormal with mean revenue_mean[a]

(c_a = 0 unless `readable_promotions`.) Options that make the shop look like a real one:

* `no_push`: the last of the `n_actions` actions sends nothing: P(click) = 0 for it, and it does
  not count as a push in anyone's `recent_pushes` (so actions are drawn per user in time order).
* `organic_conversion` = k > 0: every row, push or not, also has an organic purchase (no click
  needed) with probability p_org = k * sigmoid(conv_base + xᵀ v), independent of the click path.
  conversion = (click and click-driven purchase) or organic purchase, so with
  q = P(click) * P(conversion | click):

      E[conversion] = q + (1 - q) p_org
      E[revenue]    = q revenue_mean[a] + (1 - q) p_org organic_revenue_mean

  (a purchase that is both click-driven and organic is one purchase, of the promotion's basket).
* `readable_promotions`: promotions get readable names, a discount, a category and a channel
  (email/push/sms; "none", discount 0 for the no-push action), the catalogue carries exactly those,
  and the truth uses them: channel shifts the click logit, the discount raises P(conversion | click)
  (c_a = CONV_PER_DISCOUNT * discount) and shrinks the basket (revenue_mean = basket * (1 - discount)).
* churn (`churn_logit` set): each push row draws `unsubscribe` ~ Bernoulli(sigmoid(churn_logit + churn_slope *
  recent_pushes + churn_context * x_0)) (0 for no-push rows and after the user's first one), from a stream of its
  own; a user's later rows leave the log (< `n_rows` rows) except for a share `keep_sending` of churned users (a shop
  that keeps sending: LoggedData warns). The truth by recent pushes r: `true_fatigue_multipliers`, `true_unsubscribe_*`.
* logging "business_rule": softmax, at `logging_temperature`, of a marketer's hand-made score
  (`rule_scores`: discount weighted by one user feature, a channel preference, a push-channel bonus for
  engaged users, and a hold-back bonus for the no-push action that grows with recent pushes); it is
  NOT the true click logit. "rule": the argmax of that score (deterministic, propensity 1).

Decisions are logged from the chosen logging policy (uniform, softmax over the true click logits,
ε-greedy, deterministic argmax, business_rule or rule) with exact propensities.
`SyntheticTruth` keeps every parameter, so any policy's true value is computable.
Default configurations draw exactly the logs they drew before these options existed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pushrl.envs.common.probabilities import sigmoid, softmax
from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.schema import LogSchema

LOGGING_POLICIES = ("uniform", "softmax", "epsilon_greedy", "deterministic", "business_rule", "rule")
RULE_LOGGING = ("business_rule", "rule")
START = pd.Timestamp("2026-01-01", tz="UTC")
REVENUE_SIGMA = 0.5
CHUNK = 250_000  # rows scored at a time: bounded (chunk, n_actions) memory

NO_PUSH_ID = "no_push"
NO_MESSAGE = "none"  # channel and category of the no-push action
CHANNELS = ("email", "push", "sms")
CATEGORY_NAMES = ("fashion", "electronics", "home", "beauty", "sports", "grocery", "books", "toys")
# promotion kind -> the discounts (percent) it is drawn from; kinds cycle over the actions
PROMOTION_KINDS = {"discount": (10, 15, 20), "clearance": (30, 40, 50), "bundle": (10, 15), "flash": (20, 25, 30),
                   "loyalty": (5, 10)}
# readable shops: the truth's use of the promotion features
CHANNEL_CLICK = {"email": 0.0, "push": 0.3, "sms": -0.2}  # added to the click logit
CONV_PER_DISCOUNT = 3.0  # logit P(conversion | click) += this * discount
BASKET_RANGE = (40.0, 140.0)  # pre-discount basket value, uniform
# the business rule (`rule_scores`): what a marketer would write, not the truth; at temperature 1
# its propensities run from about 0.03 (1% quantile) to 0.5 (99.9% quantile) on the example shop
RULE_DISCOUNT = 3.5  # score += RULE_DISCOUNT * discount * (1 + RULE_SENSITIVITY * x1)
RULE_SENSITIVITY = 0.35
RULE_CHANNEL = {"email": 0.3, "push": 0.0, "sms": -0.3}
RULE_ENGAGED_PUSH = 0.45  # score += this * x0 for push-channel promotions
RULE_HOLD_BACK = 0.4  # no-push score = RULE_HOLD_BACK + RULE_HOLD_PER_PUSH * recent_pushes
RULE_HOLD_PER_PUSH = 0.3


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and dynamics of a synthetic shop. Every field is validated."""

    n_rows: int = 20_000
    n_users: int = 2_000
    n_actions: int = 10  # every action, the no-push one included
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
    logging_temperature: float = 1.0  # softmax and business_rule temperature
    logging_epsilon: float = 0.1
    feature_driven: bool = False  # promotion bias and segment effects explained by promotion features (cold start)
    no_push: bool = False  # the last action sends nothing (click 0; organic purchases still happen)
    organic_conversion: float = 0.0  # scale of the per-row probability of a purchase without a click
    readable_promotions: bool = False  # named promotions with discount, category, channel in catalogue and truth
    churn_logit: float | None = None  # logit P(unsubscribe | push, no recent pushes, x_0 = 0); None: no unsubscribes
    churn_slope: float = 0.0  # added to that logit per recent push
    churn_context: float = 0.0  # added to that logit per unit of user feature u0
    keep_sending: float = 0.0  # share of unsubscribing users whose later rows stay in the log
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
        if not 0 <= self.organic_conversion <= 1:
            raise ValueError(f"SyntheticConfig.organic_conversion must be in [0, 1], got {self.organic_conversion}")
        if self.no_push and self.n_actions < 2:
            raise ValueError(f"SyntheticConfig.n_actions must be >= 2 with no_push (one promotion and no-push), "
                             f"got {self.n_actions}")
        churn = [f for f in ("churn_logit", "churn_slope", "churn_context") if getattr(self, f) is not None]
        bad = [f for f in churn if not np.isfinite(getattr(self, f))]
        bad += [f for f in ("churn_slope", "churn_context", "keep_sending") if self.churn_logit is None and getattr(self, f)]
        if bad:
            raise ValueError(f"SyntheticConfig.{bad[0]} must be finite and needs churn_logit set, got {getattr(self, bad[0])}")
        if not 0 <= self.keep_sending <= 1:
            raise ValueError(f"SyntheticConfig.keep_sending must be in [0, 1], got {self.keep_sending}")
        if self.logging in RULE_LOGGING and self.n_user_features < 2:
            raise ValueError(f"SyntheticConfig.n_user_features must be >= 2 for logging={self.logging!r} "
                             f"(the rule reads two user features), got {self.n_user_features}")


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
    action_discount: np.ndarray  # (n_actions,) in [0, 1); 0 for the no-push action
    action_channel: np.ndarray  # (n_actions,) str, one of CHANNELS or NO_MESSAGE
    action_names: np.ndarray  # (n_actions,) str, e.g. "clearance30_push", NO_PUSH_ID
    conv_action_bias: np.ndarray  # (n_actions,) c_a, added to logit P(conversion | click)
    organic_revenue_mean: float  # mean basket of an organic purchase
    user_ids: np.ndarray | None = None  # (n_users,) the log's id of each user (None: the index itself)

    @property
    def user_feature_names(self) -> list[str]:
        return [f"u{i}" for i in range(self.config.n_user_features)]

    @property
    def no_push_action(self) -> int | None:
        """Index of the action that sends nothing (None: every action pushes)."""
        return self.config.n_actions - 1 if self.config.no_push else None

    @property
    def action_ids(self) -> np.ndarray:
        """The log's promotion ids: readable names, or the indices 0..n_actions-1."""
        return self.action_names.copy() if self.config.readable_promotions else np.arange(self.config.n_actions)

    def click_logits(self, x: np.ndarray, segment: np.ndarray, recent: np.ndarray, position: np.ndarray) -> np.ndarray:
        """(n, n_actions) true click logits; -inf for the no-push action (it never clicks)."""
        c = self.config
        score = x @ self.interaction @ self.action_features.T + self.action_bias
        score = score + self.segment_effect[segment]
        offset = c.base_logit - c.position_decay * position - c.fatigue * recent
        score = score + offset[:, None]
        if self.no_push_action is not None:
            score[:, self.no_push_action] = -np.inf
        return score

    @property
    def has_churn(self) -> bool:
        """Whether the shop's pushes unsubscribe users (`churn_logit` is set)."""
        return self.config.churn_logit is not None

    def unsubscribe_probability(self, x: np.ndarray, recent: np.ndarray) -> np.ndarray:
        """(n,) true P(unsubscribe | a push) = sigmoid(churn_logit + churn_slope r + churn_context x_0); 0 without churn."""
        c = self.config
        if c.churn_logit is None:
            return np.zeros(len(x))
        return sigmoid(c.churn_logit + c.churn_slope * np.asarray(recent, dtype=np.float64) + c.churn_context * x[:, 0])

    def unsubscribe_probabilities(self, x: np.ndarray, recent: np.ndarray) -> np.ndarray:
        """(n, n_actions) true P(unsubscribe | pushed a): the same for every promotion, 0 for the no-push action."""
        p = np.repeat(self.unsubscribe_probability(x, recent)[:, None], self.config.n_actions, axis=1)
        p[:, np.setdiff1d(np.arange(self.config.n_actions), self.pushable)] = 0.0
        return p

    @property
    def pushable(self) -> np.ndarray:
        """Indices of the actions that send a message (all but the no-push action)."""
        return np.array([a for a in range(self.config.n_actions) if a != self.no_push_action], dtype=np.int64)

    def true_fatigue_multipliers(self, x: np.ndarray, segment: np.ndarray, window: int,
                                 weights: dict[str, float] | None = None) -> dict[int, float]:
        """{r: mean_{u,a} E[objective | push a after r recent pushes] / the same at r = 0} for r = 0..window,
        objective = Σ weights[reward] × reward (default click), over the users given and the pushable
        promotions, at display slot 0 (`pushrl.envs.sim.dynamics_summary`'s definition)."""
        weights, n = ({"click": 1.0} if weights is None else dict(weights)), len(x)
        q = [self.expected_all(x, segment, np.full(n, float(r)), np.zeros(n, dtype=np.int64), tuple(weights))
             for r in range(int(window) + 1)]
        gross = [float(sum(w * qr[k][:, self.pushable] for k, w in weights.items()).mean()) for qr in q]
        return {r: g / gross[0] for r, g in enumerate(gross)}

    def true_unsubscribe_probabilities(self, x: np.ndarray, window: int) -> dict[int, float]:
        """{r: mean_u P(unsubscribe | push after r recent pushes)} for r = 0..window over the users given."""
        return {r: float(self.unsubscribe_probability(x, np.full(len(x), float(r))).mean()) for r in range(int(window) + 1)}

    def conversion_given_click(self, x: np.ndarray) -> np.ndarray:
        """(n, n_actions) true P(conversion | click)."""
        base = self.config.conv_base + x @ self.conv_weights
        if not self.config.readable_promotions:
            return np.repeat(sigmoid(base)[:, None], self.config.n_actions, axis=1)
        return sigmoid(base[:, None] + self.conv_action_bias[None, :])

    def organic_probability(self, x: np.ndarray) -> np.ndarray:
        """(n,) true probability of a purchase without a click, whatever is pushed."""
        return self.config.organic_conversion * sigmoid(self.config.conv_base + x @ self.conv_weights)

    def expected_rewards(self, x: np.ndarray, segment: np.ndarray, recent: np.ndarray, position: np.ndarray,
                         reward: str = "click") -> np.ndarray:
        """(n, n_actions) true expected reward of each action."""
        return self.expected_all(x, segment, recent, position, (reward,))[reward]

    def expected_all(self, x: np.ndarray, segment: np.ndarray, recent: np.ndarray, position: np.ndarray,
                     rewards: tuple[str, ...] = ("click", "conversion", "revenue")) -> dict[str, np.ndarray]:
        """{reward: (n, n_actions)} true expected rewards, sharing one logit computation (closed forms above)."""
        unknown = set(rewards) - {"click", "conversion", "revenue"}
        if unknown:
            raise ValueError(f"reward must be 'click', 'conversion' or 'revenue', got {sorted(unknown)}")
        p_click = sigmoid(self.click_logits(x, segment, recent, position))
        out = {"click": p_click}
        if "conversion" in rewards or "revenue" in rewards:
            if self.config.readable_promotions:
                driven = p_click * self.conversion_given_click(x)
            else:  # the original expression, kept so default shops give identical floats
                driven = p_click * sigmoid(self.config.conv_base + x @ self.conv_weights)[:, None]
            out["conversion"] = driven
            out["revenue"] = driven * self.revenue_mean[None, :]
            if self.config.organic_conversion > 0:
                organic = (1.0 - driven) * self.organic_probability(x)[:, None]
                out["conversion"] = driven + organic
                out["revenue"] = out["revenue"] + organic * self.organic_revenue_mean
        return {r: out[r] for r in rewards}

    def user_index(self, ids: np.ndarray) -> np.ndarray:
        """The truth's user index of each logged user id; refuses ids it does not know."""
        if self.user_ids is None:
            try:
                index = np.asarray(ids).astype(np.int64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"user_id must be the truth's integer user index, got {np.asarray(ids)[:3]!r}") from exc
            bad = (index < 0) | (index >= self.config.n_users)
        else:
            index = pd.Index(self.user_ids).get_indexer(pd.Index(ids))
            bad = index < 0
        if bad.any():
            raise ValueError(f"user_id {np.asarray(ids)[bad][0]!r} (row {int(np.flatnonzero(bad)[0])}) is not one of "
                             f"the truth's {self.config.n_users} users")
        return index

    def row_inputs(self, data: LoggedData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, segment, recent_pushes, position) of each logged row.

        The latent columns u0.. and `segment` are read when the log has them, else each row's
        `user_id` is looked up (a log with readable user columns only, like the example log)."""
        f = data.frame
        if "recent_pushes" not in f:
            raise ValueError("row_inputs needs the log column 'recent_pushes'")
        if all(c in f for c in self.user_feature_names) and "segment" in f:
            x = f[self.user_feature_names].to_numpy(dtype=np.float64)
            seg = f["segment"].str.slice(1).astype(int).to_numpy()
        elif "user_id" in f:
            users = self.user_index(f["user_id"].to_numpy())
            x, seg = self.user_features[users], self.user_segment[users]
        else:
            raise ValueError(f"row_inputs needs the log columns {self.user_feature_names} and 'segment', or 'user_id'")
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

    def rule_scores(self, x: np.ndarray, recent: np.ndarray) -> np.ndarray:
        """(n, n_actions) the business rule's score: discount x sensitivity (user feature 1), channel
        preference, a push bonus for engaged users (feature 0), and a hold-back score for no-push."""
        d = self.action_discount[None, :]
        score = RULE_DISCOUNT * d * (1.0 + RULE_SENSITIVITY * x[:, 1:2])
        score = score + np.array([RULE_CHANNEL.get(ch, 0.0) for ch in self.action_channel])[None, :]
        score = score + RULE_ENGAGED_PUSH * x[:, :1] * (self.action_channel == "push")[None, :]
        if self.no_push_action is not None:
            score[:, self.no_push_action] = RULE_HOLD_BACK + RULE_HOLD_PER_PUSH * recent
        return score

    def logging_probabilities(self, x: np.ndarray, segment: np.ndarray, recent: np.ndarray, position: np.ndarray) -> np.ndarray:
        """(n, n_actions) the logging policy's action probabilities."""
        c = self.config
        n, a = x.shape[0], c.n_actions
        if c.logging == "uniform":
            return np.full((n, a), 1.0 / a)
        if c.logging in RULE_LOGGING:
            scores = self.rule_scores(x, recent)
            if c.logging == "business_rule":
                return softmax(scores / c.logging_temperature)
            return _one_hot(scores.argmax(axis=1), a)
        logits = self.click_logits(x, segment, recent, position)
        if c.logging == "softmax":
            return softmax(logits / c.logging_temperature)
        greedy = _one_hot(logits.argmax(axis=1), a)
        if c.logging == "deterministic":
            return greedy
        return (1 - c.logging_epsilon) * greedy + c.logging_epsilon / a


def _one_hot(index: np.ndarray, n_actions: int) -> np.ndarray:
    return np.eye(n_actions)[index]


def _latent_parameters(config: SyntheticConfig) -> dict[str, np.ndarray]:
    """The response parameters, drawn in the generator's original order (so old seeds give old shops)."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    du, da, a = config.n_user_features, config.n_action_features, config.n_actions
    p: dict[str, np.ndarray] = {}
    if config.feature_driven:  # every promotion effect is a function of its features: new ones are predictable
        p["action_features"] = z = rng.normal(size=(a, da))
    p["user_features"] = rng.normal(size=(config.n_users, du))
    p["user_segment"] = rng.integers(0, config.n_segments, size=config.n_users)
    if not config.feature_driven:
        p["action_features"] = rng.normal(size=(a, da))
    p["action_category"] = np.arange(a) % config.n_categories
    p["interaction"] = rng.normal(scale=config.interaction_scale / np.sqrt(da), size=(du, da))
    if config.feature_driven:
        p["action_bias"] = z @ rng.normal(scale=0.5 / np.sqrt(da), size=da)
        p["segment_effect"] = rng.normal(scale=0.5 / np.sqrt(da), size=(config.n_segments, da)) @ z.T
    else:
        p["action_bias"] = rng.normal(scale=0.5, size=a)
        p["segment_effect"] = rng.normal(scale=0.5, size=(config.n_segments, a))
    p["conv_weights"] = rng.normal(scale=0.5, size=du)
    p["revenue_mean"] = rng.uniform(20.0, 120.0, size=a)
    return p


def _promotion_names(kinds: list[str], discount: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """'{kind}{percent}_{channel}', made unique with a numeric suffix where two coincide."""
    names: list[str] = []
    for kind, d, ch in zip(kinds, discount, channel, strict=True):
        base = f"{kind}{round(100 * d)}_{ch}"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return np.array(names, dtype=object)


def _promotion_attributes(config: SyntheticConfig, p: dict[str, np.ndarray]) -> dict[str, object]:
    """Discount, channel and name of each promotion (a stream of their own), and the readable shop's truth."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 3]))
    a = config.n_actions
    kinds = [list(PROMOTION_KINDS)[i % len(PROMOTION_KINDS)] for i in range(a)]
    discount = np.array([rng.choice(PROMOTION_KINDS[k]) / 100.0 for k in kinds])
    channel = np.array([CHANNELS[i % len(CHANNELS)] for i in range(a)], dtype=object)
    basket = rng.uniform(*BASKET_RANGE, size=a)
    conv_action_bias = np.zeros(a)
    if config.readable_promotions:
        p["action_bias"] = p["action_bias"] + np.array([CHANNEL_CLICK[ch] for ch in channel])
        conv_action_bias = CONV_PER_DISCOUNT * discount
        p["revenue_mean"] = basket * (1.0 - discount)
    promotions = slice(0, a - 1) if config.no_push else slice(0, a)
    organic_revenue = float(np.mean(p["revenue_mean"][promotions]))
    if config.no_push:  # the no-push action: no message, no effect, no discount
        k = a - 1
        p["action_features"][k] = 0.0
        p["action_bias"][k] = 0.0
        p["segment_effect"][:, k] = 0.0
        p["revenue_mean"][k] = organic_revenue
        discount[k], channel[k], conv_action_bias[k] = 0.0, NO_MESSAGE, 0.0
    names = _promotion_names(kinds, discount, channel)
    if config.no_push:
        names[a - 1] = NO_PUSH_ID
    return {"action_discount": discount, "action_channel": channel, "action_names": names,
            "conv_action_bias": conv_action_bias, "organic_revenue_mean": organic_revenue}


def make_truth(config: SyntheticConfig) -> SyntheticTruth:
    """Draw the true model's parameters from the config's seed."""
    p = _latent_parameters(config)
    extra = _promotion_attributes(config, p)
    return SyntheticTruth(config=config, **p, **extra)


def recent_push_counts(user: np.ndarray, time_days: np.ndarray, window_days: float) -> np.ndarray:
    """For each push, how many earlier pushes the same user got within `window_days` (vectorised)."""
    order = np.lexsort((time_days, user))
    counts_sorted = np.arange(len(order)) - _window_starts(user, time_days, window_days, order)
    counts = np.empty_like(counts_sorted)
    counts[order] = counts_sorted
    return counts


def _window_starts(user: np.ndarray, time_days: np.ndarray, window_days: float, order: np.ndarray) -> np.ndarray:
    """In (user, time) order: the position of the first of the same user's rows within the window."""
    span = float(time_days.max() - time_days.min()) + window_days + 1.0
    key = user[order].astype(np.float64) * span + (time_days[order] - time_days.min())
    return np.searchsorted(key, key - window_days, side="left")


def catalogue_frame(truth: SyntheticTruth) -> pd.DataFrame:
    """The promotion catalogue. Readable shops: action (name), discount, category, channel; otherwise
    action (index), numeric features f0.., categorical `category`. The no-push row says "no message"
    (discount 0, category and channel "none"; latent features 0)."""
    c = truth.config
    categories = np.array([CATEGORY_NAMES[k] if c.n_categories <= len(CATEGORY_NAMES) else f"c{k}"
                           for k in truth.action_category], dtype=object)
    if c.readable_promotions:
        if truth.no_push_action is not None:
            categories[truth.no_push_action] = NO_MESSAGE
        return pd.DataFrame({"action": truth.action_ids, "discount": truth.action_discount,
                             "category": categories, "channel": truth.action_channel})
    frame = pd.DataFrame(truth.action_features, columns=[f"f{i}" for i in range(truth.action_features.shape[1])])
    frame.insert(0, "action", np.arange(c.n_actions))
    frame["category"] = [f"c{k}" for k in truth.action_category]
    if truth.no_push_action is not None:
        frame.loc[truth.no_push_action, "category"] = NO_MESSAGE
    return frame


def _choose(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw of one action per row from (n, A) probabilities and (n, 1) uniforms."""
    return np.minimum((u >= np.cumsum(probs, axis=1)).sum(axis=1), probs.shape[1] - 1)


def _draw_actions(truth: SyntheticTruth, rng: np.random.Generator, x, seg, recent, position) -> tuple[np.ndarray, np.ndarray]:
    """Actions and propensities, chunk by chunk in row order (every action is a push)."""
    n = len(x)
    action = np.empty(n, dtype=np.int64)
    propensity = np.empty(n)
    for lo in range(0, n, CHUNK):
        sl = slice(lo, min(lo + CHUNK, n))
        probs = truth.logging_probabilities(x[sl], seg[sl], recent[sl], position[sl])
        chosen = _choose(probs, rng.random((probs.shape[0], 1)))
        action[sl] = chosen
        propensity[sl] = probs[np.arange(len(chosen)), chosen]
    return action, propensity


def _draw_actions_in_time(truth: SyntheticTruth, rng: np.random.Generator, user, t, x, seg, position
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Actions, propensities and recent_pushes when no-push decisions send nothing.

    A row's recent_pushes counts the same user's earlier rows in the window whose action was a
    push, so the k-th decision of every user is drawn together, after the (k-1)-th."""
    c = truth.config
    n = len(user)
    u = rng.random(n)
    order = np.lexsort((t, user))
    starts = _window_starts(user, t, c.fatigue_window_days, order)
    sorted_user = user[order]
    first = np.r_[True, sorted_user[1:] != sorted_user[:-1]]
    rank = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    pushes_before = np.zeros(n)  # in sorted order: the user's pushes in earlier rows
    is_push = np.zeros(n)
    recent_sorted = np.zeros(n)
    action, propensity, recent = np.empty(n, dtype=np.int64), np.empty(n), np.empty(n)
    by_rank = np.argsort(rank, kind="stable")
    for rows in np.split(by_rank, np.cumsum(np.bincount(rank))[:-1]):
        later = rows[rank[rows] > 0]
        pushes_before[later] = pushes_before[later - 1] + is_push[later - 1]
        recent_sorted[rows] = pushes_before[rows] - pushes_before[starts[rows]]
        src = order[rows]
        probs = truth.logging_probabilities(x[src], seg[src], recent_sorted[rows], position[src])
        chosen = _choose(probs, u[src, None])
        action[src], propensity[src], recent[src] = chosen, probs[np.arange(len(rows)), chosen], recent_sorted[rows]
        is_push[rows] = chosen != truth.no_push_action
    return action, propensity, recent


def _click_probability(truth: SyntheticTruth, x, seg, recent, position, action) -> np.ndarray:
    """(n,) true P(click) of each row's action, chunk by chunk."""
    out = np.empty(len(x))
    for lo in range(0, len(x), CHUNK):
        sl = slice(lo, min(lo + CHUNK, len(x)))
        logits = truth.click_logits(x[sl], seg[sl], recent[sl], position[sl])
        out[sl] = sigmoid(logits[np.arange(logits.shape[0]), action[sl]])
    return out


def _draw_outcomes(truth: SyntheticTruth, rng: np.random.Generator, x, action, p_click
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """click, conversion, revenue per row (the model in the module docstring)."""
    c, n = truth.config, len(x)
    click = (rng.random(n) < p_click).astype(np.float64)
    if c.readable_promotions:
        p_conv = sigmoid(c.conv_base + x @ truth.conv_weights + truth.conv_action_bias[action])
    else:
        p_conv = sigmoid(c.conv_base + x @ truth.conv_weights)
    conversion = click * (rng.random(n) < p_conv)
    mu = np.log(truth.revenue_mean[action]) - REVENUE_SIGMA**2 / 2
    revenue = conversion * np.round(rng.lognormal(mu, REVENUE_SIGMA), 2)
    if c.organic_conversion > 0:  # drawn after the click path, so it leaves the click-path draws as they were
        organic = rng.random(n) < truth.organic_probability(x)
        mu_org = np.log(truth.organic_revenue_mean) - REVENUE_SIGMA**2 / 2
        organic_revenue = np.round(rng.lognormal(mu_org, REVENUE_SIGMA, size=n), 2)
        revenue = np.where(conversion > 0, revenue, np.where(organic, organic_revenue, 0.0))
        conversion = np.maximum(conversion, organic.astype(np.float64))
    return click, conversion, revenue


def _draw_unsubscribes(truth: SyntheticTruth, seed_offset: int, user: np.ndarray, t: np.ndarray, x: np.ndarray,
                       recent: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unsubscribe 0/1, rows kept) per row: each push row before the user's first unsubscribe unsubscribes with
    the truth's probability; rows after it are dropped unless the user is one the shop keeps sending to."""
    c, rng = truth.config, np.random.default_rng(np.random.SeedSequence([truth.config.seed, 4, seed_offset]))
    push = action != truth.no_push_action  # no_push_action None: every row is a push
    unsub, first = push & (rng.random(len(user)) < truth.unsubscribe_probability(x, recent)), np.full(c.n_users, np.inf)
    np.minimum.at(first, user[unsub], t[unsub])
    after = t > first[user]
    unsub &= ~after  # an unsubscribed user cannot unsubscribe again
    return unsub.astype(np.float64), ~after | (rng.random(c.n_users) < c.keep_sending)[user]


def simulate_rows(truth: SyntheticTruth, seed_offset: int = 0) -> pd.DataFrame:
    """Draw the raw log table (one row per push decision) from the truth and its logging policy."""
    c = truth.config
    rng = np.random.default_rng(np.random.SeedSequence([c.seed, 2, seed_offset]))
    n = c.n_rows
    user = rng.integers(0, c.n_users, size=n)
    t = np.sort(rng.uniform(0.0, c.days, size=n))
    position = rng.integers(0, c.n_positions, size=n)
    x = truth.user_features[user]
    seg = truth.user_segment[user]
    if truth.no_push_action is None:
        recent = recent_push_counts(user, t, c.fatigue_window_days).astype(np.float64)
        action, propensity = _draw_actions(truth, rng, x, seg, recent, position)
    else:
        action, propensity, recent = _draw_actions_in_time(truth, rng, user, t, x, seg, position)
    p_click = _click_probability(truth, x, seg, recent, position, action)
    click, conversion, revenue = _draw_outcomes(truth, rng, x, action, p_click)
    frame = pd.DataFrame(x, columns=truth.user_feature_names)
    frame.insert(0, "user_id", user)
    frame.insert(0, "timestamp", START + pd.to_timedelta(t, unit="D"))
    frame["segment"] = np.char.add("s", seg.astype(str))
    frame["recent_pushes"] = recent
    frame["action"] = truth.action_ids[action]
    frame["position"] = position
    frame["propensity"] = propensity
    frame["click"] = click
    frame["conversion"] = conversion
    frame["revenue"] = revenue
    if truth.has_churn:
        unsub, kept = _draw_unsubscribes(truth, seed_offset, user, t, x, recent, action)
        frame["unsubscribe"] = unsub
        frame = frame[kept].reset_index(drop=True)
    return frame


SCHEMA = LogSchema(rewards=("click",), optional_rewards=("conversion", "revenue"))


def generate_log(config: SyntheticConfig | None = None) -> tuple[LoggedData, SyntheticTruth]:
    """A validated synthetic log and the truth that generated it."""
    config = config or SyntheticConfig()
    truth = make_truth(config)
    frame = simulate_rows(truth)
    catalogue = Catalogue.from_frame(catalogue_frame(truth), id_column="action")
    # the unsubscribe check tells pushes from no-pushes
    no_push = truth.action_ids[truth.no_push_action] if truth.has_churn and truth.no_push_action is not None else None
    data = LoggedData.from_frame(frame, schema=dataclasses.replace(SCHEMA, no_push_action=no_push), catalogue=catalogue,
                                 n_positions=config.n_positions, name=f"synthetic_{config.logging}_seed{config.seed}")
    return data.with_notes(f"synthetic log: {config}"), truth
