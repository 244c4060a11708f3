"""The main job on real files: predictions, exclusions with reasons, outcomes once, idempotent re-runs, each step alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from services import cli
from services.predict.conformal import EXPONENTS
from services.predict.drift import psi
from services.predict.signals import consensus
from services.training.registry import drift_reference
from tests.conftest import daily_source

pytest.importorskip("torch")

COINS = ("BTC", "ETH", "XRP", "LTC", "ADA")
TINY = {"folds": 2, "trials": {"lr": 1, "gbt": 1, "gru": 1}, "timeout_s": 120, "epochs": 1, "gbt_max_estimators": 50}


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def source(shared_data, tmp_path_factory) -> Path:
    """Five real coins plus two bad ones: STALE (a real file cut at 2024-03-01) and BROKEN (a damaged header)."""
    dest = daily_source(shared_data, tmp_path_factory.mktemp("src") / "data", COINS)
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
    assert {"ingest", "validate", "features", "train", "predict", "risk", "outcomes", "performance", "drift"} <= set(s["timings"])
    assert s["status"] == "complete" and s["failures"] == []
    # One log file per horizon for the run, partitioned by the decision's date: not one per coin.
    parts = sorted(lake_dir.glob(f"predictions/horizon=*/date=2024-05-01/run_id={s['run_id']}.parquet"))
    assert len(parts) == 2
    import pyarrow.parquet as pq

    rows = [r for p in parts for r in pq.read_table(p).to_pylist()]
    assert len(rows) == 10 and {r["coin"] for r in rows} == set(COINS)
    row = rows[0]
    assert row["p_low"] <= row["p_up"] <= row["p_high"] and len(json.loads(row["top_features"])) == 5
    assert row["model_version"].startswith("v") and row["decision_ts"] == 1714521600000
    # Every prediction carries the cross-sectional target too: P(beats the universe's median), its interval, the
    # score that ranks the coins, its verdict and its own SHAP contributions.
    for r in rows:
        assert r["p_beats_low"] <= r["p_beats"] <= r["p_beats_high"] and np.isfinite(r["beats_score"])
        assert r["beats_skill"] and len(json.loads(r["beats_top_features"])) == 5
        assert r["beats_actionable"] is False  # five coins, a tiny budget: nothing certified
    assert set(s["cross_section_uncertified"]) == {"24h", "7d"} and s["cross_section_signals"] == []
    # The basket ranks the five 7d scores: one name a leg (10% of five, at least one), labelled as research.
    b = s["basket"]
    assert b["horizon"] == "7d" and b["ranked"] == 5 and len(b["long"]) == len(b["short"]) == 1
    assert b["long"][0]["weight"] == -b["short"][0]["weight"] > 0
    by_coin = {r["coin"]: r["beats_score"] for r in rows if r["horizon"] == "7d"}
    assert b["long"][0]["coin"] == max(by_coin, key=by_coin.get) and b["short"][0]["coin"] == min(by_coin, key=by_coin.get)
    # Labelled by the verdict of the stack that ranked the coins: research unless its skill was demonstrated.
    (verdict,) = {r["beats_skill"] for r in rows if r["horizon"] == "7d"}
    assert b["skill"] == verdict and verdict in b["label"]
    assert b["label"].startswith("Market-neutral" if verdict == "skill demonstrated out of sample"
                                 else "Research (no demonstrated skill)")


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


def outcome_rows(lake: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for p in sorted(lake.glob("outcomes/horizon=*/date=*/run_id=*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_later_run_records_matured_outcomes_exactly_once(source, lake_dir, env):
    s = run(source, lake_dir, "2024-05-09T00:00:00Z")
    # 24h and 7d predictions made at 2024-05-01 have matured by 05-09: 5 coins x 2 horizons.
    assert s["outcomes_recorded"] == 10
    assert not s["trained"]
    rows = outcome_rows(lake_dir)
    assert len(rows) == 10
    assert all(r["matured_ts"] <= 1715212800000 and isinstance(r["hit"], bool) for r in rows)
    s2 = run(source, lake_dir, "2024-05-10T00:00:00Z")
    # 05-09's 24h predictions matured by 05-10; none of the 05-01 ones is recorded twice.
    assert s2["outcomes_recorded"] == 5
    rows = outcome_rows(lake_dir)
    ids = [(r["horizon"], r["coin"], r["decision_ts"]) for r in rows]
    assert len(ids) == len(set(ids)) == 15
    import pyarrow.parquet as pq

    perf = [r for p in lake_dir.glob("performance/horizon=24h/date=*/run_id=*.parquet") for r in pq.read_table(p).to_pylist()]
    assert {r["coin"] for r in perf} == set(COINS) and all("hit_rate" in r for r in perf)
    # The adaptive 80% range learned from every recorded outcome, once: 10 + 5 for 24h and 7d together.
    states = [json.loads(p.read_text()) for p in lake_dir.glob("state/conformal/horizon=*.json")]
    assert sum(st["outcomes"] for st in states) == 15
    # Predictions made before any outcome carry the range the model's held-out scores calibrate, centred on no move;
    # those of 05-10 carry the one their outcomes have adapted.
    preds = predictions_of(lake_dir)
    first_day = [p for (h, c, t), p in preds.items() if t == 1714521600000]
    assert first_day and all(p["range_low"] < 0 and p["range_low"] == pytest.approx(-p["range_high"]) for p in first_day)
    tenth = [p for (h, c, t), p in preds.items() if h == "24h" and t == 1715299200000]
    assert tenth and all(p["range_low"] < p["range_high"] for p in tenth)
    # The range is a centre +- one conformal multiple of each coin's volatility forecast (to one power beta for all
    # coins): as wide as the coin's forecast volatility, centred on the model's median for every coin or on no move
    # for every coin (whichever sat closer to the outcomes), one multiple per volatility bin (at most three).
    assert all(p["vol_forecast"] > 0 for p in preds.values())
    centres = [(p["range_low"] + p["range_high"]) / 2 for p in tenth]
    on_median = all(c == pytest.approx(p["q50"]) for c, p in zip(centres, tenth))
    assert on_median or all(c == pytest.approx(0.0, abs=1e-12) for c in centres)
    multiples = {beta: [(p["range_high"] - c) / p["vol_forecast"] ** beta for c, p in zip(centres, tenth)]
                 for beta in EXPONENTS}
    assert any(len({round(m, 9) for m in ms}) <= 3 and min(ms) > 0 for ms in multiples.values()), multiples
    # Every prediction carries its model's verdict on skill; a base-rate horizon serves one probability.
    assert all(p["skill"] in ("no demonstrated skill", "skill demonstrated out of sample") for p in preds.values())
    for h in ("24h", "7d"):
        served = {round(p["p_up"], 6) for (ph, c, t), p in preds.items() if ph == h and p["skill"] == "no demonstrated skill"}
        assert len(served) <= 1, (h, served)


def test_the_books_step_with_each_daily_run_and_agree_with_the_replayed_backtest_to_the_cent(lake_dir):
    from services.books import store
    from shared.storage import LocalLake

    lake = LocalLake(lake_dir)
    research, signals = store.load_state(lake, "research"), store.load_state(lake, "signals")
    day = 86_400_000
    # Runs at 05-01, 05-09 and 05-10 (and 05-01 again, which changed nothing): ten closes, three steps.
    for book in (research, signals):
        assert book.start_ts == 1714521600000 and book.last_close_ts == 1715299200000
        assert [m.ts for m in book.marks] == [1714521600000 + k * day for k in range(10)]
        assert len(book.runs) == 3
    # The research book holds the 7d basket (one long, one short of five), dollar-neutral at its last rebalance.
    assert len(research.holdings) == 2 and sorted(u > 0 for u in research.holdings.values()) == [False, True]
    steps = store.steps(lake, "research")
    assert [len(s.closes) for s in steps] == [1, 8, 1] and "without a run of their own" in steps[1].note
    assert all(f.action == "rebalance" and f.ts in (1714521600000, 1715212800000, 1715299200000)
               for s in steps for f in s.fills)
    assert research.fees > 0 and research.impact > 0
    # Nothing reached 80%: the signals book holds cash and pays nothing.
    assert not signals.positions and signals.marks[-1].equity == 100_000.0
    # The backtest replayed from the logged predictions alone: the same fills, equity equal to the cent.
    assert cli.main(["reconcile", "--lake", str(lake_dir)]) == 0
    rec = store.load_reconciliation(lake)
    assert rec.verdict == "the books and the replay agree to the cent" and rec.differences == [] and abs(rec.books["research"]["gap"]) < 0.005
    assert rec.books["research"]["fills"] == rec.books["research"]["replay_trades"] > 0


def test_consensus_needs_agreeing_actionable_horizons():
    from types import SimpleNamespace

    def p(coin, h, direction, act, conf=0.85):
        return SimpleNamespace(coin=coin, horizon=h, direction=direction, actionable=act, confidence=conf, p_up=0.9,
                               q10=-0.01, q50=0.0, q90=0.01, decision_ts=0)

    preds = [
        p("A", "24h", 1, True), p("A", "7d", 1, True), p("A", "30d", -1, False),  # 2 agree, the dissent is not actionable
        p("B", "24h", 1, True), p("B", "7d", -1, True),  # actionable disagreement
        p("C", "24h", -1, True), p("C", "7d", 1, False),  # only one actionable
    ]
    got = consensus(preds, 2)
    assert [s.coin for s in got] == ["A"] and got[0].direction == "up" and got[0].horizons == ["24h", "7d"]
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
    from services.predict.steps import certification
    from shared.records import ModelMetadata

    def model(n, hit, skill=True):
        return ModelMetadata(
            horizon="30d", version="v1", timeframe="1d", bars=30, features=["r1"],
            training_window={"first": "2020-01-01T00:00:00Z", "last": "2024-01-01T00:00:00Z", "rows": 1, "coins": []},
            metrics={"confident": {"threshold": 0.8, "n": n, "hit_rate": hit}},
            skill=None if skill is None else {"demonstrated": skill})

    assert certification(model(100, 0.85), 0.8, 30) is None
    # A strong confident bucket does not certify a horizon whose skill was not shown out of sample.
    assert certification(model(100, 0.85, skill=False), 0.8, 30) == "no demonstrated skill"
    assert "predates" in certification(model(100, 0.85, skill=None), 0.8, 30)
    # The recorded 30d quick model: 487 held-out rows at >= 0.8 confidence hit 63.4%.
    assert "0.634 over 487 rows" in certification(model(487, 0.634), 0.8, 30)
    assert "5 rows" in certification(model(5, 1.0), 0.8, 30)
    assert "0 rows" in certification(model(0, None), 0.8, 30)


def test_uncertified_horizons_are_named_in_the_summary(lake_dir):
    summaries = [json.loads(p.read_text()) for p in lake_dir.glob("runs/*/summary.json")]
    assert summaries and all(set(s["uncertified_horizons"]) == {"24h", "7d"} for s in summaries)
    assert all(s["actionable"] == 0 for s in summaries)


def test_an_operators_retrain_asks_only_for_its_horizon_and_the_schedule_for_all(source, lake_dir, env):
    from services.predict.steps import drift
    from shared.contracts import iso_to_ms
    from shared.pipeline.context import StepContext
    from shared.runs import new_ref
    from shared.settings import Settings
    from shared.storage import LocalLake

    settings = Settings()
    ctx = StepContext(settings, LocalLake(lake_dir))
    ref = new_ref(settings, str(source), iso_to_ms("2024-05-02T00:00:00Z"))
    assert drift(ctx, ref).retrain == []  # drift off in this module: nothing asks
    one = drift(ctx, ref.model_copy(update={"retrain": True, "retrain_only": ["7d"]}))
    assert one.retrain == ["7d"] and "retrain asked by an operator" in one.report["7d"].reasons
    assert not one.report["24h"].retrain
    assert sorted(drift(ctx, ref.model_copy(update={"retrain": True})).retrain) == ["24h", "7d"]


def test_no_retrain_judges_and_reports_but_trains_nothing(source, lake_dir, env):
    """`cst run --no-retrain`: the drift step still says retraining is due and why; the retrain step defers it and
    every model stays as it was."""
    from services.orchestrator import runner
    from shared.contracts import iso_to_ms
    from shared.pipeline.context import StepContext
    from shared.runs import new_ref
    from shared.settings import Settings
    from shared.storage import LocalLake

    settings = Settings()
    lake = LocalLake(lake_dir)
    ctx = StepContext(settings, lake)
    current = {h: lake.get(f"models/horizon={h}/CURRENT") for h in ("24h", "7d")}
    ref = new_ref(settings, str(source), iso_to_ms("2024-05-03T00:00:00Z"), retrain=True, no_retrain=True)
    assert runner.run_step(ctx, "drift", ref).retrain == ["24h", "7d"]
    out = runner.run_step(ctx, "retrain", ref)
    assert out.deferred == {"24h": "scheduled full retrain", "7d": "scheduled full retrain"}
    assert out.trained == {} and out.complete
    assert {h: lake.get(f"models/horizon={h}/CURRENT") for h in current} == current


def test_calibration_drift_is_judged_on_the_serving_models_own_outcomes(source, lake_dir, env, monkeypatch, tmp_path):
    """Outcomes of a replaced model must not retrain its successor again and again."""
    from services.predict import logbook
    from services.predict.steps import drift
    from shared.contracts import iso_to_ms
    from shared.pipeline.context import StepContext
    from shared.records import Outcome
    from shared.registry import current_version
    from shared.runs import new_ref
    from shared.settings import Settings
    from shared.storage import LocalLake

    lake_copy = tmp_path / "lake"
    shutil.copytree(lake_dir, lake_copy)
    monkeypatch.setenv("CST_RUN__MIN_OUTCOMES", "20")
    settings = Settings()
    lake = LocalLake(lake_copy)
    serving = current_version(lake, "24h")
    # Confident forecasts that all went the other way: ECE 0.9, far above any threshold.
    wrong = [Outcome(run_id="r", coin=f"C{i}", horizon="24h", decision_ts=1_700_000_000_000 + i, matured_ts=0,
                     recorded_as_of="", recorded_by="r", realized_return=-0.01, direction=1, hit=False, p_up=0.9,
                     confidence=0.9, actionable=False, model_version="an-older-model", q10=-0.02, q90=0.02)
             for i in range(40)]
    logbook.absorb(lake, "24h", "older", wrong, per_coin=60, overall=2000)
    ctx = StepContext(settings, lake)
    ref = new_ref(settings, str(source), iso_to_ms("2024-05-02T00:00:00Z"))
    report = drift(ctx, ref).report["24h"]
    own = report.outcomes_of_this_model  # what the earlier runs of this module recorded
    assert own < 20 and report.outcomes == own + 40
    assert report.ece_recent is None and not report.retrain
    mine = [w.model_copy(update={"coin": f"D{i}", "model_version": serving}) for i, w in enumerate(wrong)]
    logbook.absorb(lake, "24h", "newer", mine, per_coin=60, overall=2000)
    report = drift(ctx, ref).report["24h"]
    assert report.outcomes_of_this_model == own + 40 and report.retrain
    assert any(r.startswith("calibration drift") for r in report.reasons)


def copy_models(src: Path, dest: Path) -> None:
    shutil.copytree(src / "models", dest / "models")


def predictions_of(lake: Path) -> dict[tuple, dict]:
    import pyarrow.parquet as pq

    rows = [r for p in lake.glob("predictions/horizon=*/date=*/run_id=*.parquet") for r in pq.read_table(p).to_pylist()]
    return {(r["horizon"], r["coin"], r["decision_ts"]): r for r in rows}


def test_each_step_runs_alone_from_what_the_previous_step_stored(source, lake_dir, env, tmp_path, capsys):
    from shared.pipeline.definition import PIPELINE

    alone, whole = tmp_path / "alone", tmp_path / "whole"
    copy_models(lake_dir, alone)
    copy_models(lake_dir, whole)
    as_of = "2024-05-03T00:00:00Z"
    # A step whose input is not stored yet says so with a code, and stores nothing for itself.
    assert cli.main(["step", "ingest", "--source", str(source), "--as-of", as_of, "--lake", str(alone)]) == 0
    ingested = json.loads(capsys.readouterr().out)
    run_id = ingested["run_id"]
    # The parsed series as fetched, one content-addressed part per layer and timeframe.
    assert [k.rsplit("/", 1)[0] for k in ingested["staged"]] == ["staging/layer=ohlcv/timeframe=1d",
                                                                  "staging/layer=sentiment/timeframe=1d"]
    assert all((alone / k).is_file() for k in ingested["staged"])
    expected = {
        "validate": [f"quality/run_id={run_id}/report.json", f"clean/run_id={run_id}/layer=ohlcv/timeframe=1d/part.parquet"],
        "features": ["features/timeframe=1d/date=2024-05/part.parquet", "panels/timeframe=1d/date=2024-05/part.parquet"],
        "predict": [f"predictions/horizon=24h/date=2024-05-03/run_id={run_id}.parquet",
                    f"predictions/horizon=7d/date=2024-05-03/run_id={run_id}.parquet"],
        "summary": [f"runs/run_id={run_id}/summary.json"],
    }
    for step in PIPELINE[1:]:
        items = ["24h", "7d"] if step.map_over else [None]
        for item in items:
            argv = ["step", step.name, "--run-id", run_id, "--lake", str(alone)] + (["--item", item] if item else [])
            assert cli.main(argv) == 0, step.name
            out = json.loads(capsys.readouterr().out)
            assert out["step"] == step.name and out["run_id"] == run_id
            assert (alone / f"runs/run_id={run_id}/steps/{step.name}{'/' + item if item else ''}.json").is_file()
        for key in expected.get(step.name, []):
            assert (alone / key).is_file(), (step.name, key)
    # Step by step gives what one `cst run` gives.
    run(source, whole, as_of)
    assert predictions_of(alone) == predictions_of(whole) and len(predictions_of(alone)) == 10
    a, w = (json.loads((lk / f"runs/run_id={run_id}/summary.json").read_text()) for lk in (alone, whole))
    for doc in (a, w):
        doc.pop("timings")
    assert a == w


def test_a_run_stopped_after_logging_its_predictions_and_run_again_counts_them_as_its_own(
        source, lake_dir, env, tmp_path):
    """Stopped after a horizon's predictions were logged and before its step was recorded (a kill can land there),
    the run, run again, predicts that horizon again: the logged file is kept, and the summary is that of a run never
    stopped (its new predictions are its own, not an earlier run's)."""
    as_of = "2024-05-06T00:00:00Z"
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    for lake in (whole, stopped):
        copy_models(lake_dir, lake)
    expected = run(source, whole, as_of)
    first = run(source, stopped, as_of)
    steps = stopped / f"runs/run_id={first['run_id']}/steps"
    cut = (steps / "predict/7d.json").stat().st_mtime_ns
    for p in [*steps.rglob("*.json"), steps.parent / "summary.json"]:
        if p.stat().st_mtime_ns >= cut:  # the 7d step's record and everything recorded after it
            p.unlink()
    logged = {p: p.read_bytes() for p in stopped.glob("predictions/horizon=7d/date=*/*.parquet")}
    assert logged and not (steps / "predict/7d.json").exists()
    again = run(source, stopped, as_of)
    assert {p: p.read_bytes() for p in stopped.glob("predictions/horizon=7d/date=*/*.parquet")} == logged
    assert again["run_id"] == first["run_id"] and again["new_predictions"] == expected["new_predictions"] == 10
    for key in ("predictions", "coins_predicted", "actionable", "excluded", "served_from_earlier_runs"):
        assert again[key] == expected[key], key


def test_a_step_without_its_stored_input_fails_with_a_code(source, tmp_path, env, capsys):
    assert cli.main(["step", "ingest", "--source", str(source), "--as-of", "2024-05-03T00:00:00Z",
                     "--lake", str(tmp_path)]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert cli.main(["step", "features", "--run-id", run_id, "--lake", str(tmp_path)]) == 2
    assert "lake_key_not_found" in capsys.readouterr().err
    assert not (tmp_path / f"runs/run_id={run_id}/steps/features.json").exists()
    assert cli.main(["step", "predict", "--run-id", run_id, "--lake", str(tmp_path)]) == 2
    assert "step_needs_item" in capsys.readouterr().err


def test_hourly_runs_predict_each_daily_decision_once_and_count_its_outcome_once(source, lake_dir, env, tmp_path):
    import pyarrow.parquet as pq

    lake = tmp_path / "lake"
    copy_models(lake_dir, lake)
    summaries = [run(source, lake, f"2024-05-11T{hour:02d}:00:00Z") for hour in range(24)]
    first = summaries[0]
    assert first["new_predictions"] == 10
    for s in summaries[1:]:
        # Every later hour serves the same daily decision (05-11 00:00) from the run that predicted it.
        assert s["new_predictions"] == 0 and s["predictions"] == 10
        assert s["served_from_earlier_runs"] == {"24h": first["run_id"], "7d": first["run_id"]}
    for h in ("24h", "7d"):
        (part,) = lake.glob(f"predictions/horizon={h}/date=2024-05-11/run_id=*.parquet")
        rows = pq.read_table(part).to_pylist()
        assert sorted(r["coin"] for r in rows) == sorted(COINS)
        assert {r["decision_ts"] for r in rows} == {1715385600000}
    later = run(source, lake, "2024-05-12T06:00:00Z")
    # The 24h decision of 05-11 matured at 05-12 00:00: one outcome per coin, not one per hourly run.
    assert later["outcomes_recorded"] == 5
    ids = [(r["horizon"], r["coin"], r["decision_ts"]) for r in outcome_rows(lake)]
    assert len(ids) == len(set(ids)) == 5


def test_hourly_runs_leave_the_books_and_a_missed_daily_run_is_a_difference_with_its_cause(
        source, lake_dir, env, tmp_path):
    from services.books import store
    from shared.storage import LocalLake

    lake = tmp_path / "lake"
    copy_models(lake_dir, lake)
    run(source, lake, "2024-05-11T00:00:00Z")
    books = LocalLake(lake)
    at_midnight = {p.relative_to(lake).as_posix(): p.read_bytes() for p in (lake / "books").rglob("*") if p.is_file()}
    assert {k.split("/")[1] for k in at_midnight} == {"book=research", "book=signals"}
    for hour in (1, 13):
        run(source, lake, f"2024-05-11T{hour:02d}:00:00Z")
    # A run between daily closes fills nothing at a close already past: the books are byte for byte the same.
    assert {p.relative_to(lake).as_posix(): p.read_bytes() for p in (lake / "books").rglob("*")
            if p.is_file()} == at_midnight
    # 05-12's decisions are made by a 06:00 run, which moves no book; the 05-13 run advances through 05-12 without
    # following them. The replay follows the log, so it rebalances at 05-12: a difference, and its cause.
    run(source, lake, "2024-05-12T06:00:00Z")
    run(source, lake, "2024-05-13T00:00:00Z")
    assert store.load_state(books, "research").last_close_ts == 1715558400000
    assert cli.main(["reconcile", "--lake", str(lake)]) == 0
    rec = store.load_reconciliation(books)
    assert rec.unexplained == 0 and rec.differences
    assert {d.cause for d in rec.differences} == {"missed_run"}
    assert {d.ts for d in rec.differences} == {1715472000000}
    assert rec.verdict.endswith("every one with its cause")
    # --from lists the differences from a date on (the replay still starts where the books did), as JSON.
    assert cli.main(["reconcile", "--lake", str(lake), "--from", "2024-05-13", "--format", "json"]) == 0
    later = store.load_reconciliation(books)
    assert later.from_ts == 1715558400000 and later.differences == [] and later.unexplained == 0
    assert later.books["research"]["differences_before"] == len(rec.differences)
    assert later.books["research"]["gap"] == rec.books["research"]["gap"]


def test_a_failed_retrain_keeps_current_names_the_failure_and_a_rerun_finishes_the_run(
        source, lake_dir, env, tmp_path, monkeypatch):
    import services.training.train as train_mod

    lake = tmp_path / "lake"
    copy_models(lake_dir, lake)
    current = {h: (lake / f"models/horizon={h}/CURRENT").read_text() for h in ("24h", "7d")}
    # Every feature counts as drifting on a short window: both horizons ask for a retrain.
    for key, value in (("CST_RUN__DRIFT_WINDOW", '{"1d": 5, "1h": 5}'), ("CST_RUN__PSI_MIN_ROWS", "5"),
                       ("CST_RUN__PSI_THRESHOLD", "0"), ("CST_RUN__PSI_FEATURE_SHARE", "0")):
        monkeypatch.setenv(key, value)
    real = train_mod.train_horizon

    def broken(horizon, *a, **k):
        if horizon == "24h":
            raise RuntimeError("24h/lr: no trial completed within the budget")
        return real(horizon, *a, **k)

    monkeypatch.setattr(train_mod, "train_horizon", broken)
    as_of = "2024-05-20T00:00:00Z"
    assert cli.main(["run", "--source", str(source), "--lake", str(lake), "--as-of", as_of]) == 1
    (path,) = lake.glob("runs/*/summary.json")
    s = json.loads(path.read_text())
    assert s["status"] == "failed" and s["drift"]["24h"]["retrain"]
    assert s["failures"] == [{"step": "retrain", "item": "24h", "code": "training_failed",
                              "message": "RuntimeError: 24h/lr: no trial completed within the budget"}]
    assert (lake / "models/horizon=24h/CURRENT").read_text() == current["24h"]  # kept
    assert s["retrained"]["7d"]["version"]  # the other horizon was retrained all the same
    logged = snapshot(lake)
    # The same as-of again, with training repaired: only the failed retrain runs; nothing that landed changes.
    monkeypatch.setattr(train_mod, "train_horizon", real)
    assert cli.main(["run", "--source", str(source), "--lake", str(lake), "--as-of", as_of]) == 0
    s2 = json.loads(path.read_text())
    assert s2["status"] == "complete" and s2["failures"] == []
    assert s2["retrained"]["7d"] == s["retrained"]["7d"] and s2["retrained"]["24h"]["version"]
    after = snapshot(lake)
    for key, blob in logged.items():
        if key.startswith(("predictions/", "outcomes/", "performance/", "raw/", "staging/")):
            assert after[key] == blob, key
    assert {k for k in after if k.startswith("predictions/")} == {k for k in logged if k.startswith("predictions/")}


def test_a_coin_that_stops_trading_has_its_matured_predictions_settled_as_no_outcome(shared_data, tmp_path, env,
                                                                                     capsys):
    """GONE is DOGE's real daily file cut after 2024-05-04: predicted at 05-01, its prices end before the 7-day
    horizon does. At 05-09 its two predictions are reported as "no outcome: stopped trading" (its series is stale
    then, so the run reads none of its prices after 05-01), the other coins' outcomes are recorded, nothing is
    dropped silently."""
    import pyarrow.parquet as pq

    coins = ("BTC", "ETH", "XRP")
    src = daily_source(shared_data, tmp_path / "data", coins)
    lines = (shared_data / "ohlcv/1d/DOGE-USD.csv").read_text().splitlines(keepends=True)
    (src / "ohlcv/1d/GONE-USD.csv").write_text(lines[0] + "".join(ln for ln in lines[1:] if ln < "2024-05-05"))
    lake = tmp_path / "lake"
    first = run(src, lake, "2024-05-01T00:00:00Z")
    assert first["coins_predicted"] == 4
    capsys.readouterr()
    later = run(src, lake, "2024-05-09T00:00:00Z")
    said = "".join(capsys.readouterr())
    assert later["outcomes_recorded"] == 2 * len(coins)
    assert later["no_outcome"] == {"24h": {"stopped_trading": 1}, "7d": {"stopped_trading": 1}}
    assert "7d: 1 matured predictions have no outcome: 1 stopped trading" in " ".join(said.split())
    rows = [r for p in lake.glob("outcomes/horizon=*/date=*/no_outcome/run_id=*.parquet")
            for r in pq.read_table(p).to_pylist()]
    assert sorted((r["horizon"], r["coin"], r["reason"]) for r in rows) == \
        [("24h", "GONE", "stopped_trading"), ("7d", "GONE", "stopped_trading")]
    assert all(r["decision_ts"] == 1714521600000 and r["recorded_by"] == later["run_id"] for r in rows)
    # Recorded once: the next day's run finds nothing more to settle for 05-01.
    again = run(src, lake, "2024-05-10T00:00:00Z")
    assert again["no_outcome"] == {}
