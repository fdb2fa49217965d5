"""The Hydra application behind every Hydra `pushrl` command, and how its errors reach the user.

`run_hydra(command, argv)` runs one command through Hydra's own main (run folder, logging,
`--help`, `--cfg`, sweeps, launchers), and turns a user's mistake into one line on stderr and
exit status 2, with no traceback:

- before Hydra starts, the config is composed once with Hydra's compose API (under `--multirun`,
  once per sweep value), so an unknown key, a missing config, a bad override or a value of the
  wrong type is reported before any work;
- inside the job, bad data (`LoggedDataError`), a ValueError or TypeError raised by pushrl's own
  code, or a config value that is missing or ill-typed leaves the job as `UserError`, a
  BaseException, so Hydra's reporter (which catches Exception, prints a traceback, exits 1)
  lets it pass.

Anything else is a bug and keeps Hydra's report. With HYDRA_FULL_ERROR=1 none of this applies:
the full traceback is shown.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Sequence
from types import TracebackType

import hydra
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from pushrl.experiments.config import register_configs

register_configs()

CONFIG_MODULE = "pushrl.configs"
CONFIG_NAME = "config"
GRAMMAR_URL = "https://hydra.cc/docs/1.2/advanced/override_grammar/basic"


class UserError(BaseException):
    """A user's mistake, already phrased as one line; `pushrl` prints it and exits 2.

    A BaseException so that it passes Hydra's job runner and reporter, which catch Exception."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def full_error() -> bool:
    """HYDRA_FULL_ERROR=1: show full tracebacks instead of one-line messages."""
    return os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")


def one_line(text: str) -> str:
    """`text` on one line: its non-blank lines joined by '; '."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _first_line(text: object) -> str:
    lines = [part.strip() for part in str(text).splitlines() if part.strip()]
    return lines[0] if lines else ""


def _unknown_key_message(cause: OmegaConfBaseException) -> str:
    """'unknown config key data.campain: DataConfig has no key 'campain'; did you mean data.campaign?'"""
    full_key = cause.full_key or str(cause.key)
    owner = getattr(cause.object_type, "__name__", None) or "the config"
    message = f"unknown config key '{full_key}': {owner} has no key '{cause.key}'"
    parent = cause.parent_node
    if isinstance(parent, DictConfig) and isinstance(cause.key, str):
        close = difflib.get_close_matches(cause.key, [str(k) for k in parent.keys()], n=1)
        if close:
            prefix = full_key.rpartition(".")[0]
            message += f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?"
    return message


def _missing_config_message(exc: MissingConfigException) -> str:
    """'no config 'nope' in group 'data'; choose one of: custom, hillstrom, ...'"""
    missing = exc.missing_cfg_file or ""
    group, _, name = missing.rpartition("/")
    options = [o for o in (exc.options or []) if not o.endswith("_schema")]  # ConfigStore schemas are not choices
    if not group or not options:
        return _first_line(exc)
    hint = (f"; to optimise a reward of your log by its name, use objective.reward={name}" if group == "objective"
            else "")
    return f"no config '{name}' in group '{group}' (override {group}={name}); choose one of: {', '.join(options)}{hint}"


def composition_message(exc: Exception) -> str | None:
    """One line for a failed composition (the user's overrides); None for anything that is not Hydra's."""
    if isinstance(exc, OverrideParseException):
        return f"bad override {exc.override!r}: {_first_line(exc.message)} (syntax: {GRAMMAR_URL})"
    if isinstance(exc, MissingConfigException):
        return _missing_config_message(exc)
    cause = exc.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.key is not None:
        return _unknown_key_message(cause)
    if isinstance(cause, ValidationError) and cause.full_key:
        return f"wrong value for config key '{cause.full_key}': {_first_line(cause.msg or cause)}"
    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        parts = [one_line(str(exc))]
        if isinstance(cause, OmegaConfBaseException):
            parts.append(_first_line(cause.msg or cause))
        return "; ".join(p for p in parts if p)
    return None


def _innermost_module(tb: TracebackType | None) -> str:
    """The module whose code raised: that of the traceback's last frame."""
    module = ""
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        tb = tb.tb_next
    return module


def job_error_message(exc: Exception) -> str | None:
    """One line for a user error raised inside a job; None for a bug (keeps the traceback)."""
    from pushrl.envs.common.errors import LoggedDataError

    if isinstance(exc, LoggedDataError):
        return f"invalid log: {one_line(str(exc))}"
    if isinstance(exc, MissingMandatoryValue):
        key = exc.full_key or str(exc.key)
        return f"config key '{key}' has no value; set it on the command line: {key}=..."
    if isinstance(exc, ValidationError) and exc.full_key:
        return f"wrong value for config key '{exc.full_key}': {_first_line(exc.msg or exc)}"
    if isinstance(exc, (ValueError, TypeError)) and _innermost_module(exc.__traceback__).startswith("pushrl."):
        return one_line(str(exc)) or type(exc).__name__
    return None


@hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name=CONFIG_NAME, version_base="1.3")
def hydra_app(cfg: DictConfig) -> None:
    from pushrl.experiments.stages import run_command

    try:
        run_command(cfg)
    except Exception as exc:
        message = None if full_error() else job_error_message(exc)
        if message is None:
            raise
        raise UserError(message) from exc


