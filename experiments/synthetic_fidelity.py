"""The report's synthetic fidelity check (wiring and rendering of
`pushrl.envs.model.fidelity.synthetic_fidelity_table`): a simulator learned from logs of a known shop vs the truth.

Logs are drawn from the synthetic truth (softmax logging), a response model is fitted on the
training split exactly as `pushrl run` fits one, and on the held-out rows three policies
(random, greedy on the truth, a biased worst-half policy) are valued by the learned simulator
and by the truth; the logging policy's simulated value is compared with its logged reward's CI.
"""

from __future__ import annotations

from pathlib import Path

from pushrl.envs.common.atomic import write_text
from pushrl.envs.model.fidelity import synthetic_fidelity_table
from pushrl.experiments.formatting import fmt, fmt_ci


def synthetic_fidelity_section(run, seed: int, say) -> dict:
    """Both logging regimes: uniform (the quality bar) and softmax (where logging bias shows)."""
    from pushrl.experiments import plots

    say("[bold]synthetic fidelity[/bold]: fitting simulators on logs of a known shop ...")
    md = ["40,000 logged pushes from a known synthetic shop (8 promotions, 2 positions); the simulator is learned "
          "from the training split as `pushrl run` learns it (prior strength l2 = 1 for this larger log); values on the "
          "held-out rows.", ""]
    out = {}
    for logging in ("uniform", "softmax"):
        table = synthetic_fidelity_table(seed=seed, logging=logging)
        m, lo, hi = table.attrs["logging_ci"]
        logging_sim = float(table.loc[table["policy"] == "logging policy", "simulated"].iloc[0])
        write_text(run.path(f"synthetic_fidelity_{logging}.csv"), table.to_csv(index=False))
        plots.synthetic_fidelity_plot(table, (m, lo, hi), Path(run.path(f"synthetic_fidelity_{logging}.png")))
        inside = lo <= logging_sim <= hi
        md += [f"**{logging} logging**", "", "| policy | simulator | truth | relative error | within 10% |",
               "|---|---|---|---|---|"]
        md += [f"| {r.policy} | {fmt(r.simulated)} | {fmt(r.true)} | {r.relative_error:.1%} | "
               f"{'yes' if r.within_tolerance else '**no**'} |" for r in table.itertuples()]
        md += ["", f"The logging policy's simulated value {fmt(logging_sim)} is {'inside' if inside else '**outside**'} "
               f"the 95% CI of its logged click rate, {fmt_ci(m, lo, hi)}.", "",
               f"![synthetic fidelity, {logging} logging](synthetic_fidelity_{logging}.png)", ""]
        out[logging] = {"max_relative_error": float(table["relative_error"].max()),
                        "all_within_tolerance": bool(table["within_tolerance"].all()), "logging_inside_ci": bool(inside)}
    md.append("Under softmax logging the promotions the logger rarely shows are learned from few rows and shrunk "
              "toward the mean, so a policy that pushes them is overvalued: the simulator inherits the logging "
              "policy's blind spots, which is why OPE on the real logs is the independent check.")
    run.add_section("Simulator fidelity on synthetic ground truth", "\n".join(md))
    return out
