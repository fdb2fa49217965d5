"""The serving runtime: raw requests in, decisions with exact propensities out (numpy + onnxruntime).

One `decide(requests)` call validates and encodes the batch, runs the ONNX
model once, turns scores into probabilities, applies each request's business
rules, and samples with one seeded `np.random.Generator`.

Probabilities (per request, over the actions it allows):
  - output "probabilities": the model's output, masked and renormalised;
  - exploration "none" / "epsilon": greedy over the best allowed score (ties
    split evenly), mixed with epsilon uniform over the allowed actions, i.e.
    p(a) = (1 - eps) 1[a in best] / |best| + eps / |allowed|;
  - exploration "softmax": softmax(score / temperature) over the allowed actions
    (identical to masking the full softmax and renormalising).
  The greedy part is taken over the allowed actions, so an excluded favourite
  hands its mass to the best remaining action, not to everybody.

Business rules, in this order:
  - `exclude`: action ids the request must not get (unknown ids are refused);
  - allow_no_push=False masks the "no push" action;
  - frequency cap (`BusinessRules.frequency_cap`, from the manifest or the
    `rules` override): the request must then carry `pushes_in_window` (pushes
    this user already got in the cap's window, counted by the caller). With
    remaining = cap - pushes_in_window: remaining <= 0 allows only the
    "no push" action (chosen with propensity 1, even with allow_no_push=False),
    or gives an empty decision when the action set has none (or the request
    excludes it); otherwise at most `remaining` slots are filled;
  - a slate (k > 1) is k promotions, so the "no push" action is masked from it.
  A request whose rules leave nothing allowed gets an empty decision.

Slates: a request's `k` (default 1) may not exceed the manifest's slate_size
(refused otherwise). Slot j is drawn from the same rule applied to the actions still
allowed after slots 0..j-1 were taken (sequential sampling without
replacement); its propensity is that conditional probability, so the
probability of the ordered slate is the product of its propensities. A slate
is shorter than k when fewer actions remain (or none has positive probability).

Catalogue updates (feature-based artifacts only, see `pushrl.policies.artifact`):
`with_catalogue([{"id": ..., "features": {...}}, ...])` returns a runtime for a new
action set, scored from the promotions' features by the same model, without
retraining. Its `policy_version` gains `.catalogue-<hash>` so every logged
decision says which action set it was drawn from; retired promotions and the
shadow candidate carry over.

Out-of-distribution contexts: a category outside the field's training vocabulary
(a miscased one too) and a number outside the field's training range (the
encoder's `ranges`; artifacts without them get no range check) are detected per
field at decision time, counted on `metrics.ood` (by field and kind), listed in
the decision and its logged record (`"ood": {"channel": "unknown category 'Fax'"}`),
and, with `strict=True` (or `runtime.strict = True`), refused with a RequestError
naming the field. Without strict mode the decision is made as before (unknown
categories take the unknown bucket). Non-finite numbers are always refused (and
counted as `not_finite`).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pushrl.policies.artifact import (
    ACTION_FEATURES_INPUT,
    ActionId,
    Artifact,
    ArtifactError,
    BusinessRules,
    load_artifact,
    plain_value,
)
from pushrl.policies.policy import sample_rows
from pushrl.policies.serving.decision_log import DecisionLog
from pushrl.policies.serving.metrics import ServingMetrics

STANDARDISED_CLIP = 1e6
"""Largest |standardised numeric input| the model sees (a float32 stays finite; training values are far inside)."""

REQUEST_KEYS = ("request_id", "context", "exclude", "k", "pushes_in_window")
CATALOGUE_KEYS = ("id", "features")
_PLAIN_NUMBERS = frozenset({int, float})
_FLOAT_MAX = float(np.finfo(np.float64).max)
OodRows = dict[int, dict[str, tuple[str, str]]]  # row -> {field: (kind, problem)}, see `ContextPreprocessor.encode`


class RequestError(ValueError):
    """A request is malformed; `field` is its path, e.g. "requests[0].context.recency"."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True)
