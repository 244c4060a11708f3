"""Our own indicator math against TA-Lib or the textbook definition, on real closes, to 1e-9 relative."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import talib

from services.features import indicators as ind
from services.features.blocks import cross_rank_z
from services.ingest import logic
from services.ingest.sources.files import FileSource
from shared import rolling
from shared.settings import Settings

RTOL = 1e-9


@pytest.fixture(scope="module")
def ohlc(shared_data):
    fetched = asyncio.run(logic.fetch_sources([FileSource(shared_data)], Settings(_env_file=None)))
    s = next(s for _, r in fetched.results for s in r.series if s.key == "ohlcv/1d/ETH-USD")
    return {k: s.fields[k] for k in ("open", "high", "low", "close", "volume")}


def close_enough(ours: np.ndarray, ref: np.ndarray, rtol: float = RTOL, atol: float = 0.0) -> None:
    both = np.isfinite(ref)
    assert both.sum() > 100, "too few reference values to compare"
    assert np.array_equal(np.isfinite(ours), both), "NaN pattern differs from the reference"
    np.testing.assert_allclose(ours[both], ref[both], rtol=rtol, atol=atol)


@pytest.mark.parametrize("window", [7, 20, 30])
def test_rolling_mean_matches_talib_sma(ohlc, window):
    close_enough(rolling.rolling_mean(ohlc["close"], window), talib.SMA(ohlc["close"], window))


@pytest.mark.parametrize("window", [7, 30])
def test_rolling_std_matches_talib_stddev(ohlc, window):
    r = rolling.log_return(ohlc["close"], 1)[1:]
    # TA-Lib's STDDEV is the population deviation; ours is the sample one (ddof=1).
    ref = talib.STDDEV(r, window, 1.0) * np.sqrt(window / (window - 1))
    close_enough(rolling.rolling_std(r, window), ref, rtol=1e-7)  # TA-Lib sums in its own order: ~1e-8 apart


def test_rolling_std_against_numpy_exactly_defined(ohlc):
    lv = np.log(ohlc["volume"])
    w = 30
    ref = np.full(lv.size, np.nan)
    win = np.lib.stride_tricks.sliding_window_view(lv, w)
    ref[w - 1:] = win.std(axis=1, ddof=1)
    close_enough(rolling.rolling_std(lv, w), ref)
    z = rolling.rolling_zscore(lv, w)
    # z near 0 is a difference of near-equal numbers: relative error is meaningless there, so an
    # absolute floor of 1e-11 on a quantity of order 1 is added.
    close_enough(z, (lv - np.r_[np.full(w - 1, np.nan), win.mean(axis=1)]) / ref, atol=1e-11)


def test_log_return_definition(ohlc):
    c = ohlc["close"]
    got = rolling.log_return(c, 7)
    assert np.isnan(got[:7]).all()
    close_enough(got, np.r_[np.full(7, np.nan), np.log(c[7:]) - np.log(c[:-7])], rtol=1e-12, atol=1e-15)


def test_parkinson_definition(ohlc):
    h, l = ohlc["high"], ohlc["low"]
    w = 14
    x = np.log(h / l) ** 2
    ref = np.full(h.size, np.nan)
    ref[w - 1:] = np.sqrt(np.lib.stride_tricks.sliding_window_view(x, w).mean(axis=1) / (4 * np.log(2)))
    close_enough(ind.parkinson(h, l, w), ref)


def test_obv_flow_definition(ohlc):
    c, v = ohlc["close"], ohlc["volume"]
    w = 30
    sign = np.r_[0.0, np.sign(np.diff(c))]
    # OBV flow over the window: signed volume of the last w bars over their total volume.
    signed = sign * v
    ref = np.full(c.size, np.nan)
    ref[w:] = np.lib.stride_tricks.sliding_window_view(signed[1:], w).sum(axis=1) / \
        np.lib.stride_tricks.sliding_window_view(v[1:], w).sum(axis=1)
    close_enough(ind.obv_flow(c, v, w), ref, rtol=1e-7)


def test_beta_and_correlation_against_least_squares(ohlc, shared_data):
    r = rolling.log_return(ohlc["close"], 1)
    rng = np.random.default_rng(7)  # a second series for the mechanics: a noisy multiple of r
    y = 0.5 * r + rng.normal(0, 0.01, r.size)
    w = 30
    beta, corr = rolling.rolling_beta_corr(y.reshape(-1, 1), r, w)
    for t in (w + 5, 400, r.size - 1):
        xs, ys = r[t - w + 1: t + 1], y[t - w + 1: t + 1]
        slope = np.polyfit(xs, ys, 1)[0]
        assert beta[t, 0] == pytest.approx(slope, rel=1e-9)
        assert corr[t, 0] == pytest.approx(np.corrcoef(xs, ys)[0, 1], rel=1e-9)
    # The first return is NaN: no window containing it has a value.
    assert np.isnan(beta[:w, 0]).all()


def test_windows_touching_a_gap_have_no_value():
    x = np.arange(1.0, 21.0)
    x[9] = np.nan
    m = rolling.rolling_mean(x, 5)
    assert np.isnan(m[9:14]).all() and np.isfinite(m[14]) and np.isfinite(m[8])
    assert ind.segments(np.isfinite(x)) == [(0, 9), (10, 20)]


def test_the_long_run_level_averages_up_to_its_window_of_consecutive_bars_and_never_across_a_gap():
    x = np.array([1.0, 2.0, 3.0, 4.0, np.nan, 5.0, 6.0, 7.0, 8.0])
    got = rolling.rolling_mean_upto(x, 3, 2)
    want = [np.nan, 1.5, 2.0, 3.0, np.nan, np.nan, 5.5, 6.0, 7.0]
    np.testing.assert_allclose(got, want)
    # Column by column as one array, and with the full window it is the complete-window mean.
    both = rolling.rolling_mean_upto(np.column_stack([x, x[::-1]]), 3, 2)
    np.testing.assert_allclose(both[:, 1], rolling.rolling_mean_upto(x[::-1], 3, 2))
    y = np.arange(1.0, 30.0)
    np.testing.assert_allclose(rolling.rolling_mean_upto(y, 5, 5), rolling.rolling_mean(y, 5))
    # The feature: log of the mean Parkinson variance over up to 90 bars, from 30 bars of history on.
    rng = np.random.default_rng(0)
    low = np.exp(rng.normal(0, 0.1, 200).cumsum())
    high = low * np.exp(np.abs(rng.normal(0, 0.03, 200)))
    long = ind.har_long_terms(high, low, [90], 30)[90]
    pv = ind.parkinson_variance(high, low)
    assert np.isnan(long[:29]).all() and np.isclose(long[29], np.log(pv[:30].mean()))
    assert np.isclose(long[150], np.log(pv[61:151].mean()))


def test_cross_rank_and_z():
    x = np.array([[3.0, 1.0, 2.0, np.nan], [1.0, 1.0, np.nan, np.nan]])
    rank, z = cross_rank_z(x, min_coins=3)
    assert np.allclose(rank[0, :3], [1.0, 0.0, 0.5]) and np.isnan(rank[0, 3])
    assert np.allclose(z[0, :3], [1.0, -1.0, 0.0])  # mean 2, sample sd 1
    assert np.isnan(rank[1]).all()  # two coins are too few for a cross-section


def test_classic_indicators_are_talib_scaled(ohlc):
    h, l, c = ohlc["high"], ohlc["low"], ohlc["close"]
    close_enough(ind.rsi(c, 14), talib.RSI(c, 14) / 100, rtol=1e-12)
    close_enough(ind.atr_ratio(h, l, c, 14), talib.ATR(h, l, c, 14) / c, rtol=1e-12)
    up, mid, lo = talib.BBANDS(c, 20, 2, 2, 0)
    pctb, width = ind.bollinger(c, 20, 2.0)
    close_enough(pctb, (c - lo) / (up - lo), rtol=1e-12)
    close_enough(width, (up - lo) / mid, rtol=1e-12)
