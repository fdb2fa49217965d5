"""ObservationLayout: which columns of a push-env observation hold what (the env's own layout).

Observation (float32, width d + 5 + C, d = context width, C = number of categories):
    context          [0:d]         the user's encoded context
    recent_pushes    [d]           pushes in the last `fatigue_window` days
    days_since_push  [d+1]         days since the last push / horizon, capped at 1 (1 = never or long ago)
    response_rate    [d+2]         recent response rate of the pushed items (decayed outcomes / decayed items)
    category_pushes  [d+3:d+3+C]   decayed push count per promotion category
    cap_hit          [d+3+C]       1 if the frequency cap is hit (a push today would be refused), else 0
    day              [d+4+C]       days elapsed in the user's episode / horizon, capped at 1 (0 on a new user's
                                   first day, (H-1)/H on the last day of an H-day episode)
`history` (recent_pushes .. cap_hit) groups the user's push-history summary; `day` is the clock, not history. Nothing outside the env indexes an
observation by number: read a field with `obs[:, layout.recent_pushes]` (a column, so (n,)) or
`obs[:, layout.category_pushes]` ((n, C)); `slices()` gives every field as a slice, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

FIELDS = ("context", "recent_pushes", "days_since_push", "response_rate", "category_pushes", "cap_hit", "day")
"""The observation's fields, in column order."""


@dataclass(frozen=True)
class ObservationLayout:
    """Columns of the observation of a push env with `context_width` context columns and `n_categories`."""

    context_width: int
    n_categories: int

    def __post_init__(self) -> None:
        for name, low in (("context_width", 0), ("n_categories", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"ObservationLayout.{name} must be an integer >= {low}, got {v!r}")

    @property
    def context(self) -> slice:
        """The user's encoded context."""
        return slice(0, self.context_width)

    @property
    def recent_pushes(self) -> int:
        """Pushes in the last fatigue_window days."""
        return self.context_width

    @property
    def days_since_push(self) -> int:
        """Days since the last push / horizon, capped at 1."""
        return self.context_width + 1

    @property
    def response_rate(self) -> int:
        """Decayed pushed outcomes of the response reward / decayed pushed items."""
        return self.context_width + 2

    @property
    def category_pushes(self) -> slice:
        """Decayed push count per promotion category (column j: category j)."""
        start = self.context_width + 3
        return slice(start, start + self.n_categories)

    @property
    def cap_hit(self) -> int:
        """1 if the frequency cap is hit, else 0."""
        return self.context_width + 3 + self.n_categories

    @property
    def day(self) -> int:
        """Days elapsed in the user's episode / horizon, capped at 1."""
        return self.context_width + 4 + self.n_categories

    @property
    def history(self) -> slice:
        """The user's push-history summary: recent_pushes .. cap_hit (the columns between the context and day)."""
        return slice(self.context_width, self.day)

    @property
    def width(self) -> int:
        """Number of observation columns."""
        return self.context_width + 5 + self.n_categories

    def slices(self) -> dict[str, slice]:
        """Field name -> its columns as a slice, in column order (they tile [0, width))."""
        out = {}
        for name in FIELDS:
            where = getattr(self, name)
            out[name] = where if isinstance(where, slice) else slice(where, where + 1)
        return out

    def names(self) -> list[str]:
        """A name for each observation column, in order (export and serving use them)."""
        return ([f"context_{i}" for i in range(self.context_width)]
                + ["recent_pushes", "days_since_push", "response_rate"]
                + [f"category_{c}_pushes" for c in range(self.n_categories)] + ["cap_hit", "day"])
