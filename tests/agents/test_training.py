"""Agent training: the baseline registry, bandits offline then online in a `ResponseBandit`, seeds, refusals,
and the save / load round trip `pushrl export` relies on."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.agents.training import (
    BASELINE_BUILDERS,
    BASELINES,
    ResponseBandit,
    check_agent_names,
    load_agent,
    save_agents,
    train_agents,
    with_intercept,
)

N, A, D = 400, 3, 2


def _log(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = with_intercept(rng.normal(size=(N, D)))
    action = rng.integers(0, A, N)
    reward = (rng.random(N) < 0.1 + 0.2 * (action == 2)).astype(float)
    return x, action, reward


def _train(specs, seed: int = 0, online_rounds: int = 200):
    x, action, reward = _log()
    q = np.tile([0.1, 0.1, 0.3], (N, 1))
    sim = ResponseBandit(x, lambda rows: q[rows])
    return train_agents(specs, n_actions=A, train_features=x, train_action=action, train_reward=reward,
                        train_pscore=np.full(N, 1 / A), logging_probabilities=np.full(A, 1 / A), simulator=sim,
                        online_rounds=online_rounds, batch_size=50, seed=seed, progress=lambda _m: None)


def test_with_intercept_appends_a_column_of_ones():
    f = with_intercept(np.array([[1, 2], [3, 4]]))
    assert f.dtype == np.float64 and f.tolist() == [[1.0, 2.0, 1.0], [3.0, 4.0, 1.0]]


def test_baselines_come_from_the_registry_and_bandits_learn_online():
    assert BASELINES == tuple(BASELINE_BUILDERS) == ("uniform", "most_popular", "logging")
    agents = _train({"uniform": None, "most_popular": {}, "logging": None, "linucb": {"alpha": 0.5}})
    assert [a.kind for a in agents.values()] == ["baseline"] * 3 + ["bandit"]
    x = _log()[0][:5]
    np.testing.assert_allclose(agents["uniform"].policy.action_probabilities(x), 1 / A)
    assert agents["most_popular"].policy.action_probabilities(x)[:, 2].min() == 1.0  # the best-converting action
    lin = agents["linucb"]
    assert lin.online_rewards.shape == (200 // 50,) and lin.regret is not None
    assert lin.policy.action_probabilities(x)[:, 2].mean() > 0.5  # learned that action 2 pays in the simulator


def test_seeds_are_reproducible_and_offline_only_has_no_curve():
    a = _train({"lints": {}}, seed=3)["lints"].policy.action_probabilities(_log()[0][:20])
    b = _train({"lints": {}}, seed=3)["lints"].policy.action_probabilities(_log()[0][:20])
    np.testing.assert_array_equal(a, b)
    off = _train({"linucb": {}}, online_rounds=0)["linucb"]
    assert off.online_rewards is None and off.regret is None


def test_response_bandit_draws_bernoulli_rates_and_passes_amounts_through():
    pool = np.arange(10.0)[:, None]
    rates = ResponseBandit(pool, lambda rows: np.full((len(rows), 2), 0.5))
    rng = np.random.default_rng(0)
    ctx = rates.draw_contexts(4000, rng)
    assert ctx.shape == (4000, 1) and rates.expected_rewards(ctx).shape == (4000, 2)
    r = rates.reward_fn(ctx, np.zeros(4000, dtype=int), rng)
    assert set(np.unique(r)) == {0.0, 1.0} and abs(r.mean() - 0.5) < 0.03
    amounts = ResponseBandit(pool, lambda rows: np.full((len(rows), 2), 7.5))
    ctx = amounts.draw_contexts(3, rng)
    assert amounts.reward_fn(ctx, np.array([0, 1, 0]), rng).tolist() == [7.5, 7.5, 7.5]


def test_unknown_names_and_shared_bandits_without_features_are_refused():
    with pytest.raises(ValueError, match=r"unknown agent\(s\) \['nope'\]"):
        check_agent_names(["uniform", "nope"])
    with pytest.raises(ValueError, match="catalogue features"):
        _train({"linucb_shared": {}})


def test_save_and_load_round_trip(tmp_path):
    agents = _train({"logging": None, "linucb": {"alpha": 0.5}})
    save_agents(agents, tmp_path, n_actions=A, n_features=D + 1)
    x = _log(1)[0][:30]
    for name, a in agents.items():
        np.testing.assert_allclose(load_agent(tmp_path, name).action_probabilities(x), a.policy.action_probabilities(x))
    with pytest.raises(ValueError, match="is not in"):
        load_agent(tmp_path, "lints")
    with pytest.raises(ValueError, match="agents.json missing"):
        load_agent(tmp_path / "nowhere", "linucb")
