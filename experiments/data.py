"""Config -> LoggedData (wiring only; the loaders live in pushrl.envs)."""

from __future__ import annotations

from pushrl.envs.data.hillstrom import load_hillstrom
from pushrl.envs.data.loaders import load_log
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.obd import load_obd
from pushrl.envs.data.schema import LogSchema
from pushrl.envs.data.synthetic import SyntheticConfig, SyntheticTruth, generate_log

DATA_KINDS = ("obd", "hillstrom", "synthetic", "file")
ESTIMATE = "estimate"  # data.propensity=estimate: estimate the logging propensities (cross-fitted, calibrated)


def load_data(cfg) -> tuple[LoggedData, SyntheticTruth | None]:
    """The configured log, and the ground truth when it is synthetic."""
    kind = cfg.kind
    if kind == "obd":
        return load_obd(cfg.campaign), None
    if kind == "hillstrom":
        return load_hillstrom(cfg.path), None
    if kind == "synthetic":
        data, truth = generate_log(
            SyntheticConfig(
                n_rows=cfg.n_rows,
                n_users=cfg.n_users,
                n_actions=cfg.n_actions,
                n_positions=cfg.n_positions or 1,
                logging=cfg.logging,
                logging_temperature=cfg.logging_temperature,
                no_push=cfg.no_push,
                organic_conversion=cfg.organic_conversion,
                readable_promotions=cfg.readable_promotions,
                days=cfg.days,
                fatigue=cfg.fatigue,
                churn_logit=cfg.churn_logit,
                churn_slope=cfg.churn_slope,
                churn_context=cfg.churn_context,
                keep_sending=cfg.keep_sending,
                seed=cfg.seed,
            )
        )
        return data, truth
    if kind == "file":
        if not cfg.path:
            raise ValueError("data=custom needs data.path=<your log file> (.csv or .parquet)")
        schema = LogSchema(
            action=cfg.action,
            rewards=tuple(cfg.rewards),
            optional_rewards=tuple(r for r in cfg.optional_rewards if r not in cfg.rewards),
            propensity=None if cfg.propensity == ESTIMATE else cfg.propensity,
            timestamp=cfg.timestamp,
            user_id=cfg.user_id,
            position=cfg.position,
            unsubscribe=cfg.unsubscribe,
            no_push_action=cfg.no_push_action,
            features=None if cfg.features is None else tuple(cfg.features),
            categorical_features=tuple(cfg.categorical) or None,
            exclude=tuple(cfg.exclude),
        )
        return load_log(cfg.path, schema=schema, catalogue=cfg.catalogue, n_positions=cfg.n_positions, name=cfg.name), None
    raise ValueError(f"data.kind must be one of {DATA_KINDS}, got {kind!r}")
