"""SB3Policy and probability_module: probabilities, sampling, DQN's closed-form ε-greedy, ONNX export."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, DQN, PPO

from pushrl.agents.sb3_adapter import to_sb3_vec_env
from pushrl.agents.sb3_policy import SB3Policy, epsilon_greedy, probability_module
from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.env_config import default_shop

torch.set_num_threads(1)
KINDS = ("ppo", "a2c", "dqn", "ppo-slate", "a2c-slate")


def make_env(n: int = 8, slate: int = 1) -> BatchedPushEnv:
    return BatchedPushEnv(n, 30, slate_size=slate, diversity_weight=0.2)


def build(kind: str) -> object:
    """An untrained model (random weights give non-degenerate probabilities)."""
    algo, _, slate = kind.partition("-")
    venv = to_sb3_vec_env(make_env(4, 2 if slate else 1))
    cls = {"ppo": PPO, "a2c": A2C, "dqn": DQN}[algo]
    extra = {"buffer_size": 1_000} if algo == "dqn" else {}
    return cls("MlpPolicy", venv, seed=1, device="cpu", **extra)


@pytest.fixture(scope="module")
def models() -> dict[str, object]:
    return {k: build(k) for k in KINDS}


@pytest.fixture(scope="module")
def observations() -> np.ndarray:
    env = make_env(64)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5):  # some history in the observations
        obs, *_ = env.step(rng.integers(0, env.single_action_space.n, 64))
    return obs


@pytest.mark.parametrize("kind", KINDS)
def test_probabilities_are_distributions_of_the_model(kind: str, models: dict, observations: np.ndarray) -> None:
    model = models[kind]
    policy = SB3Policy(model, exploration_rate=0.1 if kind == "dqn" else None)
    p = policy.action_probabilities(observations)
    n_actions = default_shop().n_actions + 1
    assert p.shape == ((64, n_actions) if "slate" not in kind else (64, n_actions, 2))
    assert policy.n_actions == n_actions and (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    if kind != "dqn":  # SB3's own log-probability of each action agrees
        obs = torch.as_tensor(observations)
        for a in range(n_actions):
            acts = torch.full((64,) if p.ndim == 2 else (64, 2), a)
            with torch.no_grad():
                _, logp, _ = model.policy.evaluate_actions(obs, acts)
            joint = p[:, a] if p.ndim == 2 else p[:, a, :].prod(axis=1)
            np.testing.assert_allclose(np.exp(logp.numpy()), joint, rtol=1e-5)


@pytest.mark.parametrize("kind", ["ppo", "dqn", "ppo-slate"])
def test_act_samples_with_its_propensities(kind: str, models: dict, observations: np.ndarray) -> None:
    policy = SB3Policy(models[kind], exploration_rate=0.3 if kind == "dqn" else None)
    rows = observations[:2]
    reps = 20_000
    batch = np.repeat(rows, reps, axis=0)
    actions, propensities = policy.act(batch, np.random.default_rng(5))
    p = policy.action_probabilities(rows)
    if p.ndim == 2:
        p = p[:, :, None]
        actions, propensities = actions[:, None], propensities[:, None]
    for j in range(p.shape[2]):
        for r in range(2):
            a = actions[r * reps:(r + 1) * reps, j]
            freq = np.bincount(a, minlength=p.shape[1]) / reps
            se = np.sqrt(p[r, :, j] * (1 - p[r, :, j]) / reps)
            assert (np.abs(freq - p[r, :, j]) <= 5 * se + 1e-9).all(), (freq, p[r, :, j])
            np.testing.assert_allclose(propensities[r * reps:(r + 1) * reps, j], p[r, a, j])


def test_dqn_closed_form_epsilon_greedy(models: dict, observations: np.ndarray) -> None:
    model = build("dqn")
    last = [m for m in model.policy.q_net.q_net if isinstance(m, torch.nn.Linear)][-1]
    q = torch.tensor([1.0, 3.0, 0.5, 3.0, 2.0, 0.0, 3.0, -1.0, 0.2, 1.5, 2.9])  # actions 1, 3, 6 tie
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(q)
    model.exploration_rate = 0.3
    expected = np.full(11, 0.3 / 11)
    expected[[1, 3, 6]] += 0.7 / 3
    np.testing.assert_allclose(SB3Policy(model).action_probabilities(observations[:4]), np.tile(expected, (4, 1)),
                               atol=1e-12)
    greedy = np.zeros(11)
    greedy[[1, 3, 6]] = 1 / 3
    np.testing.assert_allclose(SB3Policy(model, exploration_rate=0.0).action_probabilities(observations[:4]),
                               np.tile(greedy, (4, 1)), atol=1e-12)
    np.testing.assert_allclose(epsilon_greedy(np.array([[0.0, 2.0, 1.0]]), 1.0), [[1 / 3] * 3])


@pytest.mark.parametrize("kind", KINDS)
def test_probability_module_matches(kind: str, models: dict, observations: np.ndarray) -> None:
    model = models[kind]
    eps = 0.2 if kind == "dqn" else None
    module = probability_module(model, eps)
    with torch.no_grad():
        out = module(torch.as_tensor(observations, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(out, SB3Policy(model, eps).action_probabilities(observations), atol=1e-6, rtol=0)
    assert not any(p.requires_grad for p in module.parameters())


@pytest.mark.parametrize("kind", ["ppo-slate", "dqn"])
def test_probability_module_exports_to_onnx(kind: str, models: dict, observations: np.ndarray, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    module = probability_module(models[kind], 0.1 if kind == "dqn" else None)
    x = torch.as_tensor(observations, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (x[:3],), dynamo=True, input_names=["observations"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    path = tmp_path / "policy.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"observations": observations.astype(np.float32)})
    np.testing.assert_allclose(got, module(x).numpy(), atol=1e-6)


def test_policy_follows_further_training_but_module_is_a_snapshot(models: dict, observations: np.ndarray) -> None:
    model = build("ppo")
    policy, module = SB3Policy(model), probability_module(model)
    before = policy.action_probabilities(observations)
    with torch.no_grad():
        model.policy.action_net.bias.add_(torch.arange(11.0))
    assert not np.allclose(policy.action_probabilities(observations), before)
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.as_tensor(observations)).numpy(), before, atol=1e-6)


def test_bad_inputs(models: dict, observations: np.ndarray) -> None:
    policy = SB3Policy(models["ppo"])
    with pytest.raises(ValueError, match="observations has 5 features per row, the policy expects"):
        policy.action_probabilities(observations[:, :5])
    bad = observations.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="observations has NaN or inf at row 3, feature 2"):
        policy.act(bad, np.random.default_rng(0))
    with pytest.raises(ValueError, match="observations must be 2-D"):
        policy.action_probabilities(observations[0])
    with pytest.raises(ValueError, match="exploration_rate applies to DQN only"):
        SB3Policy(models["ppo"], exploration_rate=0.1)
    with pytest.raises(ValueError, match=r"exploration_rate must be a number in \[0, 1\]"):
        SB3Policy(models["dqn"], exploration_rate=1.5)
    with pytest.raises(TypeError, match="model must be a stable-baselines3 PPO, A2C or DQN"):
        SB3Policy(object())
