"""`cst evaluate` / `cst backtest` end to end on a small copy of the real files, and the scoring by hand."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from services.cli import main
from services.evaluation.evaluate import HorizonTest, consensus_metrics, horizon_metrics
from shared.contracts import iso_to_ms
from shared.settings import Settings
from tests.conftest import daily_source

SPLIT = "2023-07-01"
DAY = 86_400_000


small_source = daily_source


def tiny(monkeypatch) -> None:
    # One trial per member, two folds, one epoch: exercises every stage; says nothing of skill.
    monkeypatch.setenv("CST_TRAINING__BUDGETS", json.dumps({"quick": {
        "folds": 2, "trials": {"lr": 1, "gbt": 1, "gru": 1}, "timeout_s": 120, "epochs": 1, "gbt_max_estimators": 50}}))
    monkeypatch.setenv("CST_TRAINING__CALIBRATION_GRID", "64")


def test_evaluate_writes_metrics_report_and_backtest(shared_data, tmp_path, monkeypatch, capsys):
    src = small_source(shared_data, tmp_path / "data")
    out = tmp_path / "eval"
    tiny(monkeypatch)
    # A low threshold and one horizon make signals exist, so the backtest trades (a diagnostic, not the policy).
    monkeypatch.setenv("CST_CONSENSUS_MIN_HORIZONS", "1")
    assert main(["evaluate", "--source", str(src), "--train-until", SPLIT, "--horizons", "24h,7d",
                 "--threshold", "0.5", "--retrain-every", "none", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_until"] == SPLIT
    split = iso_to_ms(SPLIT)
    for h, bars in (("24h", 1), ("7d", 7)):
        m = metrics["horizons"][h]
        assert {"n", "coins", "base_rate", "brier", "brier_skill", "log_loss", "ece", "excluded", "confident"} <= set(m)
        assert m["n"] > 300 and m["coins"] == 5
        # Decision times from the split on; the last one whose label the files hold (the last close is 2024-07-01).
        assert m["first"] == "2023-07-01T00:00:00Z" and m["last"] <= "2024-06-30T00:00:00Z"
        assert set(m["confident"]) >= {"threshold", "n", "hit_rate", "wilson_low"}
        assert (m["confident"]["hit_rate"] is None) == (m["confident"]["n"] == 0)
        assert m["excluded"] == sum(m["excluded_by_reason"].values())
        assert 0 <= m["scores"]["served_outside_calibration_range"] <= 1
        # No training label window crosses the split: the last training row's label ends before it.
        meta = json.loads(next((out / "lake" / "models" / f"horizon={h}").glob("version=*/metadata.json")).read_text())
        assert iso_to_ms(meta["training_window"]["last"]) + bars * DAY < split
        # Five coins rank too few to judge which beat the others: said, not scored.
        assert set(m["cross_section"]) == {"stack P(beats)", "plain GBT P(beats)", "momentum 4w-1w", "reversal 1d"}
        assert all({k: r[k] for k in ("decision_times", "note")} ==
                   {"decision_times": 0, "note": "no decision time ranks 10 or more coins"}
                   for r in m["cross_section"].values())
        # Whether a coin beats the median of five is still a label: the probabilities are scored against 0.5.
        for name in ("stack P(beats)", "plain GBT P(beats)"):
            prob = m["cross_section"][name]["probability"]
            assert prob["n"] > 200 and -1 < prob["brier_skill_vs_half"] < 1 and 0 <= prob["ece"] < 0.5
        assert all(x["beats_skill"] for x in m["models"])
    assert {"n", "hit_rate", "wilson_low"} <= set(metrics["consensus"])
    bt = metrics["backtest"]
    assert {"total_return", "sharpe", "max_drawdown", "benchmark_total_return"} <= set(bt)
    detail = json.loads((out / "backtest.json").read_text())
    assert detail["threshold"] == 0.5 and detail["orders"] > 0
    assert set(detail["table"]) == {"strategy (guards)", "strategy (no guards)", "buy and hold BTC", "equal weight"}
    html = (out / "report.html").read_text()
    for png in ("reliability.png", "confidence.png", "equity.png", "drawdown.png", "cross_section.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{png}"' in html
    assert "wrote" in capsys.readouterr().err
    # How finely the served range's rows tell coverage from 80%, beside its misses by side.
    for h in ("24h", "7d"):
        own = metrics["horizons"][h]["ranges"]["served_own_rows"]
        res = own["calibrated_resolution"]
        assert own["coverage"] + own["miss_below"] + own["miss_above"] == pytest.approx(1.0)
        assert res["coverage"] == pytest.approx(0.8, abs=0.01) and res["windows"] > 1
        assert res["interval"][0] < 0.8 < res["interval"][1]
        assert 0 <= res["within_band_everywhere"] <= res["within_band_overall"] <= 1
    assert "own rows tell coverage from 80%: a range at exactly 80% there" in html

    # The ranges judged again on the stored rows: with the same settings, the same figures; with other range rules,
    # the served range changes and the references that do not depend on them (naive, GARCH) do not.
    before = {h: metrics["horizons"][h]["ranges"] for h in ("24h", "7d")}
    rows = {h: dict(np.load(out / "rows" / f"{h}.npz")) for h in ("24h", "7d")}
    assert main(["evaluate", "--ranges-again", "--out", str(out)]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["ranges_judged_again"]["settings"]["range_bins"] == 3
    for h in ("24h", "7d"):
        assert again["horizons"][h]["ranges"] == json.loads(json.dumps(before[h]))
        assert again["horizons"][h]["cross_section"] == metrics["horizons"][h]["cross_section"]
    monkeypatch.setenv("CST_RUN__RANGE_BINS", "1")
    assert main(["evaluate", "--ranges-again", "--out", str(out)]) == 0
    one_bin = json.loads((out / "metrics.json").read_text())
    assert one_bin["ranges_judged_again"]["settings"]["range_bins"] == 1
    for h in ("24h", "7d"):
        now = dict(np.load(out / "rows" / f"{h}.npz"))
        served = "range:served (volatility-scaled conformal)"
        assert not np.allclose(now[served], rows[h][served], equal_nan=True)
        for kept in ("range:naive rolling volatility", "range:GARCH(1,1)", "fwd", "vol", "coin"):
            np.testing.assert_array_equal(now[kept], rows[h][kept])
        assert one_bin["horizons"][h]["n"] == metrics["horizons"][h]["n"]


def _test(p, y, direction, confidence, base_rate=0.5) -> HorizonTest:
    n = len(p)
    p = np.asarray(p, float)
    return HorizonTest("24h", 0, ts=np.arange(n) * DAY, coin=np.array(["A"] * n), p_up=p, low=p, high=p,
                       confidence=np.asarray(confidence, float), direction=np.asarray(direction),
                       quantiles=np.zeros((n, 3)), score=np.log(p / (1 - p)),
                       fwd=np.where(np.asarray(y) == 1, 0.01, -0.01), y=np.asarray(y, float),
                       base_rate=np.full(n, base_rate), cal_range=np.full((n, 2), np.nan), reference=np.full(n, 0.5),
                       p_beats=np.full(n, np.nan), beats_score=np.full(n, np.nan), y_beats=np.full(n, np.nan),
                       beats_reference=np.full(n, np.nan), beats_reference_score=np.full(n, np.nan),
                       excluded={"dead_zone": 2}, horizon_ms=2 * DAY)


def test_horizon_metrics_by_hand():
    # Four rows: p = 0.9, 0.8, 0.3, 0.6; outcomes 1, 0, 0, 1.
    # Brier = (0.01 + 0.64 + 0.09 + 0.16) / 4 = 0.225. Against the training base rate 0.5: reference 0.25,
    # skill = 1 - 0.225/0.25 = 0.1. Directions up, up, down, up -> hits 1, 0, 1, 1.
    # Confident (>= 0.8): rows 0 and 1 -> n 2, hit rate 0.5.
    t = _test([0.9, 0.8, 0.3, 0.6], [1, 0, 0, 1], [1, 1, -1, 1], [0.85, 0.8, 0.6, 0.55])
    m = horizon_metrics(t, 0.8)
    assert m["brier"] == pytest.approx(0.225) and m["brier_reference"] == pytest.approx(0.25)
    assert m["brier_skill"] == pytest.approx(0.1)
    assert m["hit_rate_all"] == pytest.approx(0.75)
    assert m["confident"]["n"] == 2 and m["confident"]["hit_rate"] == pytest.approx(0.5)
    assert 0 < m["confident"]["wilson_low"] < 0.5
    assert m["excluded"] == 2
    # Predicting the base rate 0.5 everywhere against an observed 0.5: ECE 0. Four daily rows of a 2-day
    # horizon span 3 days + 2 = 5 days: 2.5 non-overlapping windows.
    assert m["ece_constant_base_rate"] == pytest.approx(0.0) and m["independent_outcomes"] == pytest.approx(2.5)
    # Scores are logit(p): 2.197, 1.386, -0.847, 0.405. Calibrated on [-1, 1]: two of four lie outside.
    assert m["scores"] is None  # no calibration metadata, no comparison
    t.cal_range = np.tile([-1.0, 1.0], (4, 1))
    assert horizon_metrics(t, 0.8)["scores"]["served_outside_calibration_range"] == pytest.approx(0.5)
    # The plain reference predicts 0.5 everywhere, as the base rate: skill 0, and the same ECE.
    assert m["references"]["plain_gbt"]["brier_skill"] == pytest.approx(0.0)
    assert m["references"]["climatology"]["brier"] == pytest.approx(0.25)
    # Two-day windows over four daily rows: windows {0, 1}, {2, 3}; a two-window bootstrap interval holds the point.
    lo, hi = m["brier_skill_interval"]
    assert lo <= 0.1 <= hi
    # With a training base rate of 0.75 the reference is worse (0.3125 vs 0.25), so the skill is higher.
    assert horizon_metrics(_test([0.9, 0.8, 0.3, 0.6], [1, 0, 0, 1], [1, 1, -1, 1], [0.85, 0.8, 0.6, 0.55], 0.75),
                           0.8)["brier_skill"] == pytest.approx(1 - 0.225 / 0.3125)


def test_consensus_hit_is_judged_over_the_shortest_agreeing_horizon():
    cfg = Settings(_env_file=None)
    from services.evaluation.evaluate import ReplayedSignal

    def signal(direction, fwd):
        return ReplayedSignal(coin="A", direction=direction, horizons=sorted(fwd), min_confidence=0.9,
                              p_up=dict.fromkeys(fwd, 0.9), ts=0, fwd=fwd)

    signals = [
        signal("up", {"24h": 0.02, "7d": -0.05}),  # hit on 24h
        signal("down", {"7d": 0.01, "30d": -0.2}),  # miss on 7d
        signal("down", {"24h": -0.01, "30d": 0.3}),  # hit on 24h
    ]
    m = consensus_metrics(cfg, signals)
    assert m["n"] == 3 and m["hit_rate"] == pytest.approx(2 / 3)
    assert consensus_metrics(cfg, [])["hit_rate"] is None


def test_backtest_command_trades_the_daily_horizons_only(shared_data, tmp_path, monkeypatch, capsys):
    src = small_source(shared_data, tmp_path / "data")
    shutil.copytree(shared_data / "ohlcv" / "1h", src / "ohlcv" / "1h")  # hourly files present, 1h not evaluated
    tiny(monkeypatch)
    monkeypatch.setenv("CST_HORIZONS", '["1h", "24h", "7d"]')
    out = tmp_path / "bt"
    assert main(["backtest", "--source", str(src), "--train-until", SPLIT, "--retrain-every", "none",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["horizons"]) == {"24h", "7d"}
    detail = json.loads((out / "backtest.json").read_text())
    assert detail["threshold"] == 0.8 and detail["from"] == "2023-07-01T00:00:00Z"
    err = capsys.readouterr().err
    assert "buy and hold BTC" in err and "equal weight" in err


def test_signal_cell_says_size_or_why_not():
    from services.cli.render import signal_cell as _signal_cell
    from shared.records import Signal

    base = {"coin": "A", "direction": "up", "horizons": ["24h", "7d"], "min_confidence": 0.9, "p_up": {}}
    assert _signal_cell(None) == ""
    ok = _signal_cell(Signal.model_validate({**base, "risk": {
        "coin": "A", "allow": True, "size_fraction": 0.042, "notional": 4200.0, "cost_bps": 15.2, "decisions": []}}))
    assert "size 4.2% of equity, cost 15.2 bps" in ok
    no = _signal_cell(Signal.model_validate({**base, "risk": {
        "coin": "A", "allow": False, "size_fraction": 0.0, "notional": 0.0, "cost_bps": None, "decisions": [
            {"guard": "drawdown", "allow": True, "scale": 1.0, "reason": ""},
            {"guard": "liquidity", "allow": False, "scale": 0.0, "reason": "volume unavailable: not tradable"}]}}))
    assert "not traded" in no and "volume unavailable" in no


def _without_versions(metrics: dict) -> dict:
    """metrics.json less what names the moment it was made (model versions are creation times)."""
    doc = json.loads(json.dumps(metrics))
    for m in doc["horizons"].values():
        m.pop("model_version")
        for w in m["models"]:
            w.pop("version"), w.pop("trained")
    return doc


# Two whole evaluations (each trains both stacks and the volatility forecast per retrain window): the suite-wide
# 300 s safety net is too tight for it on a busy 2-core machine; a hang still stops at 900 s.
@pytest.mark.timeout(900)
def test_an_evaluation_runs_again_from_its_snapshot_alone_with_the_same_figures(shared_data, tmp_path, monkeypatch):
    src = small_source(shared_data, tmp_path / "data")
    tiny(monkeypatch)
    first, again = tmp_path / "first", tmp_path / "again"
    # Retraining every 120 days: the replay repeats every retrain, warm starts from earlier windows included.
    assert main(["evaluate", "--source", str(src), "--train-until", SPLIT, "--horizons", "7d", "--retrain-every", "120d",
                 "--out", str(first)]) == 0
    snapshot = json.loads((first / "experiment.json").read_text())
    assert snapshot["args"]["horizons"] == ["7d"] and snapshot["settings"]["training"]["budgets"]["quick"]["epochs"] == 1
    assert len(snapshot["settings_hash"]) == 16 and snapshot["code_revision"] and snapshot["libraries"]["numpy"]
    # Another environment: the snapshot's settings win over it.
    monkeypatch.delenv("CST_TRAINING__BUDGETS")
    monkeypatch.setenv("CST_TRAINING__SEED", "99")
    assert main(["evaluate", "--from", str(first / "experiment.json"), "--out", str(again)]) == 0
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (first, again))
    assert a["experiment"]["settings_hash"] == b["experiment"]["settings_hash"] == snapshot["settings_hash"]
    assert _without_versions(a) == _without_versions(b)
    # Other data than the snapshot names is refused, with its code.
    (src / "ohlcv/1d/BTC-USD.csv").write_text((src / "ohlcv/1d/BTC-USD.csv").read_text()[:-200])
    assert main(["evaluate", "--from", str(first / "experiment.json"), "--out", str(tmp_path / "x")]) == 2


def test_walk_forward_retrains_each_window_on_data_before_it_only(shared_data, tmp_path, monkeypatch):
    src = small_source(shared_data, tmp_path / "data")
    out = tmp_path / "eval"
    tiny(monkeypatch)
    assert main(["evaluate", "--source", str(src), "--train-until", "2024-01-01", "--horizons", "24h",
                 "--retrain-every", "60d", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    m = metrics["horizons"]["24h"]
    # 2024-01-01 to the last labeled day (2024-06-29): windows start every 60 days.
    starts = [w["from"] for w in m["models"]]
    assert starts == ["2024-01-01T00:00:00Z", "2024-03-01T00:00:00Z", "2024-04-30T00:00:00Z", "2024-06-29T00:00:00Z"]
    for w in m["models"]:
        # The model serving a window saw no label that ends at or after the window's start.
        assert iso_to_ms(w["trained_on_data_before"]) + DAY < iso_to_ms(w["from"])
        assert w["skill"] in ("no demonstrated skill", "skill demonstrated out of sample")
    # Every window predicted its own rows; labeled rows are the predicted ones outside the dead zone.
    assert all(w["rows"] > 0 for w in m["models"][:-1]) and sum(w["rows"] for w in m["models"]) >= m["n"]
    assert len({w["trained"] for w in m["models"]}) == 4  # one retrain per window
    for key in ("range_coverage", "range_median_width", "range_naive_coverage", "brier_skill_interval", "ece_interval"):
        assert m[key] is not None, key
    assert set(m["references"]) == {"climatology", "plain_gbt"}
    html = (out / "report.html").read_text()
    assert "plain gradient-boosting" in html and 'src="ranges.png"' in html
    experiment = json.loads((out / "experiment.json").read_text())
    assert experiment["args"]["retrain_every"] == "60d"
