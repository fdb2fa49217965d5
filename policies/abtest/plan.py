"""Plan an online A/B test of a candidate policy against control: users, days, MDE, power.

Two tests, the same ones `simulate` runs:

- binary rewards (click, conversion): the two-proportion z-test with pooled
  variance under H0 and unpooled variance under H1 (``method="normal"``, the
  formula of statsmodels' ``power_proportions_2indep``), or Cohen's arcsine
  effect size h (``method="arcsine"``, what statsmodels' ``NormalIndPower`` with
  ``proportion_effectsize`` computes);
- continuous rewards (spend, profit): Welch's t-test, power from the noncentral
  t with Welch–Satterthwaite degrees of freedom (equal to Student's t-test's
  when the arms have equal size and sd).

Conventions: ``lift`` is relative (0.10 means treatment's rate or mean is 10 %
above control's); ``allocation`` is the share of traffic sent to treatment;
``traffic_per_day`` counts users entering the experiment per day, both arms.
Sample sizes are solved exactly (Brent's method on the power, both tails
counted for two-sided tests) and rounded up per arm.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import brentq
from scipy.stats import nct, norm
from scipy.stats import t as student_t

from pushrl.policies.abtest.sequential import ALTERNATIVES, Alternative

PROPORTION_METHODS = ("normal", "arcsine")
_MIN_USERS = 2.0


def _check_open_unit(name: str, value: float, what: str = "") -> None:
    if not isinstance(value, int | float | np.floating) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1){what}, got {value!r}")


def _check_positive(name: str, value: float) -> None:
    if not isinstance(value, int | float | np.floating) or not value > 0.0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_common(
    lift: float, alpha: float, power: float, allocation: float, alternative: str, direction: float = 1.0
) -> None:
    _check_open_unit("alpha", alpha)
    _check_open_unit("power", power)
    _check_open_unit("allocation", allocation, " (share of traffic to treatment)")
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    if not power > alpha:
        raise ValueError(f"power must exceed alpha, got power={power!r} <= alpha={alpha!r}")
    if not isinstance(lift, int | float | np.floating) or not math.isfinite(lift) or lift == 0.0:
        raise ValueError(f"lift must be a non-zero relative lift (0.10 = +10 %), got {lift!r}")
    effect = lift * direction  # sign of treatment minus control
    if (alternative == "larger" and effect < 0) or (alternative == "smaller" and effect > 0):
        raise ValueError(f"lift={lift!r} makes treatment {'lower' if effect < 0 else 'higher'} than control, "
                         f"against alternative={alternative!r}")


def _z_power(delta: Any, se0: Any, se1: Any, alpha: float, alternative: str) -> Any:
    """P(reject) for a z-test of diff / se0 when diff ~ N(delta, se1²)."""
    if alternative == "two-sided":
        c = norm.isf(alpha / 2.0) * se0
        return norm.sf((c - delta) / se1) + norm.cdf((-c - delta) / se1)
    c = norm.isf(alpha) * se0
    return norm.sf((c - delta) / se1) if alternative == "larger" else norm.cdf((-c - delta) / se1)


def proportion_power(
    control_rate: float, lift: float, n_control: Any, n_treatment: Any, *,
    alpha: float = 0.05, alternative: Alternative = "two-sided", method: str = "normal",
) -> Any:
    """Power of the two-proportion z-test; n_control / n_treatment may be arrays (broadcast)."""
    if method not in PROPORTION_METHODS:
        raise ValueError(f"method must be one of {PROPORTION_METHODS}, got {method!r}")
    p0 = control_rate
    p1 = p0 * (1.0 + lift)
    nc, nt = np.asarray(n_control, float), np.asarray(n_treatment, float)
    if method == "arcsine":
        se = np.sqrt(1.0 / nc + 1.0 / nt)
        return _z_power(2.0 * (np.arcsin(np.sqrt(p1)) - np.arcsin(np.sqrt(p0))), se, se, alpha, alternative)
    pooled = (nc * p0 + nt * p1) / (nc + nt)
    se0 = np.sqrt(pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / nt))
    se1 = np.sqrt(p0 * (1.0 - p0) / nc + p1 * (1.0 - p1) / nt)
    return _z_power(p1 - p0, se0, se1, alpha, alternative)


def mean_power(
    control_mean: float, control_sd: float, lift: float, n_control: Any, n_treatment: Any, *,
    treatment_sd: float | None = None, alpha: float = 0.05, alternative: Alternative = "two-sided",
) -> Any:
    """Power of Welch's t-test (noncentral t, Welch–Satterthwaite df); arrays broadcast."""
    sd_t = control_sd if treatment_sd is None else treatment_sd
    nc, nt = np.asarray(n_control, float), np.asarray(n_treatment, float)
    vc, vt = control_sd**2 / nc, sd_t**2 / nt
    df = (vc + vt) ** 2 / (vc**2 / (nc - 1.0) + vt**2 / (nt - 1.0))
    ncp = control_mean * lift / np.sqrt(vc + vt)
    if alternative == "two-sided":
        crit = student_t.isf(alpha / 2.0, df)
        return nct.sf(crit, df, ncp) + nct.cdf(-crit, df, ncp)
    crit = student_t.isf(alpha, df)
    return nct.sf(crit, df, ncp) if alternative == "larger" else nct.cdf(-crit, df, ncp)


