"""The `pushrl` command.

    pushrl data describe PATH|DATASET [options]   validate a log and summarise it
    pushrl abtest plan|simulate [options]          plan / simulate the online A/B test
    pushrl serve ARTIFACT [--host H --port N]      the HTTP decision service (loopback by default)
    pushrl loadtest ARTIFACT [options]             bounded loopback load test of that service
    pushrl run [overrides]                         the whole pipeline (Hydra)
    pushrl describe|evaluate [overrides]           one stage (Hydra)
    pushrl [overrides]                             same as `pushrl run`

Hydra overrides work everywhere, e.g. `pushrl run data=hillstrom seed=1`,
`pushrl -m sequential.diversity_weight=0,0.5,1`.
"""

from __future__ import annotations

import argparse
import json
import sys

from pushrl.experiments.config import COMMANDS

DATASETS = ("obd_all", "obd_men", "obd_women", "hillstrom")


def data_describe(argv: list[str]) -> int:
    """`pushrl data describe`: validate a log file (streamed) and print its summary."""
    from pushrl.envs.describe import describe_data, describe_file
    from pushrl.envs.errors import LoggedDataError
    from pushrl.envs.hillstrom import load_hillstrom
    from pushrl.envs.loaders import load_catalogue
    from pushrl.envs.obd import load_obd
    from pushrl.envs.schema import LogSchema

    parser = argparse.ArgumentParser(prog="pushrl data describe", description=data_describe.__doc__)
    parser.add_argument("path", help=f"a .csv/.parquet log, or an embedded dataset: {', '.join(DATASETS)}")
    parser.add_argument("--catalogue", help="promotion catalogue file (id column 'action')")
    parser.add_argument("--action", default="action", help="promotion id column (default: action)")
    parser.add_argument("--propensity", default="propensity", help="propensity column (default: propensity)")
    parser.add_argument("--reward", action="append", help="required reward column(s) (default: click)")
    parser.add_argument("--timestamp", default="timestamp")
    parser.add_argument("--user-id", default="user_id")
    parser.add_argument("--position", default="position")
    parser.add_argument("--chunksize", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        if args.path in DATASETS:
            data = load_hillstrom() if args.path == "hillstrom" else load_obd(args.path.split("_", 1)[1])
            desc = describe_data(data)
        else:
            schema = LogSchema(
                action=args.action,
                rewards=tuple(args.reward or ["click"]),
                propensity=args.propensity,
                timestamp=args.timestamp,
                user_id=args.user_id,
                position=args.position,
            )
            catalogue = load_catalogue(args.catalogue) if args.catalogue else None
            desc = describe_file(args.path, schema, catalogue, args.chunksize)
    except LoggedDataError as exc:
        print(f"invalid log: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(desc.to_dict(), indent=2, default=str) if args.json else desc.to_text())
    return 0


def serve_cli(argv: list[str]) -> int:
    """`pushrl serve ARTIFACT`: POST /v1/decide, GET /healthz, GET /v1/policy."""
    parser = argparse.ArgumentParser(prog="pushrl serve", description=serve_cli.__doc__)
    parser.add_argument("artifact", help="artifact folder (policy.onnx + manifest.json)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=None, help="seed of the exploration sampler")
    parser.add_argument("--decision-log", default=None, help="folder for the decision log (JSON lines, rotated)")
    parser.add_argument("--no-admin", action="store_true", help="disable POST /v1/admin/reload")
    parser.add_argument("--shadow", default=None, help="candidate artifact served in shadow mode (needs --decision-log)")
    parser.add_argument("--catalogue-file", default=None,
                        help="JSON file keeping the served catalogue of a feature-based artifact: read at start, "
                             "rewritten by POST /v1/admin/catalogue, applied to reloaded artifacts")
    args = parser.parse_args(argv)
    from pushrl.policies.artifact import ArtifactError
    from pushrl.policies.serving.http import serve

    try:
        serve(args.artifact, host=args.host, port=args.port, seed=args.seed, decision_log=args.decision_log,
              enable_admin=not args.no_admin, shadow=args.shadow, catalogue_file=args.catalogue_file)
    except ArtifactError as exc:
        print(f"pushrl serve: {exc}", file=sys.stderr)
        return 2
    return 0


def loadtest_cli(argv: list[str]) -> int:
    """`pushrl loadtest ARTIFACT`: start the service on loopback, send a bounded load, report p50/p99."""
    parser = argparse.ArgumentParser(prog="pushrl loadtest", description=loadtest_cli.__doc__)
    parser.add_argument("artifact")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds; the test stops by itself")
    args = parser.parse_args(argv)
    from pushrl.policies.artifact import load_artifact
    from pushrl.policies.serving.loadtest import ServerProcess, random_requests, run_load

    manifest = load_artifact(args.artifact).manifest
    requests = random_requests(manifest, 1000)
    with ServerProcess(args.artifact) as server:
        result = run_load(server.url, requests, n_calls=args.calls, concurrency=args.concurrency,
                          batch_size=args.batch_size, time_limit_s=args.time_limit)
    print(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["data"]:
        if argv[1:2] != ["describe"]:
            print("usage: pushrl data describe PATH|DATASET [options]", file=sys.stderr)
            return 2
        return data_describe(argv[2:])
    if argv[:1] == ["serve"]:
        return serve_cli(argv[1:])
    if argv[:1] == ["loadtest"]:
        return loadtest_cli(argv[1:])
    if argv[:1] == ["abtest"]:
        from pushrl.policies.abtest.cli import abtest_main

        return abtest_main(argv[1:])
    command = "run"
    if argv and argv[0] in COMMANDS:
        command, argv = argv[0], argv[1:]
    elif argv and not ("=" in argv[0] or argv[0].startswith("-")):
        print(f"unknown command {argv[0]!r}; commands: data describe, abtest, serve, loadtest, {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    from pushrl.experiments.app import hydra_app

    sys.argv = ["pushrl", *argv, f"command={command}"]
    hydra_app()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
