"""What ships is what was evaluated: for every agent kind `pushrl run` trains, the exported artifact, loaded by
the serving runtime and asked with the test rows' raw contexts, serves exactly `served_policy(...)`'s
probabilities (what OPE scores), and logs those probabilities as the propensities of the actions it chose."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from pushrl.agents.bandits import BANDITS, make_bandit
from pushrl.agents.export_policies import GreedyPosteriorMean, export_policy, served_policy
from pushrl.agents.training import (
    BASELINES,
    SHARED,
    ResponseBandit,
    catalogue_features,
    train_agents,
    with_intercept,
)
from pushrl.envs.data.split import split_log
from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig
from pushrl.policies.baselines import LoggingPolicyReplay, greedy_probabilities
from pushrl.policies.serving.decision_log import DecisionLog, read_decision_log
from pushrl.policies.serving.runtime import PolicyRuntime

KINDS = (*BASELINES, *BANDITS)
THOMPSON = ("lints", "lints_shared", "neural_linear")  # served greedy on the posterior mean
SMALL = {"neural_linear": {"hidden_sizes": [8], "retrain_every": 500, "train_steps": 20},
         "lints_shared": {"alpha": 0.5, "interaction": "concat", "n_mc": 200}}


def agent_specs() -> dict[str, dict]:
    """The run's own agent config (configs/agents/bandits.yaml), completed with every other kind."""
    cfg = OmegaConf.to_container(OmegaConf.create(files("pushrl.configs").joinpath("agents/bandits.yaml").read_text()))
    return {k: dict(cfg.get(k) or SMALL.get(k, {})) for k in KINDS}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """What `run_dataset` does up to OPE, on a 3,000-row synthetic log (a few seconds)."""
    torch.set_num_threads(1)
    data, _ = generate_log(SyntheticConfig(n_rows=3000, n_users=300, n_actions=5, seed=4))
    split = split_log(data, (0.7, 0.15, 0.15), seed=0)
    model = ResponseModel.fit(split.train, split.validation, ResponseModelConfig(epochs=3, progress=False, seed=0))
    x_train, recent_train = model.encode(split.train)
    f_train, f_test = with_intercept(x_train), with_intercept(model.encode(split.test)[0])

    def expected(rows: np.ndarray) -> np.ndarray:
        return model.predict(x_train[rows], recent_train[rows], split.train.position[rows])["click"]

    z_actions, catalogue = catalogue_features(model, data.catalogue)
    agents = train_agents(agent_specs(), n_actions=data.n_actions, train_features=f_train,
                          train_action=split.train.action, train_reward=split.train.reward("click"),
                          train_pscore=split.train.pscore, logging_probabilities=np.full(data.n_actions, 1 / data.n_actions),
                          simulator=ResponseBandit(f_train, expected), online_rounds=2000, batch_size=250, seed=0,
                          progress=lambda _m: None, action_features=z_actions)
    contexts = split.test.frame[list(model.encoder.input_fields)].to_dict("records")
    return {"data": data, "model": model, "agents": agents, "f_test": f_test, "contexts": contexts,
            "catalogue": catalogue, "root": tmp_path_factory.mktemp("served")}


def test_every_kind_the_run_trains_is_covered(run):
    assert set(run["agents"]) == set(KINDS)
    assert set(SHARED) <= set(KINDS) and set(THOMPSON) <= set(BANDITS)


@pytest.mark.parametrize("name", KINDS)
def test_artifact_serves_and_logs_what_ope_scores(run, name):
    agent = run["agents"][name]
    served = agent.served
    evaluated = served.action_probabilities(run["f_test"])  # what the pipeline's OPE scores
    root: Path = run["root"] / name
    folder = export_policy(served, name, run["model"].encoder, run["data"].action_ids, root / "artifact",
                           catalogue=run["catalogue"] if name in SHARED else None, parity_rows=1000)
    with DecisionLog(root / "log") as log:
        runtime = PolicyRuntime.load(folder, seed=0, decision_log=log)
        requests = [{"request_id": f"r{i}", "context": c} for i, c in enumerate(run["contexts"])]
        decisions = runtime.decide(requests)
    ids = runtime.action_ids
    probabilities = np.array([[d.probabilities[a] for a in ids] for d in decisions])
    np.testing.assert_allclose(probabilities, evaluated, atol=1e-5, err_msg=name)

    logged = read_decision_log(root / "log").set_index("request_id").loc[[r["request_id"] for r in requests]]
    chosen = np.array([ids.index(a[0]) for a in logged["actions"]])
    propensities = np.array([p[0] for p in logged["propensities"]])
    rows = np.arange(len(chosen))
    np.testing.assert_allclose(propensities, evaluated[rows, chosen], atol=1e-5, err_msg=name)
    assert (evaluated[rows, chosen] > 0).all()  # never an action OPE gave no mass
    if name in THOMPSON:
        assert isinstance(served, GreedyPosteriorMean)
        assert np.isin(propensities, 1 / np.arange(1, len(ids) + 1)).all()  # greedy: 1, or split ties
    else:
        assert served is agent.policy


@pytest.mark.parametrize("name", THOMPSON)
def test_thompson_agents_are_scored_as_the_greedy_policy_they_ship(run, name):
    """The bug this fixes: OPE saw Thompson sampling's probabilities, the artifact serves its posterior mean."""
    bandit, f_test = run["agents"][name].policy, run["f_test"]
    sampling = bandit.action_probabilities(f_test)
    greedy = served_policy(bandit).action_probabilities(f_test)
    np.testing.assert_array_equal(greedy, greedy_probabilities(bandit.estimates(f_test)))
    assert np.abs(sampling - greedy).max() > 0.05  # the two policies differ, so evaluating the wrong one matters
    assert served_policy(served_policy(bandit)).action_probabilities(f_test).tolist() == greedy.tolist()


def test_exporting_the_agent_or_its_served_policy_gives_the_same_artifact(run, tmp_path):
    agent = run["agents"]["lints"]
    model, ids = run["model"], run["data"].action_ids
    a = PolicyRuntime.load(export_policy(agent.policy, "lints", model.encoder, ids, tmp_path / "a", parity_rows=500))
    b = PolicyRuntime.load(export_policy(agent.served, "lints", model.encoder, ids, tmp_path / "b", parity_rows=500))
    x = run["f_test"][:, :-1]
    np.testing.assert_array_equal(a.action_probabilities(x), b.action_probabilities(x))
    assert a.manifest.exploration.type == "none"


def test_what_cannot_be_exported_is_refused_by_served_policy_too(tmp_path):
    context_dependent = LoggingPolicyReplay(lambda x: np.full((len(x), 2), 0.5), n_actions=2, n_features=3)
    with pytest.raises(ValueError, match="context-dependent callable"):
        served_policy(context_dependent)
    with pytest.raises(ValueError, match="no exporter for policy type object"):
        served_policy(object())
    with pytest.raises(TypeError, match="LinTS, SharedLinTS or NeuralLinear"):
        GreedyPosteriorMean(make_bandit("linucb", n_actions=2, n_features=3))
