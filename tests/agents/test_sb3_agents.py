"""SB3 agents on the batched PushEnv: config validation, learning toy problems with a known optimum,
seeding, checkpoints (atomic, on KeyboardInterrupt), resume, learning curve, TensorBoard."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from pushrl.agents.rollout import rollout
from pushrl.agents.sb3_agents import (
    SB3AgentConfig,
    TrainedSB3,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    train_sb3,
)
from pushrl.envs.sim.batched_env import BatchedPushEnv

torch.set_num_threads(1)
D = 2
POOL = np.random.default_rng(0).normal(size=(200, D))
ALGOS = ("ppo", "a2c", "dqn")
TINY = {"ppo": {"n_steps": 8, "n_epochs": 1, "batch_size": 64}, "a2c": {"n_steps": 8},
        "dqn": {"learning_starts": 64, "buffer_size": 2_000}}


class ToyResponse:
    """Click probability per promotion; `contextual`: reversed for users whose first feature is > 0."""

    reward_names = ("click",)
    n_context_features = D

    def __init__(self, click: list[float], contextual: bool = False) -> None:
        self.click, self.contextual = np.asarray(click, dtype=np.float64), contextual

    @property
    def n_actions(self) -> int:
        return len(self.click)

    def predict(self, contexts: np.ndarray, recent: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
        p = np.tile(self.click, (len(contexts), 1))
        if self.contextual:
            p[contexts[:, 0] > 0] = self.click[::-1]
        return {"click": p}


def toy_factory(click: list[float], horizon: int = 1, contextual: bool = False, slate: int = 1):
    """Churn, fatigue and the frequency cap off: the best promotion is the best every day."""
    config = {"churn_logit": -50.0, "churn_slope": 0.0, "frequency_cap": None, "fatigue": "response",
              "slate_size": slate}
    return lambda n: BatchedPushEnv(n, horizon, response=ToyResponse(click, contextual), contexts=POOL, config=config)


def config(algo: str, total: int, **kw: object) -> SB3AgentConfig:
    base = {"algo": algo, "total_timesteps": total, "n_envs": 16, "algo_kwargs": TINY[algo], "eval_freq": 0,
            "tensorboard_log": None, "checkpoint_freq": 0}
    return SB3AgentConfig(**{**base, **kw})


def best_mass(trained: TrainedSB3, factory, best) -> float:
    """Mean probability the trained policy puts on the best action (greedy for DQN)."""
    obs, _ = factory(512).reset(seed=123)
    p = trained.policy(0.0 if trained.config.algo == "dqn" else None).action_probabilities(obs)
    return float(p[np.arange(len(p)), best(obs)].mean())


@pytest.mark.parametrize("algo", ALGOS)
def test_learns_a_trivial_problem(algo: str, tmp_path: Path) -> None:
    """One-day episodes, promotion 1 always clicked, the others never: all mass should go to 1."""
    factory = toy_factory([0.0, 1.0, 0.0, 0.0])
    kwargs = {"dqn": {"learning_starts": 256, "buffer_size": 10_000}}.get(algo, {})
    cfg = SB3AgentConfig(algo=algo, total_timesteps=4_096, n_envs=64, learning_rate=3e-3, algo_kwargs=kwargs,
                         eval_freq=0, tensorboard_log=None, checkpoint_freq=0)
    trained = train_sb3(cfg, factory, tmp_path)
    uniform = 1 / 5
    assert best_mass(trained, factory, lambda obs: np.ones(len(obs), dtype=int)) > 4 * uniform


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
def test_learns_a_contextual_problem(algo: str, tmp_path: Path) -> None:
    """Noisy clicks, 5-day episodes; the best promotion (1 or 2) depends on the user's context.

    Without fatigue the myopic policy is optimal, so a short discount (gamma 0.5) loses nothing; with
    0.99 and time-limit bootstrapping every Q-value is ~0.6 / (1 - 0.99) and DQN needs far longer.
    """
    factory = toy_factory([0.1, 0.6, 0.2, 0.1], horizon=5, contextual=True)
    kwargs = {"ppo": {"n_steps": 16}, "a2c": {"n_steps": 8}, "dqn": {"exploration_fraction": 0.3}}[algo]
    kwargs["gamma"] = 0.5
    cfg = SB3AgentConfig(algo=algo, total_timesteps=60_000, n_envs=64, learning_rate=1e-3, algo_kwargs=kwargs,
                         eval_freq=0, tensorboard_log=None, checkpoint_freq=0)
    trained = train_sb3(cfg, factory, tmp_path)
    assert best_mass(trained, factory, lambda obs: np.where(obs[:, factory(1).layout.context][:, 0] > 0, 2, 1)) > 3.5 / 5


@pytest.mark.parametrize("algo", ALGOS)
def test_same_seed_same_actions(algo: str, tmp_path: Path) -> None:
    factory = toy_factory([0.2, 0.5, 0.3, 0.1], horizon=4)
    runs = [train_sb3(config(algo, 512, seed=s), factory, tmp_path / f"run{i}") for i, s in enumerate((7, 7, 8))]
    obs, _ = factory(64).reset(seed=0)
    eps = 0.5 if algo == "dqn" else None
    probs = [r.policy(eps).action_probabilities(obs) for r in runs]
    actions = [r.policy(eps).act(obs, np.random.default_rng(1))[0] for r in runs]
    np.testing.assert_array_equal(probs[0], probs[1])
    np.testing.assert_array_equal(actions[0], actions[1])
    assert not np.array_equal(probs[0], probs[2])


class Recorder(BaseCallback):
    """Records the timestep count and the weights when training starts."""

    def _on_training_start(self) -> None:
        self.start = self.model.num_timesteps
        self.weights = [p.detach().clone() for p in self.model.policy.parameters()]

    def _on_step(self) -> bool:
        return True


@pytest.mark.parametrize("algo", ALGOS)
def test_checkpoints_and_resume(algo: str, tmp_path: Path) -> None:
    factory = toy_factory([0.2, 0.5, 0.3, 0.1], horizon=4)
    cfg = config(algo, 512, checkpoint_freq=128, keep_checkpoints=2, eval_freq=256, eval_users=8, eval_seeds=2)
    first = train_sb3(cfg, factory, tmp_path)
    ckpts = tmp_path / "checkpoints"
    assert [t for t, _, _ in list_checkpoints(ckpts)] == [384, 512] and first.checkpoint == latest_checkpoint(ckpts, algo)
    final_weights = [p.detach().clone() for p in first.model.policy.parameters()]
    recorder = Recorder()
    cfg2 = dataclasses.replace(cfg, total_timesteps=1024, keep_checkpoints=10)
    second = train_sb3(cfg2, factory, tmp_path, callbacks=[recorder])
    assert recorder.start == 512 and second.model.num_timesteps == 1024
    for a, b in zip(recorder.weights, final_weights, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [t for t, _, _ in list_checkpoints(ckpts)] == [384, 512, 640, 768, 896, 1024]
    assert load_checkpoint(second.checkpoint).num_timesteps == 1024
    assert second.learning_curve["timesteps"].tolist() == [0, 256, 512, 768, 1024]
    assert (tmp_path / "config.json").exists() and not list(ckpts.glob(".*"))
    again = train_sb3(cfg2, factory, tmp_path)
    assert again.model.num_timesteps == 1024 and again.checkpoint == second.checkpoint  # nothing left to do


def test_learning_curve_is_the_rollout_harness(tmp_path: Path) -> None:
    factory = toy_factory([0.2, 0.5, 0.3, 0.1], horizon=4)
    trained = train_sb3(config("ppo", 256, eval_freq=128, eval_users=8, eval_seeds=3, seed=4), factory, tmp_path)
    last = trained.learning_curve.iloc[-1]
    m = rollout(trained.policy(), factory, 8, 3, seed=4).metrics["reward_per_user"]
    assert last["timesteps"] == 256
    np.testing.assert_allclose([last["reward_per_user"], last["reward_per_user_ci_low"],
                                last["reward_per_user_ci_high"]], [m.mean, m.ci_low, m.ci_high], rtol=1e-12)
    assert m.ci_low < m.mean < m.ci_high


class RaiseAt(BaseCallback):
    def __init__(self, timesteps: int) -> None:
        super().__init__()
        self.timesteps = timesteps

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.timesteps:
            raise KeyboardInterrupt
        return True


def test_keyboard_interrupt_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    factory = toy_factory([0.2, 0.5, 0.3, 0.1], horizon=4)
    cfg = config("ppo", 1024, checkpoint_freq=256)
    with pytest.raises(KeyboardInterrupt):
        train_sb3(cfg, factory, tmp_path, callbacks=[RaiseAt(600)])
    ckpts = tmp_path / "checkpoints"
    assert [t for t, _, _ in list_checkpoints(ckpts)] == [256, 512, 608] and not list(ckpts.glob(".*"))
    assert load_checkpoint(latest_checkpoint(ckpts, "ppo")).num_timesteps == 608
    resumed = train_sb3(cfg, factory, tmp_path).model.num_timesteps  # PPO stops at the end of a rollout (128)
    assert 1024 <= resumed < 1024 + 128


def test_interrupt_while_saving_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    factory = toy_factory([0.2, 0.5, 0.3, 0.1], horizon=4)
    cfg = config("ppo", 256)
    train_sb3(cfg, factory, tmp_path)

    def torn_save(self, path, *args, **kwargs) -> None:
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(PPO, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        train_sb3(dataclasses.replace(cfg, total_timesteps=1024, checkpoint_freq=128), factory, tmp_path)
    ckpts = tmp_path / "checkpoints"
    assert [p.name for p in ckpts.iterdir()] == ["ppo_000000000256_steps.zip"]
    monkeypatch.undo()
    assert load_checkpoint(ckpts / "ppo_000000000256_steps.zip").num_timesteps == 256


@pytest.mark.filterwarnings("ignore::tqdm.TqdmExperimentalWarning")  # SB3 uses tqdm.rich
def test_tensorboard_and_progress_bar(tmp_path: Path, capsys) -> None:
    factory = toy_factory([0.2, 0.5, 0.3, 0.1], horizon=4)
    train_sb3(config("a2c", 256, tensorboard_log="tb", progress_bar=True, eval_freq=128, eval_users=4),
              factory, tmp_path)
    events = list((tmp_path / "tb").rglob("events.out.tfevents*"))
    assert events and any(b"eval/reward_per_user" in e.read_bytes() for e in events)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("algo", "sac", r"algo must be one of \['a2c', 'dqn', 'ppo'\], got 'sac'"),
    ("total_timesteps", 0, "total_timesteps must be an integer >= 1"),
    ("n_envs", 2.5, "n_envs must be an integer >= 1"),
    ("learning_rate", float("nan"), "learning_rate must be a finite number > 0"),
    ("learning_rate", 0, "learning_rate must be a finite number > 0"),
    ("seed", -1, "seed must be an integer >= 0"),
    ("checkpoint_freq", -5, "checkpoint_freq must be an integer >= 0"),
    ("eval_exploration_rate", 1.5, r"eval_exploration_rate must be in \[0, 1\]"),
    ("progress_bar", "yes", "progress_bar must be True or False"),
    ("algo_kwargs", {"n_stepz": 8}, r"algo_kwargs has unknown PPO argument\(s\) \['n_stepz'\]"),
    ("algo_kwargs", {"seed": 3}, r"algo_kwargs may not set \['seed'\]"),
    ("algo_kwargs", [1], "algo_kwargs must be a dict"),
])
def test_config_refuses_bad_values(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=f"SB3AgentConfig.{match}"):
        SB3AgentConfig(**{field: value})


def test_dqn_kwargs_are_checked_against_dqn() -> None:
    with pytest.raises(ValueError, match=r"unknown DQN argument\(s\) \['n_epochs'\]"):
        SB3AgentConfig(algo="dqn", algo_kwargs={"n_epochs": 3})
    assert SB3AgentConfig(algo="dqn", algo_kwargs={"exploration_fraction": 0.5}).algorithm_kwargs()["exploration_fraction"] == 0.5


def test_train_refuses_bad_envs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="algo='dqn' supports one promotion per push.*slate_size=2"):
        train_sb3(config("dqn", 64), toy_factory([0.1, 0.5, 0.2], slate=2), tmp_path)
    with pytest.raises(ValueError, match=r"the env factory must return a BatchedPushEnv of n_users=16 users"):
        train_sb3(config("ppo", 64), lambda n: toy_factory([0.1, 0.5])(n + 1), tmp_path)
    train_sb3(config("a2c", 128), toy_factory([0.1, 0.5]), tmp_path / "run")
    with pytest.raises(ValueError, match=r"holds checkpoints of \['a2c'\], not of algo='ppo'"):
        train_sb3(config("ppo", 128), toy_factory([0.1, 0.5]), tmp_path / "run")
    with pytest.raises(ValueError, match="eval_freq > 0 needs finite episodes"):
        train_sb3(config("ppo", 64, eval_freq=32), toy_factory([0.1, 0.5], horizon=None), tmp_path)
    with pytest.raises(TypeError, match="config must be an SB3AgentConfig"):
        train_sb3({"algo": "ppo"}, toy_factory([0.1, 0.5]), tmp_path)
