"""Each quality rule on tiny hand-made series with explained numbers; the gate's invariants under hypothesis."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from services.features.quality.gate import judge, publication_lag_ms, quarantine_documents, run_gate
from services.features.quality.rules import RULES
from shared.contracts import Series
from shared.errors import CstError
from shared.settings import QualitySettings

DAY = 86_400_000
HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
OHLCV = ("open", "high", "low", "close", "volume")


def make(layer: str, timeframe: str, ts: list[int], symbol: str = "X-USD", **fields: list[float]) -> Series:
    """A series whose origin text is its row number, so tests can tell which rows went where."""
    return Series(
        layer,
        timeframe,
        symbol,
        "test",
        np.asarray(ts, dtype=np.int64),
        {k: np.asarray(v, dtype=np.float64) for k, v in fields.items()},
        [f"row{i}" for i in range(len(ts))],
    )


def candles(days: list[int], close: list[float] | None = None, **overrides: list[float]) -> Series:
    """Daily candles on T0 + day; by default open = close = 100, high 101, low 99, volume 10."""
    n = len(days)
    close = close if close is not None else [100.0] * n
    fields = {"open": list(close), "high": [c * 1.01 for c in close], "low": [c * 0.99 for c in close],
              "close": list(close), "volume": [10.0] * n}  # fmt: skip
    fields.update(overrides)
    return make("ohlcv", "1d", [T0 + d * DAY for d in days], **fields)


def only(*rules: str, **knobs) -> QualitySettings:
    return QualitySettings(rules=list(rules), **knobs)


def late(series: Series) -> int:
    """An as-of well after every row is published (a day after the last candle closed)."""
    return int(series.ts.max()) + 2 * DAY


def gate(series: Series, settings: QualitySettings, as_of: int | None = None):
    report, state, _ = judge(series, late(series) if as_of is None else as_of, settings)
    return report, state


# ---- one rule at a time -------------------------------------------------------------------------------------


def test_duplicates_drop_identical_repeats_and_quarantine_conflicting_timestamps():
    # day 1 twice, identical; day 2 three times, the middle copy differs.
    s = candles([0, 1, 1, 2, 2, 2, 3], close=[100, 101, 101, 102, 103, 102, 104])
    report, state = gate(s, only("duplicates"))
    assert report.issues == {"duplicate_identical": 1, "duplicate_conflict": 3}
    assert state.series.origin == ["row0", "row1", "row6"]
    assert sorted(r.row for r in state.rejected) == ["row3", "row4", "row5"]
    assert {r.rule for r in state.rejected} == {"duplicate_conflict"}
    assert report.status == "quarantined"


def test_duplicates_keep_the_first_copy_wherever_the_repeat_sits():
    s = candles([0, 1, 2, 1], close=[100, 101, 102, 101])
    report, state = gate(s, only("duplicates"))
    assert report.issues == {"duplicate_identical": 1}
    assert state.series.origin == ["row0", "row1", "row2"]
    assert report.status == "ok"


def test_non_monotonic_counts_backward_steps_and_reorders_whole_rows():
    s = candles([0, 2, 1, 3], close=[100, 102, 101, 103])
    report, state = gate(s, only("non_monotonic"))
    assert report.issues == {"non_monotonic": 1}  # only 2 -> 1 steps back
    assert state.series.origin == ["row0", "row2", "row1", "row3"]
    assert state.series.fields["close"].tolist() == [100, 101, 102, 103]  # values travel with their time
    reversed_ = candles([4, 3, 2, 1, 0])
    assert gate(reversed_, only("non_monotonic"))[0].issues == {"non_monotonic": 4}


def test_non_positive_price_rejects_zero_and_negative_prices_only_on_price_layers():
    s = candles([0, 1, 2], close=[100, 0, 100], low=[99, 0, -1])
    report, state = gate(s, only("non_positive_price"))
    assert report.issues == {"non_positive_price": 2}
    assert [r.row for r in state.rejected] == ["row1", "row2"]
    # Fear & Greed 0 is "extreme fear", a legal value, and not a price.
    fg = make("sentiment", "1d", [T0], symbol="market", value=[0.0])
    assert gate(fg, only("non_positive_price"))[0].issues == {}


def test_out_of_range_bounds_per_layer():
    fg = make("sentiment", "1d", [T0 + i * DAY for i in range(5)], symbol="market", value=[0, 100, 100.5, -1, 50])
    report, state = gate(fg, only("out_of_range"))
    assert report.issues == {"out_of_range": 2}  # 0 and 100 are the documented ends and stay
    assert [r.row for r in state.rejected] == ["row2", "row3"]
    chain = make("onchain", "1d", [T0, T0 + DAY], symbol="BTC.hash-rate", value=[-0.1, 0.0])
    assert gate(chain, only("out_of_range"))[0].issues == {"out_of_range": 1}
    # 150 is a fine hash rate: the 0..100 range is the sentiment index's only.
    assert gate(make("onchain", "1d", [T0], symbol="BTC.x", value=[150.0]), only("out_of_range"))[0].issues == {}


def test_ohlc_inconsistent_with_float_export_tolerance():
    tol = 1e-6
    close = [100.0, 100.0, 100.0, 100.0]
    # row1: high a rounding error below close (kept); row2: high 0.1% below close; row3: low above open.
    s = candles([0, 1, 2, 3], close=close, high=[101, 100 * (1 - tol / 10), 99.9, 101], low=[99, 99, 99, 100.5])
    report, state = gate(s, only("ohlc_inconsistent", ohlc_rel_tol=tol))
    assert report.issues == {"ohlc_inconsistent": 2}
    assert [r.row for r in state.rejected] == ["row2", "row3"]


def test_negative_volume_rejects_any_negative_quantity_but_not_zero():
    s = candles([0, 1, 2], volume=[0, -1, 5])
    report, state = gate(s, only("negative_volume"))
    assert report.issues == {"negative_volume": 1}
    assert [r.row for r in state.rejected] == ["row1"]
    binance = candles([0, 1], trades=[3, -3])
    assert gate(binance, only("negative_volume"))[0].issues == {"negative_volume": 1}


def test_volume_unavailable_above_the_zero_share_only():
    days = list(range(20))
    # 1 zero in 20 = 5%, exactly the allowed share: a genuinely quiet candle, volume stays usable.
    one = candles(days, volume=[0.0] + [10.0] * 19)
    assert gate(one, only("volume_unavailable", zero_volume_max_share=0.05))[0].issues == {}
    # 2 in 20 = 10%: the source does not publish volume; every volume field of the series is unusable.
    two = candles(days, volume=[0.0, 0.0] + [10.0] * 18, quote_volume=[5.0] * 20)
    report, state = gate(two, only("volume_unavailable", zero_volume_max_share=0.05))
    assert report.issues == {"volume_unavailable": 2}
    assert report.unavailable_fields == ["quote_volume", "volume"]
    assert report.status == "ok" and report.rows == 20  # prices stay usable; nothing is rejected


def test_gap_counts_missing_steps():
    s = candles([0, 1, 2, 5, 6, 9])  # days 3, 4 and 7, 8 are missing
    report, _ = gate(s, only("gap"))
    assert report.issues == {"gap": 4}
    assert report.status == "ok"
    assert [e.ts for e in report.examples["gap"]] == ["2024-01-03T00:00:00Z", "2024-01-07T00:00:00Z"]


def _closes(returns: list[float]) -> list[float]:
    return (100 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))).tolist()


# Log returns -0.01, 0, +0.01 twice: median 0, absolute deviations 0, 0, .01 x4 -> MAD 0.01,
# robust sigma 0.01 * 1.4826 = 0.014826. A last return of 0.18 has z = 12.14, of 0.17 z = 11.47.
QUIET = [-0.01, 0.0, 0.01, -0.01, 0.0, 0.01]


@pytest.mark.parametrize(("jump", "flagged"), [(0.18, 1), (0.17, 0), (-0.18, 1)])
def test_outlier_return_robust_z(jump, flagged):
    z = jump / (0.01 * 1.4826)
    assert (abs(z) >= 12) == bool(flagged)
    s = candles(list(range(8)), close=_closes([*QUIET, jump]))
    report, state = gate(s, only("outlier_return", outlier_z=12.0))
    assert report.issues.get("outlier_return", 0) == flagged
    if flagged:
        (example,) = report.examples["outlier_return"]
        assert example.ts == "2024-01-08T00:00:00Z"  # the candle the jump lands on
        assert f"z={z:+.1f}" in example.detail
    # Flagged, never altered or removed.
    assert state.series.fields["close"].tolist() == s.fields["close"].tolist()
    assert report.status == "ok"


def test_outlier_return_ignores_a_return_across_a_gap():
    # The same 0.18 move, but spread over three days (two missing): not one period's return.
    s = candles([0, 1, 2, 3, 4, 5, 6, 9], close=_closes([*QUIET, 0.18]))
    assert gate(s, only("outlier_return", outlier_z=12.0))[0].issues == {}


def test_outlier_return_is_silent_when_most_returns_are_exactly_zero():
    # A pegged price: MAD is 0, the robust z is undefined, and nothing is flagged, even a 5% move.
    s = candles(list(range(8)), close=[1.0] * 7 + [1.05])
    assert gate(s, only("outlier_return"))[0].issues == {}


def test_stale_boundary_is_the_configured_number_of_timeframes():
    s = candles([0, 1, 2])
    last = int(s.ts[-1])
    knobs = only("stale", stale_timeframes=2.0)
    fresh, _ = gate(s, knobs, as_of=last + 2 * DAY)
    old, _ = gate(s, knobs, as_of=last + 2 * DAY + 1)
    assert (fresh.status, fresh.issues) == ("ok", {})
    assert (old.status, old.issues) == ("excluded", {"stale": 1})
    assert old.rows == 3  # the rows are fine; the feed stopped


def test_hourly_stale_is_measured_in_hours():
    s = make("ohlcv", "1h", [T0 + h * HOUR for h in range(5)], **{f: [1.0] * 5 for f in OHLCV})
    report, _ = gate(s, only("stale"), as_of=T0 + 4 * HOUR + 3 * HOUR)
    assert report.issues == {"stale": 1}


def test_visibility_uses_the_layer_publication_lag():
    knobs = only(publication_lag={"ohlcv": "timeframe", "sentiment": "1h", "onchain": "25h"})
    daily = candles([0, 1, 2])
    # A candle opening at day 2 closes (is published) at day 3.
    at_close, _ = gate(daily, knobs, as_of=T0 + 3 * DAY)
    before_close, _ = gate(daily, knobs, as_of=T0 + 3 * DAY - 1)
    assert (at_close.rows, at_close.after_as_of) == (3, 0)
    assert (before_close.rows, before_close.after_as_of) == (2, 1)
    fg = make("sentiment", "1d", [T0, T0 + DAY], symbol="market", value=[10, 20])
    assert gate(fg, knobs, as_of=T0 + DAY + HOUR)[0].after_as_of == 0
    assert gate(fg, knobs, as_of=T0 + DAY + HOUR - 1)[0].after_as_of == 1
    chain = make("onchain", "1d", [T0, T0 + DAY], symbol="BTC.x", value=[1, 2])
    assert gate(chain, knobs, as_of=T0 + DAY + 25 * HOUR - 1)[0].after_as_of == 1
    assert publication_lag_ms("ohlcv", "4h", knobs) == 4 * HOUR


def test_no_data_before_the_first_row_is_published_and_for_an_empty_series():
    s = candles([0, 1])
    report, _ = gate(s, QualitySettings(), as_of=T0)
    assert (report.status, report.issues, report.after_as_of) == ("excluded", {"no_data": 1}, 2)
    assert report.examples["no_data"][0].detail == "no rows published by as-of"
    empty, _ = gate(candles([]), QualitySettings(), as_of=T0)
    assert (empty.status, empty.issues) == ("excluded", {"no_data": 1})


def test_every_row_rejected_leaves_no_data():
    s = candles([0, 1], close=[0.0, -1.0])
    report, _ = gate(s, QualitySettings())
    assert report.status == "excluded"
    assert report.issues == {"non_positive_price": 2, "no_data": 1}
    assert report.rejected_rows == 2


def test_exclusion_outranks_quarantine():
    s = candles([0, 1, 2], close=[100, 0, 100])
    report, _ = gate(s, QualitySettings(), as_of=int(s.ts[-1]) + 10 * DAY)
    assert report.issues["non_positive_price"] == 1 and report.issues["stale"] == 1
    assert report.status == "excluded"


def test_unknown_rule_is_a_typed_error():
    with pytest.raises(CstError) as info:
        gate(candles([0, 1]), only("duplicates", "no_such_rule"))
    assert info.value.code == "unknown_rule"
    assert "no_such_rule" in info.value.message


def test_every_configured_rule_is_registered():
    assert set(QualitySettings().rules) <= set(RULES)


def test_two_sources_for_one_series_is_an_error_and_parts_of_one_source_are_one_series():
    other = candles([1])
    other.source = "elsewhere"
    with pytest.raises(CstError) as info:
        run_gate([candles([0]), other], T0 + 3 * DAY, QualitySettings())
    assert info.value.code == "series_key_clash" and "elsewhere" in info.value.message
    # Two files of one source (monthly dumps, a history and its continuation): one series, repeats dropped.
    out = run_gate([candles([0, 1]), candles([1, 2])], T0 + 4 * DAY, only("duplicates"))
    [(key, s)] = out.clean.items()
    assert s.ts.tolist() == [T0, T0 + DAY, T0 + 2 * DAY]


def test_quarantine_documents_are_keyed_by_their_content():
    s = candles([0, 1, 2], close=[100, 0, 100])
    docs = quarantine_documents(run_gate([s], late(s), QualitySettings()))
    (key,) = docs
    assert key.startswith("quarantine/source=test/symbol=X-USD/timeframe=1d/")
    assert docs[key]["rows"] == [
        {"rule": "non_positive_price", "ts": "2024-01-02T00:00:00Z", "row": "row1",
         "detail": "a price is zero or negative"}
    ]
    assert quarantine_documents(run_gate([s], late(s), QualitySettings())) == docs
    other = candles([0, 1, 2], close=[100, 100, 0])
    assert set(quarantine_documents(run_gate([other], late(other), QualitySettings()))) != set(docs)


# ---- invariants ----------------------------------------------------------------------------------------------

# Small value sets so that repeats, conflicts and bad rows are common.
PRICES = st.sampled_from([-1.0, 0.0, 50.0, 99.0, 100.0, 101.0, 150.0])
VOLUMES = st.sampled_from([-1.0, 0.0, 0.0, 5.0, 10.0])
ROW = st.tuples(st.integers(0, 15), PRICES, PRICES, PRICES, PRICES, VOLUMES)
LAGS = {"ohlcv": "timeframe", "sentiment": "1h", "onchain": "25h"}
LAG_MS = {"ohlcv": DAY, "sentiment": HOUR, "onchain": 25 * HOUR}  # LAGS for the daily series drawn below


@st.composite
def ohlcv_series(draw):
    rows = draw(st.lists(ROW, max_size=40))
    # Some rows are exact repeats of earlier ones, as in the real sentiment file.
    rows += draw(st.lists(st.sampled_from(rows), max_size=10)) if rows else []
    rows = draw(st.permutations(rows))
    cols = list(zip(*rows)) if rows else [()] * 6
    return make("ohlcv", "1d", [T0 + d * DAY for d in cols[0]], **{f: list(c) for f, c in zip(OHLCV, cols[1:])})


@st.composite
def value_series(draw):
    layer = draw(st.sampled_from(["sentiment", "onchain"]))
    rows = draw(st.lists(st.tuples(st.integers(0, 15), st.sampled_from([-5.0, 0.0, 40.0, 100.0, 150.0])), max_size=40))
    rows += draw(st.lists(st.sampled_from(rows), max_size=10)) if rows else []
    rows = draw(st.permutations(rows))
    ts = [T0 + d * DAY for d, _ in rows]
    return make(layer, "1d", ts, symbol="market", value=[v for _, v in rows])


SERIES = st.one_of(ohlcv_series(), value_series())
AS_OF = st.integers(T0 - DAY, T0 + 20 * DAY)
SETTINGS = QualitySettings(publication_lag=LAGS)
FAST = hyp_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rows_of(s: Series) -> list[tuple]:
    return [(int(t), *(float(s.fields[f][i]) for f in sorted(s.fields))) for i, t in enumerate(s.ts)]


@FAST
@given(SERIES, AS_OF)
def test_the_gate_never_changes_a_value(series, as_of):
    _, state, _ = judge(series, as_of, SETTINGS)
    assert set(rows_of(state.series)) <= set(rows_of(series))
    # Origin text travels with its row: the row behind each kept origin is the kept row.
    source = dict(zip(series.origin, rows_of(series)))
    assert [source[o] for o in state.series.origin] == rows_of(state.series)


@FAST
@given(SERIES, AS_OF)
def test_rows_are_conserved(series, as_of):
    report, state, after = judge(series, as_of, SETTINGS)
    dropped = report.issues.get("duplicate_identical", 0)
    assert report.rows + report.rejected_rows + dropped + after == len(series)
    assert report.rows == len(state.series)
    # Every rejected row is a distinct input row, filed under the rule that rejected it.
    assert len({r.row for r in state.rejected}) == len(state.rejected)
    rules = {r.rule for r in state.rejected}
    assert sum(n for code, n in report.issues.items() if code in rules) == len(state.rejected)


@FAST
@given(SERIES, AS_OF)
def test_the_gate_is_idempotent_on_its_clean_output(series, as_of):
    first, state, _ = judge(series, as_of, SETTINGS)
    again, state2, _ = judge(state.series, as_of, SETTINGS)
    assert again.rejected_rows == 0
    for code in ("duplicate_identical", "duplicate_conflict", "non_monotonic"):
        assert code not in again.issues
    assert rows_of(state2.series) == rows_of(state.series)
    rejecting = {"duplicate_identical", "duplicate_conflict", "non_monotonic", *(r.rule for r in state.rejected)}
    assert again.issues == {k: v for k, v in first.issues.items() if k not in rejecting}
    assert again.status == ("ok" if first.status == "quarantined" else first.status)


@FAST
@given(SERIES, AS_OF)
def test_nothing_unpublished_at_as_of_is_visible(series, as_of):
    outcome = run_gate([series], as_of, SETTINGS)
    lag = LAG_MS[series.layer]
    for clean in outcome.clean.values():
        assert np.all(clean.ts + lag <= as_of)
    report = outcome.report.series[series.key]
    assert report.after_as_of == int((series.ts + lag > as_of).sum())


@FAST
@given(ohlcv_series(), AS_OF)
def test_clean_candles_are_consistent_and_time_ordered(series, as_of):
    _, state, _ = judge(series, as_of, SETTINGS)
    f = state.series.fields
    if len(state.series):
        assert np.all(np.diff(state.series.ts) > 0)
        assert np.all(np.column_stack([f[k] for k in ("open", "high", "low", "close")]) > 0)
        assert np.all(f["high"] >= np.maximum.reduce([f["open"], f["close"], f["low"]]) * (1 - SETTINGS.ohlc_rel_tol))
        assert np.all(f["low"] <= np.minimum.reduce([f["open"], f["close"], f["high"]]) * (1 + SETTINGS.ohlc_rel_tol))
        assert np.all(f["volume"] >= 0)
