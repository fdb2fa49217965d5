"""Which column of a log plays which role.

A log is one row per push decision. Required: the action (promotion id) and
the reward columns. Optional: timestamp, user_id, position, propensity and any
further reward columns. Every other column is a context feature, numeric or
categorical (inferred from its type unless listed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Rewards that must be 0/1, and rewards that must be >= 0, whatever the log.
BINARY_REWARDS = ("click", "conversion", "visit")
NONNEGATIVE_REWARDS = ("revenue", "spend")


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
        numeric_features, categorical_features: context columns; None infers from
            the remaining columns (numbers are numeric, anything else categorical).
        exclude: columns to ignore entirely.
    """

    action: str = "action"
    rewards: tuple[str, ...] = ("click",)
    optional_rewards: tuple[str, ...] = ("conversion", "revenue")
    propensity: str | None = "propensity"
    timestamp: str | None = "timestamp"
    user_id: str | None = "user_id"
    position: str | None = "position"
    numeric_features: tuple[str, ...] | None = None
    categorical_features: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.rewards:
            raise ValueError("LogSchema.rewards must name at least one reward column")
        roles = [self.action, *self.rewards, *self.optional_rewards]
        roles += [c for c in (self.propensity, self.timestamp, self.user_id, self.position) if c]
        dup = sorted({c for c in roles if roles.count(c) > 1})
        if dup:
            raise ValueError(f"LogSchema gives one column several roles: {dup}")

    @property
    def role_columns(self) -> tuple[str, ...]:
        """Every column with a role other than 'feature'."""
        cols = [self.action, *self.rewards, *self.optional_rewards]
        cols += [c for c in (self.propensity, self.timestamp, self.user_id, self.position) if c]
        return tuple(cols) + tuple(self.exclude)
