"""PPO, DQN and A2C from stable-baselines3, trained on the batched PushEnv.

`train_sb3(config, env_factory, run_dir)` builds `env_factory(config.n_envs)` (a BatchedPushEnv;
its users are SB3's parallel envs, through `pushrl.agents.sb3_adapter.to_sb3_vec_env`) and trains,
writing into run_dir:
    config.json                    the SB3AgentConfig used
    checkpoints/<algo>_<timesteps>_steps.zip
                                   periodic checkpoints, written atomically (temp file + os.replace),
                                   also on KeyboardInterrupt and at the end; the newest is resumed
    learning_curve.csv             simulator value of the current policy every eval_freq timesteps:
                                   mean reward per user-episode over a fixed seeded set of users
                                   (`pushrl.agents.rollout.rollout`), with its 95% CI over seeds
    tensorboard/                   SB3's TensorBoard logs (and the eval/ metrics)
A run_dir that already holds checkpoints of the algorithm resumes from the newest one and
continues its timestep count up to total_timesteps: the hyperparameters come from the checkpoint,
DQN resumes with an empty replay buffer, and PPO/A2C stop at the end of the rollout that reaches
total_timesteps (as SB3 does).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecMonitor

from pushrl.agents.rollout import resolve_env, rollout
from pushrl.agents.sb3_adapter import to_sb3_vec_env
from pushrl.agents.sb3_policy import SB3Policy
from pushrl.envs.common.atomic import atomic_path, write_json, write_with
from pushrl.envs.sim.batched_env import BatchedPushEnv

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "dqn": DQN, "a2c": A2C}
RESERVED_KWARGS = ("policy", "env", "learning_rate", "seed", "device", "tensorboard_log", "verbose",
                   "_init_setup_model")
ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    # rollouts of about one 30-day episode per user; SB3's n_steps=2048 x 64 users would be 131k steps
    "ppo": {"n_steps": 32, "n_epochs": 4},
    "a2c": {"n_steps": 8},
    # every env step adds n_envs transitions: learn from each batch, and keep the buffer modest
    "dqn": {"buffer_size": 100_000, "learning_starts": 1_000, "train_freq": 1, "gradient_steps": 1,
            "target_update_interval": 2_000},
}
CHECKPOINT_RE = re.compile(r"^(ppo|dqn|a2c)_(\d+)_steps\.zip$")
CURVE_FILE = "learning_curve.csv"
EnvFactory = Callable[[int], BatchedPushEnv]
PolicyOf = Callable[..., Any]
"""(model, exploration_rate) -> the model as a BasePolicy over the env's observation (default: SB3Policy)."""


