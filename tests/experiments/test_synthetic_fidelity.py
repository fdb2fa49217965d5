"""The run's synthetic fidelity section: files, metrics and the section (the table itself:
tests/envs/model/test_fidelity_synthetic.py)."""

from __future__ import annotations

from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.synthetic_fidelity import synthetic_fidelity_section


def test_section_writes_table_plot_and_metrics(tmp_path):
    run = RunFolder(tmp_path)
    out = synthetic_fidelity_section(run, 0, lambda m: None)
    assert (tmp_path / "synthetic_fidelity_uniform.png").exists() and (tmp_path / "synthetic_fidelity_softmax.csv").exists()
    assert out["uniform"]["all_within_tolerance"] and out["uniform"]["logging_inside_ci"]
    assert out["softmax"]["logging_inside_ci"]
    assert any("synthetic ground truth" in title for title, _ in run.sections)
