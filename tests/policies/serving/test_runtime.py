"""The serving runtime: closed-form probabilities, business rules, slates, seeds, input errors."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.agents.export import linear_onnx
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import BusinessRules, Exploration, Manifest, write_artifact
from pushrl.policies.policy import Policy
from pushrl.policies.serving.runtime import PolicyRuntime, RequestError, explore_probabilities

ACTIONS = ("No E-Mail", "Mens E-Mail", "Womens E-Mail", "Kids E-Mail")
# identity scorer: the score of action j is the (standardised = raw) field s{j}
IDENTITY = ContextEncoder(("s0", "s1", "s2", "s3"), (0.0,) * 4, (1.0,) * 4, ())


def make_runtime(tmp_path: Path, exploration: Exploration | None = None, *, seed: int = 0, softmax_out: bool = False,
                 encoder: ContextEncoder = IDENTITY, weight: np.ndarray | None = None, **kw) -> PolicyRuntime:
    weight = np.eye(4, encoder.n_features) if weight is None else weight
    manifest = Manifest(policy_kind="linear", encoder=encoder, action_ids=ACTIONS,
                        output="probabilities" if softmax_out else "scores", exploration=exploration or Exploration(),
                        **kw)
    folder = write_artifact(tmp_path / f"art-{len(list(tmp_path.iterdir()))}", linear_onnx(weight, softmax=softmax_out),
                            manifest)
    return PolicyRuntime.load(folder, seed=seed)


def req(scores, rid: str = "r", **kw) -> dict:
    return {"request_id": rid, "context": {f"s{j}": float(s) for j, s in enumerate(scores)}, **kw}


def probs(runtime: PolicyRuntime, scores, **kw) -> np.ndarray:
    d = runtime.decide([req(scores, **kw)])[0]
    return np.array([d.probabilities[a] for a in ACTIONS])


def test_epsilon_greedy_closed_form_with_ties(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, Exploration("epsilon", 0.2))
    np.testing.assert_allclose(probs(rt, [0.1, 0.9, 0.3, 0.2]), [0.05, 0.85, 0.05, 0.05])
    # two best actions split the greedy mass
    np.testing.assert_allclose(probs(rt, [0.1, 0.9, 0.9, 0.2]), [0.05, 0.45, 0.45, 0.05])
    greedy = make_runtime(tmp_path, Exploration("none"))
    np.testing.assert_allclose(probs(greedy, [2.0, 1.0, 2.0, 0.0]), [0.5, 0.0, 0.5, 0.0])


def test_softmax_closed_form(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, Exploration("softmax", temperature=0.5))
    s = np.array([0.1, 0.9, 0.3, -2.0])
    expected = np.exp(s / 0.5) / np.exp(s / 0.5).sum()
    np.testing.assert_allclose(probs(rt, s), expected, rtol=1e-6)
    np.testing.assert_allclose(probs(rt, s * 1000), np.exp(s * 2000 - s.max() * 2000) / np.exp(s * 2000 - s.max() * 2000).sum(),
                               atol=1e-12)  # no overflow


def test_probability_output_is_used_as_is(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, softmax_out=True)
    s = np.array([0.1, 0.9, 0.3, -2.0])
    np.testing.assert_allclose(probs(rt, s), np.exp(s) / np.exp(s).sum(), rtol=1e-5)


@pytest.mark.parametrize("kind", ["softmax", "probabilities"])
def test_exclusions_mask_and_renormalise(tmp_path: Path, kind: str) -> None:
    rt = make_runtime(tmp_path, Exploration("softmax") if kind == "softmax" else Exploration(),
                      softmax_out=kind == "probabilities")
    s = [0.1, 0.9, 0.3, -2.0]
    full = probs(rt, s)
    got = probs(rt, s, exclude=["Mens E-Mail", "Kids E-Mail"])
    expected = full * np.array([1, 0, 1, 0])
    np.testing.assert_allclose(got, expected / expected.sum(), rtol=1e-6)


def test_epsilon_greedy_exclusion_takes_the_best_allowed_action(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, Exploration("epsilon", 0.3))
    got = probs(rt, [0.1, 0.9, 0.3, 0.2], exclude=["Mens E-Mail"])
    np.testing.assert_allclose(got, [0.1, 0.0, 0.8, 0.1])


def test_same_seed_same_decisions(tmp_path: Path) -> None:
    batch = [req(np.random.default_rng(i).normal(size=4), rid=f"r{i}") for i in range(50)]
    rt = make_runtime(tmp_path, Exploration("softmax"))
    runs = [PolicyRuntime(rt.artifact, seed=s).decide(batch) for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert [d.actions for d in runs[0]] != [d.actions for d in runs[2]]


def test_propensities_match_frequencies(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, Exploration("softmax"), seed=3)
    batch = [req([0.0, 1.0, 0.5, -1.0], rid=f"r{i}") for i in range(4000)]
    decisions = rt.decide(batch)
    p = np.array([decisions[0].probabilities[a] for a in ACTIONS])
    counts = Counter(d.actions[0] for d in decisions)
    for a, pa in zip(ACTIONS, p, strict=True):
        assert abs(counts[a] / 4000 - pa) < 4 * np.sqrt(pa * (1 - pa) / 4000)
    assert all(d.propensities[0] == d.probabilities[d.actions[0]] for d in decisions)


@pytest.mark.parametrize("exploration", [Exploration("softmax", temperature=0.7), Exploration("epsilon", 0.5)])
def test_slate_propensities_multiply_to_ordered_slate_frequency(tmp_path: Path, exploration: Exploration) -> None:
    rt = make_runtime(tmp_path, exploration, seed=11, slate_size=3, no_push_action=None)
    n = 12_000
    decisions = rt.decide([req([0.0, 1.0, 0.5, -1.0], rid=f"r{i}", k=3) for i in range(n)])
    assert all(len(d.actions) == 3 and len(set(d.actions)) == 3 and d.probabilities is None for d in decisions)
    prob = {tuple(d.actions): float(np.prod(d.propensities)) for d in decisions}
    counts = Counter(tuple(d.actions) for d in decisions)
    assert sum(prob.values()) <= 1 + 1e-9
    for slate in itertools.permutations(ACTIONS, 3):
        p = prob.get(slate, 0.0)
        assert p > 0 or counts[slate] == 0
        assert abs(counts[slate] / n - p) < 4.5 * np.sqrt(p * (1 - p) / n) + 1e-4, (slate, counts[slate] / n, p)
    assert abs(sum(prob.values()) - 1) < 1e-9  # every ordered slate was seen: the product form sums to 1


def test_greedy_slate_is_top_k_and_shorter_when_few_actions_remain(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, Exploration("none"), slate_size=3, no_push_action="No E-Mail")
    d = rt.decide([req([9.0, 1.0, 3.0, 2.0], k=3)])[0]
    assert d.actions == ["Womens E-Mail", "Kids E-Mail", "Mens E-Mail"] and d.propensities == [1.0, 1.0, 1.0]
    d = rt.decide([req([9.0, 1.0, 3.0, 2.0], k=3, exclude=["Kids E-Mail", "Mens E-Mail"])])[0]
    assert d.actions == ["Womens E-Mail"]  # "no push" is never part of a slate


def test_frequency_cap(tmp_path: Path) -> None:
    rules = BusinessRules(frequency_cap=2)
    rt = make_runtime(tmp_path, Exploration("softmax"), no_push_action="No E-Mail", slate_size=3, business_rules=rules)
    s = [0.0, 1.0, 0.5, -1.0]
    over = rt.decide([req(s, pushes_in_window=2)])[0]
    assert over.actions == ["No E-Mail"] and over.propensities == [1.0]
    assert over.probabilities == {"No E-Mail": 1.0, "Mens E-Mail": 0.0, "Womens E-Mail": 0.0, "Kids E-Mail": 0.0}
    assert len(rt.decide([req(s, pushes_in_window=1, k=3)])[0].actions) == 1  # one push left
    two = rt.decide([req(s, pushes_in_window=0, k=3) for _ in range(1)])[0].actions
    assert len(two) == 2 and "No E-Mail" not in two
    empty = rt.decide([req(s, pushes_in_window=5, exclude=["No E-Mail"])])[0]
    assert empty.actions == [] and empty.propensities == []
    with pytest.raises(RequestError, match=r"requests\[0\]\.pushes_in_window: required"):
        rt.decide([req(s)])
    no_np = make_runtime(tmp_path, Exploration("softmax"), business_rules=rules)  # action set without "no push"
    assert no_np.decide([req(s, pushes_in_window=3)])[0].actions == []


def test_no_push_can_be_disallowed(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, Exploration("none"), no_push_action="No E-Mail",
                      business_rules=BusinessRules(allow_no_push=False, frequency_cap=1))
    assert rt.decide([req([5.0, 1.0, 0.0, 0.0], pushes_in_window=0)])[0].actions == ["Mens E-Mail"]
    assert rt.decide([req([5.0, 1.0, 0.0, 0.0], pushes_in_window=1)])[0].actions == ["No E-Mail"]  # cap forces it


def mixed_encoder(unknown: str) -> ContextEncoder:
    frame = pd.DataFrame({"recency": [1.0, 5.0, 9.0], "history": [10.0, 200.0, 40.0],
                          "channel": ["Web", "Phone", "Web"], "zip": [10, 20, 30]})
    return ContextEncoder.fit(frame, ["recency", "history"], ["channel", "zip"], unknown=unknown)


def test_encoding_matches_context_encoder(tmp_path: Path) -> None:
    enc = mixed_encoder("bucket")
    rt = make_runtime(tmp_path, encoder=enc, weight=np.ones((4, enc.n_features)))
    rows = [{"recency": 3, "history": 50.5, "channel": "Web", "zip": 20},
            {"recency": 0.0, "history": 1e6, "channel": "Fax", "zip": "30"},
            {"recency": np.float32(2), "history": np.int64(7), "channel": "Phone", "zip": 99}]
    np.testing.assert_allclose(rt.encode(rows), enc.transform(rows), rtol=1e-6)
    assert rt.encode(rows[1:2])[0, enc.feature_names.index("channel=__unknown__")] == 1.0


def test_unknown_category_refused_when_the_manifest_says_so(tmp_path: Path) -> None:
    enc = mixed_encoder("refuse")
    rt = make_runtime(tmp_path, encoder=enc, weight=np.ones((4, enc.n_features)))
    ok = {"recency": 3, "history": 50.5, "channel": "Web", "zip": 20}
    rt.decide([{"request_id": "a", "context": ok}])
    with pytest.raises(RequestError, match=r"requests\[0\]\.context\.channel: unknown category 'Fax'"):
        rt.decide([{"request_id": "a", "context": {**ok, "channel": "Fax"}}])


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"request_id": "a", "context": {"s0": 1.0, "s1": 1.0, "s2": 1.0}}, r"requests\[0\]\.context\.s3: missing"),
        ({"request_id": "a", "context": {"s0": 1, "s1": 1, "s2": 1, "s3": 1, "x": 2}}, r"context\.x: unknown field"),
        ({"request_id": "a", "context": {"s0": float("nan"), "s1": 1, "s2": 1, "s3": 1}}, r"context\.s0: must be a finite"),
        ({"request_id": "a", "context": {"s0": "1", "s1": 1, "s2": 1, "s3": 1}}, r"context\.s0: must be a number"),
        ({"request_id": "a", "context": {"s0": True, "s1": 1, "s2": 1, "s3": 1}}, r"context\.s0: must be a number"),
        ({"request_id": "a", "context": {"s0": 10**400, "s1": 1, "s2": 1, "s3": 1}}, r"context\.s0: must be a finite"),
        ({"request_id": "a", "context": []}, r"requests\[0\]\.context: must be an object"),
        ({"request_id": "a"}, r"requests\[0\]\.context: missing"),
        ({"context": {}}, r"requests\[0\]\.request_id"),
        ({"request_id": 5, "context": {}}, r"request_id: must be a non-empty string"),
        ({"request_id": "a", "context": {}, "exclude": ["Spam"]}, r"requests\[0\]\.exclude\[0\]: unknown action id 'Spam'"),
        ({"request_id": "a", "context": {}, "exclude": [{"x": 1}]}, r"exclude\[0\]: unknown action id"),
        ({"request_id": "a", "context": {}, "exclude": "No E-Mail"}, r"exclude: must be a list"),
        ({"request_id": "a", "context": {}, "k": 2}, r"requests\[0\]\.k: must be an integer in \[1, 1\]"),
        ({"request_id": "a", "context": {}, "k": 1.0}, r"\.k: must be an integer"),
        ({"request_id": "a", "context": {}, "pushes_in_window": -1}, r"pushes_in_window: must be an integer >= 0"),
        ({"request_id": "a", "context": {}, "user": "u"}, r"requests\[0\]\.user: unknown field"),
    ],
)
def test_invalid_requests_name_the_field(tmp_path: Path, request_: dict, field: str) -> None:
    rt = make_runtime(tmp_path)
    with pytest.raises(ValueError, match=field):
        rt.decide([request_])


def test_batch_level_errors(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    with pytest.raises(RequestError, match="at least one request"):
        rt.decide([])
    with pytest.raises(RequestError, match=r"requests\[1\]\.request_id: 'a' repeats requests\[0\]"):
        rt.decide([req([0] * 4, rid="a"), req([0] * 4, rid="a")])


def test_runtime_is_a_policy(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, Exploration("epsilon", 0.1))
    assert isinstance(rt, Policy) and rt.n_actions == 4
    x = np.random.default_rng(0).normal(size=(20, 4))
    p = rt.action_probabilities(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    a, prop = rt.act(x, np.random.default_rng(0))
    np.testing.assert_allclose(prop, p[np.arange(20), a])


@pytest.mark.parametrize(("output", "kind"), [("scores", "none"), ("scores", "epsilon"), ("scores", "softmax"),
                                              ("probabilities", "none")])
def test_unmasked_fast_path_equals_the_masked_path(output: str, kind: str) -> None:
    s = np.random.default_rng(0).random((50, 6))
    s[:5, :2] = 1.0  # ties
    s = s / s.sum(axis=1, keepdims=True) if output == "probabilities" else s
    fast = explore_probabilities(s, None, output, kind, 0.2, 0.7)
    np.testing.assert_allclose(fast, explore_probabilities(s, np.ones(s.shape, bool), output, kind, 0.2, 0.7))
    np.testing.assert_allclose(fast.sum(axis=1), 1.0)


@pytest.mark.parametrize("softmax_out", [False, True])
def test_one_request_fast_path_draws_what_sample_rows_draws(tmp_path: Path, softmax_out: bool) -> None:
    from pushrl.policies.policy import sample_rows

    explore = Exploration("none") if softmax_out else Exploration("softmax", temperature=0.7)
    rt = make_runtime(tmp_path, explore, seed=3, softmax_out=softmax_out)
    rng = np.random.default_rng(3)
    rows = np.random.default_rng(0).normal(size=(300, 4))
    if softmax_out:  # the model outputs probabilities: some rows put no mass on the last actions
        rows = np.where(rows > 0.5, rows, 0.0)
        rows[::7] = 0.0  # no mass at all: sample_rows takes the last action
    for i, s in enumerate(rows):
        d = rt.decide([req(s, rid=f"r{i}")])[0]
        p = rt.action_probabilities(np.asarray([s], np.float64))
        a = int(sample_rows(p, rng)[0])
        assert d.actions == [ACTIONS[a]] and d.propensities == [pytest.approx(float(p[0, a]))]


def test_the_model_call_uses_a_replacement_engine(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)

    class Engine:  # any object with onnxruntime's `run` (a benchmark swaps in torch eager this way)
        def run(self, outputs, feeds):
            return [np.tile(np.array([[0.0, 9.0, 0.0, 0.0]], np.float32), (len(next(iter(feeds.values()))), 1))]

    rt._session = Engine()
    assert rt.decide([req([5, 0, 0, 0])])[0].actions == ["Mens E-Mail"]