class Decision:
    """Chosen actions in slot order, each with the probability it was chosen with."""

    request_id: str
    actions: list[ActionId]
    propensities: list[float]
    probabilities: dict[ActionId, float] | None
    policy_version: str
    ood: dict[str, str] | None = None  # field -> why its value is out of the training distribution

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"request_id": self.request_id, "actions": self.actions,
                               "propensities": self.propensities}
        if self.probabilities is not None:
            out["probabilities"] = self.probabilities
        if self.ood:
            out["ood"] = self.ood
        return out


@dataclass
class _Request:
    request_id: str
    context: Mapping[str, Any]
    exclude: list[int] = field(default_factory=list)
    k: int = 1
    pushes: int | None = None


class ContextPreprocessor:
    """The manifest's ContextEncoder as a fast per-row encoder for request dicts.

    Same output as `ContextEncoder.transform` (numbers standardised, categories
    one-hot with an unknown bucket, compared as `str(value)`), but strict about
    types: numbers must be int/float (not bool), categories str/int/bool.
    Also finds out-of-distribution values (see `encode`'s `ood`).
    """

    def __init__(self, encoder: Any) -> None:
        self.numeric = tuple(encoder.numeric)
        self.means = np.asarray(encoder.means, np.float64)
        self.stds = np.asarray(encoder.stds, np.float64)
        self.fields = tuple(encoder.input_fields)
        self.field_set = frozenset(self.fields)
        self.width = int(encoder.n_features)
        self.refuse = encoder.unknown == "refuse"
        ranges = getattr(encoder, "ranges", {})  # training (min, max); a field without one: any finite number
        self.lo = np.array([ranges[f][0] if f in ranges else -_FLOAT_MAX for f in self.numeric], np.float64)
        self.hi = np.array([ranges[f][1] if f in ranges else _FLOAT_MAX for f in self.numeric], np.float64)
        self.categorical: list[tuple[str, dict[str, int], int]] = []
        self._casefolded: dict[str, dict[str, str]] = {}  # field -> {casefolded category: category}
        col = len(self.numeric)
        for c in encoder.categorical:
            vocab = encoder.vocabularies[c]
            self.categorical.append((c, {str(v): col + i for i, v in enumerate(vocab)}, col + len(vocab)))
            self._casefolded[c] = {str(v).casefold(): str(v) for v in vocab}
            col += len(vocab) + 1

    def encode(self, contexts: Sequence[Mapping[str, Any]], prefix: str = "contexts", suffix: str = "",
               ood: OodRows | None = None) -> np.ndarray:
        """(n, width) float32; errors name `{prefix}[i]{suffix}.{field}`.

        ood: a dict to fill with each row's out-of-distribution fields, `{i: {field: (kind, problem)}}`,
        kind one of `metrics.OOD_KINDS`; filled before a non-finite number or (unknown="refuse") an
        unknown category is refused, so those are seen too.
        """
        n = len(contexts)
        rows: list[list[Any]] = []
        hot_rows: list[int] = []
        hot_cols: list[int] = []
        numeric, plain = self.numeric, _PLAIN_NUMBERS
        for i, ctx in enumerate(contexts):
            if not isinstance(ctx, Mapping) or ctx.keys() != self.field_set:
                self._field_error(ctx, f"{prefix}[{i}]{suffix}")
            values = [ctx[f] for f in numeric]
            if not plain.issuperset(map(type, values)):
                values = self._numbers(values, f"{prefix}[{i}]{suffix}")
            rows.append(values)
            for c, table, unknown_col in self.categorical:
                v = ctx[c]
                if type(v) is str:
                    col = table.get(v)
                elif isinstance(v, int | np.integer | bool | np.bool_):
                    col = table.get(str(v.item() if isinstance(v, np.generic) else v))
                else:
                    raise RequestError(f"{prefix}[{i}]{suffix}.{c}", f"must be a category (string or integer), got {v!r}")
                if col is None:
                    if ood is not None:
                        ood.setdefault(i, {})[c] = ("unknown_category", self._unknown_problem(c, v))
                    if self.refuse:
                        raise RequestError(f"{prefix}[{i}]{suffix}.{c}", f"unknown category {v!r}; known: {list(table)[:10]}")
                    col = unknown_col
                hot_rows.append(i)
                hot_cols.append(col)
        try:
            num = np.array(rows, np.float64).reshape(n, len(numeric))
        except OverflowError:  # an int too large for a float
            num = np.array([[float(v) if abs(v) < 1e308 else np.inf for v in r] for r in rows]).reshape(n, len(numeric))
        inside = (num >= self.lo) & (num <= self.hi)  # False for NaN and +-inf too
        if not inside.all():
            if ood is not None:
                self._out_of_range(num, inside, ood)
            bad = ~np.isfinite(num)
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise RequestError(f"{prefix}[{i}]{suffix}.{self.numeric[j]}", f"must be a finite number, got {num[i, j]!r}")
        out = np.zeros((n, self.width), np.float32)
        # a finite value far outside training (e.g. 1e300) would overflow float32 to inf: clip the standardised
        # value to +-STANDARDISED_CLIP (counted as out of range above; refused in strict mode)
        out[:, : len(self.numeric)] = np.clip((num - self.means) / self.stds, -STANDARDISED_CLIP, STANDARDISED_CLIP)
        out[hot_rows, hot_cols] = 1.0
        return out

    def _unknown_problem(self, name: str, value: Any) -> str:
        shown = repr(value)
        problem = f"unknown category {shown if len(shown) <= 40 else shown[:37] + '...'}"
        known = self._casefolded[name].get(str(value).casefold())
        return problem + (f" (the known {known!r} differs only in case)" if known is not None else "")

    def _out_of_range(self, num: np.ndarray, inside: np.ndarray, ood: OodRows) -> None:
        for i, j in np.argwhere(~inside).tolist():
            v, lo, hi = float(num[i, j]), float(self.lo[j]), float(self.hi[j])
            if not np.isfinite(v):
                kind, problem = "not_finite", f"not a finite number: {v!r}"
            else:
                kind = "below_range" if v < lo else "above_range"
                problem = f"{v:.6g} is {kind.split('_')[0]} the training range [{lo:.6g}, {hi:.6g}]"
            ood.setdefault(i, {})[self.numeric[j]] = (kind, problem)

    def _field_error(self, ctx: Any, where: str) -> None:
        if not isinstance(ctx, Mapping):
            raise RequestError(where, f"must be an object of fields {list(self.fields)}, got {type(ctx).__name__}")
        missing = [f for f in self.fields if f not in ctx]
        if missing:
            raise RequestError(f"{where}.{missing[0]}", f"missing field; expected fields {list(self.fields)}")
        extra = sorted(str(f) for f in ctx if f not in self.field_set)
        raise RequestError(f"{where}.{extra[0]}", f"unknown field; expected fields {list(self.fields)}")

    def _numbers(self, values: list[Any], where: str) -> list[float]:
        """Slow path: numpy scalars become floats; anything that is not a number is refused."""
        out = []
        for f, v in zip(self.numeric, values, strict=True):
            if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
                raise RequestError(f"{where}.{f}", f"must be a number, got {v!r} ({type(v).__name__})")
            out.append(v.item() if isinstance(v, np.generic) else v)
        return out


