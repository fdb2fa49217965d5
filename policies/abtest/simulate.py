"""Simulate online A/B tests: outcome samplers, the fixed-horizon analysis, group-sequential stopping.

A sampler draws per-user rewards for an arm ("control" or "treatment"):
``sampler(arm, n_users, rng) -> (n_users,)``. For many experiments at once a
sampler may also offer ``batched(arm, n_experiments, n_users, rng)`` returning
either the rewards, shape (n_experiments, n_users), or their sufficient
statistics as `ArmStats` (each of shape (n_experiments,)); the samplers shipped
here return exact sufficient statistics, so 1,000 experiments of 100,000 users
cost milliseconds. A sampler without ``batched`` is used in blocks of
experiments (users are assumed independent and identically distributed).

Tests: the pooled two-proportion z-test for binary rewards, Welch's t-test for
continuous ones; lift CIs use the delta method on log(treatment / control).
The sequential design stops at the first of K equally spaced looks whose
statistic crosses an O'Brien–Fleming-type boundary (see `sequential`); Welch
statistics are mapped to z scores through their p-values first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from pushrl.policies.abtest.sequential import ALTERNATIVES, Alternative, GroupSequentialDesign

ARMS = ("control", "treatment")
Metric = Literal["proportion", "mean"]
_BLOCK = 1 << 22  # rewards drawn at once by the per-user fallback and the lognormal sampler
PerArm = float | tuple[float, float]  # one value for both arms, or (control, treatment)


class OutcomeSampler(Protocol):
    """Per-user rewards of one arm, shape (n_users,)."""

    def __call__(self, arm: str, n_users: int, rng: np.random.Generator) -> np.ndarray: ...


class BatchedSampler(Protocol):
    """Many experiments at once: rewards (n_experiments, n_users) or their `ArmStats`."""

    def batched(self, arm: str, n_experiments: int, n_users: int, rng: np.random.Generator) -> ArmStats | np.ndarray: ...


@dataclass(frozen=True, eq=False)
class ArmStats:
    """Sufficient statistics of one arm per experiment: users, Σ reward, Σ reward², each (n_experiments,)."""

    n: np.ndarray
    total: np.ndarray
    total_sq: np.ndarray

    @classmethod
    def from_rewards(cls, rewards: np.ndarray) -> ArmStats:
        """From rewards of shape (n_experiments, n_users)."""
        r = np.asarray(rewards, dtype=float)
        if r.ndim != 2:
            raise ValueError(f"rewards must be 2-D (n_experiments, n_users), got shape {r.shape}")
        return cls(np.full(r.shape[0], r.shape[1], dtype=np.int64), r.sum(axis=1), np.einsum("ij,ij->i", r, r))

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.n

    @property
    def var(self) -> np.ndarray:
        """Unbiased sample variance (0 where fewer than 2 users)."""
        ss = np.maximum(self.total_sq - self.total**2 / self.n, 0.0)
        return ss / np.maximum(self.n - 1, 1)


def _arm(arm: str) -> int:
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    return ARMS.index(arm)


def _pair(name: str, value: Any, low: float = -np.inf, high: float = np.inf) -> tuple[float, float]:
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(pair) != 2 or not all(low <= float(v) <= high for v in pair):
        raise ValueError(f"{name} must be a number or a (control, treatment) pair in [{low}, {high}], got {value!r}")
    return float(pair[0]), float(pair[1])


@dataclass(frozen=True)
class BernoulliSampler:
    """Binary rewards (click, conversion): `rate` is p or (control p, treatment p)."""

    metric: ClassVar[str] = "proportion"
    rate: PerArm

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", _pair("rate", self.rate, 0.0, 1.0))

    def arm_mean(self, arm: str) -> float:
        return self.rate[_arm(arm)]

    def arm_sd(self, arm: str) -> float:
        p = self.rate[_arm(arm)]
        return float(np.sqrt(p * (1.0 - p)))

    def __call__(self, arm: str, n_users: int, rng: np.random.Generator) -> np.ndarray:
        return (rng.random(n_users) < self.rate[_arm(arm)]).astype(float)

    def batched(self, arm: str, n_experiments: int, n_users: int, rng: np.random.Generator) -> ArmStats:
        k = rng.binomial(n_users, self.rate[_arm(arm)], size=n_experiments).astype(float)
        return ArmStats(np.full(n_experiments, n_users, dtype=np.int64), k, k)


@dataclass(frozen=True)
class NormalSampler:
    """Normal continuous rewards; `mean` and `sd` are numbers or (control, treatment) pairs."""

    metric: ClassVar[str] = "mean"
    mean: PerArm
    sd: PerArm

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _pair("mean", self.mean))
        object.__setattr__(self, "sd", _pair("sd", self.sd, 0.0))

    def arm_mean(self, arm: str) -> float:
        return self.mean[_arm(arm)]

    def arm_sd(self, arm: str) -> float:
        return self.sd[_arm(arm)]

    def __call__(self, arm: str, n_users: int, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(self.arm_mean(arm), self.arm_sd(arm), n_users)

    def batched(self, arm: str, n_experiments: int, n_users: int, rng: np.random.Generator) -> ArmStats:
        mu, sd = self.arm_mean(arm), self.arm_sd(arm)
        m = rng.normal(mu, sd / np.sqrt(n_users), n_experiments)  # sample mean, independent of
        ss = sd**2 * rng.chisquare(n_users - 1, n_experiments) if n_users > 1 else np.zeros(n_experiments)
        return ArmStats(np.full(n_experiments, n_users, dtype=np.int64), n_users * m, ss + n_users * m**2)


@dataclass(frozen=True)
class ZeroInflatedLogNormalSampler:
    """Spend-like rewards: 0 with probability 1 − rate, else LogNormal(log_mean, log_sd)."""

    metric: ClassVar[str] = "mean"
    rate: PerArm
    log_mean: PerArm
    log_sd: PerArm

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", _pair("rate", self.rate, 0.0, 1.0))
        object.__setattr__(self, "log_mean", _pair("log_mean", self.log_mean))
        object.__setattr__(self, "log_sd", _pair("log_sd", self.log_sd, 0.0))

    def arm_mean(self, arm: str) -> float:
        i = _arm(arm)
        return float(self.rate[i] * np.exp(self.log_mean[i] + self.log_sd[i] ** 2 / 2))

    def arm_sd(self, arm: str) -> float:
        i = _arm(arm)
        second = self.rate[i] * np.exp(2 * self.log_mean[i] + 2 * self.log_sd[i] ** 2)
        return float(np.sqrt(second - self.arm_mean(arm) ** 2))

    def __call__(self, arm: str, n_users: int, rng: np.random.Generator) -> np.ndarray:
        i = _arm(arm)
        buys = rng.random(n_users) < self.rate[i]
        return np.where(buys, rng.lognormal(self.log_mean[i], self.log_sd[i], n_users), 0.0)

    def batched(self, arm: str, n_experiments: int, n_users: int, rng: np.random.Generator) -> ArmStats:
        i = _arm(arm)
        buyers = rng.binomial(n_users, self.rate[i], size=n_experiments)
        total, total_sq = np.zeros(n_experiments), np.zeros(n_experiments)
        start = 0
        while start < n_experiments:  # blocks of experiments with at most ~_BLOCK purchases
            stop = start + max(1, int(np.searchsorted(np.cumsum(buyers[start:]), _BLOCK)))
            k = buyers[start:stop]
            spend = rng.lognormal(self.log_mean[i], self.log_sd[i], int(k.sum()))
            owner = np.repeat(np.arange(stop - start), k)
            total[start:stop] = np.bincount(owner, spend, minlength=stop - start)
            total_sq[start:stop] = np.bincount(owner, spend * spend, minlength=stop - start)
            start = stop
        return ArmStats(np.full(n_experiments, n_users, dtype=np.int64), total, total_sq)


def draw_stats(sampler: OutcomeSampler | BatchedSampler, arm: str, n_experiments: int, n_users: int, rng: np.random.Generator) -> ArmStats:
    """Sufficient statistics for `n_experiments` experiments of `n_users` users of one arm."""
    batched = getattr(sampler, "batched", None)
    if batched is not None:
        out = batched(arm, n_experiments, n_users, rng)
        stats = out if isinstance(out, ArmStats) else ArmStats.from_rewards(out)
        if stats.total.shape != (n_experiments,) or np.any(stats.n != n_users):
            raise ValueError(f"batched sampler returned {stats.total.shape} experiments of {np.unique(stats.n)} users, "
                             f"expected ({n_experiments},) of {n_users}")
        return stats
    rows = max(1, _BLOCK // max(n_users, 1))
    parts = []
    for start in range(0, n_experiments, rows):
        m = min(rows, n_experiments - start)
        r = np.asarray(sampler(arm, m * n_users, rng), dtype=float)  # type: ignore[operator]
        if r.shape != (m * n_users,):
            raise ValueError(f"sampler({arm!r}, {m * n_users}, rng) returned shape {r.shape}, expected ({m * n_users},)")
        parts.append(ArmStats.from_rewards(r.reshape(m, n_users)))
    return ArmStats(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("n", "total", "total_sq")))


def _p_value(stat: np.ndarray, alternative: str, df: np.ndarray | None = None) -> np.ndarray:
    dist = norm if df is None else student_t(df)
    if alternative == "two-sided":
        return 2.0 * dist.sf(np.abs(stat))
    return dist.sf(stat) if alternative == "larger" else dist.cdf(stat)


def z_test(control: ArmStats, treatment: ArmStats, alternative: Alternative = "two-sided") -> tuple[np.ndarray, np.ndarray]:
    """Pooled two-proportion z-test per experiment: (z, p-value), each (n_experiments,)."""
    pooled = (control.total + treatment.total) / (control.n + treatment.n)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / control.n + 1.0 / treatment.n))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (treatment.mean - control.mean) / se, 0.0)
    return z, _p_value(z, alternative)


def welch_test(
    control: ArmStats, treatment: ArmStats, alternative: Alternative = "two-sided"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's t-test per experiment: (t, p-value, Welch–Satterthwaite df), each (n_experiments,)."""
    vc, vt = control.var / control.n, treatment.var / treatment.n
    se = np.sqrt(vc + vt)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, (treatment.mean - control.mean) / se, 0.0)
        df = (vc + vt) ** 2 / (vc**2 / (control.n - 1) + vt**2 / (treatment.n - 1))
    df = np.where(np.isfinite(df) & (df > 0), df, 1.0)
    return t, _p_value(t, alternative, df), df


