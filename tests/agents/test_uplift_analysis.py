"""The uplift analysis's pieces: per-fit model settings, the T-learner's missing-action rule, the choice of
the best learned policy and of the best one that can be re-learned per fold. The whole analysis runs in
tests/experiments/test_uplift_section*.py."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from pushrl.agents.uplift_analysis import UpliftSettings, best_learned, fit_t_learner, is_learned
from pushrl.envs.data.split import Split
from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
from pushrl.envs.model.response_model import ResponseModelConfig
from pushrl.policies.evaluation import EstimatorSettings
from pushrl.policies.uplift import Arms


def _settings(**kw) -> UpliftSettings:
    return UpliftSettings(model=ResponseModelConfig(epochs=30, seed=0, progress=False), estimators=EstimatorSettings(),
                          n_bootstrap=10, alpha=0.05, agent_specs={"linucb": {}, "uniform": {}}, online_rounds=0,
                          batch_size=10, **kw)


def test_model_config_replaces_the_seed_and_caps_the_epochs():
    s = _settings()
    assert s.model_config(7).seed == 7 and s.model_config(7).epochs == 30
    assert s.model_config(3, 10).epochs == 10 and s.model_config(3, 50).epochs == 30
    assert s.model_config(3, 10).l2 == s.model.l2


def test_t_learner_needs_rows_of_every_action():
    data, _ = generate_log(SyntheticConfig(n_rows=300, n_users=50, n_actions=3, seed=0))
    train = data.subset(np.flatnonzero(data.action != 2))
    split = Split(train=train, validation=None, test=data, method="random-stratified", note="")
    t, missing = fit_t_learner(split, Arms(data.action_ids, 0), ResponseModelConfig(progress=False))
    assert t is None and missing == [str(data.action_ids[2])]


def _evals(values: dict[str, float]):
    return {"o": {n: SimpleNamespace(estimates={"ips": SimpleNamespace(value=v)}) for n, v in values.items()}}


def test_best_learned_and_the_best_that_can_be_re_learned():
    evals = _evals({"neural_linear": 3.0, "linucb": 2.0, "uplift_pays": 1.0, "uniform": 9.0})
    learned = [n for n in ("neural_linear", "linucb", "uniform") if is_learned(n)] + ["uplift_pays"]
    assert "uniform" not in learned
    best, refit = best_learned(_settings(), evals, learned, "ips")
    assert best == {"o": "neural_linear"}  # not configured, so it cannot be re-learned per fold
    assert refit == {"o": "linucb"}