@dataclass(frozen=True)
class SB3AgentConfig:
    """How to train one SB3 agent on the batched PushEnv (validated on construction)."""

    algo: str = "ppo"
    """"ppo", "dqn" or "a2c" (DQN needs slate_size = 1)."""
    total_timesteps: int = 100_000
    """Env steps to train for in all (summed over users; a resumed run trains up to this count)."""
    n_envs: int = 64
    """Users stepped together in the BatchedPushEnv (SB3's number of parallel envs)."""
    learning_rate: float = 3e-4
    """Optimiser step size (> 0)."""
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments of the SB3 algorithm (checked against its signature), over ALGO_DEFAULTS."""
    policy: str = "MlpPolicy"
    """SB3 policy name."""
    seed: int = 0
    """Seeds SB3 (torch, numpy, the env) and the evaluation users."""
    device: str = "cpu"
    """torch device of the model."""
    tensorboard_log: str | None = "tensorboard"
    """TensorBoard folder (relative: inside run_dir); None: no TensorBoard logs."""
    checkpoint_dir: str = "checkpoints"
    """Checkpoint folder (relative: inside run_dir)."""
    checkpoint_freq: int = 10_000
    """Save a checkpoint every this many timesteps (0: only at the end and on KeyboardInterrupt)."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep (>= 1)."""
    eval_freq: int = 10_000
    """Evaluate in the simulator every this many timesteps (0: no learning curve)."""
    eval_users: int = 256
    """Users per evaluation seed."""
    eval_seeds: int = 5
    """Seeds per evaluation (the CI is over seeds; >= 2 for a finite CI)."""
    eval_exploration_rate: float = 0.0
    """DQN only: ε of the evaluated ε-greedy policy (0: greedy)."""
    progress_bar: bool = False
    """Show SB3's tqdm/rich progress bar."""

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise ValueError(f"SB3AgentConfig.algo must be one of {sorted(ALGORITHMS)}, got {self.algo!r}")
        for name, minimum in (("total_timesteps", 1), ("n_envs", 1), ("seed", 0), ("checkpoint_freq", 0),
                              ("keep_checkpoints", 1), ("eval_freq", 0), ("eval_users", 1), ("eval_seeds", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
                raise ValueError(f"SB3AgentConfig.{name} must be an integer >= {minimum}, got {value!r}")
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"SB3AgentConfig.learning_rate must be a finite number > 0, got {lr!r}")
        eps = self.eval_exploration_rate
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0.0 <= eps <= 1.0:
            raise ValueError(f"SB3AgentConfig.eval_exploration_rate must be in [0, 1], got {eps!r}")
        if not isinstance(self.progress_bar, bool):
            raise ValueError(f"SB3AgentConfig.progress_bar must be True or False, got {self.progress_bar!r}")
        if not isinstance(self.algo_kwargs, dict):
            raise ValueError(f"SB3AgentConfig.algo_kwargs must be a dict, got {type(self.algo_kwargs).__name__}")
        object.__setattr__(self, "algo_kwargs", dict(self.algo_kwargs))
        reserved = sorted(set(self.algo_kwargs) & set(RESERVED_KWARGS))
        if reserved:
            raise ValueError(f"SB3AgentConfig.algo_kwargs may not set {reserved}: they are SB3AgentConfig fields "
                             f"or set by train_sb3")
        allowed = set(inspect.signature(ALGORITHMS[self.algo].__init__).parameters) - {"self", *RESERVED_KWARGS}
        unknown = sorted(set(self.algo_kwargs) - allowed)
        if unknown:
            raise ValueError(f"SB3AgentConfig.algo_kwargs has unknown {self.algo.upper()} argument(s) {unknown}; "
                             f"allowed: {sorted(allowed)}")

    def algorithm_kwargs(self) -> dict[str, Any]:
        """ALGO_DEFAULTS for the algorithm, overridden by algo_kwargs (PPO's batch_size fits the rollout)."""
        kwargs = {**ALGO_DEFAULTS[self.algo], **self.algo_kwargs}
        if self.algo == "ppo" and "batch_size" not in kwargs:
            kwargs["batch_size"] = min(256, kwargs["n_steps"] * self.n_envs)
        return kwargs


@dataclass(frozen=True, eq=False)
class TrainedSB3:
    """The result of `train_sb3`: the model, where it was saved, and its learning curve."""

    model: BaseAlgorithm
    config: SB3AgentConfig
    run_dir: Path
    checkpoint: Path
    learning_curve: pd.DataFrame
    as_policy: PolicyOf = SB3Policy

    def policy(self, exploration_rate: float | None = None) -> Any:
        """The model as a Policy (DQN: ε = exploration_rate, default the model's current one)."""
        return self.as_policy(self.model, exploration_rate)


def checkpoint_path(directory: Path, algo: str, timesteps: int) -> Path:
    return Path(directory) / f"{algo}_{timesteps:012d}_steps.zip"


def list_checkpoints(directory: str | Path) -> list[tuple[int, str, Path]]:
    """(timesteps, algo, path) of every checkpoint in `directory`, oldest first."""
    d = Path(directory)
    found = [(int(m.group(2)), m.group(1), p) for p in d.glob("*_steps.zip") if (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def latest_checkpoint(directory: str | Path, algo: str) -> Path | None:
    """The newest checkpoint of `algo` in `directory`; ValueError if it holds only other algorithms'."""
    found = list_checkpoints(directory)
    mine = [p for _, a, p in found if a == algo]
    if found and not mine:
        raise ValueError(f"{directory} holds checkpoints of {sorted({a for _, a, _ in found})}, not of "
                         f"algo={algo!r}; use another run_dir")
    return mine[-1] if mine else None


def save_checkpoint(model: BaseAlgorithm, directory: str | Path, algo: str, keep: int | None = None) -> Path:
    """Save atomically as <algo>_<num_timesteps>_steps.zip; keep only the newest `keep` checkpoints."""
    path = checkpoint_path(Path(directory), algo, model.num_timesteps)
    with atomic_path(path) as tmp:
        model.save(tmp)
    if keep is not None:
        for _, _, old in [c for c in list_checkpoints(directory) if c[1] == algo][:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, env: Any = None, device: str = "cpu") -> BaseAlgorithm:
    """Load a checkpoint written by `train_sb3` (the algorithm is read from the file name)."""
    p = Path(path)
    m = CHECKPOINT_RE.match(p.name)
    if m is None:
        raise ValueError(f"{p.name!r} is not a train_sb3 checkpoint name (<algo>_<timesteps>_steps.zip)")
    return ALGORITHMS[m.group(1)].load(p, env=env, device=device)


class CheckpointCallback(BaseCallback):
    """Atomic checkpoint every `freq` timesteps (0: never periodically)."""

    def __init__(self, directory: Path, algo: str, freq: int, keep: int) -> None:
        super().__init__()
        self.directory, self.algo, self.freq, self.keep = directory, algo, freq, keep
        self._last = 0

    def _on_training_start(self) -> None:
        self._last = self.model.num_timesteps

    def _on_step(self) -> bool:
        if self.freq and self.num_timesteps - self._last >= self.freq:
            self.save()
        return True

    def save(self) -> Path:
        self._last = self.model.num_timesteps
        return save_checkpoint(self.model, self.directory, self.algo, self.keep)


class LearningCurveCallback(BaseCallback):
    """Simulator value of the current policy every `freq` timesteps, into a CSV and TensorBoard."""

    def __init__(self, config: SB3AgentConfig, eval_env: BatchedPushEnv, csv_path: Path,
                 as_policy: PolicyOf = SB3Policy) -> None:
        super().__init__()
        self.config, self.eval_env, self.csv_path, self.as_policy = config, eval_env, csv_path, as_policy
        self.rows: list[dict[str, float]] = []
        self._last = -1
        self._start = time.perf_counter()

    def _on_training_start(self) -> None:
        now = self.model.num_timesteps
        if self.csv_path.exists():  # resumed: keep the curve up to the checkpoint
            old = pd.read_csv(self.csv_path)
            self.rows = old[old["timesteps"] <= now].to_dict("records")
        self._last = int(self.rows[-1]["timesteps"]) if self.rows else -1
        if self._last < 0:
            self.evaluate()

    def _on_step(self) -> bool:
        if self.num_timesteps - max(self._last, 0) >= self.config.eval_freq:
            self.evaluate()
        return True

    def _on_training_end(self) -> None:
        if self._last != self.model.num_timesteps:
            self.evaluate()

    def evaluate(self) -> dict[str, float]:
        eps = self.config.eval_exploration_rate if isinstance(self.model, DQN) else None
        result = rollout(self.as_policy(self.model, eps), self.eval_env, None, self.config.eval_seeds, self.config.seed)
        m = result.metrics
        row = {"timesteps": int(self.model.num_timesteps), "reward_per_user": m["reward_per_user"].mean,
               "reward_per_user_ci_low": m["reward_per_user"].ci_low,
               "reward_per_user_ci_high": m["reward_per_user"].ci_high,
               **{k: m[k].mean for k in ("response_rate", "pushes_per_user", "unsubscribe_rate")},
               "wall_time_s": time.perf_counter() - self._start}
        self.rows.append(row)
        self._last = row["timesteps"]
        frame = pd.DataFrame(self.rows)
        write_with(self.csv_path, lambda tmp: frame.to_csv(tmp, index=False))
        for key in ("reward_per_user", "response_rate", "pushes_per_user", "unsubscribe_rate"):
            self.logger.record(f"eval/{key}", row[key])
        self.logger.dump(row["timesteps"])  # as SB3's EvalCallback: written at the evaluated timestep
        return row


def _resolve(run_dir: Path, folder: str | None) -> str | None:
    return None if folder is None else str(run_dir / folder)


def train_sb3(config: SB3AgentConfig, env_factory: EnvFactory, run_dir: str | Path,
              callbacks: Sequence[BaseCallback] = (), *, adapter: Callable[[BatchedPushEnv], Any] = to_sb3_vec_env,
              as_policy: PolicyOf = SB3Policy) -> TrainedSB3:
    """Train (or resume) an SB3 agent on `env_factory(config.n_envs)`; see the module docstring.

    `callbacks` are extra SB3 callbacks run after the checkpoint and evaluation ones. A
    KeyboardInterrupt saves a checkpoint of the current model and is re-raised. `adapter` turns the
    BatchedPushEnv into the SB3 VecEnv trained on (default: the env's own observation and actions) and
    `as_policy(model, ε)` the model into the Policy evaluated on the env (learning curve, `policy()`):
    `pushrl.agents.timing_rl` passes its two-action timing view.
    """
    if not isinstance(config, SB3AgentConfig):
        raise TypeError(f"config must be an SB3AgentConfig, got {type(config).__name__}")
    run_dir = Path(run_dir)
    env = resolve_env(env_factory, config.n_envs)
    if config.algo == "dqn" and env.config.slate_size != 1:
        raise ValueError(f"SB3AgentConfig.algo='dqn' supports one promotion per push (Discrete actions), but the env "
                         f"has slate_size={env.config.slate_size} (MultiDiscrete); use 'ppo' or 'a2c' for slates")
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / config.checkpoint_dir
    latest = latest_checkpoint(ckpt_dir, config.algo)
    venv = VecMonitor(adapter(env))
    tb = _resolve(run_dir, config.tensorboard_log)
    cls = ALGORITHMS[config.algo]
    if latest is not None:
        model = cls.load(latest, env=venv, device=config.device, tensorboard_log=tb)
        model.set_random_seed(config.seed + model.num_timesteps)
    else:
        model = cls(config.policy, venv, learning_rate=config.learning_rate, seed=config.seed, device=config.device,
                    tensorboard_log=tb, verbose=0, **config.algorithm_kwargs())
    if tb is None:  # SB3 would otherwise make a /tmp/SB3-<time> folder for its default logger
        model.set_logger(Logger(folder=None, output_formats=[]))
    write_json(run_dir / "config.json", dataclasses.asdict(config), default=repr)
    checkpointer = CheckpointCallback(ckpt_dir, config.algo, config.checkpoint_freq, config.keep_checkpoints)
    chain: list[BaseCallback] = [checkpointer]
    if config.eval_freq > 0:
        eval_env = resolve_env(env_factory, config.eval_users)
        if eval_env.max_episode_steps is None:
            raise ValueError("SB3AgentConfig.eval_freq > 0 needs finite episodes, but env_factory's env has "
                             "max_episode_steps=None")
        chain.append(LearningCurveCallback(config, eval_env, run_dir / CURVE_FILE, as_policy))
    chain.extend(callbacks)
    remaining = config.total_timesteps - model.num_timesteps
    checkpoint = latest
    if remaining > 0:
        try:
            model.learn(remaining, callback=CallbackList(chain), progress_bar=config.progress_bar,
                        reset_num_timesteps=latest is None, tb_log_name=config.algo)
        except KeyboardInterrupt:
            checkpointer.save()
            raise
        checkpoint = checkpointer.save()
    if checkpoint is None:  # cannot happen: a fresh run has remaining = total_timesteps >= 1
        raise RuntimeError("no checkpoint was written")
    curve_path = run_dir / CURVE_FILE
    curve = pd.read_csv(curve_path) if curve_path.exists() else pd.DataFrame()
    return TrainedSB3(model, config, run_dir, checkpoint, curve, as_policy)