def _analyze(c: ArmStats, t: ArmStats, metric: str, alpha: float, alternative: str) -> dict[str, np.ndarray]:
    """Statistic, p-value, z-equivalent, difference and lift with (1 − α) CIs, per experiment."""
    tail = alpha / 2.0 if alternative == "two-sided" else alpha
    if metric == "proportion":
        stat, p = z_test(c, t, alternative)  # type: ignore[arg-type]
        var_c, var_t = c.mean * (1 - c.mean), t.mean * (1 - t.mean)
        q = norm.isf(tail)
        z = stat
    else:
        stat, p, df = welch_test(c, t, alternative)  # type: ignore[arg-type]
        var_c, var_t = c.var, t.var
        q = student_t.isf(tail, df)
        z = np.sign(stat) * norm.isf(np.minimum(student_t.sf(np.abs(stat), df), 0.5))
    se = np.sqrt(var_c / c.n + var_t / t.n)
    diff = t.mean - c.mean
    lo = diff - q * se if alternative != "smaller" else np.full_like(diff, -np.inf)
    hi = diff + q * se if alternative != "larger" else np.full_like(diff, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (c.mean > 0) & (t.mean > 0)
        log_ratio = np.where(ok, np.log(np.where(ok, t.mean / c.mean, 1.0)), np.nan)
        se_log = np.sqrt(var_t / (t.n * t.mean**2) + var_c / (c.n * c.mean**2))
        lift = t.mean / c.mean - 1.0
    qz = norm.isf(tail)
    lift_lo = np.where(np.isfinite(lo), np.expm1(log_ratio - qz * se_log), -1.0)
    lift_hi = np.where(np.isfinite(hi), np.expm1(log_ratio + qz * se_log), np.inf)
    return {"stat": stat, "p": p, "z": z, "diff": diff, "diff_lo": lo, "diff_hi": hi,
            "lift": lift, "lift_lo": lift_lo, "lift_hi": lift_hi}


def _check_test_args(metric: str, alpha: float, alternative: str) -> None:
    if metric not in ("proportion", "mean"):
        raise ValueError(f"metric must be 'proportion' (z-test) or 'mean' (Welch), got {metric!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")


@dataclass(frozen=True)
class ABResult:
    """Fixed-horizon analysis of one experiment; diff = treatment − control, lift = relative."""

    test: str
    alternative: str
    alpha: float
    n_control: int
    n_treatment: int
    control_mean: float
    treatment_mean: float
    diff: float
    diff_ci: tuple[float, float]
    lift: float
    lift_ci: tuple[float, float]
    statistic: float
    p_value: float
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def to_text(self) -> str:
        level = f"{1 - self.alpha:.0%}"
        return "\n".join([
            f"{self.test} ({self.alternative}): statistic {self.statistic:.3f}, p-value {self.p_value:.4g}"
            f" -> {'significant' if self.significant else 'not significant'} at alpha {self.alpha:g}",
            f"control {self.control_mean:.6g} (n={self.n_control:,}), treatment {self.treatment_mean:.6g} (n={self.n_treatment:,})",
            f"difference {self.diff:+.6g}, {level} CI [{self.diff_ci[0]:.6g}, {self.diff_ci[1]:.6g}]",
            f"lift {self.lift:+.2%}, {level} CI [{self.lift_ci[0]:+.2%}, {self.lift_ci[1]:+.2%}]",
        ])


def _rewards(control: Any, treatment: Any) -> list[np.ndarray]:
    arrays = [np.asarray(x, dtype=float) for x in (control, treatment)]
    for name, x in zip(ARMS, arrays, strict=True):
        if x.ndim != 1 or x.size < 2 or not np.all(np.isfinite(x)):
            raise ValueError(f"{name} rewards must be a finite 1-D array of >= 2 users, got shape {x.shape}")
    return arrays


def analyze(control: np.ndarray, treatment: np.ndarray, *, metric: Metric = "proportion",
            alpha: float = 0.05, alternative: Alternative = "two-sided") -> ABResult:
    """Fixed-horizon test of one experiment from per-user rewards, each (n_users,)."""
    _check_test_args(metric, alpha, alternative)
    c, t = (ArmStats.from_rewards(x[None, :]) for x in _rewards(control, treatment))
    r = {k: float(v[0]) for k, v in _analyze(c, t, metric, alpha, alternative).items()}
    return ABResult("two-proportion z-test" if metric == "proportion" else "Welch t-test", alternative, alpha,
                    int(c.n[0]), int(t.n[0]), float(c.mean[0]), float(t.mean[0]), r["diff"],
                    (r["diff_lo"], r["diff_hi"]), r["lift"], (r["lift_lo"], r["lift_hi"]), r["stat"], r["p"],
                    bool(r["p"] < alpha))


@dataclass(frozen=True, eq=False)
class SequentialResult:
    """Group-sequential analysis of one experiment: z and users (control, treatment) per look taken."""

    design: GroupSequentialDesign
    z: np.ndarray
    users_at_looks: np.ndarray
    stop_look: int
    reject: bool
    at_stop: ABResult  # naive analysis of the data up to the stop (nominal p-value and CIs)


def analyze_sequential(control: np.ndarray, treatment: np.ndarray, *, n_looks: int, metric: Metric = "proportion",
                       alpha: float = 0.05, alternative: Alternative = "two-sided") -> SequentialResult:
    """Look after k / n_looks of each arm's users (arrays in arrival order); stop at the first crossing."""
    _check_test_args(metric, alpha, alternative)
    design = GroupSequentialDesign(n_looks, alpha, alternative)
    c, t = _rewards(control, treatment)
    zs, users = [], []
    for k in range(1, n_looks + 1):
        n = (round(k * c.size / n_looks), round(k * t.size / n_looks))
        if min(n) < 2:
            raise ValueError(f"each arm needs >= 2 users at look {k} of {n_looks}, got {n}")
        stats = [ArmStats.from_rewards(x[None, :m]) for x, m in ((c, n[0]), (t, n[1]))]
        zs.append(float(_analyze(*stats, metric, alpha, alternative)["z"][0]))
        users.append(n)
        if bool(design.rejects(np.array(zs[-1]), k)) or k == n_looks:
            break
    reject = bool(design.rejects(np.array(zs[-1]), k))
    at_stop = analyze(c[: n[0]], t[: n[1]], metric=metric, alpha=alpha, alternative=alternative)
    return SequentialResult(design, np.array(zs), np.array(users), k, reject, at_stop)


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """Many simulated experiments. Arrays have shape (n_experiments,); users count both arms."""

    design: str
    metric: str
    alpha: float
    alternative: str
    n_looks: int
    users_per_arm: tuple[int, int]
    reject: np.ndarray
    stop_look: np.ndarray
    users_at_stop: np.ndarray
    lift: np.ndarray
    p_value: np.ndarray  # nominal p-value at the stopping look
    boundaries: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_experiments(self) -> int:
        return int(self.reject.size)

    @property
    def rejection_rate(self) -> float:
        """False-positive rate when the arms are equal (A/A), power otherwise (A/B)."""
        return float(self.reject.mean())

    @property
    def rejection_se(self) -> float:
        r = self.rejection_rate
        return float(np.sqrt(r * (1 - r) / self.n_experiments))

    @property
    def mean_users_at_stop(self) -> float:
        return float(self.users_at_stop.mean())

    def to_dict(self) -> dict[str, Any]:
        return {
            "design": self.design, "metric": self.metric, "alpha": self.alpha, "alternative": self.alternative,
            "n_looks": self.n_looks, "n_experiments": self.n_experiments,
            "users_per_arm": {"control": self.users_per_arm[0], "treatment": self.users_per_arm[1]},
            "rejection_rate": self.rejection_rate, "rejection_se": self.rejection_se,
            "mean_users_at_stop": self.mean_users_at_stop,
            "mean_fraction_at_stop": self.mean_users_at_stop / sum(self.users_per_arm),
            "stops_per_look": np.bincount(self.stop_look, minlength=self.n_looks + 1)[1:].tolist(),
            "boundaries": None if self.boundaries is None else self.boundaries.tolist(),
        }

    def to_text(self) -> str:
        d = self.to_dict()
        lines = [
            f"{self.design}: {self.n_experiments:,} experiments, {self.users_per_arm[0]:,} control / "
            f"{self.users_per_arm[1]:,} treatment users at most ({self.metric}, {self.alternative}, alpha {self.alpha:g})",
            f"rejected H0 in {int(self.reject.sum()):,}: rate {self.rejection_rate:.4f} ± {self.rejection_se:.4f} (1 se)",
            f"users at stop: {self.mean_users_at_stop:,.0f} on average ({d['mean_fraction_at_stop']:.1%} of the maximum)",
        ]
        if self.boundaries is not None:
            lines.append("boundaries |z|: " + ", ".join(f"{b:.3f}" for b in self.boundaries))
            lines.append("stops per look: " + ", ".join(str(s) for s in d["stops_per_look"]))
        return "\n".join(lines)


def simulate_many(
    sampler: OutcomeSampler | BatchedSampler, n_control: int, n_treatment: int, *, n_experiments: int = 1000, metric: Metric | None = None,
    alpha: float = 0.05, alternative: Alternative = "two-sided", n_looks: int = 1, seed: int | None = None,
) -> SimulationResult:
    """Run `n_experiments` A/B tests at once; n_looks = 1 is fixed-horizon, > 1 group-sequential.

    The sequential design looks after k / n_looks of the users of each arm and
    stops at the first crossing of the O'Brien–Fleming-type boundary.
    `metric` defaults to `sampler.metric`.
    """
    metric = metric if metric is not None else getattr(sampler, "metric", None)
    _check_test_args(metric, alpha, alternative)  # type: ignore[arg-type]
    for name, v in (("n_experiments", n_experiments), ("n_looks", n_looks), ("n_control", n_control), ("n_treatment", n_treatment)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    design = GroupSequentialDesign(int(n_looks), alpha, alternative) if n_looks > 1 else None
    looks = np.arange(1, n_looks + 1)
    sizes = np.stack([np.rint(looks * n / n_looks).astype(np.int64) for n in (n_control, n_treatment)])
    if sizes[:, 0].min() < 2:
        raise ValueError(f"each arm needs >= 2 users at the first of {n_looks} looks, got {sizes[:, 0].tolist()}")
    rng = np.random.default_rng(seed)
    acc = np.zeros((2, 3, n_experiments))  # arm × (users, Σ reward, Σ reward²) × experiment
    reject = np.zeros(n_experiments, bool)
    stop_look = np.full(n_experiments, n_looks, np.int64)
    users, lift, p_value = np.zeros(n_experiments, np.int64), np.zeros(n_experiments), np.ones(n_experiments)
    active = np.arange(n_experiments)
    prev = np.zeros(2, np.int64)
    for k in range(n_looks):
        for a, arm in enumerate(ARMS):
            s = draw_stats(sampler, arm, active.size, int(sizes[a, k] - prev[a]), rng)
            for j, v in enumerate((s.n, s.total, s.total_sq)):
                acc[a, j, active] += v
        prev = sizes[:, k]
        c, t = (ArmStats(acc[a, 0, active], acc[a, 1, active], acc[a, 2, active]) for a in range(2))
        r = _analyze(c, t, metric, alpha, alternative)  # type: ignore[arg-type]
        hit = r["p"] < alpha if design is None else design.rejects(r["z"], k + 1)
        stop = hit | (k == n_looks - 1)
        idx = active[stop]
        reject[idx], stop_look[idx], users[idx] = hit[stop], k + 1, int(prev.sum())
        lift[idx], p_value[idx] = r["lift"][stop], r["p"][stop]
        active = active[~stop]
        if active.size == 0:
            break
    name = "fixed horizon" if design is None else f"group sequential, {n_looks} looks (O'Brien-Fleming spending)"
    return SimulationResult(name, metric, alpha, alternative, n_looks, (int(n_control), int(n_treatment)),  # type: ignore[arg-type]
                            reject, stop_look, users, lift, p_value, None if design is None else design.boundaries)