def _check_object(obj: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> None:
    """`obj` is a mapping with no key outside `allowed` and every key of `required`; errors name `where.key`."""
    if not isinstance(obj, Mapping):
        raise RequestError(where, f"must be an object with fields {list(allowed)}, got {type(obj).__name__}")
    for key in obj:
        if key not in allowed:
            raise RequestError(f"{where}.{key}", f"unknown field; allowed: {list(allowed)}")
    for key in required:
        if key not in obj:
            raise RequestError(f"{where}.{key}", "missing field")


def explore_probabilities(
    scores: np.ndarray, allowed: np.ndarray | None, output: str, kind: str, epsilon: float, temperature: float
) -> np.ndarray:
    """(n, A) probabilities over the allowed actions (None: all); rows with none allowed are all zero."""
    if allowed is None:  # the common case, without masks
        if output == "probabilities":
            p = np.clip(scores, 0.0, None)
            total = p.sum(axis=1, keepdims=True)
            return np.divide(p, total, out=np.zeros_like(p), where=total > 0)
        top = scores.max(axis=1, keepdims=True)
        if kind == "softmax":
            e = np.exp((scores - top) / temperature)
            return e / e.sum(axis=1, keepdims=True)
        best = scores == top
        greedy = best / best.sum(axis=1, keepdims=True)
        return (1.0 - epsilon) * greedy + epsilon / scores.shape[1] if kind == "epsilon" else greedy
    n_allowed = allowed.sum(axis=1, keepdims=True)
    if output == "probabilities":
        p = np.where(allowed, np.clip(scores, 0.0, None), 0.0)
        total = p.sum(axis=1, keepdims=True)
        return np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    masked = np.where(allowed, scores, -np.inf)
    top = masked.max(axis=1, keepdims=True)
    if kind == "softmax":
        e = np.exp((masked - np.where(n_allowed > 0, top, 0.0)) / temperature)
        return e / np.maximum(e.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    best = allowed & (masked == top)
    greedy = best / np.maximum(best.sum(axis=1, keepdims=True), 1)
    eps = epsilon if kind == "epsilon" else 0.0
    return (1.0 - eps) * greedy + eps * allowed / np.maximum(n_allowed, 1)


class PolicyRuntime:
    """A loaded artifact that decides; also a `Policy` on encoded contexts (no business rules)."""

    def __init__(
        self,
        artifact: Artifact,
        *,
        seed: int | np.random.SeedSequence | np.random.Generator | None = None,
        rules: BusinessRules | None = None,
        decision_log: DecisionLog | None = None,
        catalogue: Sequence[Mapping[str, Any]] | None = None,
        strict: bool = False,
        metrics: ServingMetrics | None = None,
    ) -> None:
        """catalogue: a new action set for a feature-based artifact (see `with_catalogue`); None: the manifest's.
        strict: refuse out-of-distribution contexts (module docstring); settable later as `runtime.strict`.
        metrics: where decisions and OOD values are counted (share one across reloads); None: a new one."""
        self.artifact = artifact
        self.strict = strict
        self.metrics = metrics if metrics is not None else ServingMetrics()
        m = artifact.manifest
        self.manifest = m
        self.rules = rules if rules is not None else m.business_rules
        self._catalogue_pre = None if m.catalogue is None else ContextPreprocessor(m.catalogue.encoder)
        self._action_features: np.ndarray | None = None
        self.catalogue: list[dict[str, Any]] | None = None  # the promotions scored now (feature-based artifacts)
        if catalogue is None:
            self.policy_version = artifact.policy_version
            self.action_ids = list(m.action_ids)
            if m.catalogue is not None:
                self.catalogue = [{"id": a, "features": dict(f)} for a, f in zip(m.action_ids, m.catalogue.features,
                                                                                 strict=True)]
                self._action_features = self._catalogue_pre.encode(m.catalogue.features, "catalogue.features")
        else:
            self.action_ids, self._action_features, self.catalogue = self._parse_catalogue(catalogue)
            digest = hashlib.sha256(json.dumps(self.catalogue, sort_keys=True, separators=(",", ":")).encode())
            self.policy_version = f"{artifact.policy_version}.catalogue-{digest.hexdigest()[:12]}"
        self._index = {(type(a), a): i for i, a in enumerate(self.action_ids)}
        self.no_push = None if m.no_push_action is None else self.action_ids.index(m.no_push_action)
        self.preprocessor = ContextPreprocessor(m.encoder)
        self.decision_log = decision_log
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._session = artifact.session
        self._in, self._out = artifact.input_name, artifact.output_name
        self._outs = [self._out]
        ex = m.exploration
        self._explore = (m.output, ex.type, float(ex.epsilon), float(ex.temperature))
        self.shadow: PolicyRuntime | None = None
        self.retired: list[int] = []  # action indices no request may get (see `retire`)

    @classmethod
    def load(
        cls,
        artifact_path: str | os.PathLike[str],
        *,
        seed: int | np.random.SeedSequence | None = None,
        rules: BusinessRules | None = None,
        decision_log: DecisionLog | None = None,
        threads: int = 1,
        strict: bool = False,
        metrics: ServingMetrics | None = None,
    ) -> PolicyRuntime:
        """Load and verify the artifact at `artifact_path` (see `load_artifact`)."""
        return cls(load_artifact(artifact_path, threads=threads), seed=seed, rules=rules, decision_log=decision_log,
                   strict=strict, metrics=metrics)

    # Policy interface (encoded contexts) -------------------------------------------
    @property
    def n_actions(self) -> int:
        return len(self.action_ids)

    def encode(self, contexts: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Raw context dicts -> (n, n_features) float64 encoded contexts."""
        return self.preprocessor.encode(contexts).astype(np.float64)

    def scores(self, encoded: np.ndarray) -> np.ndarray:
        """(n, A) float64 model output for (n, n_features) encoded contexts."""
        x = np.ascontiguousarray(encoded, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.preprocessor.width:
            raise ValueError(f"contexts must have shape (n, {self.preprocessor.width}), got {x.shape}")
        return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        """The ONNX model on float32 encoded contexts (plus this runtime's action features if feature-based)."""
        feeds = {self._in: x}
        if self._action_features is not None:
            feeds[ACTION_FEATURES_INPUT] = self._action_features
        session = self._session
        # onnxruntime's Python `run` re-validates the feed names on every call (about 3 us); the names are
        # fixed at load, so call the C session directly when there is one (any other engine: its `run`)
        c_session = getattr(session, "_sess", None)
        out = (c_session.run(self._outs, feeds, None) if c_session is not None
               else session.run(self._outs, feeds))[0]
        return out.astype(np.float64)

    def action_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        """(n, A) exploration probabilities with every action allowed (no business rules)."""
        s = self.scores(contexts)
        return explore_probabilities(s, None, *self._explore)

    def act(self, contexts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p = self.action_probabilities(contexts)
        a = sample_rows(p, rng)
        return a, p[np.arange(len(a)), a]

    # serving ------------------------------------------------------------------------
    def retire(self, action_ids: Sequence[Any]) -> None:
        """Retire promotions: excluded from every decision from now on, the rest renormalised (as an exclusion),
        and each logged record lists them under `retired`. Unknown ids are refused; [] un-retires all."""
        known = {str(a): i for i, a in enumerate(self.action_ids)}
        unknown = [a for a in action_ids if str(a) not in known]
        if unknown:
            raise RequestError("retire", f"unknown action id(s) {unknown[:5]}; known: {list(known)[:10]}")
        if self.no_push is not None and any(known[str(a)] == self.no_push for a in action_ids):
            raise RequestError("retire", "the no-push action cannot be retired")
        self.retired = sorted(known[str(a)] for a in action_ids)

    def with_catalogue(self, promotions: Sequence[Mapping[str, Any]],
                       seed: int | np.random.SeedSequence | np.random.Generator | None = None) -> PolicyRuntime:
        """A runtime serving `promotions` ([{"id": ..., "features": {field: raw value}}, ...], the whole new
        action set, in order) with this artifact's model: new promotions are scored from their features.

        Feature-based artifacts only. Refused (RequestError naming `catalogue[i]...`): duplicate or non-scalar
        ids, missing or unknown feature fields, values of the wrong type, a catalogue without the manifest's
        no-push action or smaller than its slate size. Retired promotions still in the catalogue stay
        retired; a feature-based shadow candidate gets the same catalogue (a fixed-set one is refused).
        `seed` None: a child of this runtime's generator.
        """
        if self.shadow is not None and not self.shadow.manifest.feature_based:
            raise RequestError("catalogue", "the shadow candidate scores a fixed action set and cannot follow a "
                                            "catalogue update: detach it (attach_shadow(None)) or shadow a "
                                            "feature-based candidate")
        new = PolicyRuntime(self.artifact, seed=self._rng.spawn(1)[0] if seed is None else seed, rules=self.rules,
                            decision_log=self.decision_log, catalogue=promotions, strict=self.strict,
                            metrics=self.metrics)
        if self.shadow is not None:
            new.attach_shadow(self.shadow.with_catalogue(promotions))
        still = {str(a) for a in new.action_ids}
        new.retire([self.action_ids[j] for j in self.retired if str(self.action_ids[j]) in still])
        if self.decision_log is not None:  # so the log can be read back with every id it holds
            self.decision_log.record_catalogue(new.policy_version, new.catalogue)
        return new

    def _parse_catalogue(self, promotions: Any) -> tuple[list[ActionId], np.ndarray, list[dict[str, Any]]]:
        m = self.manifest
        if m.catalogue is None:
            raise RequestError("catalogue", f"this artifact ({m.policy_kind}) scores a fixed set of {m.n_actions} "
                                            "actions; a catalogue update needs a feature-based artifact (exported "
                                            "from linucb_shared or lints_shared): re-export, or retrain for the new set")
        if not isinstance(promotions, Sequence) or isinstance(promotions, str | bytes) or not promotions:
            raise RequestError("catalogue", "must be a non-empty list of {\"id\": ..., \"features\": {...}} objects")
        ids: list[ActionId] = []
        first: dict[tuple[type, ActionId], int] = {}
        for i, item in enumerate(promotions):
            where = f"catalogue[{i}]"
            _check_object(item, where, CATALOGUE_KEYS, required=CATALOGUE_KEYS)
            a = item["id"]
            if type(a) is not str and type(a) is not int:
                raise RequestError(f"{where}.id", f"must be a string or integer, got {a!r}")
            if (type(a), a) in first:
                raise RequestError(f"{where}.id", f"duplicate id {a!r}: it repeats catalogue[{first[(type(a), a)]}]")
            first[(type(a), a)] = i
            ids.append(a)
        z = self._catalogue_pre.encode([item["features"] for item in promotions], "catalogue", ".features")
        if m.no_push_action is not None and m.no_push_action not in ids:
            raise RequestError("catalogue", f"the no-push action {m.no_push_action!r} must stay in the catalogue")
        if m.slate_size > len(ids):
            raise RequestError("catalogue", f"{len(ids)} promotion(s) cannot fill this policy's slates of "
                                            f"{m.slate_size}")
        rows = [{"id": a, "features": {f: plain_value(item["features"][f]) for f in m.catalogue.encoder.input_fields}}
                for a, item in zip(ids, promotions, strict=True)]
        return ids, z, rows

    def attach_shadow(self, candidate: PolicyRuntime | None) -> None:
        """Shadow mode: `candidate` scores every request beside this (live) policy and its probabilities are
        written to the decision log (`shadow_probabilities`, `shadow_version`); decisions stay the live policy's.
        Refuses a candidate whose action set or input fields differ from the live one's."""
        if candidate is not None:
            if [str(a) for a in candidate.action_ids] != [str(a) for a in self.action_ids]:
                raise ArtifactError(f"shadow artifact's action ids {candidate.action_ids[:5]} differ from the live "
                                    f"policy's {self.action_ids[:5]}: shadow mode needs the same action set")
            live_fields, shadow_fields = self.manifest.encoder.input_fields, candidate.manifest.encoder.input_fields
            if list(live_fields) != list(shadow_fields):
                raise ArtifactError(f"shadow artifact's input fields {list(shadow_fields)[:8]} differ from the live "
                                    f"policy's {list(live_fields)[:8]}: shadow mode needs the same feature schema")
        self.shadow = candidate

    def shadow_probabilities(self, parsed: list[_Request]) -> np.ndarray:
        """(n, A) the shadow candidate's first-slot probabilities for these requests under the live policy's
        rules (exclusions, retired promotions, no-push and frequency cap), so they are what it would have served."""
        assert self.shadow is not None
        x = self.shadow.preprocessor.encode([r.context for r in parsed], "requests", ".context")
        return self._rule_probabilities(self.shadow._run(x), parsed, self.shadow._explore)[0]

    def decide(self, requests: Sequence[Mapping[str, Any]], *, wait_logged: bool = True,
               probabilities: bool = True) -> list[Decision]:
        """Decide a batch of raw requests (see the module docstring); logs them if a log is attached.

        wait_logged: return only once the decision log has the batch on disk (fsync).
        probabilities: False leaves `Decision.probabilities` None (only the chosen slate's propensities),
        so a response over a large action set stays small.
        """
        parsed = self._parse(requests)
        ood: OodRows = {}
        try:
            x = self.preprocessor.encode([r.context for r in parsed], "requests", ".context", ood=ood)
        finally:
            if ood:
                self._count_ood(ood)
        ood_rows = self._ood_problems(ood) if ood else {}
        scores = self._run(x)
        with self._lock:
            chosen, props, first = self._choose(scores, parsed)
        decisions = []
        rows = first.tolist() if probabilities else None
        for i, r in enumerate(parsed):
            probs = None
            if r.k == 1 and rows is not None:
                probs = dict(zip(self.action_ids, rows[i], strict=True))
            decisions.append(Decision(r.request_id, [self.action_ids[a] for a in chosen[i]], props[i], probs,
                                      self.policy_version, ood_rows.get(i)))
        if self.decision_log is not None:
            records = self._records(parsed, decisions)
            if self.shadow is not None:
                shadow = self.shadow_probabilities(parsed).tolist()
                ids = [str(a) for a in self.action_ids]
                for rec, row in zip(records, shadow, strict=True):
                    rec["shadow_version"] = self.shadow.policy_version
                    rec["shadow_probabilities"] = dict(zip(ids, row, strict=True))
            ticket = self.decision_log.append(records)
            if wait_logged:
                ticket.wait()
        self.metrics.decisions.inc(len(decisions))
        return decisions

    def _count_ood(self, ood: OodRows) -> None:
        counter = self.metrics.ood
        for fields in ood.values():
            for name, (kind, _) in fields.items():
                counter.inc(field=name, kind=kind)

    def _ood_problems(self, ood: OodRows) -> dict[int, dict[str, str]]:
        """{row: {field: problem}} in input-field order; strict mode refuses the first (RequestError)."""
        order = self.preprocessor.fields
        rows = {i: {f: fields[f][1] for f in order if f in fields} for i, fields in sorted(ood.items())}
        if self.strict:
            i, problems = next(iter(rows.items()))
            name, problem = next(iter(problems.items()))
            raise RequestError(f"requests[{i}].context.{name}",
                               f"{problem}: out of the training distribution, refused in strict mode")
        return rows

    def _rule_probabilities(self, scores: np.ndarray, parsed: list[_Request], explore: tuple
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First-slot probabilities under every business rule (module docstring), the allowed mask, slots per row."""
        n, n_act = scores.shape
        np_idx, cap = self.no_push, self.rules.frequency_cap
        allowed = np.ones((n, n_act), bool)
        if np_idx is not None and not self.rules.allow_no_push:
            allowed[:, np_idx] = False
        if self.retired:
            allowed[:, self.retired] = False
        k_eff = np.ones(n, np.int64)
        forced: list[int] = []
        for i, r in enumerate(parsed):
            if r.exclude:
                allowed[i, r.exclude] = False
            k = r.k
            if cap is not None and r.pushes is not None:
                k = min(k, cap - r.pushes)
                if k <= 0:
                    forced.append(i)
                    continue
            if r.k > 1 and np_idx is not None:
                allowed[i, np_idx] = False  # a slate is promotions only
            k_eff[i] = k
        p = explore_probabilities(scores, allowed, *explore)
        if forced:  # over the cap: "no push" for sure, or nothing
            only = np.zeros((len(forced), n_act))
            if np_idx is not None:
                only[:, np_idx] = [np_idx not in parsed[i].exclude for i in forced]
            p[forced] = only
            allowed[forced] = only > 0
        return p, allowed, k_eff

    def _choose(self, scores: np.ndarray, parsed: list[_Request]) -> tuple[list[list[int]], list[list[float]], np.ndarray]:
        n, n_act = scores.shape
        np_idx, cap = self.no_push, self.rules.frequency_cap
        plain = cap is None and (np_idx is None or self.rules.allow_no_push) and not self.retired
        if plain and all(r.k == 1 and not r.exclude for r in parsed):  # fast path: no masks
            p = explore_probabilities(scores, None, *self._explore)
            if n == 1:  # one request: `sample_rows` on one row without its (n, A) temporaries, same draw
                row = p[0]
                cdf = np.cumsum(row)
                a0 = min(int(np.searchsorted(cdf, self._rng.random() * cdf[-1], side="right")), n_act - 1)
                if row[a0] <= 0:  # u * total rounded onto the last step: the last positive action (if any)
                    positive = np.flatnonzero(row > 0)
                    a0 = int(positive[-1]) if len(positive) else n_act - 1
                return [[a0]], [[float(row[a0])]], p
            a = sample_rows(p, self._rng)
            props = p[np.arange(n), a].tolist()
            return [[ai] for ai in a.tolist()], [[pi] for pi in props], p
        p, allowed, k_eff = self._rule_probabilities(scores, parsed, self._explore)
        first = p
        chosen: list[list[int]] = [[] for _ in range(n)]
        props: list[list[float]] = [[] for _ in range(n)]
        active = np.flatnonzero(p.sum(axis=1) > 0)
        p = p[active]
        for slot in range(int(k_eff.max())):
            if slot > 0:
                active = active[k_eff[active] > slot]
                if not len(active):
                    break
                p = explore_probabilities(scores[active], allowed[active], *self._explore)
                alive = p.sum(axis=1) > 0
                active, p = active[alive], p[alive]
                if not len(active):
                    break
            a = sample_rows(p, self._rng)
            pa = p[np.arange(len(a)), a]
            allowed[active, a] = False
            for i, ai, pi in zip(active.tolist(), a.tolist(), pa.tolist(), strict=True):
                chosen[i].append(ai)
                props[i].append(pi)
        return chosen, props, first

    def _parse(self, requests: Sequence[Mapping[str, Any]]) -> list[_Request]:
        if not isinstance(requests, Sequence) or isinstance(requests, str | bytes):
            raise RequestError("requests", f"must be a list of request objects, got {type(requests).__name__}")
        if not requests:
            raise RequestError("requests", "must hold at least one request")
        out: list[_Request] = []
        seen: dict[str, int] = {}
        slate, cap = self.manifest.slate_size, self.rules.frequency_cap
        for i, r in enumerate(requests):
            where = f"requests[{i}]"
            _check_object(r, where, REQUEST_KEYS)
            rid = r.get("request_id")
            if type(rid) is not str or not rid:
                raise RequestError(f"{where}.request_id", f"must be a non-empty string, got {rid!r}")
            if rid in seen:
                raise RequestError(f"{where}.request_id", f"{rid!r} repeats requests[{seen[rid]}]")
            seen[rid] = i
            if "context" not in r:
                raise RequestError(f"{where}.context", "missing field")
            req = _Request(rid, r["context"])
            exclude = r.get("exclude")
            if exclude is not None:
                if not isinstance(exclude, list | tuple):
                    raise RequestError(f"{where}.exclude", f"must be a list of action ids, got {exclude!r}")
                for j, a in enumerate(exclude):
                    idx = self._index.get((type(a), a)) if type(a) is str or type(a) is int else None
                    if idx is None:
                        raise RequestError(f"{where}.exclude[{j}]", f"unknown action id {a!r}; known: {self.action_ids[:10]}")
                    req.exclude.append(idx)
            k = r.get("k", 1)
            if type(k) is not int or not 1 <= k <= slate:
                raise RequestError(f"{where}.k", f"must be an integer in [1, {slate}] (the slate size), got {k!r}")
            req.k = k
            pushes = r.get("pushes_in_window")
            if pushes is not None and (type(pushes) is not int or pushes < 0):
                raise RequestError(f"{where}.pushes_in_window", f"must be an integer >= 0, got {pushes!r}")
            if cap is not None and pushes is None:
                raise RequestError(f"{where}.pushes_in_window",
                                   f"required: this policy caps pushes at {cap} per window")
            req.pushes = pushes
            out.append(req)
        return out

    def _records(self, parsed: list[_Request], decisions: list[Decision]) -> list[dict[str, Any]]:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        retired = [self.action_ids[j] for j in self.retired]
        records = []
        for r, d in zip(parsed, decisions, strict=True):
            rec = {"request_id": d.request_id, "timestamp": now, "policy_version": d.policy_version,
                   "context": r.context, "actions": d.actions, "propensities": d.propensities}
            if r.exclude:
                rec["exclude"] = [self.action_ids[j] for j in r.exclude]
            if r.pushes is not None:
                rec["pushes_in_window"] = r.pushes
            if self.retired:
                rec["retired"] = retired
            if d.ood:
                rec["ood"] = d.ood
            records.append(rec)
        return records
