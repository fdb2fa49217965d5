"""Bad hyperparameters and bad inputs are refused with a message naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.agents.bandits import (
    EpsilonGreedy,
    LinTS,
    LinUCB,
    NeuralLinear,
    SharedLinTS,
    SharedLinUCB,
    Softmax,
)

Z = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])

BAD_HYPERPARAMETERS = [
    (EpsilonGreedy, {"epsilon": 1.5}, r"epsilon must be in \[0, 1\], got 1.5"),
    (EpsilonGreedy, {"epsilon": -0.1}, r"epsilon must be in \[0, 1\], got -0.1"),
    (EpsilonGreedy, {"epsilon": float("nan")}, r"epsilon must be in \[0, 1\], got nan"),
    (LinUCB, {"alpha": -1.0}, r"alpha must be a finite number >= 0, got -1.0"),
    (LinTS, {"alpha": -0.5}, r"alpha must be a finite number >= 0, got -0.5"),
    (Softmax, {"temperature": 0.0}, r"temperature must be a finite number > 0, got 0.0"),
    (Softmax, {"temperature": -2}, r"temperature must be a finite number > 0, got -2"),
    (LinUCB, {"ridge": 0.0}, r"ridge must be a finite number > 0, got 0.0"),
    (LinTS, {"ridge": -1.0}, r"ridge must be a finite number > 0, got -1.0"),
    (LinTS, {"n_mc": 0}, r"n_mc must be an integer >= 1, got 0"),
    (LinUCB, {"seed": -1}, r"seed must be an integer >= 0, got -1"),
    (LinUCB, {"n_actions": 0}, r"n_actions must be an integer >= 1, got 0"),
    (LinUCB, {"n_features": 2.5}, r"n_features must be an integer >= 1, got 2.5"),
    (LinUCB, {"alpha": "1"}, r"alpha must be a finite number >= 0, got '1'"),
    (
        NeuralLinear,
        {"hidden_sizes": ()},
        r"hidden_sizes must be a non-empty sequence of integers >= 1, got \(\)",
    ),
    (NeuralLinear, {"hidden_sizes": (8, 0)}, r"hidden_sizes .* got \(8, 0\)"),
    (NeuralLinear, {"learning_rate": 0.0}, r"learning_rate must be a finite number > 0, got 0.0"),
    (NeuralLinear, {"retrain_every": 0}, r"retrain_every must be an integer >= 1, got 0"),
    (NeuralLinear, {"buffer_size": 0}, r"buffer_size must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize(("cls", "override", "match"), BAD_HYPERPARAMETERS)
def test_bad_hyperparameters(cls, override, match) -> None:
    kwargs = {"n_actions": 3, "n_features": 2, **override}
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


BAD_SHARED = [
    ({"interaction": "inner"}, r"interaction must be one of \['outer', 'concat'\], got 'inner'"),
    ({"action_features": np.array([1.0, 2.0])}, r"action_features must be 2-D .* got shape \(2,\)"),
    (
        {"action_features": np.array([[1.0, np.nan]])},
        r"action_features has NaN or inf at row 0, feature 1",
    ),
    (
        {"action_features": np.empty((0, 2))},
        r"action_features must have shape \(n_actions >= 1, m >= 1\), got \(0, 2\)",
    ),
    ({"alpha": -1.0}, r"alpha must be a finite number >= 0, got -1.0"),
]


@pytest.mark.parametrize("cls", [SharedLinUCB, SharedLinTS])
@pytest.mark.parametrize(("override", "match"), BAD_SHARED)
def test_bad_shared_hyperparameters(cls, override, match) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**{"action_features": Z, "n_features": 2, **override})


X = np.array([[0.1, 0.2], [0.3, -0.4], [1.0, 0.0]])
A = np.array([0, 2, 1])
R = np.array([1.0, 0.0, 0.5])

BAD_UPDATES = [
    ({"contexts": X[:, :1]}, r"contexts has 1 features per row, the policy expects 2"),
    ({"contexts": np.where(X == 0.3, np.nan, X)}, r"contexts has NaN or inf at row 1, feature 0"),
    ({"contexts": X[0]}, r"contexts must be 2-D \(n, n_features\), got shape \(2,\)"),
    ({"actions": np.array([0, 3, 1])}, r"actions must be in \[0, 3\), got 3 at row 1"),
    ({"actions": np.array([0, -1, 1])}, r"actions must be in \[0, 3\), got -1 at row 1"),
    ({"actions": np.array([0.0, 1.0, 1.0])}, r"actions must be integers, got dtype float64"),
    ({"actions": A[:2]}, r"actions must have shape \(3,\) to match contexts, got \(2,\)"),
    ({"rewards": R[:2]}, r"rewards must have shape \(3,\) to match contexts, got \(2,\)"),
    ({"rewards": np.array([1.0, np.inf, 0.0])}, r"rewards has NaN or inf at row 1"),
    ({"weights": np.array([1.0, -1.0, 1.0])}, r"weights must be >= 0, got -1.0 at row 1"),
    (
        {"weights": np.array([1.0, 1.0])},
        r"weights must have shape \(3,\) to match contexts, got \(2,\)",
    ),
]


@pytest.mark.parametrize("cls", [LinUCB, LinTS, EpsilonGreedy, Softmax])
@pytest.mark.parametrize(("override", "match"), BAD_UPDATES)
def test_bad_update_inputs(cls, override, match) -> None:
    agent = cls(3, 2)
    kwargs = {"contexts": X, "actions": A, "rewards": R, **override}
    with pytest.raises(ValueError, match=match):
        agent.update(**kwargs)
    assert agent.n_updates == 0


@pytest.mark.parametrize("cls", [LinUCB, LinTS, NeuralLinear])
@pytest.mark.parametrize(
    ("contexts", "match"),
    [
        (np.ones((2, 3)), r"contexts has 3 features per row, the policy expects 2"),
        (np.array([[0.0, np.nan]]), r"contexts has NaN or inf at row 0, feature 1"),
    ],
)
def test_bad_contexts_at_act_time(cls, contexts, match) -> None:
    agent = cls(3, 2)
    rng = np.random.default_rng(0)
    for call in (
        agent.action_probabilities,
        lambda x: agent.act(x, rng),
        lambda x: agent.choose(x, rng),
    ):
        with pytest.raises(ValueError, match=match):
            call(contexts)


BAD_OFFLINE = [
    ({"pscores": np.array([0.5, 0.0, 0.5])}, r"pscores must be in \(0, 1\], got 0.0 at row 1"),
    ({"pscores": np.array([0.5, 1.5, 0.5])}, r"pscores must be in \(0, 1\], got 1.5 at row 1"),
    (
        {"pscores": np.array([0.5, 0.5])},
        r"pscores must have shape \(3,\) to match contexts, got \(2,\)",
    ),
    ({"mode": "dm"}, r"mode must be one of \['ips', 'replay'\], got 'dm'"),
    ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize(("override", "match"), BAD_OFFLINE)
def test_bad_offline_inputs(override, match) -> None:
    kwargs = {"contexts": X, "actions": A, "rewards": R, "pscores": np.full(3, 1 / 3), **override}
    with pytest.raises(ValueError, match=match):
        LinUCB(3, 2).fit_offline(**kwargs)


class BadEnv:
    def __init__(self, width: int = 2, reward_len: int | None = None) -> None:
        self.width, self.reward_len = width, reward_len

    def draw_contexts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(size=(n, self.width))

    def reward_fn(
        self, contexts: np.ndarray, actions: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        return np.zeros(len(actions) if self.reward_len is None else self.reward_len)


@pytest.mark.parametrize(
    ("env", "kwargs", "match"),
    [
        (BadEnv(width=5), {}, r"draw_contexts output has 5 features per row, the policy expects 2"),
        (
            BadEnv(reward_len=1),
            {},
            r"reward_fn output must have shape \(4,\) to match contexts, got \(1,\)",
        ),
        (BadEnv(), {"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        (BadEnv(), {"n_rounds": -1}, r"n_rounds must be an integer >= 0, got -1"),
    ],
)
def test_bad_online_environment(env, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        LinUCB(3, 2).run_online(
            env, **{"n_rounds": 8, "batch_size": 4, "rng": np.random.default_rng(0), **kwargs}
        )


def test_bad_state_and_action_features() -> None:
    agent = LinUCB(3, 2)
    state = agent.get_state()
    with pytest.raises(ValueError, match=r"state is missing 'ridge.A'"):
        agent.set_state({k: v for k, v in state.items() if k != "ridge.A"})
    with pytest.raises(
        ValueError, match=r"state\['ridge.b'\] must have shape \(3, 2\), got \(3, 3\)"
    ):
        agent.set_state({**state, "ridge.b": np.zeros((3, 3))})
    with pytest.raises(ValueError, match=r"set_action_features needs a shared model"):
        agent.set_action_features(Z)
    shared = SharedLinUCB(Z, 2)
    with pytest.raises(
        ValueError, match=r"action_features has 3 features per row, the policy expects 2"
    ):
        shared.set_action_features(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"action must be in \[0, 3\), got 5"):
        LinTS(3, 2).posterior(5)


def test_bad_neural_state_loads_nothing() -> None:
    agent = NeuralLinear(3, 2, hidden_sizes=(4,))
    state = agent.get_state()
    before = agent.get_state()
    with pytest.raises(
        ValueError, match=r"state\['head.weight'\] must have shape \(3, 4\), got \(3, 5\)"
    ):
        agent.set_state({**state, "body.0.bias": np.ones(4), "head.weight": np.zeros((3, 5))})
    with pytest.raises(ValueError, match=r"state is missing 'n_retrains'"):
        agent.set_state({k: v for k, v in state.items() if k != "n_retrains"})
    for k, v in agent.get_state().items():
        np.testing.assert_array_equal(v, before[k])
