"""Feature-based serving: decision latency and catalogue updates (issue: real logs are messy, cold start).

A shared-feature LinUCB (outer interaction) on a 20-wide context and 6-wide promotion features:
  - reference: the disjoint LinUCB artifact over the same contexts and the same number of actions
    (fixed action set, one ONNX input), one decision per call, in process;
  - measured: the feature-based artifact's one-decision p50/p99 at 10, 100 and 1,000 promotions,
    and the time of `with_catalogue` (validate, encode, new runtime) against a full artifact reload
    (`PolicyRuntime.load`, what a retrain-and-redeploy swap costs at serving, before any retraining).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pushrl.agents.bandits import make_bandit
from pushrl.agents.export_policies import export_policy
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import CatalogueSpec
from pushrl.policies.serving.runtime import PolicyRuntime

D, CALLS = 20, 3000


def _catalogue(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({"price": rng.uniform(5, 100, n), "margin": rng.uniform(0, 0.5, n),
                         "kind": rng.choice(["shoe", "shirt", "hat"], n)})


def _latency(runtime: PolicyRuntime, contexts: list[dict]) -> tuple[float, float]:
    times = np.empty(len(contexts))
    for i, ctx in enumerate(contexts):
        start = time.perf_counter()
        runtime.decide([{"request_id": "r", "context": ctx}])
        times[i] = time.perf_counter() - start
    return float(np.percentile(times, 50) * 1e6), float(np.percentile(times, 99) * 1e6)


def main() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    names = [f"u{i}" for i in range(D)]
    frame = pd.DataFrame(rng.normal(size=(2000, D)), columns=names)
    encoder = ContextEncoder.fit(frame, names, [])
    x = np.hstack([encoder.transform(frame), np.ones((len(frame), 1))])
    contexts = frame.iloc[:CALLS % len(frame) or len(frame)].to_dict(orient="records")
    contexts = (contexts * (CALLS // len(contexts) + 1))[:CALLS]
    with tempfile.TemporaryDirectory() as tmp:
        for n in (10, 100, 1000):
            cat = _catalogue(n, rng)
            cenc = ContextEncoder.fit(cat, ["price", "margin"], ["kind"])
            z = np.hstack([cenc.transform(cat), np.ones((n, 1))])
            shared = make_bandit("linucb_shared", action_features=z, n_features=x.shape[1], alpha=0.5)
            disjoint = make_bandit("linucb", n_actions=n, n_features=x.shape[1], alpha=0.5)
            a = rng.integers(0, n, len(x))
            r = rng.random(len(x))
            for b in (shared, disjoint):
                b.fit_offline(x, a, r, np.full(len(x), 1 / n), mode="ips")
            ids = [f"p{i}" for i in range(n)]
            ref_path = export_policy(disjoint, "linucb", encoder, ids, Path(tmp) / f"d{n}", parity_rows=500)
            path = export_policy(shared, "linucb_shared", encoder, ids, Path(tmp) / f"s{n}", parity_rows=500,
                                 catalogue=CatalogueSpec.from_frame(cenc, cat))
            ref, live = PolicyRuntime.load(ref_path, seed=0), PolicyRuntime.load(path, seed=0)
            ref_p50, ref_p99 = _latency(ref, contexts)
            p50, p99 = _latency(live, contexts)
            print(f"{n:>5} promotions: one decision p50 {p50:.0f} us, p99 {p99:.0f} us (feature-based); fixed-set "
                  f"LinUCB p50 {ref_p50:.0f} us, p99 {ref_p99:.0f} us; ratio p99 {p99 / ref_p99:.2f}x")
            new = [{"id": f"n{i}", "features": {"price": float(p), "margin": float(m), "kind": str(k)}}
                   for i, (p, m, k) in enumerate(_catalogue(n, rng).itertuples(index=False))]
            start = time.perf_counter()
            for _ in range(5):
                live.with_catalogue(new)
            update = (time.perf_counter() - start) / 5
            start = time.perf_counter()
            for _ in range(5):
                PolicyRuntime.load(path, seed=0)
            reload = (time.perf_counter() - start) / 5
            print(f"       catalogue update of {n} promotions: {update * 1e3:.2f} ms; artifact reload "
                  f"{reload * 1e3:.2f} ms; ratio {update / reload:.2f}x")


if __name__ == "__main__":
    main()
