"""The `pushrl` command: one entry point, a subcommand per task (`pushrl --help` lists them).

A user error (bad data, unknown config key, bad override, wrong value, a bad flag) prints one
line on stderr and exits 2; HYDRA_FULL_ERROR=1 shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pushrl.experiments.config import COMMANDS

DATASETS = ("obd_all", "obd_men", "obd_women", "hillstrom")
# Without --reward, the rewards of a log file are the columns of these names it has, in this order.
KNOWN_REWARDS = ("click", "conversion", "revenue", "visit", "spend")

HELP = """\
usage: pushrl COMMAND [options]

Learn from a shop's logged promotion pushes which promotion to push to which user.

commands:
  data describe PATH|DATASET  validate a log file (or an embedded dataset) and summarise it
  data example DIR            write a sample own-log and its promotion catalogue, to try pushrl on
  run [overrides]             the whole pipeline: data, response model, agents, OPE, export, report
  fit [overrides]             the pipeline up to the response model (and its report)
  train [overrides]           the pipeline up to the trained agents (no export)
  evaluate [overrides]        offline evaluation of one policy (policy=...) on a log
  export [overrides]          export a saved agent of an earlier run (export.run_dir=..., export.agent=...)
  describe [overrides]        load and describe the configured data (data=...) into a run folder
  serve ARTIFACT              the HTTP decision service of an exported artifact (loopback by default)
  loadtest ARTIFACT           a bounded loopback load test of that service, as a table
  abtest plan|simulate        plan, then simulate, the online A/B test of a candidate

  pushrl [overrides]          the same as `pushrl run [overrides]`, e.g. `pushrl data=hillstrom seed=1`;
                              `pushrl -m seed=0,1` sweeps (Hydra multirun)

more help:
  pushrl data describe --help   the options of one command (likewise data example, serve, loadtest, abtest)
  pushrl run --help             every config group and key of the Hydra commands (run, fit, ..., describe)
  docs: README.md (tutorial: your own log, end to end)

A user error prints one line on stderr and exits with status 2;
HYDRA_FULL_ERROR=1 shows the full traceback instead.
"""

SUBCOMMANDS = ("data describe", "data example", *COMMANDS, "serve", "loadtest", "abtest")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (and its exit status 2), naming the command and the problem."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _fail(prog: str, exc: BaseException) -> int:
    """Print `exc` as one line on stderr; exit status 2. HYDRA_FULL_ERROR=1 re-raises it."""
    from pushrl.envs.common.errors import LoggedDataError
    from pushrl.experiments.app import full_error, one_line

    if full_error():
        raise exc
    text = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, LoggedDataError):
        text = f"invalid log: {text}"
    elif not isinstance(exc, ValueError):
        text = f"{type(exc).__name__}: {text}"
    print(f"{prog}: {text}", file=sys.stderr)
    return 2


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


# ---------------------------------------------------------------- data describe

def _describe_parser() -> _Parser:
    parser = _Parser(
        prog="pushrl data describe", description="Validate a log (streamed) and print its summary.",
        epilog="Rewards: every column named " + ", ".join(KNOWN_REWARDS) + " that the file has is a reward "
               "(unless --exclude'd), never a feature. Without --reward they are the required rewards, in that "
               "order (the first is the primary one), and a file with none of them is refused: name yours with "
               "--reward. With --reward, the named columns are required (the first is the primary one) and the "
               "others are optional rewards, like those of --optional-reward; a column is never both. Every "
               "column without a role is a context feature, unless --feature gives the allow-list or "
               "--exclude drops it.")
    parser.add_argument("path", help=f"a .csv/.parquet log, or an embedded dataset: {', '.join(DATASETS)}")
    parser.add_argument("--catalogue", help="promotion catalogue file (id column: the log's action column name, or 'action')")
    parser.add_argument("--action", default="action", help="promotion id column (default: action)")
    parser.add_argument("--propensity", default="propensity", help="propensity column (default: propensity)")
    parser.add_argument("--reward", action="append", metavar="COL",
                        help="a required reward column (repeatable; default: see below)")
    parser.add_argument("--optional-reward", action="append", metavar="COL",
                        help="a reward column used when present (repeatable)")
    parser.add_argument("--feature", action="append", metavar="COL",
                        help="a context feature column (repeatable): the allow-list; default every column without a role")
    parser.add_argument("--exclude", action="append", metavar="COL", help="a column to ignore entirely (repeatable)")
    parser.add_argument("--no-push-action", metavar="ID",
                        help="the action id that means 'push nothing': checked against the log, its rows shown")
    parser.add_argument("--timestamp", default="timestamp", help="timestamp column (default: timestamp)")
    parser.add_argument("--user-id", default="user_id", help="user id column (default: user_id)")
    parser.add_argument("--position", default="position", help="slot position column (default: position)")
    parser.add_argument("--unsubscribe", default="unsubscribe",
                        help="0/1 column: the user unsubscribed after that push (default: unsubscribe; the simulator's churn)")
    parser.add_argument("--chunksize", type=_positive_int, default=1_000_000,
                        help="rows read at a time (default: 1000000)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


# options that only mean something for a log file, not for an embedded dataset
_FILE_OPTIONS = ("catalogue", "action", "propensity", "reward", "optional_reward", "feature", "exclude",
                 "timestamp", "user_id", "position", "chunksize")


def _header(path: str) -> list[str]:
    """The column names of a log file (reads one row)."""
    from pushrl.envs.data.loaders import read_table_chunks

    chunks = read_table_chunks(path, chunksize=1)
    try:
        return [str(c) for c in next(chunks).columns]
    finally:
        chunks.close()


def reward_roles(header: Sequence[str], required: Sequence[str] | None, optional: Sequence[str] | None,
                 exclude: Sequence[str] = ()) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(required, optional) reward columns of a log with columns `header` (the rule of `--help`).

    A column named like a reward (KNOWN_REWARDS) that the file has is always a reward, unless excluded:
    it never silently becomes a feature (an outcome as an input is leakage)."""
    present = [c for c in KNOWN_REWARDS if c in header and c not in exclude]
    if required:
        req = tuple(dict.fromkeys(required))
    else:
        req = tuple(c for c in present if c not in (optional or ()))
        if not req:
            raise ValueError(f"no reward column: the file has none of {', '.join(KNOWN_REWARDS)}"
                             + (" (besides the optional ones)" if optional else "")
                             + "; name yours with --reward COLUMN")
    return req, tuple(c for c in dict.fromkeys([*(optional or ()), *present]) if c not in req)


