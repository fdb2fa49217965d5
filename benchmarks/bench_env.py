"""Env steps per second: PushEnv, gymnasium's SyncVectorEnv over 16 PushEnvs, BatchedPushEnv at 1,024 and
16,384 users, each with a response function in the loop.

The response function is a parameter (`main(responses=("truth", "learned"))`): "truth" is the synthetic
TrueResponse; "learned" is `pushrl.envs.model.response_model.ResponseModel` fitted for a few epochs on a small
synthetic log (run only if that module is importable; torch is set to one thread). The policy is uniform random over all actions
("nothing" included), drawn before timing. Wall-clock rates are what a user sees on this (shared)
machine; CPU rates (process time) are less sensitive to other processes. Goals: batched >= 1,000,000
user-steps/s and >= 100x the single env.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence

import gymnasium
import numpy as np

import pushrl.envs.sim  # noqa: F401  (registers pushrl/Push-v0)
from pushrl.envs.sim.env_config import Shop, default_shop
from pushrl.envs.sim.registration import PUSH_ENV_ID

SECONDS = 2.0
BATCH_SIZES = (1_024, 16_384)
GOAL_RATE, GOAL_RATIO = 1_000_000, 100


def truth_shop() -> Shop:
    return default_shop()


def learned_shop() -> Shop:
    """A ResponseModel fitted quickly on a small synthetic log; the pool is the log's encoded contexts."""
    import torch

    from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
    from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig

    # one intra-op thread: on this shared 2-core machine torch's second thread makes predict ~5x slower
    torch.set_num_threads(1)
    data, _ = generate_log(SyntheticConfig(n_rows=20_000, n_users=1_000, seed=0))
    model = ResponseModel.fit(data, None, ResponseModelConfig(epochs=2, progress=False))
    contexts, _ = model.encode(data)
    categories = data.catalogue.features["category"].to_numpy()
    return Shop.build(model, np.asarray(contexts, dtype=np.float64), categories, data.catalogue.ids)


RESPONSES: dict[str, Callable[[], Shop]] = {"truth": truth_shop, "learned": learned_shop}


def available_responses() -> list[str]:
    names = ["truth"]
    if importlib.util.find_spec("pushrl.envs.model.response_model") is not None:
        names.append("learned")
    return names


def _rate(step: Callable[[int], None], users: int, seconds: float) -> tuple[float, float]:
    """(wall, cpu) user-steps per second of calling step(i) for about `seconds`."""
    for i in range(3):
        step(i)
    wall0, cpu0, n = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - wall0 < seconds:
        step(n)
        n += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return n * users / wall, n * users / max(cpu, 1e-9)


def bench_single(shop_kwargs: dict, seconds: float) -> tuple[float, float]:
    env = gymnasium.make(PUSH_ENV_ID, **shop_kwargs)
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, env.action_space.n, size=4096)

    def step(i: int) -> None:
        _, _, terminated, truncated, _ = env.step(int(actions[i % 4096]))
        if terminated or truncated:
            env.reset()

    return _rate(step, 1, seconds)


def bench_vector(n: int, mode: str, shop_kwargs: dict, seconds: float) -> tuple[float, float]:
    env = gymnasium.make_vec(PUSH_ENV_ID, num_envs=n, vectorization_mode=mode, **shop_kwargs)
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, env.single_action_space.n, size=(8, n))
    return _rate(lambda i: env.step(actions[i % 8]), n, seconds)


def run(response: str, seconds: float = SECONDS) -> list[tuple[str, float, float]]:
    """Rows (setting, wall user-steps/s, cpu user-steps/s) for one response function."""
    shop = RESPONSES[response]()
    kwargs = {"response": shop.response, "contexts": shop.contexts, "categories": shop.categories,
              "action_ids": shop.action_ids}
    rows = [("PushEnv (gymnasium.make)", *bench_single(kwargs, seconds)),
            ("SyncVectorEnv x 16 PushEnv", *bench_vector(16, "sync", kwargs, seconds))]
    for n in BATCH_SIZES:
        rows.append((f"BatchedPushEnv N={n:,}", *bench_vector(n, "vector_entry_point", kwargs, seconds)))
    return rows


def main(responses: Sequence[str] | None = None, seconds: float = SECONDS) -> None:
    names = list(responses) if responses is not None else available_responses()
    unknown = sorted(set(names) - set(RESPONSES))
    if unknown:
        raise ValueError(f"unknown response(s) {unknown}; choose from {sorted(RESPONSES)}")
    for name in names:
        start = time.perf_counter()
        rows = run(name, seconds)
        single_wall, single_cpu = rows[0][1], rows[0][2]
        print(f"response={name} (setup + timing {time.perf_counter() - start:.0f} s; {seconds:.0f} s per row)")
        print(f"  {'setting':<28} {'user-steps/s':>14} {'x single':>9} {'cpu user-steps/s':>17} {'x single':>9}")
        for label, wall, cpu in rows:
            print(f"  {label:<28} {wall:>14,.0f} {wall / single_wall:>8.1f}x {cpu:>17,.0f} {cpu / single_cpu:>8.1f}x")
        best = max(wall for label, wall, _ in rows if label.startswith("BatchedPushEnv"))
        verdict = "met" if best >= GOAL_RATE and best / single_wall >= GOAL_RATIO else "NOT met"
        print(f"  goal (best batched >= {GOAL_RATE:,} user-steps/s and >= {GOAL_RATIO}x single, wall clock): {verdict}")


if __name__ == "__main__":
    main()
