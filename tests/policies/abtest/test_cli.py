"""`pushrl abtest plan|simulate` (abtest_main) and `python -m pushrl.policies.abtest.cli`."""

from __future__ import annotations

import json
import subprocess
import sys

from pushrl.policies.abtest import plan_mean_test, plan_proportion_test
from pushrl.policies.abtest.cli import abtest_main

PLAN = ["plan", "--control-rate", "0.04", "--lift", "0.1", "--alpha", "0.05", "--power", "0.8",
        "--traffic-per-day", "20000", "--allocation", "0.5", "--days", "14"]


def test_plan_prints_users_days_and_mde(capsys):
    assert abtest_main(PLAN) == 0
    out = capsys.readouterr().out
    plan = plan_proportion_test(0.04, 0.1, traffic_per_day=20_000, days=14)
    assert f"control {plan.users_per_arm[0]:,}, treatment {plan.users_per_arm[1]:,}" in out
    assert f"days needed: {plan.days} at 20,000 users/day" in out
    assert f"MDE after 14 days: {plan.mde:+.2%} relative lift" in out


def test_plan_json_for_a_continuous_reward(capsys):
    argv = ["plan", "--mean", "25", "--sd", "40", "--treatment-sd", "45", "--lift", "0.05",
            "--traffic-per-day", "5000", "--allocation", "0.3", "--json"]
    assert abtest_main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    plan = plan_mean_test(25.0, 40.0, 0.05, treatment_sd=45.0, traffic_per_day=5000, allocation=0.3)
    assert doc["plan"]["users_per_arm"] == {"control": plan.users_per_arm[0], "treatment": plan.users_per_arm[1]}
    assert doc["plan"]["test"] == "Welch t-test" and doc["plan"]["days"] == plan.days


def test_simulate_reports_false_positives_power_and_sequential_stopping(capsys):
    argv = ["simulate", "--control-rate", "0.05", "--lift", "0.2", "--traffic-per-day", "10000",
            "--experiments", "300", "--looks", "4", "--seed", "5", "--json"]
    assert abtest_main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"plan", "fixed A/A", "fixed A/B", "sequential A/A", "sequential A/B", "inflation_factor"}
    assert doc["fixed A/A"]["n_experiments"] == 300 and doc["sequential A/B"]["n_looks"] == 4
    assert doc["fixed A/A"]["rejection_rate"] < doc["fixed A/B"]["rejection_rate"]
    assert doc["sequential A/B"]["mean_fraction_at_stop"] < 1.0
    n = doc["plan"]["users_per_arm"]["control"]
    assert doc["sequential A/B"]["users_per_arm"]["control"] > n == doc["fixed A/B"]["users_per_arm"]["control"]


def test_simulate_text_for_a_given_duration(capsys):
    argv = ["simulate", "--mean", "25", "--sd", "40", "--lift", "0.05", "--traffic-per-day", "5000",
            "--days", "3", "--experiments", "200"]
    assert abtest_main(argv) == 0
    out = capsys.readouterr().out
    assert "simulated at 7,500 control / 7,500 treatment users (3 days)" in out
    assert "[fixed A/A] false-positive rate:" in out and "[fixed A/B] power:" in out


def test_errors_return_2_with_the_reason(capsys):
    assert abtest_main(["plan", "--control-rate", "0.04", "--lift", "30"]) == 2
    assert "lift=30.0 moves the treatment rate to 1.24" in capsys.readouterr().err
    assert abtest_main(["plan", "--mean", "3", "--lift", "0.1"]) == 2
    assert "--mean needs --sd" in capsys.readouterr().err
    assert abtest_main(["plan", "--control-rate", "0.04"]) == 2  # argparse: --lift is required
    assert "--lift" in capsys.readouterr().err
    assert abtest_main(["simulate", "--control-rate", "0.04", "--lift", "0.1", "--days", "3"]) == 2
    assert "traffic_per_day" in capsys.readouterr().err
    assert abtest_main(["simulate", "--control-rate", "0.04", "--lift", "0.1", "--looks", "0"]) == 2
    assert "--looks and --experiments must be >= 1, got 0 and 1000" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "pushrl.policies.abtest.cli", *PLAN],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "users per arm" in proc.stdout and "days needed" in proc.stdout