def _sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Override lists that together try every value of every sweep once (not their product).

    Glob and interval sweeps, and sweeps over Hydra's own config, are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    base: list[str] = []
    alternatives: list[tuple[int, list[str]]] = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if not override.is_sweep_override():
            base.append(override.input_line)
        elif (override.is_discrete_sweep() and not override.is_hydra_override()
              and override.value_type != ValueType.GLOB_CHOICE_SWEEP):
            key = override.get_key_element()
            values = [f"{key}={value}" for value in override.sweep_string_iterator()]
            if values:
                alternatives.append((len(base), values[1:]))
                base.append(values[0])
    jobs = [base]
    for index, values in alternatives:
        jobs += [base[:index] + [value] + base[index + 1:] for value in values]
    return jobs


def check_composition(overrides: list[str], multirun: bool = False) -> None:
    """Compose the config as Hydra will (each sweep value under --multirun); raises UserError."""
    from hydra import compose, initialize_config_module

    try:
        jobs = _sweep_jobs(overrides) if multirun else [overrides]
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            for job in jobs:
                compose(config_name=CONFIG_NAME, overrides=job, return_hydra_config=True)
    except Exception as exc:
        message = composition_message(exc)
        if message is None:
            raise
        raise UserError(message) from exc


def _needs_check(args: object) -> bool:
    """Whether Hydra will compose this project's config from the overrides (not --help, --version, ...)."""
    other = ("help", "hydra_help", "shell_completion", "config_path", "config_name", "config_dir",
             "experimental_rerun", "info")
    return not any(getattr(args, name, None) for name in other)


MAPPING_KEYS = ("objective.guardrails", "objective.weights")
"""Config keys whose value is a whole mapping chosen by the user ({reward: number})."""


def mapping_overrides(argv: Sequence[str]) -> list[str]:
    """`objective.guardrails={revenue: 0.02}` replaces the mapping: Hydra's struct mode would refuse its new
    keys, so such an override is passed as Hydra's force-set form (`++key=value`)."""
    return [f"++{a}" if any(a.startswith(k + "=") for k in MAPPING_KEYS) else a for a in argv]


def run_hydra(command: str, argv: Sequence[str]) -> int:
    """Run `pushrl COMMAND [hydra flags] [overrides]`; returns the exit status (2: a user error)."""
    from hydra._internal.utils import get_args_parser  # the parser @hydra.main itself uses

    argv = [*mapping_overrides(argv), f"command={command}"]
    saved = sys.argv
    try:
        if not full_error():
            args = get_args_parser().parse_args(argv)
            if _needs_check(args):
                check_composition(list(args.overrides), multirun=bool(args.multirun))
        sys.argv = ["pushrl", *argv]
        hydra_app()
    except UserError as exc:
        print(f"pushrl {command}: {exc.message}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved
    return 0
