"""Which column of a log plays which role.

A log is one row per push decision. Required: the action (promotion id) and
the reward columns. Optional: timestamp, user_id, position, propensity and any
further reward columns. The context features are the columns of `features`
when it is given (an allow-list), otherwise every column without a role that
is not in `exclude`; numeric or categorical, inferred from the column's type
unless listed in `numeric_features` / `categorical_features`.

`exclude` names columns to ignore entirely: never a feature, never validated.
Excluding an optional role's column (an optional reward, the propensity,
timestamp, user id, position or unsubscribe) turns that role off, as if it were absent.

`unsubscribe` is an outcome, not a reward: a 0/1 column (1 = the user unsubscribed after that
push), modelled by the response model's unsubscribe head and never part of an objective.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Rewards that must be 0/1, and rewards that must be >= 0, whatever the log.
BINARY_REWARDS = ("click", "conversion", "visit")
NONNEGATIVE_REWARDS = ("revenue", "spend")


def _names(value: object, what: str) -> tuple[str, ...]:
    """A tuple of column names from any sequence (a list from a config, a tuple); a lone string is refused."""
    if isinstance(value, str):
        raise ValueError(f"LogSchema.{what} must be a list of column names, got the string {value!r}; "
                         f"write [{value}]")
    names = tuple(value)  # type: ignore[arg-type]
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ValueError(f"LogSchema.{what} must hold column names (strings), got {bad[0]!r}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"LogSchema.{what} lists {twice} more than once")
    return names


@dataclass(frozen=True)
class LogSchema:
    """Column roles of a log file.

    Attributes:
        action: promotion id column (must match the catalogue's ids).
        rewards: reward columns that must be present; the first is the primary reward.
        optional_rewards: reward columns used when present.
        propensity: logging policy's probability of the logged action (at that
            position); may be absent from the file, never partly missing.
        timestamp, user_id, position: optional columns (None: never used).
        unsubscribe: optional 0/1 outcome column (1: the user unsubscribed at that decision); not a reward.
        no_push_action: the action id that means "push nothing" (None: every row is a push); only tells
            pushes from non-pushes in the unsubscribe check (`pushrl.envs.data.validation.pushes_after_unsubscribe`).
        numeric_features, categorical_features: context columns; None infers from
            the remaining columns (numbers are numeric, anything else categorical).
            With `features` given, or with only `categorical_features` given, they only fix
            the type of the columns listed (e.g. integer-coded store ids as categories).
        features: allow-list of context columns (None: every column without a role,
            as above); each must be a column of the file.
        exclude: columns to ignore entirely; each must be a column of the file.
    """

    action: str = "action"
    rewards: tuple[str, ...] = ("click",)
    optional_rewards: tuple[str, ...] = ("conversion", "revenue")
    propensity: str | None = "propensity"
    timestamp: str | None = "timestamp"
    user_id: str | None = "user_id"
    position: str | None = "position"
    unsubscribe: str | None = "unsubscribe"
    numeric_features: tuple[str, ...] | None = None
    categorical_features: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = field(default_factory=tuple)
    features: tuple[str, ...] | None = None
    no_push_action: object | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise lists (e.g. from a config) to tuples once
        set_(self, "rewards", _names(self.rewards, "rewards"))
        set_(self, "optional_rewards", _names(self.optional_rewards, "optional_rewards"))
        set_(self, "exclude", _names(self.exclude, "exclude"))
        for name in ("features", "numeric_features", "categorical_features"):
            if getattr(self, name) is not None:
                set_(self, name, _names(getattr(self, name), name))
        if not self.rewards:
            raise ValueError("LogSchema.rewards must name at least one reward column")
        roles = [self.action, *self.rewards, *self.optional_rewards]
        roles += [c for c in self._optional_roles if c]
        dup = sorted({c for c in roles if roles.count(c) > 1})
        if dup:
            hint = ("; unsubscribe is an outcome, not a reward: drop it from the rewards, or set "
                    "data.unsubscribe=null to keep it a reward") if self.unsubscribe in dup else ""
            raise ValueError(f"LogSchema gives one column several roles: {dup}{hint}")
        required = {self.action: "the action column (data.action)", **{r: "a required reward (data.rewards)"
                                                                        for r in self.rewards}}
        for col in self.exclude:
            if col in required:
                raise ValueError(f"column '{col}' is both excluded (data.exclude) and {required[col]}; "
                                 "remove it from one of them")
        self._refuse_feature_clashes(set(roles))

    def _refuse_feature_clashes(self, roles: set[str]) -> None:
        """A column listed as a feature may not also have a role or be excluded."""
        listed = [*(self.features or ()), *(self.numeric_features or ()), *(self.categorical_features or ())]
        both = sorted(set(self.numeric_features or ()) & set(self.categorical_features or ()))
        if both:
            raise ValueError(f"column '{both[0]}' is listed as both a numeric and a categorical feature")
        for col in listed:
            if col in set(self.exclude):
                raise ValueError(f"column '{col}' is both a feature (data.features) and excluded (data.exclude); "
                                 "remove it from one of them")
            if col in roles:
                raise ValueError(f"column '{col}' is both a feature (data.features) and a declared role "
                                 f"({self._role_of(col)}); a column has one role")

    @property
    def _optional_roles(self) -> tuple[str | None, ...]:
        return (self.propensity, self.timestamp, self.user_id, self.position, self.unsubscribe)

    def _role_of(self, col: str) -> str:
        for key in ("action", "propensity", "timestamp", "user_id", "position", "unsubscribe"):
            if getattr(self, key) == col:
                return f"data.{key}"
        return "data.rewards" if col in self.rewards else "data.optional_rewards"

    def used(self, col: str | None) -> str | None:
        """An optional role's column, or None when that role is off or its column is excluded."""
        return None if col is None or col in self.exclude else col

    @property
    def used_optional_rewards(self) -> tuple[str, ...]:
        """The optional rewards that are not excluded."""
        return tuple(r for r in self.optional_rewards if r not in self.exclude)

    @property
    def role_columns(self) -> tuple[str, ...]:
        """Every column with a role other than 'feature' (excluded columns included)."""
        cols = [self.action, *self.rewards, *self.optional_rewards]
        cols += [c for c in self._optional_roles if c]
        return tuple(cols) + tuple(c for c in self.exclude if c not in cols)
