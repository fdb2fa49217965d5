"""The sequential section end to end on a log without a `click`: rewards `opened` (binary) and
`basket_value` (money), a weighted objective with push costs, and a no-push action whose organic
outcomes `never_push` earns (checked against the closed form over the horizon)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pushrl.agents.sequential_config import SequentialConfig
from pushrl.envs.common.probabilities import sigmoid
from pushrl.envs.objectives import make_objective
from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.pareto import collect_sweep
from pushrl.experiments.sequential import sequential_section

torch.set_num_threads(1)
IDS = np.array(["none", "coupon", "news", "sale"], dtype=object)
CATEGORIES = np.array([0, 1, 2, 1])
POOL = np.random.default_rng(3).normal(size=(150, 3))
WEIGHTS = {"opened": 2.0, "basket_value": 0.05}
TINY = {"n_users": 150, "horizon": 5, "ppo_timesteps": 256, "n_envs": 8, "ppo_curve_points": 1,
        "bandits": {"epsilon_greedy": {"epsilon": 0.2}}, "bandit_days": 4, "bandit_users": 16, "bandit_context_dims": 2,
        "eval_users": 400, "eval_seeds": 2, "lambdas": [0.0, 2.0], "pareto_agents": ["greedy"]}


class BasketResponse:
    """Opened and basket value of each action, each its own function of the user (no click, no chain)."""

    reward_names = ("opened", "basket_value")
    reward_kinds = {"opened": "binary", "basket_value": "continuous"}
    n_context_features = 3
    n_actions = 4
    bias = np.array([-2.0, -0.8, -1.2, -0.5])
    slope = np.array([[0.3, -0.2, 0.1], [0.8, 0.1, 0.0], [-0.4, 0.6, 0.2], [0.2, 0.2, -0.3]])

    def predict(self, contexts: np.ndarray, recent: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
        z = self.bias[None, :] + contexts @ self.slope.T
        return {"opened": sigmoid(z), "basket_value": 6.0 * np.exp(0.4 * z)}


@pytest.fixture(scope="module")
def declared_run(tmp_path_factory: pytest.TempPathFactory):
    objective = make_objective("weighted", IDS, push_cost=0.05, no_push_action="none", weights=WEIGHTS)
    run = RunFolder(tmp_path_factory.mktemp("run") / "0")
    out = sequential_section(SequentialConfig(**TINY), model=BasketResponse(), pool_contexts=POOL, categories=CATEGORIES,
                             action_ids=IDS, objective=objective, no_push_action="none", key="shop", run=run, seed=4,
                             say=lambda m: None)
    return run, out


def test_the_section_runs_on_declared_rewards(declared_run) -> None:
    run, out = declared_run
    assert out["objective"] == "weighted"
    body, front = run.sections[0][1], run.sections[1][1]
    for column in ("opened per user", "basket_value per user", "weighted per user", "opened per push"):
        assert f"| {column} |" in body or f" {column} |" in body, column
    assert "click" not in body and "click" not in front
    assert "objective: weighted = 2 × opened + 0.05 × basket_value − the objective's cost of each push (0.05)" in body
    assert "`none` is the simulator's push-nothing action" in body and "weighted per push" in front
    for name, agent in out["agents"].items():
        assert {"opened_per_user", "basket_value_per_user", "objective_per_push"} <= set(agent), name
    table = pd.read_csv(run.root / "shop" / "sequential" / "sequential.csv", index_col=0)
    assert {"opened_per_push", "basket_value_per_push", "response_rate"} <= set(table.columns)
    run.add_metrics("shop/sequential", out)  # what the pipeline stores feeds the multirun collector
    run.write("test")
    json.loads((run.root / "metrics.json").read_text())
    assert len(collect_sweep(run.root.parent)) == len(out["agents"]) + len(out["pareto"])


def test_never_push_earns_the_organic_objective_in_closed_form(declared_run) -> None:
    """No pushes, so no churn: E[reward per user] = T × mean over the pool of the no-push action's objective."""
    _, out = declared_run
    never = out["agents"]["never_push"]
    assert never["pushes_per_user"] == 0
    q = BasketResponse().predict(POOL, np.zeros(len(POOL)), np.zeros(len(POOL), dtype=np.int64))
    p, basket = q["opened"][:, 0], q["basket_value"][:, 0]
    horizon, n = TINY["horizon"], TINY["eval_users"] * TINY["eval_seeds"]
    per_user = horizon * (WEIGHTS["opened"] * p + WEIGHTS["basket_value"] * basket)  # the no-push action costs 0
    noise = per_user.var() + horizon * WEIGHTS["opened"] ** 2 * (p * (1 - p)).mean()  # users drawn, then draws
    assert abs(never["reward_per_user"] - per_user.mean()) < 4 * np.sqrt(noise / n), (never, per_user.mean())
    assert never["reward_per_user"] == pytest.approx(never["objective_per_user"])
    assert never["basket_value_per_user"] == pytest.approx(horizon * basket.mean(), rel=0.05)
    # pushing changes what users do: the always-push baseline's outcomes are the pushed promotions', not 0
    assert out["agents"]["uniform_push"]["opened_per_user"] > never["opened_per_user"] > 0
