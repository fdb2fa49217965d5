"""The learned churn's cost: BatchedPushEnv user-steps/s with a ResponseModel's unsubscribe head as the churn,
against the same model and env with the config rule (`churn="rule"`) measured in the same run; and the
unsubscribe head's share of the fit time.

The log: the synthetic shop (20,000 rows, 10 promotions + no-push) with an `unsubscribe` column drawn as
sigmoid(-3 + 0.4 recent_pushes) on pushes. torch runs on one thread (shared 2-core machine). Policy: uniform
random over all actions, drawn before timing.
"""

from __future__ import annotations

import time

import numpy as np

from pushrl.envs.sim.batched_env import BatchedPushEnv

SECONDS = 2.0
USERS = (1_024, 16_384)


def _log():
    from pushrl.envs.data.logged_data import LoggedData
    from pushrl.envs.data.synthetic import SCHEMA, SyntheticConfig, generate_log

    data, _ = generate_log(SyntheticConfig(n_rows=20_000, n_users=1_000, no_push=True, seed=0))
    frame = data.frame.drop(columns=["action_index"])
    rng = np.random.default_rng(0)
    pushed = data.action != data.n_actions - 1
    p = 1.0 / (1.0 + np.exp(3.0 - 0.4 * frame["recent_pushes"].to_numpy(dtype=float)))
    frame["unsubscribe"] = (pushed & (rng.random(len(frame)) < p)).astype(int)
    return LoggedData.from_frame(frame, SCHEMA, data.catalogue), data.catalogue.ids[-1]


def _rate(env: BatchedPushEnv, seconds: float) -> float:
    actions = np.random.default_rng(0).integers(0, env.single_action_space.n, size=(8, env.num_envs))
    env.reset(seed=0)
    for i in range(3):
        env.step(actions[i])
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        env.step(actions[n % 8])
        n += 1
    return n * env.num_envs / (time.perf_counter() - start)


def main(seconds: float = SECONDS) -> None:
    import torch

    from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig

    torch.set_num_threads(1)
    data, no_push = _log()
    start = time.perf_counter()
    model = ResponseModel.fit(data, None, ResponseModelConfig(epochs=2, progress=False))
    fit = time.perf_counter() - start
    unsub_fit = sum(h["seconds"] for h in model.unsubscribe_history)
    contexts, _ = model.encode(data)
    shop = {"response": model, "contexts": np.asarray(contexts, dtype=np.float64),
            "categories": data.catalogue.features["category"].to_numpy(), "action_ids": data.catalogue.ids,
            "no_push_action": no_push}
    print(f"fit (click, conversion, revenue heads, 2 epochs; unsubscribe head by L-BFGS): {fit:.2f} s, of which the "
          f"unsubscribe head {unsub_fit:.2f} s")
    print(f"  {'setting':<26} {'rule user-steps/s':>18} {'head user-steps/s':>18} {'head / rule':>12}")
    for n in USERS:
        rule = _rate(BatchedPushEnv(num_envs=n, max_episode_steps=30, churn="rule", **shop), seconds)
        head = _rate(BatchedPushEnv(num_envs=n, max_episode_steps=30, churn="response", **shop), seconds)
        print(f"  {f'BatchedPushEnv N={n:,}':<26} {rule:>18,.0f} {head:>18,.0f} {head / rule:>11.2f}x")


if __name__ == "__main__":
    main()