def _schema(args: argparse.Namespace, header: Sequence[str]) -> Any:
    from pushrl.envs.data.schema import LogSchema

    required, optional = reward_roles(header, args.reward, args.optional_reward, args.exclude or ())
    options: dict[str, Any] = dict(action=args.action, rewards=required, optional_rewards=optional,
                                   propensity=args.propensity, timestamp=args.timestamp, user_id=args.user_id,
                                   position=args.position, unsubscribe=args.unsubscribe,
                                   exclude=tuple(args.exclude or ()))
    if args.feature:  # LogSchema.features: the allow-list of context columns
        options["features"] = tuple(args.feature)
    return LogSchema(**options)


def _no_push_rows(desc: Any, action: str) -> tuple[Any, int]:
    """(the action id as the log spells it, its row count); refuses an id that is not an action of the log."""
    per_action = desc.per_action
    for a, n in zip(per_action.index, per_action["rows"], strict=True):
        if str(a) == action:
            return a, int(n)
    shown = ", ".join(repr(a) for a in list(per_action.index)[:10]) + (", ..." if len(per_action) > 10 else "")
    raise ValueError(f"--no-push-action {action!r} is not an action of the log; its actions: {shown}")


def _describe(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[Any, str]:
    """The Description of `args.path` and its text (or JSON), with the no-push action if given."""
    from pushrl.envs.data.describe import describe_data, describe_file
    from pushrl.envs.data.hillstrom import load_hillstrom
    from pushrl.envs.data.loaders import load_catalogue
    from pushrl.envs.data.obd import load_obd

    if args.path in DATASETS:
        given = [f"--{k.replace('_', '-')}" for k in _FILE_OPTIONS if getattr(args, k) != parser.get_default(k)]
        if given:
            raise ValueError(f"{', '.join(given)}: for a log file's columns, not for the embedded dataset {args.path!r}")
        data = load_hillstrom() if args.path == "hillstrom" else load_obd(args.path.split("_", 1)[1])
        desc = describe_data(data)
    else:
        schema = _schema(args, _header(args.path))
        catalogue = load_catalogue(args.catalogue, id_column=args.action) if args.catalogue else None
        desc = describe_file(args.path, schema, catalogue, args.chunksize)
    no_push = _no_push_rows(desc, args.no_push_action) if args.no_push_action is not None else None
    if args.json:
        doc = desc.to_dict()
        if no_push is not None:
            doc["no_push_action"] = {"id": no_push[0], "rows": no_push[1]}
        return desc, json.dumps(doc, indent=2, default=str)
    lines = desc.to_text().split("\n")
    if no_push is not None:
        at = next((i + 1 for i, line in enumerate(lines) if line.startswith("actions:")), len(lines))
        lines.insert(at, f"no-push action: {no_push[0]} ({no_push[1]:,} rows)")
    return desc, "\n".join(lines)


def data_describe(argv: list[str]) -> int:
    """`pushrl data describe`: validate a log file (streamed) and print its summary."""
    parser = _describe_parser()
    args = parser.parse_args(argv)
    try:
        _, text = _describe(args, parser)
    except Exception as exc:  # any flag combination: one line, never a traceback
        return _fail(parser.prog, exc)
    print(text)
    return 0


# ---------------------------------------------------------------- data example

def data_example(argv: list[str]) -> int:
    """`pushrl data example DIR`: write a sample own-log and its catalogue, print the commands to run next."""
    prog = "pushrl data example"
    try:
        from pushrl.envs.data.example_log import write_example_log
    except ImportError as exc:
        return _fail(prog, exc)
    defaults = {k: p.default for k, p in inspect.signature(write_example_log).parameters.items()}
    parser = _Parser(prog=prog,
                     description="Write a sample own-log (CSV: a shop's push history, with a no-push action, "
                                 "organic purchases and logged propensities) and its promotion catalogue into "
                                 "DIR, and print the commands to run on them next.")
    parser.add_argument("directory", metavar="DIR", help="folder to write into (created if missing)")
    parser.add_argument("--rows", type=_positive_int, default=defaults["n_rows"],
                        help="rows of the log (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults["seed"], help="random seed (default: %(default)s)")
    parser.add_argument("--logging", choices=("business_rule", "rule"), default=defaults["logging"],
                        help="logging policy: business_rule (softmax over a business rule: stochastic, logged "
                             "propensities) or rule (the same rule, deterministic) (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        log, catalogue = write_example_log(Path(args.directory), n_rows=args.rows, seed=args.seed,
                                           logging=args.logging)
    except Exception as exc:
        return _fail(prog, exc)
    print("\n".join(example_next_steps(Path(log), Path(catalogue))))
    return 0


def example_next_steps(log: Path, catalogue: Path, no_push: str | None = None) -> list[str]:
    """The lines `data example` prints: the files written and the exact commands to run next
    (`no_push`: the log's no-push action id; default the example shop's)."""
    if no_push is None:
        from pushrl.envs.data.synthetic import NO_PUSH_ID as no_push
    log, catalogue = log.resolve(), catalogue.resolve()
    describe = ["pushrl", "data", "describe", str(log), "--catalogue", str(catalogue), "--no-push-action", no_push]
    run = ["pushrl", "run", "data=custom", f"data.path={log}", f"data.catalogue={catalogue}",
           f"data.no_push_action={no_push}", "also=[]"]
    return [f"log:       {log}", f"catalogue: {catalogue}", "next:",
            f"  {shlex.join(describe)}", f"  {shlex.join(run)}"]


# ---------------------------------------------------------------- serve, loadtest

def serve_cli(argv: list[str]) -> int:
    """`pushrl serve ARTIFACT`: POST /v1/decide, GET /healthz, GET /v1/policy (admin endpoints with a token)."""
    parser = _Parser(prog="pushrl serve", description=serve_cli.__doc__)
    parser.add_argument("artifact", help="artifact folder (policy.onnx + manifest.json)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=None, help="seed of the exploration sampler")
    parser.add_argument("--decision-log", default=None, help="folder for the decision log (JSON lines, rotated)")
    parser.add_argument("--durable-log", action="store_true",
                        help="answer only once the decisions are fsynced to the decision log (needs --decision-log)")
    parser.add_argument("--admin-token-file", default=None,
                        help="file holding the admin token (>= 16 characters, e.g. `openssl rand -hex 32`); "
                             "without it POST /v1/admin/* do not exist; with it each call needs "
                             "Authorization: Bearer <token>")
    parser.add_argument("--artifact-root", default=None,
                        help="folder that /v1/admin/reload paths must stay inside (default: the artifact's parent)")
    parser.add_argument("--shadow", default=None, help="candidate artifact served in shadow mode (needs --decision-log)")
    parser.add_argument("--catalogue-file", default=None,
                        help="JSON file keeping the served catalogue of a feature-based artifact: read at start, "
                             "rewritten by POST /v1/admin/catalogue, applied to reloaded artifacts")
    parser.add_argument("--strict", action="store_true",
                        help="refuse (422 naming the field) contexts outside the training distribution: categories "
                             "not seen in training (miscased ones too) and numbers outside the training range; "
                             "without it they are served, listed under `ood` and counted on GET /metrics")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes sharing the port (default 1); each checks request_id reuse "
                             "against the ids it decided itself; admin calls need --workers 1")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.workers > 1 and args.admin_token_file is not None:
        parser.error("--admin-token-file needs --workers 1: an admin call would change one worker process only")
    if args.durable_log and args.decision_log is None:
        parser.error("--durable-log needs --decision-log")
    if args.artifact_root is not None and args.admin_token_file is None:
        parser.error("--artifact-root limits admin reloads: it needs --admin-token-file")
    from pushrl.policies.artifact import ArtifactError
    from pushrl.policies.serving import http

    try:
        token = None if args.admin_token_file is None else http.read_admin_token(args.admin_token_file)
        http.serve(args.artifact, host=args.host, port=args.port, seed=args.seed, decision_log=args.decision_log,
                   durable_log=args.durable_log, admin_token=token, artifact_root=args.artifact_root,
                   shadow=args.shadow, catalogue_file=args.catalogue_file, strict=args.strict,
                   workers=args.workers)
    except (ArtifactError, ValueError, OSError) as exc:
        return _fail(parser.prog, exc)
    return 0


def loadtest_cli(argv: list[str]) -> int:
    """`pushrl loadtest ARTIFACT`: start the service on loopback, send a bounded load, print a table."""
    parser = _Parser(prog="pushrl loadtest", description=loadtest_cli.__doc__)
    parser.add_argument("artifact")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=30.0,
                        help="seconds; the test stops by itself (with --find-max: per step)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (as `pushrl serve --workers`)")
    parser.add_argument("--decision-log", default=None, help="folder for the server's decision log")
    parser.add_argument("--find-max", action="store_true",
                        help="step the concurrency up (1, 2, 4, ... --concurrency) until errors or the --p99-ms "
                             "bound break, and print the highest zero-error load")
    parser.add_argument("--p99-ms", type=float, default=5.0, help="p99 latency bound of --find-max (ms)")
    args = parser.parse_args(argv)
    from pushrl.policies.artifact import ArtifactError, load_artifact
    from pushrl.policies.serving.loadtest import (
        ServerProcess,
        find_max_load,
        load_table,
        random_requests,
        run_load,
    )

    try:
        if min(args.calls, args.concurrency, args.batch_size, args.workers) < 1 or args.time_limit <= 0:
            raise ValueError(f"--calls, --concurrency, --batch-size and --workers must be >= 1 and --time-limit > 0; "
                             f"got {args.calls}, {args.concurrency}, {args.batch_size}, {args.workers}, "
                             f"{args.time_limit}")
        if args.p99_ms <= 0:
            raise ValueError(f"--p99-ms must be > 0, got {args.p99_ms}")
        manifest = load_artifact(args.artifact).manifest
        requests = random_requests(manifest, max(1000, args.batch_size))
        options = {"workers": args.workers} if args.workers > 1 else {}
        if args.decision_log is not None:
            options["decision_log"] = args.decision_log
        with ServerProcess(args.artifact, **options) as server:
            if args.find_max:
                steps = [c for c in (1, 2, 4, 8, 16, 32, 64, 128, 256) if c < args.concurrency] + [args.concurrency]
                found = find_max_load(server.url, requests, p99_ms=args.p99_ms, concurrencies=steps,
                                      batch_size=args.batch_size, calls_per_step=args.calls,
                                      step_s=args.time_limit)
            else:
                result = run_load(server.url, requests, n_calls=args.calls, concurrency=args.concurrency,
                                  batch_size=args.batch_size, time_limit_s=args.time_limit)
    except (ArtifactError, ValueError, RuntimeError, OSError) as exc:
        return _fail(parser.prog, exc)
    if args.find_max:
        print(load_table(found.steps))
        print(found.summary())
    else:
        print(load_table(result))
    return 0


# ---------------------------------------------------------------- dispatch

def _data(argv: list[str]) -> int:
    commands: dict[str, Callable[[list[str]], int]] = {"describe": data_describe, "example": data_example}
    if argv[:1] and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    usage = "usage: pushrl data describe PATH|DATASET [options]\n       pushrl data example DIR [options]"
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        return 0
    what = f"unknown data command {argv[0]!r}" if argv else "missing data command"
    print(f"pushrl data: {what}; choose describe or example (see pushrl data describe --help)", file=sys.stderr)
    return 2


def _abtest(argv: list[str]) -> int:
    from pushrl.policies.abtest.cli import abtest_main

    return abtest_main(argv)


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP, end="")
        return 0
    own: dict[str, Callable[[list[str]], int]] = {"data": _data, "serve": serve_cli, "loadtest": loadtest_cli,
                                                  "abtest": _abtest}
    if argv[0] in own:
        return own[argv[0]](argv[1:])
    from pushrl.experiments.app import run_hydra

    if argv[0] in COMMANDS:
        return run_hydra(argv[0], argv[1:])
    if "=" in argv[0] or argv[0].startswith("-"):  # overrides or Hydra flags: `pushrl run`
        return run_hydra("run", argv)
    print(f"pushrl: unknown command {argv[0]!r}; commands: {', '.join(SUBCOMMANDS)} (see pushrl --help)",
          file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """`pushrl ARGS`; returns the exit status (argparse's and Hydra's exits included)."""
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BrokenPipeError:  # `pushrl ... | head`: the reader left; no traceback (Python docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
