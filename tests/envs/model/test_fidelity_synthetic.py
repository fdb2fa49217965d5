"""The synthetic fidelity check: the learned simulator is within 10% of the truth for every policy."""

from __future__ import annotations

import torch

from pushrl.envs.model.fidelity import SYNTHETIC_TOLERANCE, synthetic_fidelity_table


def test_table_within_ten_percent_and_not_vacuous():
    torch.set_num_threads(1)
    table = synthetic_fidelity_table(seed=2)
    assert table["within_tolerance"].all(), table
    assert (table["relative_error"] <= SYNTHETIC_TOLERANCE).all()
    true = table.set_index("policy")["true"]
    assert true["greedy on the truth"] > 1.3 * true["random"] > 1.3 * true["biased (worst half)"]
    m, lo, hi = table.attrs["logging_ci"]
    assert lo <= m <= hi
