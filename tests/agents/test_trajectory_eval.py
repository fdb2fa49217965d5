"""trajectory_values on a synthetic sequential shop with known truth: trajectory OPE recovers the simulator's value
of timing policies; one-step IPS does not (it ignores what today's push does to tomorrow's state)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pushrl.agents.trajectory_eval import trajectory_metrics, trajectory_values
from pushrl.envs.data.synthetic import SyntheticConfig, make_truth
from pushrl.envs.model.response import TrueResponse, truth_contexts
from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.log_observations import expected_step_reward, simulate_log
from pushrl.policies.policy import BasePolicy, ConstantPolicy
from pushrl.policies.timing import MyopicGreedy

H = 4
IDS = np.array(["a", "b", "none"], dtype=object)
TRUTH = make_truth(SyntheticConfig(n_users=500, n_actions=3, seed=2, no_push=True, fatigue=1.0, organic_conversion=0.3))


def _env(n: int) -> BatchedPushEnv:
    config = dict(no_push_action="none", frequency_cap=None, churn_logit=-4.0, churn_slope=1.0,
                  unsubscribe_penalty=0.3, horizon=H, objective={"click": 1.0, "conversion": 1.0})
    return BatchedPushEnv(n, max_episode_steps=H, response=TrueResponse(TRUTH), contexts=truth_contexts(TRUTH),
                          categories=TRUTH.action_category.astype(np.int64), action_ids=IDS, config=config)


class Logging(BasePolicy):
    """Stochastic, non-uniform, state-dependent: holds back more after recent pushes, favours 'a' by context."""

    def __init__(self, env: BatchedPushEnv) -> None:
        self.lay = env.layout

    @property
    def n_actions(self) -> int:
        return 3

    def _probabilities(self, obs: np.ndarray) -> np.ndarray:
        p_none = np.clip(0.3 + 0.1 * obs[:, self.lay.recent_pushes], 0, 0.8)
        pa = (1 - p_none) * (0.6 + 0.2 * np.tanh(obs[:, 0]))
        return np.column_stack([pa, 1 - p_none - pa, p_none])


@pytest.fixture(scope="module")
def study() -> dict:
    dyn = _env(1).dynamics
    targets = {"greedy": MyopicGreedy(dyn, 0.0), "spaced_0": MyopicGreedy(dyn, 0.0, 0),
               "never_push": ConstantPolicy(3, 2)}
    truth = {}
    for name, policy in targets.items():  # the simulator's value: a large on-policy rollout
        frame, _ = simulate_log(_env(40_000), policy, seed=11)
        per_user = frame.groupby("user_id")["env_reward"].sum()
        truth[name] = (per_user.mean(), per_user.std() / np.sqrt(len(per_user)))
    log, obs = simulate_log(_env(20_000), Logging(_env(1)), seed=5)
    step = log.groupby("user_id").cumcount().to_numpy()
    args = (obs, log["env_action"].to_numpy(), log["user_id"].to_numpy(), step, log["propensity"].to_numpy(),
            log["env_reward"].to_numpy())
    table = trajectory_values(targets, *args, expected_step_reward(dyn, obs), n_bootstrap=300, seed=0)
    return {"targets": targets, "truth": truth, "log": log, "obs": obs, "args": args, "table": table}


def test_trajectory_ope_recovers_the_simulators_value(study: dict) -> None:
    table, truth = study["table"], study["truth"]
    assert set(table.index.get_level_values("estimator")) == {"pdis", "wpdis", "pddr", "wdr"}
    for (agent, _), row in table.iterrows():
        value, se = truth[agent]
        half = (row["ci_high"] - row["ci_low"]) / 2
        assert row["ci_low"] - 3 * se <= value <= row["ci_high"] + 3 * se, (agent, row.to_dict(), value)
        assert abs(row["value"] - value) <= 1.5 * half + 3 * se
    assert truth["greedy"][0] > truth["spaced_0"][0] > truth["never_push"][0] > 0  # the values differ
    width = table.loc["greedy", "ci_high"] - table.loc["greedy", "ci_low"]
    assert (width < 0.25 * truth["greedy"][0]).all()  # and the CIs are informative


def test_one_step_ips_is_biased_for_timing_policies(study: dict) -> None:
    """Per-row weights only (no product over the user's earlier decisions): the log's states, not the policy's."""
    obs, action, user, _, pscore, reward = study["args"]
    for name in ("greedy", "spaced_0"):
        w = study["targets"][name].action_probabilities(obs)[np.arange(len(obs)), action] / pscore
        per_user = pd.Series(w * reward).groupby(user).sum()
        ips, se = per_user.mean(), per_user.std() / np.sqrt(len(per_user))
        value, se_true = study["truth"][name]
        assert abs(ips - value) > 5 * np.hypot(se, se_true), (name, ips, value)  # one-step OPE misses
        row = study["table"].loc[(name, "pdis")]
        assert row["ci_low"] <= value + 3 * se_true and value - 3 * se_true <= row["ci_high"]  # trajectory OPE does not


def test_on_policy_log_gives_the_mean_return_and_full_ess(study: dict) -> None:
    """pi = mu: every weight is 1, PDIS = the mean return per user, ESS = the number of users (exact)."""
    obs, action, user, step, pscore, reward = study["args"]
    logging = Logging(_env(1))
    table = trajectory_values({"logging": logging}, obs, action, user, step, pscore, reward, n_bootstrap=50)
    mean_return = pd.Series(reward).groupby(user).sum().mean()
    assert table.loc[("logging", "pdis"), "value"] == pytest.approx(mean_return, rel=1e-12)
    assert table.loc[("logging", "ess")].iloc[0] == pytest.approx(len(np.unique(user)))
    assert set(table.loc["logging"].index) == {"pdis", "wpdis"}  # no Q-hat: no DR rows
    metrics = trajectory_metrics(table)
    assert metrics["logging"]["pdis"]["value"] == pytest.approx(mean_return)


def test_capped_rows_and_bad_input() -> None:
    obs = np.zeros((4, _env(1).layout.width), dtype=np.float32)
    never = {"never": ConstantPolicy(3, 2), "push_a": ConstantPolicy(3, 0)}
    action, user, step = np.array([2, 2, 2, 2]), np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    table = trajectory_values(never, obs, action, user, step, np.full(4, 0.5), np.ones(4), n_bootstrap=20,
                              capped=np.ones(4, dtype=bool))
    # where every push would be refused, pushing 'a' sends nothing too: weight 1 / 0.5 per step for both
    assert table.loc[("push_a", "pdis"), "value"] == pytest.approx(table.loc[("never", "pdis"), "value"]) == 6.0
    with pytest.raises(ValueError, match="expected"):
        trajectory_values(never, obs, action, user, step, np.full(4, 0.5), np.ones(4), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="env_action"):
        trajectory_values(never, obs, action.astype(float), user, step, np.full(4, 0.5), np.ones(4))
