"""The report's A/B plan uses the OPE lift and the statsmodels-checked planner; simulation uses simulator rates."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from pushrl.experiments.config import AbTestConfig
from pushrl.experiments.online_test import online_test_section
from pushrl.policies.abtest import plan_proportion_test
from pushrl.policies.evaluation import evaluate_policy
from pushrl.policies.policy import to_action_dist


def _evaluation(lift_target: float):
    rng = np.random.default_rng(0)
    n = 20_000
    action = rng.integers(0, 2, n)
    reward = (rng.random(n) < np.where(action == 1, 0.05 * (1 + lift_target), 0.05)).astype(float)
    dist = to_action_dist(np.tile([0.0, 1.0], (n, 1)), 1)
    return evaluate_policy(policy="cand", data="d", split="test", action_dist=dist, reward=reward, action=action,
                           pscore=np.full(n, 0.5), position=np.zeros(n, int), estimated_rewards=np.full((n, 2, 1), 0.05),
                           n_bootstrap=50, seed=0)


def test_plan_matches_the_planner_for_the_ope_lift(tmp_path):
    cfg = OmegaConf.create({"abtest": OmegaConf.structured(AbTestConfig(n_experiments=200)), "seed": 0})
    ev = _evaluation(0.3)
    out = online_test_section(cfg, ev, "ips", 0.065, 0.05, True, tmp_path / "power.png", "t")
    expected = plan_proportion_test(ev.logging.value, ev.lift("ips"), traffic_per_day=10_000)
    assert out.metrics["users_control"] == expected.users_per_arm[0]
    assert out.metrics["days"] == expected.days
    assert (tmp_path / "power.png").exists()
    assert out.metrics["simulated_rejection_rate"] > 0.5  # simulator lift +30% at a size planned for a similar lift


def test_no_positive_lift_plans_the_default_and_continuous_is_referred(tmp_path):
    cfg = OmegaConf.create({"abtest": OmegaConf.structured(AbTestConfig(n_experiments=100)), "seed": 0})
    ev = _evaluation(-0.2)
    out = online_test_section(cfg, ev, "ips", 0.04, 0.05, True, tmp_path / "p.png", "t")
    assert out.metrics["planned_lift"] == pytest.approx(0.10)
    assert "default_lift" in out.markdown
    cont = online_test_section(cfg, ev, "ips", 0.04, 0.05, False, tmp_path / "q.png", "t")
    assert cont.metrics == {} and "--mean" in cont.markdown
