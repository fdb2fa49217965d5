"""Every config composes: each experiment preset and each option of each group; typos fail fast."""

from __future__ import annotations

from importlib.resources import files

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from pushrl.experiments.config import register_configs

CONFIGS = files("pushrl.configs")


def _names(group: str) -> list[str]:
    return sorted(p.name[:-5] for p in (CONFIGS / group).iterdir() if p.name.endswith(".yaml"))


@pytest.fixture()
def composer():
    GlobalHydra.instance().clear()
    register_configs()
    with initialize_config_module(config_module="pushrl.configs", version_base="1.3"):
        yield lambda overrides: compose("config", overrides=overrides)
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("preset", _names("experiment"))
def test_every_experiment_preset_composes(composer, preset):
    cfg = composer([f"experiment={preset}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert cfg.data.kind in ("obd", "hillstrom", "synthetic", "file")


@pytest.mark.parametrize("group", ["data", "objective", "agents", "policy", "env"])
def test_every_group_option_composes(composer, group):
    node = group if group != "env" else "sequential"
    for option in _names(group):
        cfg = composer([f"{group}={option}"])
        written = OmegaConf.to_container(OmegaConf.load(CONFIGS / group / f"{option}.yaml"), resolve=False)
        written.pop("defaults", None)
        assert written, f"{group}/{option}.yaml sets nothing"
        for key, value in written.items():  # every value the file sets is what the composed config holds
            if value == "???":  # marked "required" for the user; the schema's None stands until they set it
                continue
            assert OmegaConf.to_container(cfg[node], resolve=False)[key] == value, (group, option, key)


def test_presets_override_what_they_say(composer):
    cfg = composer(["experiment=synthetic_regret"])
    assert cfg.data.kind == "synthetic" and cfg.train.simulator == "truth" and list(cfg.also) == []
    cfg = composer(["experiment=hillstrom_profit"])
    assert cfg.data.name == "hillstrom" and cfg.objective.reward == "profit"


@pytest.mark.parametrize("override, key", [("data.campain=men", "campain"), ("eval.n_bootstrapp=3", "n_bootstrapp"),
                                           ("model.epochs=many", "epochs")])
def test_typos_and_wrong_types_fail_at_composition(composer, override, key):
    with pytest.raises(Exception, match=key):
        composer([override])


def test_model_config_mirrors_the_response_model_config():
    """The Hydra node is a light copy (no torch at composition); it must not drift from the real config."""
    import dataclasses

    from pushrl.envs.response_model import ResponseModelConfig
    from pushrl.experiments.config import ModelConfig

    real = {f.name: f.default for f in dataclasses.fields(ResponseModelConfig)}
    for f in dataclasses.fields(ModelConfig):
        assert f.name in real, f"model.{f.name} is not a ResponseModelConfig field"
        assert f.default == real[f.name], f"model.{f.name} default {f.default!r} != {real[f.name]!r}"


def test_propensity_model_config_mirrors_the_propensity_config():
    import dataclasses

    from pushrl.envs.propensity import PropensityConfig
    from pushrl.experiments.config import PropensityModelConfig

    real = {f.name: f.default for f in dataclasses.fields(PropensityConfig)}
    for f in dataclasses.fields(PropensityModelConfig):
        assert f.name in real, f"propensity_model.{f.name} is not a PropensityConfig field"
        assert f.default == real[f.name], f"propensity_model.{f.name} default {f.default!r} != {real[f.name]!r}"
