"""Shadow mode: the candidate's probabilities are logged beside the live decisions, and OPE of the
candidate from that log agrees with its true value on a replayed request stream."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.agents.bandits import make_bandit
from pushrl.agents.export_policies import export_policy
from pushrl.envs.data.features import ContextEncoder
from pushrl.envs.data.hillstrom import CATEGORICAL, NUMERIC, load_hillstrom
from pushrl.policies.artifact import ArtifactError
from pushrl.policies.serving.decision_log import DecisionLog, read_decision_log
from pushrl.policies.serving.runtime import PolicyRuntime

TRUE_RATE = np.array([0.05, 0.12, 0.08])  # per action, known: the "simulator" of this test


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    data = load_hillstrom().subset(np.arange(6000))
    enc = ContextEncoder.fit(data.frame, NUMERIC, CATEGORICAL)
    x = np.hstack([enc.transform(data.frame), np.ones((data.n_rounds, 1))])
    root = tmp_path_factory.mktemp("shadow")
    live = make_bandit("epsilon_greedy", n_actions=3, n_features=x.shape[1], epsilon=0.5, seed=0)
    cand = make_bandit("softmax", n_actions=3, n_features=x.shape[1], temperature=0.02, seed=0)
    rng = np.random.default_rng(0)
    for b in (live, cand):
        b.update(x, data.action, (rng.random(data.n_rounds) < TRUE_RATE[data.action]).astype(float))
    paths = {name: export_policy(b, name, enc, data.action_ids, root / name, parity_rows=500)
             for name, b in (("live", live), ("candidate", cand))}
    contexts = data.frame[list(NUMERIC + CATEGORICAL)].to_dict(orient="records")
    return paths, contexts


def test_candidate_probabilities_logged_and_its_ope_matches_its_true_value(artifacts, tmp_path):
    paths, contexts = artifacts
    log = DecisionLog(tmp_path / "log")
    live = PolicyRuntime.load(paths["live"], seed=1, decision_log=log)
    live.attach_shadow(PolicyRuntime.load(paths["candidate"], seed=0))
    requests = [{"request_id": f"r{i}", "context": c} for i, c in enumerate(contexts)]
    for lo in range(0, len(requests), 500):
        live.decide(requests[lo : lo + 500])
    log.close()
    frame = read_decision_log(tmp_path / "log")
    assert len(frame) == len(requests) and frame["shadow_probabilities"].notna().all()
    ids = [str(a) for a in live.action_ids]
    chosen = frame["actions"].map(lambda a: ids.index(str(a[0]))).to_numpy()
    p_live = frame["propensities"].map(lambda p: p[0]).to_numpy()
    p_cand = np.array([[d[a] for a in ids] for d in frame["shadow_probabilities"]])
    rng = np.random.default_rng(2)
    reward = (rng.random(len(chosen)) < TRUE_RATE[chosen]).astype(float)
    terms = reward * p_cand[np.arange(len(chosen)), chosen] / p_live
    ips, se = terms.mean(), terms.std(ddof=1) / np.sqrt(len(terms))
    true_value = float((p_cand * TRUE_RATE).sum(axis=1).mean())
    assert abs(ips - true_value) < 3 * se
    # the live policy decided: the logged propensities are the live policy's, not the candidate's
    assert not np.allclose(p_live, p_cand[np.arange(len(chosen)), chosen])


def test_shadow_with_another_action_set_is_refused(artifacts, tmp_path):
    paths, _ = artifacts
    live = PolicyRuntime.load(paths["live"], seed=0)
    other = PolicyRuntime.load(paths["candidate"], seed=0)
    other.action_ids = ["a", "b", "c"]
    with pytest.raises(ArtifactError, match="same action set"):
        live.attach_shadow(other)


def test_retired_promotion_is_excluded_renormalised_and_logged(artifacts, tmp_path):
    from pushrl.policies.serving.runtime import RequestError

    paths, contexts = artifacts
    log = DecisionLog(tmp_path / "log")
    runtime = PolicyRuntime.load(paths["live"], seed=3, decision_log=log)
    requests = [{"request_id": f"r{i}", "context": c} for i, c in enumerate(contexts[:300])]
    before = {d.request_id: d.probabilities for d in runtime.decide(requests)}
    runtime.retire(["Womens E-Mail"])
    after = runtime.decide([{**r, "request_id": r["request_id"] + "b"} for r in requests])
    log.close()
    assert all(d.actions[0] != "Womens E-Mail" for d in after)
    assert any(before[d.request_id[:-1]]["Womens E-Mail"] > 0 for d in after)  # it had mass before
    for d in after:
        assert d.probabilities["Womens E-Mail"] == 0 and abs(sum(d.probabilities.values()) - 1) < 1e-9
        assert d.propensities[0] == d.probabilities[d.actions[0]]
    frame = read_decision_log(tmp_path / "log")
    assert frame["retired"].iloc[-1] == ["Womens E-Mail"] and not isinstance(frame["retired"].iloc[0], list)
    with pytest.raises(RequestError, match="unknown action id"):
        runtime.retire(["Kids E-Mail"])


def test_shadow_probabilities_follow_the_live_rules(artifacts, tmp_path):
    """What the candidate would have served here: retired promotions and excluded ones get no mass, like live."""
    paths, contexts = artifacts
    with DecisionLog(tmp_path / "log") as log:
        live = PolicyRuntime.load(paths["live"], seed=0, decision_log=log)
        live.attach_shadow(PolicyRuntime.load(paths["candidate"], seed=0))
        live.retire(["Womens E-Mail"])
        live.decide([{"request_id": f"r{i}", "context": c, **({"exclude": ["No E-Mail"]} if i % 2 else {})}
                     for i, c in enumerate(contexts[:200])])
    frame = read_decision_log(tmp_path / "log")
    for i, probs in enumerate(frame["shadow_probabilities"]):
        assert probs["Womens E-Mail"] == 0 and abs(sum(probs.values()) - 1) < 1e-9
        if i % 2:
            assert probs["No E-Mail"] == 0
