"""Every exportable policy kind: the served artifact's probabilities equal the in-process policy's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pushrl.agents.bandits import make_bandit
from pushrl.agents.export_policies import export_policy
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.baselines import LoggingPolicyReplay, MostPopular
from pushrl.policies.policy import UniformPolicy
from pushrl.policies.serving.runtime import PolicyRuntime

N_ACTIONS = 4


@pytest.fixture(scope="module")
def encoder_and_data():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=500), "b": rng.normal(size=500), "c": rng.choice(["x", "y"], 500)})
    enc = ContextEncoder.fit(frame, ["a", "b"], ["c"])
    x = enc.transform(frame)
    feats = np.hstack([x, np.ones((len(x), 1))])
    actions = rng.integers(0, N_ACTIONS, 500)
    rewards = (rng.random(500) < 0.2 + 0.1 * (actions == (x[:, 0] > 0))).astype(float)
    return enc, feats, actions, rewards


def _policies(d, actions, rewards):
    out = {}
    for name, hp in {"epsilon_greedy": {"epsilon": 0.2}, "softmax": {"temperature": 0.3}, "linucb": {"alpha": 0.7}}.items():
        out[name] = make_bandit(name, n_actions=N_ACTIONS, n_features=d, seed=1, **hp)
    out["lints"] = make_bandit("lints", n_actions=N_ACTIONS, n_features=d, seed=1, n_mc=50)
    out["neural_linear"] = make_bandit("neural_linear", n_actions=N_ACTIONS, n_features=d, seed=1, hidden_sizes=(8,),
                                       retrain_every=200, train_steps=20)
    out["uniform"] = UniformPolicy(N_ACTIONS, n_features=d)
    out["logging"] = LoggingPolicyReplay(np.array([0.1, 0.2, 0.3, 0.4]), n_features=d)
    out["most_popular"] = MostPopular(N_ACTIONS, n_features=d).fit(actions, rewards)
    return out


@pytest.mark.parametrize("name", ["epsilon_greedy", "softmax", "linucb", "uniform", "logging", "most_popular",
                                  "lints", "neural_linear"])
def test_served_probabilities_equal_in_process(tmp_path, encoder_and_data, name):
    enc, feats, actions, rewards = encoder_and_data
    d = feats.shape[1]
    policy = _policies(d, actions, rewards)[name]
    if hasattr(policy, "update"):
        policy.update(feats, actions, rewards)
    folder = export_policy(policy, name, enc, ["p0", "p1", "p2", "p3"], tmp_path / name, parity_rows=2000)
    runtime = PolicyRuntime.load(folder, seed=0)
    x = np.random.default_rng(3).normal(size=(10_000, enc.n_features))
    served = runtime.action_probabilities(x)
    feats = np.hstack([x, np.ones((len(x), 1))])
    if name in ("lints", "neural_linear"):  # exported as the greedy posterior-mean policy (documented)
        from pushrl.policies.baselines import greedy_probabilities

        local = greedy_probabilities(policy.estimates(feats))
    else:
        local = policy.action_probabilities(feats)
    np.testing.assert_allclose(served, local, atol=1e-5)


@pytest.mark.parametrize("algo", ["ppo", "dqn", "a2c"])
def test_sb3_policies_export_with_observation_inputs(tmp_path, algo):
    torch = pytest.importorskip("torch")
    from stable_baselines3 import A2C, DQN, PPO

    from pushrl.agents.export_policies import export_sb3
    from pushrl.agents.sb3_policy import SB3Policy
    from pushrl.envs.sim.push_env import PushEnv

    torch.set_num_threads(1)
    env = PushEnv()
    model = {"ppo": PPO, "dqn": DQN, "a2c": A2C}[algo]("MlpPolicy", env, seed=0, device="cpu")
    names = env.observation_names
    ids = [f"p{i}" for i in range(env.action_space.n - 1)]
    folder = export_sb3(model, names, ids, tmp_path / algo, name=algo, parity_rows=2000)
    runtime = PolicyRuntime.load(folder, seed=0)
    low, high = env.observation_space.low, env.observation_space.high
    obs = np.random.default_rng(0).uniform(low, high, size=(10_000, len(names))).astype(np.float32)
    served = runtime.action_probabilities(obs.astype(np.float64))
    local = SB3Policy(model).action_probabilities(obs)
    np.testing.assert_allclose(served, local, atol=1e-5)
    assert runtime.manifest.action_ids[-1] == "__no_push__"


def test_unknown_policy_type_is_refused(tmp_path, encoder_and_data):
    enc = encoder_and_data[0]
    with pytest.raises(ValueError, match="no exporter for policy type"):
        export_policy(object(), "x", enc, ["a"], tmp_path / "x")
