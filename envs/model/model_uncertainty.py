"""Bootstrap refits of the response model: its own variance, for honest DM and simulator intervals.

Refit k (k = 1..K) repeats the whole fit on a bootstrap resample of the data it
learns from: the training rows AND the validation rows that early stopping uses
(the chosen epoch is part of the fit, so its noise is part of the model's
variance; a fixed validation split would hide it). The unit resampled is the
user when the log has user ids (a user's rows share features and are not
independent), else the row:

- users: the users of train and validation together are drawn with replacement
  (as many draws as users); each row of either split appears as many times as its
  user was drawn, so a user keeps its train/validation rows together;
- rows: train and validation rows are each drawn with replacement, n of n.

Seeds: `np.random.SeedSequence(seed).spawn(K)`; child k seeds refit k's resample
and its model (`ResponseModelConfig.seed`). The encoders are refitted on each
resample, so each refit encodes contexts itself (`predict` does).

The refits measure variance only: shrinkage and misfit bias move every refit the
same way. `pushrl.policies.ope.model_interval` combines their spread with the
sampling noise and with the held-out bias check into the reported interval (its
docstring has the formula and the measurements behind it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig

MAX_REDRAWS = 100  # a resample with no training rows (tiny logs) is drawn again, at most this often


@dataclass(frozen=True)
class BootstrapRefits:
    """K response models fitted on bootstrap resamples; `unit` is 'user' or 'row'."""

    models: tuple[ResponseModel, ...]
    unit: str
    seconds: tuple[float, ...]  # fit time of each refit

    @property
    def n_refits(self) -> int:
        return len(self.models)

    def predict(self, data: LoggedData, position: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
        """Per refit, {reward: (n, A)} expected rewards of every action for the log's rows.

        position (n,) ints: the slot to score (default: each row's logged position).
        """
        pos = data.position if position is None else np.asarray(position)
        out = []
        for model in self.models:
            x, h = model.encode(data)
            out.append(model.predict(x, h, pos))
        return out

    def predict_log(self, data: LoggedData) -> list[dict[str, np.ndarray]]:
        """Per refit, {reward: (n,)} expected reward of each row's logged action at its position."""
        return [model.predict_log(data) for model in self.models]


def resample_rows(train: LoggedData, validation: LoggedData | None,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(train rows, validation rows, unit) of one bootstrap resample (see the module docstring)."""
    if train.n_rounds == 0:
        raise ValueError("bootstrap refits need training rows; the train split is empty")
    users_t = train.user_id
    users_v = None if validation is None else validation.user_id
    if users_t is not None and (validation is None or users_v is not None):
        parts = [users_t] if users_v is None else [users_t, users_v]
        _, code = np.unique(np.concatenate(parts), return_inverse=True)
        n_users = int(code.max()) + 1
        code_t, code_v = code[: len(users_t)], code[len(users_t):]
        for _ in range(MAX_REDRAWS):
            counts = np.bincount(rng.integers(0, n_users, n_users), minlength=n_users)
            rows_t = np.repeat(np.arange(len(code_t)), counts[code_t])
            if len(rows_t):
                rows_v = None if validation is None else np.repeat(np.arange(len(code_v)), counts[code_v])
                return rows_t, rows_v, "user"
        raise ValueError(f"no bootstrap resample of the {n_users} users in {MAX_REDRAWS} draws has a training row")
    rows_t = np.sort(rng.integers(0, train.n_rounds, train.n_rounds))
    rows_v = None if validation is None else np.sort(rng.integers(0, validation.n_rounds, validation.n_rounds))
    return rows_t, rows_v, "row"


def fit_refits(train: LoggedData, validation: LoggedData | None, config: ResponseModelConfig,
               n_refits: int, seed: int = 0) -> BootstrapRefits:
    """Fit `n_refits` (>= 2) response models, each on its own bootstrap resample of train and validation."""
    if isinstance(n_refits, bool) or not isinstance(n_refits, int | np.integer) or n_refits < 2:
        raise ValueError(f"eval.model_refits: expected an int >= 2 (or 0 for no refits), got {n_refits!r}")
    models, seconds, units = [], [], set()
    for child in np.random.SeedSequence(seed).spawn(int(n_refits)):
        resample_seed, model_seed = child.spawn(2)
        rows_t, rows_v, unit = resample_rows(train, validation, np.random.default_rng(resample_seed))
        units.add(unit)
        cfg = replace(config, seed=int(model_seed.generate_state(1)[0]), progress=False)
        start = time.perf_counter()
        # no drawn user has validation rows (tiny logs only): that refit trains every epoch, unstopped
        boot_v = None if validation is None or len(rows_v) == 0 else validation.subset(rows_v)
        models.append(ResponseModel.fit(train.subset(rows_t), boot_v, cfg))
        seconds.append(time.perf_counter() - start)
    return BootstrapRefits(models=tuple(models), unit=units.pop(), seconds=tuple(seconds))
