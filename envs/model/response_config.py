"""`ResponseModelConfig`: the validated hyper-parameters of `ResponseModel.fit` (no torch, so a config schema can use it)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ResponseModelConfig:
    """Hyper-parameters of `ResponseModel.fit`; every field is validated.

    Attributes:
        embedding_dim: k, size of the user and promotion factors.
        epochs: most passes over the training rows (early stopping may end sooner).
        batch_size: rows per gradient step.
        learning_rate: Adam step size.
        l2: prior precision on every weight but the offset (shrinkage toward the base rate).
        patience: epochs without a lower mean validation loss before stopping (each such
            epoch also halves the step size).
        min_delta: improvement in mean validation loss that counts.
        stop_se: significance gate: an epoch can be kept only if its paired per-row gain over
            the base-rate model (epoch 0) on validation exceeds `min_delta` + `stop_se`
            standard errors; the kept epoch is the gated one with the lowest validation loss
            (0: plain early stopping). With a few dozen events, validation noise otherwise
            picks states that fit noise; this keeps the base rate unless the data say more.
        context_clip: encoded context values are clipped to [-c, c] inside the model, so a
            rare feature with a huge standardised value cannot memorise a single row.
        init_std: standard deviation of the initial user factors (promotion factors start at 0).
        ips_weighted: weight each row's loss by 1/pscore (normalised to mean 1).
        id_dropout: share of training rows (per batch, at random) on which the promotion's id
            terms (b_id, E_id) are switched off, so its features alone must explain its effect
            (DropoutNet, Volkovs et al. 2017). Trains the content half used for promotions with no
            rows (cold start): 0.5 brings a new promotion's predicted click rate within 20% of the
            truth in a feature-driven synthetic shop (tests/envs/model/test_cold_start.py) at ~0.5% worse
            held-out log loss on known promotions when features do not explain them. 0: off.
        recent_pushes_column: log column with the user's recent push count (None: none).
        reward_chain: rewards modelled as a chain, e.g. ("click", "conversion"): each one after the
            first is fitted on the rows where the one before it is positive, and predicted as the
            product (P(click) P(conversion | click)). Empty: every reward is its own head on all rows
            (organic conversions without a click are fine).
        seed: one seed for initialisation and batch order.
        progress: show a tqdm bar per head.
    """

    embedding_dim: int = 8
    epochs: int = 40
    batch_size: int = 1024
    learning_rate: float = 0.01
    l2: float = 10.0
    patience: int = 4
    min_delta: float = 0.0
    stop_se: float = 1.0
    context_clip: float = 5.0
    init_std: float = 0.01
    ips_weighted: bool = False
    id_dropout: float = 0.0
    recent_pushes_column: str | None = "recent_pushes"
    reward_chain: tuple[str, ...] = ()
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"ResponseModelConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        for name in ("embedding_dim", "epochs", "batch_size", "patience", "seed"):
            v = getattr(self, name)
            low = 0 if name in ("patience", "seed") else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise bad(name, f"an int >= {low}")
        for name, positive in (("learning_rate", True), ("l2", False), ("min_delta", False), ("stop_se", False),
                               ("context_clip", True), ("init_std", False)):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0 or (positive and v == 0):
                raise bad(name, "a finite number " + ("> 0" if positive else ">= 0"))
        if not isinstance(self.id_dropout, int | float) or isinstance(self.id_dropout, bool) \
                or not 0 <= self.id_dropout < 1:
            raise bad("id_dropout", "a number in [0, 1)")
        for name in ("ips_weighted", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "a bool")
        if self.recent_pushes_column is not None and not isinstance(self.recent_pushes_column, str):
            raise bad("recent_pushes_column", "a column name or None")
        if isinstance(self.reward_chain, str) or not all(isinstance(r, str) for r in self.reward_chain):
            raise bad("reward_chain", "a list of reward names")
        object.__setattr__(self, "reward_chain", tuple(self.reward_chain))
