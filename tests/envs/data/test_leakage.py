"""Look-alike columns are warned about by name; a feature that nearly determines a reward is refused."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.data import leakage
from pushrl.envs.data.describe import describe_data, describe_file
from pushrl.envs.data.leakage import (
    LeakageError,
    check_leakage,
    leakage_statistics,
    name_tokens,
    suspicious_columns,
)
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.schema import LogSchema
from pushrl.envs.data.split import split_log
from pushrl.envs.data.synthetic import (
    SCHEMA,
    SyntheticConfig,
    generate_log,
    make_truth,
    simulate_rows,
)

BARE = LogSchema(propensity=None, timestamp=None, user_id=None, position=None, optional_rewards=())


# ---------------------------------------------------------------------------------------------------------------
# look-alike columns
# ---------------------------------------------------------------------------------------------------------------
def _made_up(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "action": rng.integers(0, 3, n), "click": rng.integers(0, 2, n).astype(float),
        "logging_prob": rng.uniform(0.1, 0.9, n), "purchased": rng.integers(0, 2, n),
        # honest look-alikes of nothing: a 0/1 flag, a score on its own scale, an age, a count named like an outcome
        "is_vip": rng.integers(0, 2, n), "credit_score": rng.integers(300, 850, n), "age": rng.integers(18, 80, n),
        "past_orders": rng.poisson(2.0, n),
    })


def test_name_tokens():
    assert name_tokens("loggingProb") == ("logging", "prob")
    assert name_tokens("user-item_affinity_0") == ("user", "item", "affinity", "0")
    assert name_tokens("Order_ID") == ("order", "id")


def test_look_alikes_are_named_and_honest_columns_are_not():
    data = LoggedData.from_frame(_made_up(), schema=BARE)
    text = "\n".join(data.warnings)
    assert len(data.warnings) == 2
    assert "'logging_prob' looks like a probability" in text and "data.propensity=logging_prob" in text
    assert "data.exclude=[logging_prob]" in text
    assert "'purchased' is 0/1 and named like an outcome" in text and "data.exclude=[purchased]" in text
    for honest in ("is_vip", "credit_score", "age", "past_orders"):
        assert f"'{honest}'" not in text


@pytest.mark.parametrize("column, values, fragment", [
    ("model_score", np.linspace(0.01, 0.99, 600), "probability or score"),
    ("pscore", np.full(600, 0.25), "probability or score"),
    ("opened", np.where(np.arange(600) % 2, "yes", "no"), "0/1 and named like an outcome"),
    ("order_id", np.arange(600).astype(str), "outcome's id"),
    ("order_number", np.arange(600), "outcome's id"),
    ("revenue_eur", np.where(np.arange(600) % 5, 0.0, 12.5), "named like money"),
    ("sent_at", np.full(600, "2026-01-01"), "timestamp"),
    ("event_time", np.arange(600.0), "timestamp"),
    ("customer_id", (np.arange(600) % 40).astype(str), "user id"),
])
def test_each_kind_of_look_alike(column, values, fragment):
    frame = _made_up().drop(columns=["logging_prob", "purchased"]).assign(**{column: values})
    warnings = LoggedData.from_frame(frame, schema=BARE).warnings
    assert len(warnings) == 1 and warnings[0].startswith(f"column '{column}'") and fragment in warnings[0]
    assert f"data.exclude=[{column}]" in warnings[0]


def test_look_alike_values_matter():
    """A score outside [0, 1] and a count named like an outcome are features, not warnings."""
    frame = _made_up().drop(columns=["logging_prob", "purchased"])
    frame = frame.assign(risk_score=np.linspace(-3, 40, len(frame)), clicks_30d=np.arange(len(frame)) % 7)
    assert LoggedData.from_frame(frame, schema=BARE).warnings == ()


def test_look_alikes_in_describe_text_and_json_streamed_and_in_memory(tmp_path):
    frame = _made_up()
    path = tmp_path / "log.parquet"
    frame.to_parquet(path, index=False)
    streamed = describe_file(path, BARE, chunksize=97)
    in_memory = describe_data(LoggedData.from_frame(frame, schema=BARE), support=False)
    for desc in (streamed, in_memory):
        doc = json.loads(json.dumps(desc.to_dict(), default=str))
        for col in ("logging_prob", "purchased"):
            assert sum(f"'{col}'" in w for w in doc["warnings"]) == 1
            assert f"column '{col}'" in desc.to_text()
    # streamed chunks merge: the range of logging_prob is the whole file's
    lo, hi = frame["logging_prob"].min(), frame["logging_prob"].max()
    assert any(f"values {lo:.3g}..{hi:.3g}" in w for w in streamed.warnings)


def test_a_flag_is_binary_only_over_all_chunks():
    """Profiles merge: a column that is 0/1 in one chunk and 2 in another is not a flag."""
    frame = _made_up()
    frame.loc[len(frame) - 1, "purchased"] = 2
    data = LoggedData.from_frame(frame, schema=BARE)
    profiles = [leakage.profile_columns(data.frame.iloc[i: i + 100], data.columns) for i in range(0, len(frame), 100)]
    merged = profiles[0]
    for p in profiles[1:]:
        merged = leakage.merge_profiles(merged, p)
    assert merged["purchased"].binary is False and profiles[0]["purchased"].binary is True
    assert not any("purchased" in w for w in leakage.look_alike_warnings(merged, data.columns))
    assert leakage.look_alike_warnings(merged, data.columns) == suspicious_columns(data.frame, data.columns)


# ---------------------------------------------------------------------------------------------------------------
# the statistics against brute force
# ---------------------------------------------------------------------------------------------------------------
def _brute_auc(x: np.ndarray, y: np.ndarray) -> float:
    pos, neg = x[y == 1], x[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    auc = wins / (len(pos) * len(neg))
    return max(auc, 1 - auc)


def _brute_pure_share(x: np.ndarray, y: np.ndarray) -> float:
    minority = 1 if y.sum() * 2 <= len(y) else 0
    best = 0
    for t in np.unique(x):
        for region in (x <= t, x >= t):
            hits = int((y[region] == minority).sum())
            if region.sum() >= leakage.MIN_PURE_ROWS and hits >= leakage.PURITY * region.sum():
                best = max(best, hits)
    return best / int((y == minority).sum())


def _brute_r2(x: np.ndarray, y: np.ndarray) -> float:
    ys = y[np.argsort(x, kind="stable")]
    n, h = len(y), leakage.NEIGHBOURS
    pred = np.array([(ys[max(i - h, 0): i + h + 1].sum() - ys[i]) / (min(i + h, n - 1) - max(i - h, 0))
                     for i in range(n)])
    return 1 - ((ys - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()


def _table_for(x: np.ndarray, y: np.ndarray) -> pd.Series:
    frame = pd.DataFrame({"action": 0, "click": y, "x": x})
    return leakage_statistics(LoggedData.from_frame(frame, schema=BARE)).iloc[0]


@pytest.mark.parametrize("seed", range(4))
def test_auc_pure_share_and_r2_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 400
    x = rng.integers(0, 25, n).astype(float)  # many ties
    y = (rng.random(n) < 0.2 + 0.6 * (x > 18)).astype(float)
    y[x >= 23] = 1.0  # a pure upper tail (about 8% of rows)
    row = _table_for(x, y)
    assert row["auc"] == pytest.approx(_brute_auc(x, y), abs=1e-12)
    assert row["pure_share"] == pytest.approx(_brute_pure_share(x, y), abs=1e-12) and row["pure_share"] > 0
    # R²: sorting ties in another order changes the neighbours, so compare on distinct values
    xd = x + rng.random(n) * 1e-3
    assert _table_for(xd, y)["r2"] == pytest.approx(_brute_r2(xd, y), abs=1e-9)


def test_categorical_auc_is_out_of_fold():
    """An id with one row per level carries no information out of fold: AUC 0.5, nothing pure."""
    rng = np.random.default_rng(3)
    n = 5000
    frame = pd.DataFrame({"action": 0, "click": (rng.random(n) < 0.1).astype(float),
                          "token": [f"t{i}" for i in range(n)], "tier": rng.choice(["a", "b", "c"], n)})
    frame.loc[frame["tier"] == "c", "click"] = (rng.random(int((frame["tier"] == "c").sum())) < 0.5).astype(float)
    table = leakage_statistics(LoggedData.from_frame(frame, schema=BARE)).set_index("feature")
    assert table.loc["token", "auc"] == pytest.approx(0.5) and table.loc["token", "pure_share"] == 0
    # a real per-level effect is seen: the AUC of tier's level rates, computed by hand from the true grouping
    c = (frame["tier"] == "c").to_numpy(float)
    assert table.loc["tier", "auc"] == pytest.approx(_brute_auc(c, frame["click"].to_numpy()), abs=0.01)


# ---------------------------------------------------------------------------------------------------------------
# planted leaks are refused, honest logs are not
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shop() -> pd.DataFrame:
    raw = simulate_rows(make_truth(SyntheticConfig(n_rows=20_000, seed=5)))
    assert raw["conversion"].sum() > 200  # enough outcomes for the plants below
    return raw


def _train(frame: pd.DataFrame, schema: LogSchema = SCHEMA) -> LoggedData:
    return split_log(LoggedData.from_frame(frame, schema=schema)).train


def _refused(data: LoggedData) -> LeakageError:
    with pytest.raises(LeakageError) as info:
        check_leakage(data)
    err = info.value
    assert "\n" not in str(err) and f"data.exclude=[{err.column}]" in str(err)
    return err


@pytest.mark.parametrize("as_category", [False, True])
def test_a_reward_copy_with_2pct_flipped_is_refused(shop, as_category):
    rng = np.random.default_rng(1)
    flag = np.where(rng.random(len(shop)) < 0.02, 1 - shop["click"], shop["click"])
    frame = shop.assign(conversion_flag=np.where(flag == 1, "yes", "no") if as_category else flag)
    err = _refused(_train(frame))
    assert (err.column, err.reward, err.measure) == ("conversion_flag", "click", "auc")
    assert str(err).startswith("feature 'conversion_flag' nearly determines reward 'click' on the training rows (AUC 0.9")


@pytest.mark.parametrize("as_number", [False, True])
def test_an_order_id_that_exists_only_for_conversions_is_refused(shop, as_number):
    ids = np.arange(len(shop)) + 1000
    conv = shop["conversion"].to_numpy() == 1
    order_id = np.where(conv, ids, 0) if as_number else np.where(conv, [f"o{i}" for i in ids], "none")
    err = _refused(_train(shop.assign(order_id=order_id)))
    assert (err.column, err.reward) == ("order_id", "conversion") and "AUC 1.000" in str(err)


def test_revenue_as_an_input_of_a_click_model_is_refused(shop):
    """Revenue > 0 implies a click: the clicks with a purchase sit where a click is certain."""
    train = _train(shop, LogSchema(optional_rewards=(), exclude=("conversion",)))
    assert train.reward_names == ("click",) and "revenue" in train.feature_names
    err = _refused(train)
    assert (err.column, err.reward, err.measure) == ("revenue", "click", "pure_share")
    assert "click = 1 on 100.0% of the" in str(err) and "where revenue >=" in str(err)


def test_a_noisy_copy_of_a_continuous_reward_is_refused(shop):
    rng = np.random.default_rng(2)
    frame = shop.assign(basket_value=shop["revenue"] * np.exp(rng.normal(0, 0.2, len(shop))) + rng.random(len(shop)))
    train = _train(frame, LogSchema(rewards=("revenue",), optional_rewards=("click",), exclude=("conversion",)))
    r2 = leakage_statistics(train).set_index(["feature", "target"])["r2"]
    assert r2["basket_value", "revenue"] >= leakage.R2_THRESHOLD  # the value itself, not only "revenue > 0"
    err = _refused(train)
    assert err.column == "basket_value" and err.reward == "revenue"


def test_rows_restrict_the_check(shop):
    """A feature that leaks only on some rows is refused on those rows, not on the others."""
    data = LoggedData.from_frame(shop.assign(flag=np.where(np.arange(len(shop)) < 10_000, shop["click"], 0.0)),
                                 schema=SCHEMA)
    with pytest.raises(LeakageError, match="feature 'flag'"):
        check_leakage(data, rows=np.arange(10_000))
    table = check_leakage(data, rows=np.arange(10_000, len(shop)))
    assert table.loc[table["feature"] == "flag", "auc"].max() == pytest.approx(0.5)


def _max_stats(data: LoggedData) -> dict[str, float]:
    table = check_leakage(data)  # raises if refused
    return {"auc": table["auc"].max(), "r2": table["r2"].max(), "pure_share": table["pure_share"].max()}


def test_the_embedded_samples_are_not_refused():
    from pushrl.envs.data.hillstrom import load_hillstrom
    from pushrl.envs.data.obd import load_obd

    for data in (load_obd("all"), load_hillstrom()):
        stats = _max_stats(split_log(data).train)
        assert stats["auc"] < 0.75 and stats["r2"] < 0.1 and stats["pure_share"] == 0, (data.name, stats)


@pytest.mark.parametrize("config", [
    SyntheticConfig(seed=0), SyntheticConfig(logging="softmax", seed=1),
    SyntheticConfig(logging="deterministic", seed=2, feature_driven=True),
    SyntheticConfig(logging="epsilon_greedy", n_positions=3, seed=3),
], ids=["uniform", "softmax", "deterministic", "slates"])
def test_synthetic_logs_are_not_refused(config):
    data, _ = generate_log(config)
    stats = _max_stats(split_log(data).train)
    assert stats["auc"] < leakage.AUC_THRESHOLD and stats["pure_share"] < leakage.PURE_SHARE_THRESHOLD, stats


def test_fast_on_100k_rows_by_30_features():
    rng = np.random.default_rng(0)
    n = 100_000
    frame = pd.DataFrame(rng.normal(size=(n, 25)), columns=[f"x{i}" for i in range(25)])
    for i, levels in enumerate((3, 50, 1_000, 20_000, 100_000)):
        frame[f"c{i}"] = rng.integers(0, levels, n).astype(str)
    frame["action"] = rng.integers(0, 10, n)
    frame["click"] = (rng.random(n) < 0.05).astype(float)
    data = LoggedData.from_frame(frame, schema=BARE)
    assert len(data.feature_names) == 30
    start = time.perf_counter()
    table = check_leakage(data)
    elapsed = time.perf_counter() - start
    assert len(table) == 30 and elapsed < 2.0, elapsed  # about 0.2 s here; the bound leaves room for a busy machine
