"""The Hydra multirun collector of the accuracy–diversity front on fake job folders (the non-dominated
marking itself: tests/policies/test_pareto.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.experiments.pareto import FRONT_CSV, FRONT_PNG, collect_sweep, pareto_main
from pushrl.policies.pareto import non_dominated


def _job(root: Path, name: str, metrics: dict, overrides: list[str] | None = None) -> None:
    job = root / name
    job.mkdir(parents=True)
    (job / "metrics.json").write_text(json.dumps(metrics))
    if overrides is not None:
        (job / ".hydra").mkdir()
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))


def _flat(key: str, lam: float, agents: dict[str, tuple[float, float]], points: dict[str, tuple[float, float]]) -> dict:
    out = {f"{key}/model/auc": 0.5, f"{key}/sequential/diversity_weight": lam, f"{key}/sequential/objective": "click"}
    for name, (acc, div) in agents.items():
        out |= {f"{key}/sequential/agents/{name}/objective_per_push": acc, f"{key}/sequential/agents/{name}/category_novelty": div,
                f"{key}/sequential/agents/{name}/pushes_per_user": 3.0}
    for name, (acc, div) in points.items():
        agent, lam_s = name.split("_lambda_")
        out |= {f"{key}/sequential/pareto/{name}/agent": agent, f"{key}/sequential/pareto/{name}/lambda": float(lam_s),
                f"{key}/sequential/pareto/{name}/objective_per_push": acc,
                f"{key}/sequential/pareto/{name}/category_novelty": div}
    return out


def test_collect_sweep_reads_every_job(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = []
    for j, lam in enumerate([0.0, 1.0, 2.0]):
        metrics = {}
        for key in ("obd_all", "hillstrom"):
            agents = {n: tuple(rng.random(2)) for n in ("ppo", "linucb")}
            points = {f"greedy_lambda_{v:g}": tuple(rng.random(2)) for v in (0.0, 0.5)}
            metrics |= _flat(key, lam, agents, points)
            truth += [(str(j), key, "agent", n, lam, *v) for n, v in agents.items()]
            truth += [(str(j), key, "sweep", "greedy", float(p.split("_lambda_")[1]), *v) for p, v in points.items()]
        _job(tmp_path, str(j), metrics, [f"sequential.diversity_weight={lam:g}"])
    _job(tmp_path, "unrelated", {"obd_all/model/auc": 0.7})  # a job without a sequential section
    table = collect_sweep(tmp_path)
    assert len(table) == len(truth) == 3 * 2 * 4
    assert (tmp_path / FRONT_CSV).exists() and (tmp_path / FRONT_PNG).stat().st_size > 0
    got = {(r.job, r.dataset, r.source, r.agent, float(r["lambda"])): (r.objective_per_push, r.category_novelty)
           for _, r in table.iterrows()}
    for job, key, source, agent, lam, acc, div in truth:
        assert got[(job, key, source, agent, lam)] == pytest.approx((acc, div))
    assert table.loc[table["job"] == "1", "overrides"].iloc[0] == "sequential.diversity_weight=1"
    assert table["pushes_per_user"].notna().sum() == 3 * 2 * 2  # extra agent fields are kept
    for key, part in table.groupby("dataset"):
        pts = part[["objective_per_push", "category_novelty"]].to_numpy()
        np.testing.assert_array_equal(part["non_dominated"].to_numpy(), non_dominated(pts), err_msg=key)
    written = pd.read_csv(tmp_path / FRONT_CSV)
    assert len(written) == len(table) and written["non_dominated"].sum() == table["non_dominated"].sum()


def test_collect_sweep_empty_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _job(tmp_path, "0", {"x/model/auc": 0.5})
    table = collect_sweep(tmp_path)
    assert table.empty and not (tmp_path / FRONT_CSV).exists()
    assert pareto_main([str(tmp_path)]) == 1
    assert "no job" in capsys.readouterr().err
    with pytest.raises(ValueError, match="existing folder"):
        collect_sweep(tmp_path / "missing")
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        collect_sweep(tmp_path)
    assert pareto_main([str(tmp_path)]) == 2


def test_pareto_main_prints_the_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _job(tmp_path, "0", _flat("k", 0.0, {"ppo": (0.2, 0.5), "linucb": (0.1, 0.4)}, {"greedy_lambda_1": (0.1, 0.9)}))
    assert pareto_main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 points, 2 non-dominated" in out and "ppo" in out and "greedy" in out
    table = pd.read_csv(tmp_path / FRONT_CSV)
    assert set(table.loc[table["non_dominated"], "agent"]) == {"ppo", "greedy"}
