"""Two standard uplift baselines built on our own response model, as Policies.

* **T-learner** (`TLearner` + `TLearnerPolicy`): one outcome model per action,
  each a `ResponseModel` fitted on that action's logged rows only (the other
  actions' rows never touch it). Every customer gets each action's predicted
  outcome from that action's own model, and the policy sends the action with
  the best predicted objective (`Objective.expected`: the reward itself, or for
  profit margin × money − cost of the push).
* **"Uplift pays"** (`UpliftPaysPolicy`): over any outcome model (in the run
  report: the pipeline's pooled response model, i.e. an S-learner with action
  embeddings), the predicted uplift of each push over the no-push action,
  Δ_e(x) = ŷ(x, e) − ŷ(x, no push), is turned into a gain

      gain_e(x) = Σ_r weight_r × Δ_e,r(x) − (cost_e − cost_no push)

  over the objective's terms (profit: margin × Δmoney must pay for the push's
  cost; a plain reward: weight 1 and no cost, so any positive uplift pays).
  The policy sends the push with the highest gain when that gain is > 0, else
  nothing. With the objectives as `pushrl.envs.objectives` defines them this
  is exactly the greedy policy on that model's expected objective: the two
  baselines differ in the outcome model (separate per-action models vs one
  pooled model), not in the decision rule, which is written here in its
  uplift form.

Both are **deterministic**: every probability is 0 or 1, except that ties
(scores within `pushrl.policies.baselines.TIE_RTOL` of the row's best) split
the row's mass evenly over the tied actions (a gain of exactly 0 ties the
push with no push).

Inputs: the policies read the same (n, d + 1) feature matrix the pipeline's
agents take (contexts encoded by the pipeline model's `ContextEncoder`, then an
intercept column of ones, checked), or the bare (n, d) encoded contexts with
`intercept=False`. A model fitted with its own encoder (each T-learner model
fits one on its own rows) gets the contexts re-encoded exactly by `reencode`.
Predictions use position 0 and 0 recent pushes: these baselines are for
single-slot logs; a log's recent-push count, if it has one, is not an input.

Shapes (batch first): contexts (n, n_features); outcomes {reward: (n, A)};
probabilities (n, A), rows sum to 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol, runtime_checkable

import numpy as np

from pushrl.envs.data.features import ContextEncoder
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig
from pushrl.envs.objectives import Objective
from pushrl.policies.baselines import greedy_probabilities
from pushrl.policies.policy import BasePolicy, check_contexts

__all__ = [
    "OutcomeModel",
    "PooledOutcomes",
    "TLearner",
    "TLearnerPolicy",
    "UpliftPaysPolicy",
    "reencode",
]


def reencode(contexts: np.ndarray, source: ContextEncoder, target: ContextEncoder) -> np.ndarray:
    """(n, source.n_features) encoded by `source` -> (n, target.n_features) as `target` encodes the same rows.

    Numeric columns are un-standardised with `source`'s means and stds and
    re-standardised with `target`'s; one-hot blocks are mapped by category name
    (a category `target` has never seen, or `source`'s unknown bucket, lands in
    `target`'s unknown bucket). Both encoders must read the same raw fields.
    """
    x = np.asarray(contexts, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != source.n_features:
        raise ValueError(f"contexts must be (n, {source.n_features}) (the source encoder's output), got {x.shape}")
    if source == target:
        return x.copy()
    if list(source.numeric) != list(target.numeric) or list(source.categorical) != list(target.categorical):
        raise ValueError(f"the encoders read different fields: {source.input_fields} vs {target.input_fields}")
    out = np.zeros((x.shape[0], target.n_features))
    k = len(source.numeric)
    if k:
        raw = x[:, :k] * np.asarray(source.stds) + np.asarray(source.means)
        out[:, :k] = (raw - np.asarray(target.means)) / np.asarray(target.stds)
    s_col = t_col = k
    for c in source.categorical:
        s_vocab, t_vocab = source.vocabularies[c], target.vocabularies[c]
        t_index = {v: i for i, v in enumerate(t_vocab)}
        for i, v in enumerate((*s_vocab, None)):  # None: the source's unknown bucket
            j = t_index.get(v, len(t_vocab)) if v is not None else len(t_vocab)
            out[:, t_col + j] += x[:, s_col + i]
        s_col += len(s_vocab) + 1
        t_col += len(t_vocab) + 1
    return out


@runtime_checkable
class OutcomeModel(Protocol):
    """Predicted outcomes of every action for contexts encoded by some `ContextEncoder`."""

    @property
    def reward_names(self) -> tuple[str, ...]: ...

    @property
    def n_actions(self) -> int: ...

    def predict_encoded(self, contexts: np.ndarray, encoder: ContextEncoder) -> dict[str, np.ndarray]:
        """{reward: (n, n_actions)} unconditional expected outcomes; `contexts` encoded by `encoder`."""
        ...


def _predict_model(model: ResponseModel, contexts: np.ndarray, encoder: ContextEncoder) -> dict[str, np.ndarray]:
    x = reencode(contexts, encoder, model.encoder)
    n = x.shape[0]
    return model.predict(x, np.zeros(n), np.zeros(n, dtype=np.int64))


class PooledOutcomes:
    """One response model for every action (the pipeline's own: an S-learner with action embeddings)."""

    def __init__(self, model: ResponseModel) -> None:
        self.model = model

    @property
    def reward_names(self) -> tuple[str, ...]:
        return self.model.reward_names

    @property
    def n_actions(self) -> int:
        return self.model.n_actions

    def predict_encoded(self, contexts: np.ndarray, encoder: ContextEncoder) -> dict[str, np.ndarray]:
        return _predict_model(self.model, contexts, encoder)


class TLearner:
    """One `ResponseModel` per action, model a fitted on the rows that logged action a only.

    `predict_encoded` takes column a of model a's predictions for every a, so
    each action's outcome comes from the model that saw only that action.
    """

    def __init__(self, models: Sequence[ResponseModel], action_ids: Sequence) -> None:
        if len(models) != len(action_ids) or not models:
            raise ValueError(f"TLearner needs one model per action: {len(models)} models for {len(action_ids)} actions")
        names = {m.reward_names for m in models}
        if len(names) != 1:
            raise ValueError(f"the per-action models predict different rewards: {sorted(names)}")
        self.models = list(models)
        self.action_ids = np.asarray(action_ids)

    @classmethod
    def fit(cls, train: LoggedData, validation: LoggedData | None = None,
            config: ResponseModelConfig | None = None) -> TLearner:
        """Fit one response model per action on `train`'s rows of that action (early stopping on
        `validation`'s rows of the same action when given). Every action needs training rows."""
        config = config or ResponseModelConfig()
        counts = np.bincount(train.action, minlength=train.n_actions)
        if (counts == 0).any():
            missing = [str(a) for a in train.action_ids[counts == 0]]
            raise ValueError(f"TLearner.fit: no training rows for action(s) {missing}; a T-learner needs rows of every action")
        models = []
        for a in range(train.n_actions):
            part = train.subset(np.flatnonzero(train.action == a), name=f"{train.name}[{train.action_ids[a]}]")
            val = None
            if validation is not None and (validation.action == a).any():
                val = validation.subset(np.flatnonzero(validation.action == a))
            models.append(ResponseModel.fit(part, val, replace(config, seed=config.seed + a)))
        return cls(models, train.action_ids)

    @property
    def reward_names(self) -> tuple[str, ...]:
        return self.models[0].reward_names

    @property
    def n_actions(self) -> int:
        return len(self.models)

    def predict_encoded(self, contexts: np.ndarray, encoder: ContextEncoder) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for a, model in enumerate(self.models):
            pred = _predict_model(model, contexts, encoder)
            for r, v in pred.items():
                out.setdefault(r, np.empty((v.shape[0], self.n_actions)))[:, a] = v[:, a]
        return out


class _OutcomePolicy(BasePolicy):
    """A deterministic policy over an outcome model; contexts encoded by `encoder` (+ intercept)."""

    def __init__(self, outcomes: OutcomeModel, encoder: ContextEncoder, objective: Objective,
                 action_ids: Sequence, intercept: bool = True) -> None:
        if not isinstance(outcomes, OutcomeModel):
            raise TypeError(f"outcomes must implement OutcomeModel (predict_encoded), got {type(outcomes).__name__}")
        self.action_ids = np.asarray(action_ids)
        if outcomes.n_actions != len(self.action_ids):
            raise ValueError(f"the outcome model scores {outcomes.n_actions} actions, action_ids has {len(self.action_ids)}")
        missing = [r for r in objective.rewards if r not in outcomes.reward_names]
        if missing:
            raise ValueError(f"objective {objective.name!r} needs predicted {missing}; the model has {outcomes.reward_names}")
        self.outcomes, self.encoder, self.objective, self.intercept = outcomes, encoder, objective, bool(intercept)
        self.n_features = encoder.n_features + int(self.intercept)
        self._costs = objective.cost_vector(self.action_ids)

    @property
    def n_actions(self) -> int:
        return len(self.action_ids)

    def _encoded(self, contexts: np.ndarray) -> np.ndarray:
        if not self.intercept:
            return contexts
        if contexts.shape[0] and not np.allclose(contexts[:, -1], 1.0):
            row = int(np.flatnonzero(~np.isclose(contexts[:, -1], 1.0))[0])
            raise ValueError(f"the last feature must be the intercept column of ones (intercept=True); row {row} has "
                             f"{contexts[row, -1]!r}: pass the pipeline's feature matrix, or intercept=False for bare contexts")
        return contexts[:, :-1]

    def predicted_outcomes(self, contexts: np.ndarray) -> dict[str, np.ndarray]:
        """{reward: (n, n_actions)} the outcome model's predictions for these feature rows."""
        x = check_contexts(contexts, self.n_features)
        return self.outcomes.predict_encoded(self._encoded(x), self.encoder)

    def uplift_score(self, contexts: np.ndarray, reward: str, no_push_action: object) -> np.ndarray:
        """(n,) best push's predicted `reward` minus the no-push action's (the "any push vs none" score)."""
        ids = self.action_ids.tolist()
        if no_push_action not in ids:
            raise ValueError(f"no_push_action {no_push_action!r} is not an action id; known: {ids}")
        no_push_index = ids.index(no_push_action)
        pred = self.predicted_outcomes(contexts)
        if reward not in pred:
            raise ValueError(f"reward {reward!r} is not predicted; have {sorted(pred)}")
        q = pred[reward]
        push = np.delete(np.arange(self.n_actions), no_push_index)
        return q[:, push].max(axis=1) - q[:, no_push_index]


class TLearnerPolicy(_OutcomePolicy):
    """Send the action with the best predicted objective under a `TLearner` (deterministic, ties split)."""

    def __init__(self, t_learner: TLearner, encoder: ContextEncoder, objective: Objective,
                 intercept: bool = True) -> None:
        super().__init__(t_learner, encoder, objective, t_learner.action_ids, intercept)

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        pred = self.outcomes.predict_encoded(self._encoded(contexts), self.encoder)
        return greedy_probabilities(self.objective.expected(pred, self.action_ids))


class UpliftPaysPolicy(_OutcomePolicy):
    """Send the push with the highest predicted uplift over `no_push_action` when the weighted uplift
    pays for the push's cost (any positive uplift for a cost-free objective), else nothing
    (deterministic, ties split)."""

    def __init__(self, outcomes: OutcomeModel | ResponseModel, encoder: ContextEncoder, objective: Objective,
                 action_ids: Sequence, no_push_action: object, intercept: bool = True) -> None:
        if isinstance(outcomes, ResponseModel):
            outcomes = PooledOutcomes(outcomes)
        super().__init__(outcomes, encoder, objective, action_ids, intercept)
        ids = self.action_ids.tolist()
        if no_push_action not in ids:
            raise ValueError(f"no_push_action {no_push_action!r} is not an action id; known: {ids}")
        self.no_push_action = no_push_action
        self.no_push_index = ids.index(no_push_action)

    def gains(self, contexts: np.ndarray) -> np.ndarray:
        """(n, n_actions) weighted uplift − extra cost of each action over no push (0 for no push)."""
        pred = self.predicted_outcomes(contexts)
        return self._gains(pred)

    def _gains(self, pred: dict[str, np.ndarray]) -> np.ndarray:
        gain = 0.0
        for r, weight in self.objective.terms.items():
            q = np.asarray(pred[r], dtype=np.float64)
            gain = gain + weight * (q - q[:, [self.no_push_index]])
        extra_cost = self._costs - self._costs[self.no_push_index]
        return gain - extra_cost[None, :]

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        pred = self.outcomes.predict_encoded(self._encoded(contexts), self.encoder)
        return greedy_probabilities(self._gains(pred))