@dataclass(frozen=True)
class PlanInputs:
    """What a plan was computed from (rates, means and sds are control's unless named)."""

    metric: Literal["proportion", "mean"]
    control_value: float
    lift: float
    alpha: float
    power: float
    allocation: float
    alternative: str
    method: str
    traffic_per_day: float | None = None
    control_sd: float | None = None
    treatment_sd: float | None = None

    @property
    def treatment_value(self) -> float:
        return self.control_value * (1.0 + self.lift)

    def power_at(self, n_control: Any, n_treatment: Any, lift: float | None = None) -> Any:
        """Power at the given arm sizes (arrays broadcast), at `lift` or the planned one."""
        lift = self.lift if lift is None else lift
        if self.metric == "proportion":
            return proportion_power(self.control_value, lift, n_control, n_treatment,
                                    alpha=self.alpha, alternative=self.alternative, method=self.method)  # type: ignore[arg-type]
        return mean_power(self.control_value, self.control_sd, lift, n_control, n_treatment,  # type: ignore[arg-type]
                          treatment_sd=self.treatment_sd, alpha=self.alpha, alternative=self.alternative)  # type: ignore[arg-type]

    def arms(self, days: Any) -> tuple[Any, Any]:
        """Users per arm (control, treatment) after `days` days (fractional, arrays allowed)."""
        if self.traffic_per_day is None:
            raise ValueError("durations need traffic_per_day; plan with traffic_per_day=...")
        days = np.asarray(days, float)
        if np.any(~(days > 0)):
            raise ValueError(f"days must be > 0, got {days}")
        total = days * self.traffic_per_day
        return total * (1.0 - self.allocation), total * self.allocation


def _solve_n_control(inputs: PlanInputs) -> float:
    """Smallest (fractional) control size whose power reaches the target; treatment = ratio × it."""
    ratio = inputs.allocation / (1.0 - inputs.allocation)
    lo = max(_MIN_USERS, _MIN_USERS / ratio)

    def gap(n: float) -> float:
        return float(inputs.power_at(n, n * ratio)) - inputs.power

    if gap(lo) >= 0.0:
        return lo
    hi = lo * 2.0
    while gap(hi) < 0.0:
        hi *= 2.0
        if hi > 1e15:
            raise ValueError(f"lift={inputs.lift!r} is too small to detect with any realistic sample size")
    return brentq(gap, lo, hi, xtol=1e-6, rtol=1e-12)


def _solve_mde(inputs: PlanInputs, n_control: float, n_treatment: float) -> float:
    """Smallest relative lift (in the planned lift's direction) reaching the target power; inf if none."""
    sign = 1.0 if inputs.lift > 0 else -1.0
    if inputs.metric == "proportion":
        p0 = inputs.control_value
        edge = (1.0 - p0) / p0 if sign > 0 else 1.0  # |lift| keeping the treatment rate inside (0, 1)
        edge *= 1.0 - 1e-9
    else:
        edge = math.inf

    def gap(m: float) -> float:
        return float(inputs.power_at(n_control, n_treatment, lift=sign * m)) - inputs.power

    hi = min(edge, 0.01)
    while gap(hi) < 0.0:
        if hi >= edge:
            return math.inf
        hi = min(edge, hi * 2.0)
    return sign * brentq(gap, 1e-12, hi, xtol=1e-12, rtol=1e-10)


@dataclass(frozen=True)
class TestPlan:
    """A planned A/B test. users_per_arm is (control, treatment); mde is a relative lift."""

    __test__ = False  # not a pytest test class

    test: str
    users_per_arm: tuple[int, int]
    total_users: int
    days: int | None
    mde: float | None
    mde_days: float | None
    achieved_power: float
    inputs: PlanInputs

    def power_curve(self, days: Any) -> np.ndarray:
        """Power against duration: `days` (array) → power at the planned lift, same shape."""
        return np.asarray(self.inputs.power_at(*self.inputs.arms(days)), float)

    def mde_at(self, days: float) -> float:
        """Relative lift detectable with the planned power after `days` days (inf if none)."""
        n_control, n_treatment = self.inputs.arms(days)
        return _solve_mde(self.inputs, float(n_control), float(n_treatment))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["users_per_arm"] = {"control": self.users_per_arm[0], "treatment": self.users_per_arm[1]}
        return d

    def to_text(self) -> str:
        i = self.inputs
        what = "rate" if i.metric == "proportion" else "mean"
        sds = f" (sd {i.control_sd:g} vs {i.treatment_sd:g})" if i.metric == "mean" else ""
        side = "two-sided" if i.alternative == "two-sided" else f"one-sided ({i.alternative})"
        lines = [
            f"test: {self.test}, {side}, alpha {i.alpha:g}, power {i.power:g}",
            f"control {what} {i.control_value:g} -> treatment {i.treatment_value:g} (lift {i.lift:+.2%}){sds}",
            f"allocation: {1 - i.allocation:.0%} control / {i.allocation:.0%} treatment",
            f"users per arm: control {self.users_per_arm[0]:,}, treatment {self.users_per_arm[1]:,} "
            f"(total {self.total_users:,}; power {self.achieved_power:.4f})",
        ]
        if self.days is not None:
            lines.append(f"days needed: {self.days} at {i.traffic_per_day:,.0f} users/day")
        if self.mde_days is not None:
            mde = "not detectable (treatment rate would leave (0, 1))" if math.isinf(self.mde) else f"{self.mde:+.2%} relative lift"  # type: ignore[arg-type]
            lines.append(f"MDE after {self.mde_days:g} days: {mde}")
        return "\n".join(lines)


