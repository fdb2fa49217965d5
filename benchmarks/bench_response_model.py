"""Response-model training time per epoch (issue: the simulated shop).

Two logs: the real OBD sample (train split, 7,000 rows) and a generated
10-million-row synthetic log (80 promotions, 3 positions, 1M users; trained on
all rows, no validation, one epoch). Reference, measured in the same run on the
same encoded rows, batches and optimiser: one mini-batch epoch of the
logistic-regression baseline's model (context + one-hot promotion + one-hot
position -> logit), written like the response model's head without its factors. Ratio = factorization-machine click-head epoch / reference
epoch. Single-threaded torch so numbers are comparable across machines.
Peak RSS via resource.getrusage.
"""

from __future__ import annotations

import os
import resource
import time

import numpy as np
import torch
from torch import nn

from pushrl.envs.data.logged_data import LoggedData

N_ROWS = int(os.environ.get("PUSHRL_BENCH_RESPONSE_ROWS", 10_000_000))


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def _logistic_epoch(x: np.ndarray, pos: np.ndarray, action: np.ndarray, y: np.ndarray, n_actions: int,
                    n_positions: int, batch_size: int, lr: float, seed: int = 0) -> float:
    """Seconds for one Adam epoch of a logistic model (the response model minus its factors and
    fatigue term: offset + position + context weights + promotion bias), same rows and batch size."""
    xt, pt, at = torch.from_numpy(x), torch.from_numpy(pos.astype(np.int64)), torch.from_numpy(action.astype(np.int64))
    yt = torch.from_numpy(y.astype(np.float32))
    offset, w_pos = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(n_positions))
    w_x, b_a = nn.Parameter(torch.zeros(x.shape[1])), nn.Parameter(torch.zeros(n_actions))
    opt = torch.optim.Adam([{"params": [offset], "weight_decay": 0.0},
                            {"params": [w_pos, w_x, b_a], "weight_decay": 1e-6}], lr=lr)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    start = time.perf_counter()
    for lo in range(0, len(perm), batch_size):
        idx = perm[lo: lo + batch_size]
        eta = offset + w_pos[pt[idx]] + xt[idx] @ w_x + b_a[at[idx]]
        loss = nn.functional.binary_cross_entropy_with_logits(eta, yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def _measure(name: str, data: LoggedData, epochs: int) -> None:
    from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig

    cfg = ResponseModelConfig(epochs=epochs, progress=False)
    start = time.perf_counter()
    model = ResponseModel.fit(data, None, cfg)
    fit_s = time.perf_counter() - start
    per_head = {r: float(np.mean([h["seconds"] for h in hist[1:]])) for r, hist in model.history.items()}
    x, _ = model.encode(data)
    ref = _logistic_epoch(x, data.position, data.action, data.reward("click"), data.n_actions, data.n_positions,
                          cfg.batch_size, cfg.learning_rate)
    click = per_head["click"]
    rows = data.n_rounds
    print(f"{name}: {rows:,} rows, batch {cfg.batch_size}, {epochs} epoch(s), whole fit {fit_s:.2f} s "
          f"(encoding, heads, offset refit)", flush=True)
    heads = ", ".join(f"{r} {s:.3f} s" for r, s in per_head.items())
    print(f"  response model epoch per head: {heads}", flush=True)
    print(f"  click head: {click:.3f} s/epoch = {rows / click:,.0f} rows/s | reference logistic epoch "
          f"{ref:.3f} s = {rows / ref:,.0f} rows/s | ratio {click / ref:.2f}x", flush=True)


def main() -> None:
    torch.set_num_threads(1)
    from pushrl.envs.data.obd import load_obd
    from pushrl.envs.data.split import split_log
    from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
    from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    obd = split_log(load_obd("all")).train
    _ = ResponseModel.fit(obd, None, ResponseModelConfig(epochs=1, progress=False))  # warm-up, not timed
    _measure("OBD sample (all, train split)", obd, epochs=5)
    print(f"  peak RSS so far {_peak_rss_gib():.2f} GiB", flush=True)

    start = time.perf_counter()
    data, _ = generate_log(SyntheticConfig(n_rows=N_ROWS, n_users=max(1, N_ROWS // 10), n_actions=80, n_positions=3))
    print(f"synthetic log generated: {data.n_rounds:,} rows in {time.perf_counter() - start:.1f} s, "
          f"peak RSS of the process so far {_peak_rss_gib():.2f} GiB", flush=True)
    _measure(f"synthetic {N_ROWS:,} rows", data, epochs=1)
    print(f"  peak RSS of the process so far {_peak_rss_gib():.2f} GiB (earlier benchmarks included)", flush=True)


if __name__ == "__main__":
    main()
