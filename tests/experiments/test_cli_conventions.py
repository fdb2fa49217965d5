"""CLI conventions (issue 15, item 9): help lists the subcommands, bare `pushrl` prints it, a user error is
one line on stderr with exit status 2 (HYDRA_FULL_ERROR=1: the traceback), `data describe` flags never
traceback, `data example` prints the next commands, `serve` announces itself, `loadtest` prints a table.

No test runs the pipeline: a config error fails at composition, a data error at loading."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.agents.export import linear_onnx
from pushrl.envs.data.features import ContextEncoder
from pushrl.experiments import app
from pushrl.experiments.cli import SUBCOMMANDS, main, reward_roles
from pushrl.policies.artifact import Exploration, Manifest, write_artifact
from pushrl.policies.serving.loadtest import LoadResult, load_table


def _pushrl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pushrl.experiments.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def _one_line_error(err: str) -> str:
    """The single stderr line of a user error (fails if there are more lines or a traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- help

@pytest.mark.parametrize("argv", [["--help"], ["-h"], []])
def test_help_lists_every_subcommand_and_bare_pushrl_does_not_run(argv, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(app, "run_hydra", lambda *a: pytest.fail(f"started a Hydra command: {a}"))
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for command in SUBCOMMANDS:
        assert any(line.strip().startswith(command + " ") for line in lines), command
    assert "pushrl run --help" in out and "HYDRA_FULL_ERROR=1" in out
    assert not list(tmp_path.iterdir())  # no run folder, nothing written


def test_bare_pushrl_prints_help_quickly_and_exits_0(tmp_path):
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "pushrl.experiments.cli"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith("usage: pushrl COMMAND") and "data example DIR" in out.stdout
    assert time.monotonic() - start < 20  # a run takes minutes; the help takes well under a second
    assert not list(tmp_path.iterdir())


def test_run_help_is_hydras_config_dump(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "== Config ==" in out and "data:" in out and "== Configuration groups ==" in out


@pytest.mark.parametrize("argv, command, rest", [
    (["seed=1"], "run", ["seed=1"]),
    (["-m", "seed=0,1"], "run", ["-m", "seed=0,1"]),
    (["fit", "data=hillstrom"], "fit", ["data=hillstrom"]),
    (["evaluate"], "evaluate", []),
])
def test_overrides_alone_mean_run(argv, command, rest, monkeypatch):
    calls = []
    monkeypatch.setattr(app, "run_hydra", lambda c, a: calls.append((c, list(a))) or 0)
    assert main(argv) == 0
    assert calls == [(command, rest)]


def test_unknown_command_is_one_line(capsys):
    assert main(["frobnicate"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "unknown command 'frobnicate'" in line and "data describe" in line


# ---------------------------------------------------------------- Hydra user errors

COMPOSITION_ERRORS = [
    (["run", "data.campain=men"], ["unknown config key 'data.campain'", "DataConfig", "did you mean 'data.campaign'"]),
    (["run", "seed=abc"], ["config key 'seed'", "'abc'"]),
    (["run", "data=nope"], ["'nope'", "group 'data'", "obd_all", "hillstrom"]),
    (["run", "seed=[1"], ["bad override 'seed=[1'"]),
    (["fit", "objective.margin=x"], ["config key 'objective.margin'", "'x'"]),
    (["run", "seed=0,1"], ["seed=0,1", "--multirun"]),
    (["-m", "seed=0,x"], ["config key 'seed'", "'x'"]),  # every sweep value is composed, not only the first
]


@pytest.mark.parametrize("argv, fragments", COMPOSITION_ERRORS)
def test_config_errors_are_one_line_exit_2_in_process(argv, fragments, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    argv_before = list(sys.argv)
    assert main(argv) == 2
    assert sys.argv == argv_before
    line = _one_line_error(capsys.readouterr().err)
    assert line.startswith(f"pushrl {argv[0] if argv[0] in ('run', 'fit') else 'run'}: ")
    for fragment in fragments:
        assert fragment in line, line
    assert not list(tmp_path.iterdir())  # refused before Hydra made a run folder


@pytest.mark.parametrize("args, fragment", [
    (["run", "data.campain=men"], "campain"),
    (["run", "seed=abc"], "seed"),
    (["run", "data=nope"], "nope"),
    (["run", "seed=[1"], "seed=[1"),
    (["data", "describe", "/nonexistent.csv", "--reward", "conversion"], "/nonexistent.csv"),
])
def test_user_errors_exit_2_without_traceback(args, fragment):
    out = _pushrl(*args, env={"HYDRA_FULL_ERROR": ""})
    assert out.returncode == 2, out.stderr
    assert fragment in _one_line_error(out.stderr)


def test_bad_data_inside_the_job_is_one_line_exit_2(tmp_path):
    missing = tmp_path / "nonexistent.csv"
    out = _pushrl("run", "data=custom", f"data.path={missing}", "also=[]", f"hydra.run.dir={tmp_path}/run",
                  env={"HYDRA_FULL_ERROR": ""})
    assert out.returncode == 2, out.stderr[-2000:]
    line = _one_line_error(out.stderr)
    assert line.startswith("pushrl run: invalid log: ") and str(missing) in line and "does not exist" in line
    assert not (tmp_path / "run" / "report.md").exists()


def test_full_error_shows_the_traceback():
    out = _pushrl("run", "data.campain=men", env={"HYDRA_FULL_ERROR": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr and "campain" in out.stderr


def test_job_errors_are_user_errors_only_when_raised_by_pushrl():
    from pushrl.envs.common.errors import LoggedDataError
    from pushrl.envs.data.schema import LogSchema

    assert app.job_error_message(LoggedDataError("bad", column="click")) == "invalid log: column 'click': bad"
    with pytest.raises(ValueError) as ours:
        LogSchema(rewards=())  # raised in pushrl.envs.data.schema
    assert "rewards" in app.job_error_message(ours.value)
    with pytest.raises(ValueError) as theirs:
        int("x")  # raised here, not by pushrl: a bug, keeps its traceback
    assert app.job_error_message(theirs.value) is None
    assert app.job_error_message(KeyError("k")) is None
    assert app.one_line("first\n  second\n\nthird") == "first; second; third"


# ---------------------------------------------------------------- data describe

def _describe(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["data", "describe", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _describe_json(capsys, *args: str) -> dict:
    code, out, err = _describe(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_default_rewards_are_the_reward_named_columns_present(log_files, raw_log, capsys):
    doc = _describe_json(capsys, str(log_files["csv"]))
    assert list(doc["rewards"]) == ["click", "conversion", "revenue"]
    for r in ("click", "conversion", "revenue"):
        assert doc["rewards"][r] == pytest.approx(raw_log[r].mean())
    features = doc["features"]["numeric"] + doc["features"]["categorical"]
    assert not {"click", "conversion", "revenue"} & set(features)


def test_reward_flag_makes_a_reward_required_not_also_optional(log_files, capsys):
    doc = _describe_json(capsys, str(log_files["csv"]), "--reward", "conversion")  # used to raise in LogSchema
    assert list(doc["rewards"])[0] == "conversion" and set(doc["rewards"]) == {"click", "conversion", "revenue"}


def test_optional_reward_flag_takes_a_custom_column(log_files, raw_log, tmp_path, capsys):
    path = tmp_path / "basket.csv"
    raw_log.assign(basket=np.arange(len(raw_log)) % 3).to_csv(path, index=False)
    plain = _describe_json(capsys, str(path))
    assert "basket" in plain["features"]["numeric"] and "basket" not in plain["rewards"]
    doc = _describe_json(capsys, str(path), "--optional-reward", "basket")
    assert doc["rewards"]["basket"] == pytest.approx(raw_log.assign(basket=np.arange(len(raw_log)) % 3)["basket"].mean())
    assert "basket" not in doc["features"]["numeric"]


def test_feature_and_exclude_flags(log_files, capsys):
    doc = _describe_json(capsys, str(log_files["csv"]), "--feature", "u0", "--feature", "segment")
    assert doc["features"] == {"numeric": ["u0"], "categorical": ["segment"]}
    doc = _describe_json(capsys, str(log_files["csv"]), "--exclude", "u1", "--exclude", "revenue")
    assert "u1" not in doc["features"]["numeric"] and "u0" in doc["features"]["numeric"]
    assert "revenue" not in doc["rewards"]


def test_no_push_action_is_shown_with_its_rows(log_files, raw_log, capsys):
    code, out, err = _describe(capsys, str(log_files["csv"]), "--no-push-action", "3")
    assert code == 0, err
    assert f"no-push action: 3 ({int((raw_log['action'] == 3).sum()):,} rows)" in out.splitlines()
    doc = _describe_json(capsys, str(log_files["parquet"]), "--no-push-action", "2")
    assert doc["no_push_action"] == {"id": 2, "rows": int((raw_log["action"] == 2).sum())}


def test_a_log_without_reward_named_columns_needs_reward(raw_log, tmp_path, capsys):
    path = tmp_path / "sales.csv"
    raw_log.drop(columns=["click", "conversion", "revenue"]).assign(sales=raw_log["click"]).to_csv(path, index=False)
    code, _, err = _describe(capsys, str(path))
    assert code == 2 and "no reward column" in _one_line_error(err) and "--reward" in err
    doc = _describe_json(capsys, str(path), "--reward", "sales")
    assert doc["rewards"] == {"sales": pytest.approx(raw_log["click"].mean())}


@pytest.mark.parametrize("flags, fragment", [
    (["--no-push-action", "99"], "'99' is not an action of the log"),
    (["--reward", "click", "--exclude", "click"], "click"),
    (["--feature", "nope"], "nope"),
    (["--exclude", "nope"], "nope"),
    (["--reward", "nope"], "nope"),
    (["--chunksize", "0"], "--chunksize"),
    (["--catalogue", "/nonexistent/promotions.csv"], "/nonexistent/promotions.csv"),
    (["--bogus"], "--bogus"),
])
def test_bad_flag_combinations_are_one_line_exit_2(log_files, flags, fragment, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code, out, err = _describe(capsys, str(log_files["csv"]), *flags)
    assert code == 2 and out == ""
    line = _one_line_error(err)
    assert line.startswith("pushrl data describe: ") and fragment in line


def test_file_flags_are_refused_on_an_embedded_dataset(capsys):
    code, _, err = _describe(capsys, "hillstrom", "--reward", "visit")
    assert code == 2 and "--reward" in _one_line_error(err) and "hillstrom" in err


def test_describe_full_error_raises(monkeypatch, capsys):
    from pushrl.envs.common.errors import LoggedDataError

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(LoggedDataError, match="does not exist"):
        main(["data", "describe", "/nonexistent.csv"])


@pytest.mark.parametrize("header, required, optional, expected", [
    (["action", "click", "revenue", "x"], None, None, (("click", "revenue"), ())),
    (["action", "click", "conversion"], ["conversion"], None, (("conversion",), ("click",))),
    (["action", "click", "conversion"], ["conversion"], ["conversion", "extra"], (("conversion",), ("extra", "click"))),
    (["action", "click", "conversion"], None, ["conversion"], (("click",), ("conversion",))),
    (["action", "sales"], ["sales"], None, (("sales",), ())),
])
def test_reward_roles_rule(header, required, optional, expected):
    assert reward_roles(header, required, optional) == expected


def test_reward_roles_refuses_a_log_without_rewards():
    with pytest.raises(ValueError, match="no reward column"):
        reward_roles(["action", "sales"], None, None)
    with pytest.raises(ValueError, match="no reward column"):
        reward_roles(["action", "click"], None, None, exclude=["click"])


# ---------------------------------------------------------------- data example

def test_data_example_passes_its_options_and_prints_the_next_commands(tmp_path, capsys, monkeypatch):
    import pushrl.envs.data.example_log as example_log

    seen = {}

    def fake(directory, n_rows, seed, logging):
        seen.update(directory=Path(directory), n_rows=n_rows, seed=seed, logging=logging)
        log, cat = Path(directory) / "log.csv", Path(directory) / "cat.csv"
        return log, cat

    monkeypatch.setattr(example_log, "write_example_log", fake)
    assert main(["data", "example", str(tmp_path / "ex"), "--rows", "123", "--seed", "4", "--logging", "rule"]) == 0
    assert seen == {"directory": tmp_path / "ex", "n_rows": 123, "seed": 4, "logging": "rule"}
    lines = capsys.readouterr().out.splitlines()
    log, cat = (tmp_path / "ex" / "log.csv").resolve(), (tmp_path / "ex" / "cat.csv").resolve()
    assert str(log) in lines[0] and str(cat) in lines[1]
    commands = [shlex.split(line) for line in lines if line.strip().startswith("pushrl ")]
    assert commands == [
        ["pushrl", "data", "describe", str(log), "--catalogue", str(cat), "--no-push-action", "no_push"],
        ["pushrl", "run", "data=custom", f"data.path={log}", f"data.catalogue={cat}", "data.no_push_action=no_push",
         "also=[]"],
    ]


def test_data_example_then_its_describe_command(tmp_path, capsys):
    assert main(["data", "example", str(tmp_path / "ex"), "--rows", "400", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    describe = next(shlex.split(line) for line in lines if "data describe" in line)
    assert main(describe[1:]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "rows: 400" in out and any(line.startswith("no-push action: no_push (") for line in out.splitlines())
    frame = pd.read_csv(describe[3])
    assert f"no-push action: no_push ({int((frame['action'] == 'no_push').sum()):,} rows)" in out


def test_data_example_refuses_a_file_as_folder(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["data", "example", str(tmp_path / "f"), "--rows", "50"]) == 2
    assert str(tmp_path / "f") in _one_line_error(capsys.readouterr().err)


# ---------------------------------------------------------------- serve, loadtest

ENCODER = ContextEncoder(("recency", "history"), (6.0, 240.0), (3.5, 250.0), ("channel",),
                         {"channel": ("Multichannel", "Phone", "Web")})


@pytest.fixture()
def artifact(tmp_path: Path) -> Path:
    weight = np.random.default_rng(0).normal(size=(3, ENCODER.n_features))
    manifest = Manifest(policy_kind="linear", encoder=ENCODER, action_ids=("No E-Mail", "Mens E-Mail", "Womens E-Mail"),
                        exploration=Exploration("epsilon", epsilon=0.1), no_push_action="No E-Mail")
    return write_artifact(tmp_path / "a", linear_onnx(weight), manifest)


def test_serve_prints_address_and_policy_before_serving(artifact, capsys, monkeypatch):
    import pushrl.policies.serving.http as http
    from pushrl.policies.artifact import load_artifact

    started = []

    def fake_run(app, host, port, **_):
        started.append((host, port, capsys.readouterr().out))  # what was printed before uvicorn started

    monkeypatch.setattr(http.uvicorn, "run", fake_run)
    assert main(["serve", str(artifact), "--port", "8123"]) == 0
    (host, port, printed), = started
    assert (host, port) == ("127.0.0.1", 8123)
    assert printed.splitlines()[0].startswith("pushrl serve: http://127.0.0.1:8123")
    assert str(Path(artifact).resolve()) in printed
    version = load_artifact(artifact).policy_version
    assert f"policy: linear, version {version}, 3 actions, exploration epsilon (epsilon 0.1)" in printed


def test_serve_refuses_a_missing_artifact_in_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "nope" in _one_line_error(capsys.readouterr().err)


def _result(**kw) -> LoadResult:
    base = dict(calls=2000, decisions=31000, errors=3, concurrency=8, batch_size=16, elapsed_s=4.0, p50_ms=1.234,
                p99_ms=12.5, max_ms=40.25, first_error="HTTP 500: b'boom'", p90_ms=5.5)
    return LoadResult(**{**base, **kw})


def test_load_table_renders_every_field_aligned():
    a, b = _result(), _result(calls=7, decisions=7, errors=0, concurrency=1, batch_size=1, elapsed_s=0.5,
                              first_error=None, p90_ms=None)
    lines = load_table([a, b]).splitlines()
    header, row_a, row_b = lines[:3]
    assert header.split("  ")[0] == "calls" and len({len(header), len(row_a), len(row_b)}) == 1
    names = ["calls", "errors", "calls/s", "decisions/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "concurrency",
             "batch size", "seconds"]
    starts = [header.index(n) for n in names]
    assert starts == sorted(starts)
    cells = dict(zip(names, row_a.split(), strict=True))
    assert cells == {"calls": "2,000", "errors": "3", "calls/s": f"{2000 / 4.0:,.0f}",
                     "decisions/s": f"{31000 / 4.0:,.0f}", "p50 ms": "1.23", "p90 ms": "5.50", "p99 ms": "12.50",
                     "max ms": "40.25", "concurrency": "8", "batch size": "16", "seconds": "4.00"}
    for name, start in zip(names, starts, strict=True):  # right-aligned: every value ends where its header ends
        end = start + len(name)
        assert row_a[end - 1] != " " and (end == len(row_a) or row_a[end] == " ")
    assert dict(zip(names, row_b.split(), strict=True))["p90 ms"] == "-"
    assert lines[3:] == ["first error (row 1): HTTP 500: b'boom'"]
    assert load_table(b) == "\n".join(lines[:1] + lines[2:3])
    with pytest.raises(ValueError, match="at least one"):
        load_table([])


def test_loadtest_prints_a_table(artifact, capsys):
    assert main(["loadtest", str(artifact), "--calls", "20", "--concurrency", "2", "--time-limit", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("calls  errors"))
    values = lines[at + 1].split()
    assert (values[0], values[1]) == ("20", "0")
    p50, p90, p99, worst = (float(v) for v in values[4:8])
    assert 0 < p50 <= p90 <= p99 <= worst
    assert "LoadResult(" not in "\n".join(lines)
