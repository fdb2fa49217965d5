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


LIBRARY_NODES = {"model": ("pushrl.envs.model.response_model", "ResponseModelConfig"),
                 "propensity_model": ("pushrl.envs.data.propensity", "PropensityConfig")}


def _library_class(node: str) -> type:
    import importlib

    module, name = LIBRARY_NODES[node]
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("node", sorted(LIBRARY_NODES))
def test_library_dataclass_is_the_node_with_its_own_fields_and_defaults(composer, node):
    """The Hydra node is the library's dataclass itself, so a drifting copy cannot come back."""
    import dataclasses

    cls = _library_class(node)
    cfg = composer([])
    assert OmegaConf.get_type(cfg[node]) is cls
    composed = OmegaConf.to_container(cfg[node], resolve=True)
    fields = dataclasses.fields(cls)
    assert list(composed) == [f.name for f in fields]
    for f in fields:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        value = tuple(composed[f.name]) if isinstance(default, tuple) else composed[f.name]
        assert value == default, f"{node}.{f.name}: composed {value!r}, {cls.__name__} default {default!r}"


def test_eval_node_extends_the_estimator_settings(composer):
    import dataclasses

    from pushrl.experiments.config import EvalConfig
    from pushrl.policies.evaluation import EstimatorSettings

    assert issubclass(EvalConfig, EstimatorSettings)
    composed = OmegaConf.to_container(composer([]).eval, resolve=True)
    assert list(composed) == [f.name for f in dataclasses.fields(EvalConfig)]
    for f in dataclasses.fields(EstimatorSettings):
        assert composed[f.name] == f.default, f.name


@pytest.mark.parametrize("override", ["model.embeding_dim=3", "propensity_model.folds=3", "eval.estimator=ips"])
def test_unknown_key_under_a_library_node_is_refused(composer, override):
    key = override.split("=")[0].split(".")[1]
    with pytest.raises(Exception, match=key):
        composer([override])


def test_a_key_added_with_plus_is_refused_when_built(composer):
    """`+model.hidden=3` gets past composition (Hydra's `+` adds keys); the builder names it."""
    from pushrl.experiments.builders import propensity_config, response_model_config

    with pytest.raises(ValueError, match=r"model\.hidden: not a setting of ResponseModelConfig"):
        response_model_config(composer(["+model.hidden=3"]))
    with pytest.raises(ValueError, match=r"propensity_model\.folds: not a setting of PropensityConfig"):
        propensity_config(composer(["+propensity_model.folds=3"]))


def test_builders_take_the_run_seed_reward_chain_and_progress(composer):
    from pushrl.experiments.builders import (
        estimator_settings,
        propensity_config,
        response_model_config,
    )

    cfg = composer(["data=hillstrom", "seed=3", "progress=false", "model.epochs=7", "model.init_std=0.5",
                    "propensity_model.clip=0.2", "eval.clip=30", "eval.switch_threshold=9"])
    model = response_model_config(cfg)
    assert (model.seed, model.reward_chain, model.progress) == (3, ("visit", "conversion", "spend"), False)
    assert (model.epochs, model.init_std) == (7, 0.5)
    quick = response_model_config(cfg, progress=True, epochs=2)
    assert (quick.epochs, quick.progress, quick.seed) == (2, True, 3)
    prop = propensity_config(cfg)
    assert (prop.seed, prop.clip, prop.n_folds) == (3, 0.2, 5)
    est = estimator_settings(cfg)
    assert (est.clip, est.switch_threshold, est.dros_lambda) == (30.0, 9.0, 100.0)


def test_a_bad_value_is_refused_by_the_library_dataclass_when_built(composer):
    from pushrl.experiments.builders import propensity_config, response_model_config

    with pytest.raises(ValueError, match=r"ResponseModelConfig\.epochs"):
        response_model_config(composer(["model.epochs=0"]))
    with pytest.raises(ValueError, match=r"PropensityConfig\.trim"):
        propensity_config(composer(["propensity_model.trim=1.5"]))


# issue16: call sites in files of other owners that still build these by hand; remove each once it uses builders
PENDING_HAND_BUILT: set[str] = set()


def test_library_settings_are_built_only_by_the_builders():
    import re
    from pathlib import Path

    import pushrl.experiments as experiments

    hand_built = re.compile(r"(ResponseModelConfig|PropensityConfig|EstimatorSettings)\(\*\*|"
                            r"(EstimatorSettings|PropensityConfig)\([^)]*cfg\.")
    offenders = sorted(p.name for p in Path(experiments.__file__).parent.glob("*.py")
                       if p.name != "builders.py" and hand_built.search(p.read_text(encoding="utf-8")))
    assert set(offenders) <= PENDING_HAND_BUILT, offenders


def test_configs_md_is_generated_from_the_schema():
    from pathlib import Path

    from pushrl.experiments.config_docs import render

    docs = Path(__file__).resolve().parents[2] / "docs" / "configs.md"
    assert docs.read_text(encoding="utf-8") == render(), "rerun: python -m pushrl.experiments.config_docs"
