"""Drift verdicts on small explained inputs: the production cadence retrains a model whose data has aged."""

from __future__ import annotations

import numpy as np
import pytest

from services.predict.drift import judge
from shared.settings import RunSettings

DAY = 86_400_000


def test_a_model_older_than_the_cadence_is_retrained_without_any_drift():
    cfg = RunSettings()
    ref = {"edges": [[0.0] * 9], "proportions": [[0.1] * 10], "rows": 100}
    X = np.zeros((0, 1))
    fresh = judge(["f"], ref, X, [], 0.25, cfg, age_ms=29 * DAY, max_age_ms=30 * DAY)
    assert not fresh.retrain and fresh.model_age_days == 29
    old = judge(["f"], ref, X, [], 0.25, cfg, age_ms=30 * DAY, max_age_ms=30 * DAY)
    assert old.retrain and old.reasons == ["cadence: training data ended 30.0 days ago >= 30"]
    # Without an age the cadence is not judged (and nothing else here drifts).
    assert not judge(["f"], ref, X, [], 0.25, cfg).retrain


def outcome(coin: str, t: int, up: bool, p_up: float = 0.5):
    from shared.records import Outcome

    return Outcome(run_id="r", coin=coin, horizon="1h", decision_ts=t, matured_ts=t + 3_600_000, recorded_as_of="x",
                   recorded_by="r", realized_return=0.01 if up else -0.01, direction=1, hit=up, p_up=p_up,
                   confidence=0.5, actionable=False, model_version="v", q10=-0.02, q90=0.02)


def test_calibration_is_judged_over_decision_times_not_rows_of_one_market_move():
    cfg = RunSettings()
    ref = {"edges": [[0.0] * 9], "proportions": [[0.1] * 10], "rows": 100}
    X = np.zeros((0, 1))
    # 496 coins of one hour that all rose, each forecast at 0.5: ECE 0.5 on one market move.
    one_hour = [outcome(f"C{i}", 0, True) for i in range(496)]
    verdict = judge(["f"], ref, X, one_hour, 0.25, cfg)
    assert not verdict.retrain and verdict.ece_recent is None
    assert "496 outcomes of 1 decision times" in verdict.outcome_note
    # Ten hours, each market-wide up or down at random: judged, over every outcome of the ten hours (the last 300
    # rows widened to whole hours and to ten of them); half the hours rose, so a forecast of 0.5 is calibrated.
    hours = [outcome(f"C{i}", h * 3_600_000, h % 2 == 0) for h in range(10) for i in range(496)]
    verdict = judge(["f"], ref, X, hours, 0.25, cfg)
    assert verdict.outcome_note is None and verdict.ece_recent == pytest.approx(0.0) and not verdict.retrain
    # Twelve coins: the last 300 outcomes span 25 hours, as before.
    small = [outcome(f"C{i}", h * 3_600_000, (h + i) % 2 == 0, 0.9) for h in range(40) for i in range(12)]
    verdict = judge(["f"], ref, X, small, 0.25, cfg)
    assert verdict.ece_recent == pytest.approx(0.4) and verdict.retrain


@pytest.mark.parametrize("gap_bars", [0, 5])
def test_drift_reads_only_the_recent_window_and_reaches_back_over_gaps(tmp_path, gap_bars):
    """The rows drift compares are the last `window` decision times the model never saw, whether the store is
    unbroken or has a gap inside the window; reading them does not touch partitions outside what is needed."""
    from services.features.frame import FeatureFrame
    from services.features.store import read_frame, write_frame
    from services.predict.steps import _recent_frame
    from shared.storage import LocalLake

    lake = LocalLake(tmp_path)
    hour, window = 3_600_000, 6
    times = np.arange(40) * hour
    if gap_bars:  # a gap of `gap_bars` hours just before the last two decision times
        times = np.concatenate([times[:-2], times[-2:] + gap_bars * hour])
    coins = np.array(["AAA", "BBB"], dtype=object)
    ts = np.repeat(times, 2)
    frame = FeatureFrame("1h", ts, np.tile(coins, len(times)), np.arange(len(ts) * 2, dtype=np.float32).reshape(-1, 2),
                         ["f0", "f1"])
    write_frame(lake, frame)
    since, until = 3 * hour, int(times[-1])
    got = _recent_frame(lake, "1h", since, until, window)
    full = read_frame(lake, "1h", since_ms=since, until_ms=until)
    expected = np.unique(full.ts)[-window:]
    assert np.array_equal(np.unique(got.ts)[-window:], expected)
    assert got.ts.min() <= expected.min()
    if not gap_bars:  # an unbroken store: exactly the window's rows, not the whole span since the model's training
        assert np.array_equal(np.unique(got.ts), expected)
