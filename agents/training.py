"""Train the configured agents: baselines fitted on the log, bandits offline (IPS) then online in a simulator.

* `ResponseBandit`: the one-step simulator a bandit learns in (users drawn from a context pool, outcomes
  from an expected-objective function).
* `train_agents`: one `TrainedAgent` per configured name. Baselines come from `BASELINE_BUILDERS`
  (name -> builder), bandits from `pushrl.agents.bandits.make_bandit` (its `BANDITS` registry).
* `save_agents` / `load_agent` / `load_catalogue`: the npz + json files `pushrl export` rebuilds agents from.

Shapes (batch first): features (n, d) with the intercept column last; actions (n,); probabilities (n, A).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pushrl.agents.bandits import BANDITS, make_bandit
from pushrl.envs.common.atomic import write_json, write_with
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import CatalogueSpec
from pushrl.policies.baselines import LoggingPolicyReplay, MostPopular
from pushrl.policies.policy import Policy, UniformPolicy

SHARED = ("linucb_shared", "lints_shared")  # score promotions from their features: need action_features


@dataclass
class TrainedAgent:
    name: str
    kind: str  # "baseline" | "bandit"
    policy: Policy
    hparams: dict[str, Any]
    online_rewards: np.ndarray | None = None  # per-batch mean reward while learning in the simulator
    regret: np.ndarray | None = None  # per-decision expected regret against the simulator's best action

    @property
    def served(self) -> Policy:
        """The policy its artifact serves (`served_policy`): score this by OPE and export this."""
        # imported here: it loads onnx, which only evaluating and exporting need
        from pushrl.agents.export_policies import served_policy

        return served_policy(self.policy)


@dataclass(frozen=True)
class BaselineInputs:
    """What a baseline builder reads: the action count, feature width and the training log."""

    n_actions: int
    n_features: int
    train_action: np.ndarray
    train_reward: np.ndarray
    logging_probabilities: np.ndarray


BASELINE_BUILDERS: dict[str, Callable[[BaselineInputs], Policy]] = {
    "uniform": lambda b: UniformPolicy(b.n_actions, n_features=b.n_features),
    "most_popular": lambda b: MostPopular(b.n_actions, n_features=b.n_features).fit(b.train_action, b.train_reward),
    "logging": lambda b: LoggingPolicyReplay(b.logging_probabilities, n_features=b.n_features),
}
"""Baseline name -> builder of its fitted policy."""

BASELINES = tuple(BASELINE_BUILDERS)


def with_intercept(x: np.ndarray) -> np.ndarray:
    """What agents see: the encoded context plus a constant-1 column."""
    return np.hstack([x.astype(np.float64), np.ones((len(x), 1))])


def check_agent_names(names: list[str]) -> None:
    """Refuse unknown agent names before any work starts."""
    allowed = set(BASELINES) | set(BANDITS)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"agents: unknown agent(s) {unknown}; allowed: {sorted(allowed)}")


class ResponseBandit:
    """The one-step simulator a bandit learns in: users drawn from a context pool, outcomes from a response.

    `expected(rows)` gives the (n, A) expected objective of pool rows: the learned response model's, or the
    synthetic truth's (then `expected_rewards` makes `run_online` record regret against the oracle).
    Outcomes are Bernoulli draws when every expected value is in [0, 1], else the expected value itself.
    """

    def __init__(self, pool: np.ndarray, expected: Callable[[np.ndarray], np.ndarray]) -> None:
        self.pool, self.expected = pool, expected
        self._q: np.ndarray | None = None  # expected objective of the users just drawn, computed once

    def expected_rewards(self, contexts: np.ndarray) -> np.ndarray:
        """(n, A) expected objective of the users just drawn (for regret)."""
        return self._q

    def draw_contexts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        rows = rng.integers(0, len(self.pool), size=n)
        self._q = self.expected(rows)
        return self.pool[rows]

    def reward_fn(self, contexts: np.ndarray, actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        q = self._q[np.arange(len(actions)), actions]
        return (rng.random(len(actions)) < q).astype(np.float64) if np.all((q >= 0) & (q <= 1)) else q


def _bandit(name: str, hp: dict[str, Any], n_actions: int, d: int, seed: int,
            action_features: np.ndarray | None):
    if name in SHARED:
        if action_features is None or action_features.shape[1] < 2:
            raise ValueError(f"agents.{name} scores promotions from their catalogue features, but this "
                             "log's catalogue has none: use the disjoint agents (linucb, lints)")
        return make_bandit(name, action_features=action_features, n_features=d, seed=seed, **hp)
    return make_bandit(name, n_actions=n_actions, n_features=d, seed=seed, **hp)


def train_agents(
    specs: dict[str, dict[str, Any]],
    *,
    n_actions: int,
    train_features: np.ndarray,
    train_action: np.ndarray,
    train_reward: np.ndarray,
    train_pscore: np.ndarray,
    logging_probabilities: np.ndarray,
    simulator: ResponseBandit | None,
    online_rounds: int,
    batch_size: int,
    seed: int,
    progress: Callable[[str], None] = print,
    action_features: np.ndarray | None = None,
) -> dict[str, TrainedAgent]:
    """Baselines are fitted on the training log; bandits learn offline (IPS) then online in the simulator.

    Every agent gets its own child of `SeedSequence(seed)` in `specs`' order (baselines draw none).
    action_features: (n_actions, m) encoded promotion features (with an intercept column), for the
    shared-feature bandits (`SHARED`); see `catalogue_features`.
    """
    check_agent_names(list(specs))
    d = train_features.shape[1]
    inputs = BaselineInputs(n_actions, d, train_action, train_reward, logging_probabilities)
    out: dict[str, TrainedAgent] = {}
    seeds = np.random.SeedSequence(seed).spawn(len(specs))
    for (name, hp), ss in zip(specs.items(), seeds, strict=True):
        hp = dict(hp or {})
        if name in BASELINE_BUILDERS:
            out[name] = TrainedAgent(name, "baseline", BASELINE_BUILDERS[name](inputs), hp)
            continue
        bandit = _bandit(name, hp, n_actions, d, int(ss.generate_state(1)[0] % (2**31)), action_features)
        progress(f"  {name}: offline IPS fit on {len(train_action):,} logged rows")
        bandit.fit_offline(train_features, train_action, train_reward, train_pscore, mode="ips")
        curve = regret = None
        if simulator is not None and online_rounds > 0:
            progress(f"  {name}: {online_rounds:,} online rounds in the simulator")
            res = bandit.run_online(simulator, online_rounds, batch_size, np.random.default_rng(ss))
            curve = res.rewards.reshape(-1, batch_size).mean(axis=1) if len(res.rewards) % batch_size == 0 else res.rewards
            regret = res.regret
        out[name] = TrainedAgent(name, "bandit", bandit, hp, curve, regret)
    return out


def catalogue_features(model: Any, catalogue: Any) -> tuple[np.ndarray, CatalogueSpec]:
    """(n_actions, m + 1) the response model's encoding of the catalogue plus an intercept column (what the
    shared bandits learn on), and the `CatalogueSpec` (encoder + raw features) their artifacts carry."""
    frame = catalogue.features.reset_index(drop=True)
    z = model.catalogue_encoder.transform(frame).astype(np.float64)
    return np.hstack([z, np.ones((len(z), 1))]), CatalogueSpec.from_frame(model.catalogue_encoder, frame)


def _save_npz(path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:  # a file object, so numpy does not append ".npz" to the temp name
        np.savez(fh, **arrays)


def save_agents(agents: dict[str, TrainedAgent], folder, n_actions: int, n_features: int,
                catalogue: CatalogueSpec | None = None) -> None:
    """Save every agent so `pushrl export` can rebuild it: bandit states (npz) and constant policies' probabilities;
    with shared-feature bandits, also the catalogue their artifacts carry (`catalogue.json`)."""
    folder = Path(folder)
    index = {"n_actions": n_actions, "n_features": n_features, "agents": {}}
    for name, a in agents.items():
        if a.kind == "bandit":
            state = a.policy.get_state()
            if name in SHARED:
                state["action_features"] = a.policy.action_features
            write_with(folder / f"{name}.npz", lambda tmp, st=state: _save_npz(tmp, st))
            index["agents"][name] = {"kind": "bandit", "hparams": a.hparams}
        else:
            probs = a.policy.action_probabilities(np.zeros((1, n_features)))[0]
            index["agents"][name] = {"kind": "constant", "probabilities": probs.tolist()}
    if catalogue is not None and any(name in SHARED for name in agents):
        write_json(folder / "catalogue.json", catalogue.to_dict())
    write_json(folder / "agents.json", json.loads(json.dumps(index)))


def load_catalogue(folder) -> CatalogueSpec:
    """The catalogue `save_agents` stored beside shared-feature bandits."""
    path = Path(folder) / "catalogue.json"
    if not path.exists():
        raise ValueError(f"{path} is missing: the run saved no catalogue for its shared-feature bandits")
    raw = json.loads(path.read_text())
    return CatalogueSpec(ContextEncoder.from_dict(raw["encoder"]), raw["features"])


def load_agent(folder, name: str, seed: int = 0) -> Policy:
    """Rebuild one saved agent (see `save_agents`)."""
    folder = Path(folder)
    index_path = folder / "agents.json"
    if not index_path.exists():
        raise ValueError(f"{folder} holds no saved agents (agents.json missing): point export.run_dir at a run's dataset folder")
    index = json.loads(index_path.read_text())
    if name not in index["agents"]:
        raise ValueError(f"export.agent={name!r} is not in {index_path}; saved agents: {sorted(index['agents'])}")
    spec = index["agents"][name]
    if spec["kind"] == "constant":
        return LoggingPolicyReplay(np.asarray(spec["probabilities"]), n_features=index["n_features"])
    with np.load(folder / f"{name}.npz") as z:
        state = {k: z[k] for k in z.files}
    if name in SHARED:
        bandit = make_bandit(name, action_features=state.pop("action_features"), n_features=index["n_features"],
                             seed=seed, **spec["hparams"])
    else:
        bandit = make_bandit(name, n_actions=index["n_actions"], n_features=index["n_features"], seed=seed,
                             **spec["hparams"])
    bandit.set_state(state)
    return bandit
