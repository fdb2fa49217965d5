"""How every report table writes a number: one precision, one way to show an interval."""

from __future__ import annotations

import math

DIGITS = 5
"""Significant digits of every number in the report."""


def fmt(x: float) -> str:
    """`x` to DIGITS significant digits; "n/a" when it is not finite."""
    x = float(x)
    return f"{x:.{DIGITS}g}" if math.isfinite(x) else "n/a"


def fmt_ci(value: float, low: float, high: float) -> str:
    """"value [low, high]"."""
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def pct(x: float) -> str:
    """A signed percentage with one decimal ("+3.2%"); "n/a" when it is not finite."""
    x = float(x)
    return f"{x:+.1%}" if math.isfinite(x) else "n/a"
