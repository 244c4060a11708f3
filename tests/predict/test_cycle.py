"""The main job on real files: predictions, exclusions with reasons, outcomes once, idempotent re-runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from services import cli
from services.predict.drift import psi
from services.predict.signals import consensus
from services.training.registry import drift_reference

pytest.importorskip("torch")

COINS = ("BTC", "ETH", "XRP", "LTC", "ADA")
TINY = {"folds": 2, "trials": {"lr": 1, "gbt": 1, "gru": 1}, "timeout_s": 120, "epochs": 1, "gbt_max_estimators": 50}


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def source(shared_data, tmp_path_factory) -> Path:
    """Five real coins plus two bad ones: STALE (a real file cut at 2024-03-01) and BROKEN (a damaged header)."""
    dest = tmp_path_factory.mktemp("src")
    (dest / "ohlcv" / "1d").mkdir(parents=True)
    for coin in COINS:
        shutil.copy(shared_data / "ohlcv" / "1d" / f"{coin}-USD.csv", dest / "ohlcv" / "1d")
    shutil.copytree(shared_data / "sentiment", dest / "sentiment")
    lines = (shared_data / "ohlcv/1d/DOGE-USD.csv").read_text().splitlines(keepends=True)
    (dest / "ohlcv/1d/STALE-USD.csv").write_text(lines[0] + "".join(ln for ln in lines[1:] if ln < "2024-03-01"))
    (dest / "ohlcv/1d/BROKEN-USD.csv").write_text("Dat,Close,High\n" + "".join(lines[1:]))
    return dest


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("CST_HORIZONS", '["24h","7d"]')
    monkeypatch.setenv("CST_TRAINING__BUDGETS", json.dumps({"quick": TINY}))
    monkeypatch.setenv("CST_TRAINING__CALIBRATION_GRID", "64")
    # Drift retraining is exercised by its own unit tests; here it would only repeat training.
    monkeypatch.setenv("CST_RUN__PSI_FEATURE_SHARE", "1.0")
    monkeypatch.setenv("CST_RUN__MIN_OUTCOMES", "100000")


def run(source: Path, lake: Path, as_of: str) -> dict:
    assert cli.main(["run", "--source", str(source), "--lake", str(lake), "--as-of", as_of]) == 0
    (summary,) = [json.loads(p.read_text()) for p in lake.glob("runs/*/summary.json")
                  if json.loads(p.read_text())["as_of"] == as_of.replace("+00:00", "Z")]
    return summary


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lake")


def test_first_run_trains_predicts_and_excludes_with_reasons(source, lake_dir, env):
    s = run(source, lake_dir, "2024-05-01T00:00:00Z")
    assert set(s["trained"]) == {"24h", "7d"}
    assert s["coins_total"] == 7 and s["coins_predicted"] == 5
    assert "stale" in s["excluded"]["STALE"]
    assert "BROKEN" in s["excluded"] and "excluded by the quality gate" in s["excluded"]["BROKEN"]
    assert s["predictions"] == 10
    for key in ("run_id", "as_of", "coins_total", "coins_predicted", "excluded", "predictions", "actionable",
                "signals", "timings"):
        assert key in s
    assert {"ingest_and_quality", "features", "train", "predict", "log", "outcomes_and_performance", "drift"} <= set(s["timings"])
    parts = sorted(lake_dir.glob(f"predictions/run_id={s['run_id']}/horizon=*/coin=*/part.parquet"))
    assert len(parts) == 10
    import pyarrow.parquet as pq

    row = pq.read_table(parts[0]).to_pylist()[0]
    assert row["p_low"] <= row["p_up"] <= row["p_high"] and len(json.loads(row["top_features"])) == 5
    assert row["model_version"].startswith("v")


def test_rerunning_the_same_as_of_changes_nothing(source, lake_dir, env):
    before = snapshot(lake_dir)
    run(source, lake_dir, "2024-05-01T00:00:00Z")
    assert snapshot(lake_dir) == before
    # Even with the run record gone (a crash before the summary), no prediction is duplicated or rewritten.
    (summary,) = list(lake_dir.glob("runs/*/summary.json"))
    summary.unlink()
    run(source, lake_dir, "2024-05-01T00:00:00Z")
    after = snapshot(lake_dir)
    for key, blob in before.items():
        if key.startswith(("predictions/", "outcomes/", "raw/", "models/")):
            assert after.get(key) == blob, key
    assert {k for k in after if k.startswith("predictions/")} == {k for k in before if k.startswith("predictions/")}


def test_later_run_records_matured_outcomes_exactly_once(source, lake_dir, env):
    s = run(source, lake_dir, "2024-05-09T00:00:00Z")
    # 24h and 7d predictions made at 2024-05-01 have matured by 05-09: 5 coins x 2 horizons.
    assert s["outcomes_recorded"] == 10
    assert not s["trained"]
    outcomes = sorted(lake_dir.glob("outcomes/horizon=*/coin=*/*.json"))
    assert len(outcomes) == 10
    doc = json.loads(outcomes[0].read_text())
    assert doc["matured_ts"] <= 1715212800000 and isinstance(doc["hit"], bool)
    s2 = run(source, lake_dir, "2024-05-10T00:00:00Z")
    # 05-09's 24h predictions matured by 05-10; none of the 05-01 ones is recorded twice.
    assert s2["outcomes_recorded"] == 5
    keys = [p.relative_to(lake_dir).as_posix() for p in lake_dir.glob("outcomes/**/*.json")]
    assert len(keys) == len(set(keys)) == 15
    perf = list(lake_dir.glob("performance/horizon=24h/coin=BTC/*.json"))
    assert perf and "hit_rate" in json.loads(perf[-1].read_text())


def test_consensus_needs_agreeing_actionable_horizons():
    def p(coin, h, direction, act, conf=0.85):
        return {"coin": coin, "horizon": h, "direction": direction, "actionable": act, "confidence": conf, "p_up": 0.9}

    preds = [
        p("A", "24h", 1, True), p("A", "7d", 1, True), p("A", "30d", -1, False),  # 2 agree, the dissent is not actionable
        p("B", "24h", 1, True), p("B", "7d", -1, True),  # actionable disagreement
        p("C", "24h", -1, True), p("C", "7d", 1, False),  # only one actionable
    ]
    got = consensus(preds, 2)
    assert [s["coin"] for s in got] == ["A"] and got[0]["direction"] == "up" and got[0]["horizons"] == ["24h", "7d"]
    assert consensus(preds, 3) == []


def test_psi_is_zero_on_the_training_distribution_and_large_on_a_shift():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(5000, 3))
    ref = drift_reference(X)
    same = psi(ref, rng.normal(size=(2000, 3)))
    moved = psi(ref, rng.normal(loc=[0.0, 1.0, 0.0], size=(2000, 3)))
    assert (same < 0.02).all()
    assert moved[1] > 0.25 and moved[0] < 0.05


def test_only_horizons_with_held_out_evidence_may_be_actionable():
    from types import SimpleNamespace

    from services.predict.cycle import certification

    def model(n, hit):
        return SimpleNamespace(metadata={"metrics": {"confident": {"threshold": 0.8, "n": n, "hit_rate": hit}}})

    assert certification(model(100, 0.85), 0.8, 30) is None
    # The recorded 30d quick model: 487 held-out rows at >= 0.8 confidence hit 63.4%.
    assert "0.634 over 487 rows" in certification(model(487, 0.634), 0.8, 30)
    assert "5 rows" in certification(model(5, 1.0), 0.8, 30)
    assert "0 rows" in certification(model(0, None), 0.8, 30)


def test_uncertified_horizons_are_named_in_the_summary(lake_dir):
    summaries = [json.loads(p.read_text()) for p in lake_dir.glob("runs/*/summary.json")]
    assert summaries and all(set(s["uncertified_horizons"]) == {"24h", "7d"} for s in summaries)
    assert all(s["actionable"] == 0 for s in summaries)
