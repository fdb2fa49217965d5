"""The run's synthetic fidelity section: the learned simulator is within 10% of the truth for every policy."""

from __future__ import annotations

import torch

from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.synthetic_fidelity import (
    synthetic_fidelity_section,
    synthetic_fidelity_table,
)


def test_table_within_ten_percent_and_not_vacuous():
    torch.set_num_threads(1)
    table = synthetic_fidelity_table(seed=2)
    assert table["within_tolerance"].all(), table
    true = table.set_index("policy")["true"]
    assert true["greedy on the truth"] > 1.3 * true["random"] > 1.3 * true["biased (worst half)"]


def test_section_writes_table_plot_and_metrics(tmp_path):
    run = RunFolder(tmp_path)
    out = synthetic_fidelity_section(run, 0, lambda m: None)
    assert (tmp_path / "synthetic_fidelity_uniform.png").exists() and (tmp_path / "synthetic_fidelity_softmax.csv").exists()
    assert out["uniform"]["all_within_tolerance"] and out["uniform"]["logging_inside_ci"]
    assert out["softmax"]["logging_inside_ci"]
    assert any("synthetic ground truth" in title for title, _ in run.sections)
