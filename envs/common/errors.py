"""The one error type for bad logged data: it names the column, the rows and what was expected."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_ROWS_SHOWN = 5


class LoggedDataError(ValueError):
    """Logged data (or a catalogue) failed validation.

    Attributes:
        column: the offending column (None for file-level problems).
        rows: the first offending row numbers (0-based data rows, header excluded).
        n_bad: how many rows are affected in total.
        expected: what a valid value looks like.
        source: the file (or "<frame>") the data came from.
    """

    def __init__(
        self,
        problem: str,
        *,
        column: str | None = None,
        rows: Sequence[int] | np.ndarray | None = None,
        expected: str | None = None,
        source: str | None = None,
    ) -> None:
        all_rows = [int(r) for r in (rows if rows is not None else [])]
        self.column = column
        self.n_bad = len(all_rows)
        self.rows = all_rows[:MAX_ROWS_SHOWN]
        self.expected = expected
        self.source = source
        self.problem = problem
        where = f"{source}: " if source else ""
        where += f"column '{column}': " if column is not None else ""
        message = where + problem
        if all_rows:
            more = f" and {self.n_bad - len(self.rows)} more" if self.n_bad > len(self.rows) else ""
            message += f" at rows {self.rows}{more} (0-based data rows)"
        if expected:
            message += f"; expected {expected}"
        super().__init__(message)


def show(value: object) -> str:
    """repr() of a value as a user wrote it (numpy scalars shown as plain Python numbers)."""
    item = getattr(value, "item", None)
    return repr(item() if callable(item) else value)
