"""SequentialConfig (the `sequential:` Hydra node) and as_sequential_config: validation by field name."""

from __future__ import annotations

import pytest

from pushrl.agents.sequential_config import SequentialConfig, as_sequential_config


def test_config_validation() -> None:
    cfg = as_sequential_config({"horizon": 7, "lambdas": [0, 1]})
    assert cfg.horizon == 7 and cfg.lambdas == [0.0, 1.0]
    assert as_sequential_config(None) == SequentialConfig()
    assert as_sequential_config(cfg) == cfg and as_sequential_config(cfg) is not cfg  # a validated copy
    with pytest.raises(ValueError, match="unknown sequential config key"):
        as_sequential_config({"horizn": 3})
    with pytest.raises(ValueError, match="unknown bandit"):
        SequentialConfig(bandits={"ucb9": {}})
    with pytest.raises(ValueError, match="pareto_agents"):
        SequentialConfig(pareto_agents=["ppo"])
    with pytest.raises(ValueError, match="eval_seeds"):
        SequentialConfig(eval_seeds=1)
    with pytest.raises(ValueError, match="lambdas"):
        SequentialConfig(lambdas=[-1.0])
    with pytest.raises(ValueError, match="unsubscribe_cost"):
        SequentialConfig(unsubscribe_cost=-1.0)
    with pytest.raises(TypeError, match="cfg_seq"):
        as_sequential_config(3)


def test_bandit_settings_are_plain_dicts() -> None:
    cfg = SequentialConfig(bandits={"linucb": None}, pareto_agents=("greedy", "linucb"))
    assert cfg.bandits == {"linucb": {}} and cfg.pareto_agents == ["greedy", "linucb"]
    with pytest.raises(ValueError, match="unknown bandit"):  # the env has no promotion features to share
        SequentialConfig(bandits={"linucb_shared": {}})
    with pytest.raises(ValueError, match="frequency_cap"):
        SequentialConfig(frequency_cap=0)
