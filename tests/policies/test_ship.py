"""The ship rule: a confident gain on the objective, every guardrail held, identified; else logging."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pushrl.policies.evaluation import PolicyEvaluation
from pushrl.policies.ope.bootstrap import Interval
from pushrl.policies.ope.diagnostics import SupportDiagnostics
from pushrl.policies.ship import Guardrail, decide, make_guardrails

DIAG = SupportDiagnostics(n_rounds=100, effective_sample_size=50.0, ess_fraction=0.5, max_weight=3.0, tau=0.01,
                          low_support_mass=0.0, low_support_mass_is_exact=True)


def _ev(name: str, value: float, low: float, logging: float) -> PolicyEvaluation:
    return PolicyEvaluation(policy=name, data="d", split="test", n_rounds=100,
                            logging=Interval(logging, logging - 0.01, logging + 0.01),
                            estimates={"snips": Interval(value, low, 2 * value - low),
                                       "dm": Interval(value, low, 2 * value - low)},
                            diagnostics=DIAG, recommended="snips")


def test_confident_gain_ships_the_best_passing_candidate():
    obj = {"a": _ev("a", 0.30, 0.21, 0.20), "b": _ev("b", 0.35, 0.19, 0.20), "c": _ev("c", 0.25, 0.22, 0.20)}
    d = decide(obj, {}, "snips", ["a", "b", "c"], (), {})
    assert d.chosen == "a"  # b has the best point estimate but its lower bound is below logging
    assert not d.verdicts["b"].passes and d.verdicts["a"].passes and d.verdicts["c"].passes
    none = decide({"b": obj["b"]}, {}, "snips", ["b"], (), {})
    assert none.chosen == "logging" and "best point estimate is b" in none.why and "0.19" in none.why


def test_guardrail_blocks_a_revenue_loss():
    obj = {"a": _ev("a", 0.30, 0.25, 0.20), "b": _ev("b", 0.28, 0.24, 0.20)}
    revenue = {"a": _ev("a", 9.0, 8.0, 10.0), "b": _ev("b", 10.0, 9.85, 10.0)}
    guard = make_guardrails({"revenue": 0.02}, ["click", "revenue"])
    d = decide(obj, {"revenue": revenue}, "snips", ["a", "b"], guard, {})
    assert d.chosen == "b" and d.verdicts["a"].guardrails == {"revenue": False}
    assert "within every guardrail (revenue -2%)" in d.why
    revenue["b"] = _ev("b", 9.9, 9.75, 10.0)  # lower bound 9.75 < 10 x (1 - 0.02) = 9.8
    d = decide(obj, {"revenue": revenue}, "snips", ["a", "b"], guard, {})
    assert d.chosen == "logging" and "guardrail(s) ['revenue'] are not shown to hold" in d.why


def test_unidentified_candidates_never_ship():
    obj = {"a": _ev("a", 0.30, 0.25, 0.20)}
    d = decide(obj, {}, "snips", ["a"], (), {"a": False})
    assert d.chosen == "logging" and "not identified" in d.why


def test_rule_matches_brute_force_on_a_grid():
    rng = np.random.default_rng(0)
    guard = (Guardrail("revenue", 0.05),)
    for _ in range(200):
        names = ["p0", "p1", "p2", "p3"]
        vals, lows = rng.uniform(0.1, 0.3, 4), rng.uniform(0.1, 0.3, 4)
        rv, rl = rng.uniform(9, 11, 4), rng.uniform(9, 11, 4)
        ident = dict(zip(names, rng.random(4) > 0.2, strict=True))
        obj = {n: _ev(n, v, lo, 0.2) for n, v, lo in zip(names, vals, lows, strict=True)}
        rev = {n: _ev(n, v, lo, 10.0) for n, v, lo in zip(names, rv, rl, strict=True)}
        d = decide(obj, {"revenue": rev}, "snips", names, guard, ident)
        ok = [i for i in range(4) if lows[i] > 0.2 and rl[i] >= 10.0 * 0.95 and ident[names[i]]]
        expected = names[max(ok, key=lambda i: vals[i])] if ok else "logging"
        assert d.chosen == expected


@pytest.mark.parametrize("spec, fragment", [
    ({"profit": 0.02}, r"objective.guardrails.profit: 'profit' is not a declared reward"),
    ({"revenue": 1.5}, r"objective.guardrails.revenue: expected a share in \[0, 1\)"),
    ({"revenue": "2%"}, r"objective.guardrails.revenue: expected a share"),
])
def test_bad_guardrails_are_refused_by_key(spec, fragment):
    with pytest.raises(ValueError, match=fragment):
        make_guardrails(spec, ["click", "revenue"])


def test_logging_is_never_a_candidate():
    obj = {"logging": _ev("logging", 0.5, 0.45, 0.2), "a": _ev("a", 0.1, 0.05, 0.2)}
    assert decide(obj, {}, "snips", list(obj), (), {}).chosen == "logging"
    assert list(itertools.chain(decide(obj, {}, "snips", list(obj), (), {}).verdicts)) == ["a"]
