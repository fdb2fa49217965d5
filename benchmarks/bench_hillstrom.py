"""Hillstrom campaign: response-model training time on the sample, and decision latency of its artifact.

Reference in the same run: the logistic-regression baseline's fit on the same rows.
Latency: one request in process (p50/p99 over 2,000 calls), and over HTTP on loopback
for 1 and 100 requests per call (bounded runs).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pushrl.agents.bandits import make_bandit
from pushrl.agents.export_policies import export_policy
from pushrl.envs.data.hillstrom import load_hillstrom
from pushrl.envs.data.split import split_log
from pushrl.envs.model.model_report import LogisticRegression
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig
from pushrl.policies.serving.loadtest import ServerProcess, random_requests, run_load
from pushrl.policies.serving.runtime import PolicyRuntime


def main() -> None:
    torch.set_num_threads(1)
    data = load_hillstrom()
    split = split_log(data)
    t = time.perf_counter()
    model = ResponseModel.fit(split.train, split.validation, ResponseModelConfig(progress=False))
    t_model = time.perf_counter() - t
    t = time.perf_counter()
    LogisticRegression().fit(split.train)
    t_ref = time.perf_counter() - t
    print(f"response model fit on {split.train.n_rounds:,} rows (3 heads, early stopping): {t_model:.2f} s | "
          f"reference logistic regression fit: {t_ref:.2f} s | ratio {t_model / t_ref:.1f}x")
    x, _ = model.encode(split.train)
    feats = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
    bandit = make_bandit("epsilon_greedy", n_actions=3, n_features=feats.shape[1], epsilon=0.05, seed=0)
    bandit.update(feats, split.train.action, split.train.reward("conversion"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_policy(bandit, "epsilon_greedy", model.encoder, data.action_ids, Path(tmp) / "artifact",
                               no_push_action="No E-Mail", parity_rows=2000)
        runtime = PolicyRuntime.load(folder, seed=0)
        requests = random_requests(runtime.manifest, 2000, seed=1)
        for r in requests[:50]:
            runtime.decide([r])
        lat = []
        for r in requests:
            t = time.perf_counter()
            runtime.decide([r])
            lat.append(time.perf_counter() - t)
        p50, p99 = np.percentile(np.array(lat) * 1e6, [50, 99])
        print(f"in-process decide, one request: p50 {p50:.0f} us, p99 {p99:.0f} us")
        with ServerProcess(folder) as server:
            for batch, calls in ((1, 2000), (100, 200)):
                res = run_load(server.url, requests, n_calls=calls, concurrency=1, batch_size=batch, time_limit_s=30)
                print(f"HTTP, {batch} request(s) per call, concurrency 1: {res.calls} calls, p50 {res.p50_ms:.2f} ms, "
                      f"p99 {res.p99_ms:.2f} ms, errors {res.errors}")