def _finish(test: str, inputs: PlanInputs, days: float | None) -> TestPlan:
    if days is not None:
        _check_positive("days", days)
        if inputs.traffic_per_day is None:
            raise ValueError(f"days={days!r} needs traffic_per_day to turn days into users")
    n_c_exact = _solve_n_control(inputs)
    ratio = inputs.allocation / (1.0 - inputs.allocation)
    n_c = math.ceil(n_c_exact - 1e-9)
    n_t = math.ceil(n_c_exact * ratio - 1e-9)
    need_days = mde = None
    if inputs.traffic_per_day is not None:
        per_day_c = inputs.traffic_per_day * (1.0 - inputs.allocation)
        per_day_t = inputs.traffic_per_day * inputs.allocation
        need_days = max(1, math.ceil(max(n_c / per_day_c, n_t / per_day_t) - 1e-9))
    mde_days = days if days is not None else need_days
    plan = TestPlan(test, (n_c, n_t), n_c + n_t, need_days, None, mde_days,
                    float(inputs.power_at(n_c, n_t)), inputs)
    if mde_days is not None:
        mde = plan.mde_at(mde_days)
        plan = TestPlan(test, (n_c, n_t), n_c + n_t, need_days, mde, mde_days, plan.achieved_power, inputs)
    return plan


def plan_proportion_test(
    control_rate: float, lift: float, *, alpha: float = 0.05, power: float = 0.8,
    allocation: float = 0.5, traffic_per_day: float | None = None, days: float | None = None,
    alternative: Alternative = "two-sided", method: Literal["normal", "arcsine"] = "normal",
) -> TestPlan:
    """Plan a two-proportion z-test: users per arm, days needed, MDE after `days` (or the plan's days)."""
    _check_open_unit("control_rate", control_rate)
    _check_common(lift, alpha, power, allocation, alternative)
    treatment_rate = control_rate * (1.0 + lift)
    if not 0.0 < treatment_rate < 1.0:
        raise ValueError(
            f"lift={lift!r} moves the treatment rate to {treatment_rate:g}, outside (0, 1); "
            "lift is relative (0.10 = +10 %)"
        )
    if method not in PROPORTION_METHODS:
        raise ValueError(f"method must be one of {PROPORTION_METHODS}, got {method!r}")
    if traffic_per_day is not None:
        _check_positive("traffic_per_day", traffic_per_day)
    inputs = PlanInputs("proportion", float(control_rate), float(lift), float(alpha), float(power),
                        float(allocation), alternative, method, traffic_per_day)
    name = "two-proportion z-test" + (" (arcsine effect size)" if method == "arcsine" else "")
    return _finish(name, inputs, days)


def plan_mean_test(
    control_mean: float, control_sd: float, lift: float, *, treatment_sd: float | None = None,
    alpha: float = 0.05, power: float = 0.8, allocation: float = 0.5,
    traffic_per_day: float | None = None, days: float | None = None,
    alternative: Alternative = "two-sided",
) -> TestPlan:
    """Plan a Welch t-test on a continuous reward: users per arm, days needed, MDE."""
    if not isinstance(control_mean, int | float | np.floating) or not math.isfinite(control_mean) or control_mean == 0:
        raise ValueError(f"control_mean must be finite and non-zero (lift is relative to it), got {control_mean!r}")
    _check_positive("control_sd", control_sd)
    if treatment_sd is not None:
        _check_positive("treatment_sd", treatment_sd)
    _check_common(lift, alpha, power, allocation, alternative, direction=math.copysign(1.0, control_mean))
    if traffic_per_day is not None:
        _check_positive("traffic_per_day", traffic_per_day)
    inputs = PlanInputs("mean", float(control_mean), float(lift), float(alpha), float(power), float(allocation),
                        alternative, "welch", traffic_per_day, float(control_sd),
                        float(control_sd if treatment_sd is None else treatment_sd))
    return _finish("Welch t-test", inputs, days)
