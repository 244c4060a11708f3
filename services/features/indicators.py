"""Indicator math on arrays for the feature blocks: TA-Lib for the classic indicators; NaN never filled.

Every function is causal: its value at index i uses inputs at indices <= i only. The rolling statistics
(mean, std, z-score, beta) live in shared.rolling, which the risk gate reads too.
"""

from __future__ import annotations

import numpy as np
import talib

from shared.rolling import rolling_mean_upto, rolling_sum_complete


def segments(valid: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of consecutive True: contiguous history between gaps."""
    v = np.concatenate([[False], valid, [False]])
    edges = np.flatnonzero(v[1:] != v[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


# ---- per-segment price indicators (1-D, contiguous, finite inputs) --------------------------------

def rsi(close: np.ndarray, period: int) -> np.ndarray:
    return talib.RSI(close, timeperiod=period) / 100.0


def atr_ratio(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    return talib.ATR(high, low, close, timeperiod=period) / close


def parkinson_variance(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Parkinson (1980) variance of each bar's log return from its range: ln(H/L)^2 / (4 ln 2); NaN where a bar is
    missing or its range is not a range (H < L)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.log(high / low) ** 2 / (4.0 * np.log(2.0))
    return np.where(np.isfinite(v) & (high >= low), v, np.nan)


def har_terms(high: np.ndarray, low: np.ndarray, windows: list[int]) -> dict[int, np.ndarray]:
    """HAR terms (Corsi 2009): log of the mean Parkinson variance per bar over the last w bars, for each w. A mean
    of zero (flat bars only) has no log: NaN, and the row drops."""
    v = parkinson_variance(high, low)
    return {w: _log_positive(v if w == 1 else talib.SMA(v, timeperiod=w)) for w in windows}


def _log_positive(m: np.ndarray) -> np.ndarray:
    """log m where m > 0; NaN elsewhere (a mean variance of zero has no log)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m > 0, np.log(np.where(m > 0, m, 1.0)), np.nan)


def har_long_terms(high: np.ndarray, low: np.ndarray, windows: list[int], min_bars: int) -> dict[int, np.ndarray]:
    """Long-run levels: log of the mean Parkinson variance per bar over up to the last w bars, for each w; over
    fewer where the coin's contiguous history is shorter, down to `min_bars` (NaN below it, or where the mean is
    zero)."""
    v = parkinson_variance(high, low)
    return {w: _log_positive(rolling_mean_upto(v, w, min(min_bars, w))) for w in windows}


def parkinson(high: np.ndarray, low: np.ndarray, window: int) -> np.ndarray:
    """Parkinson (1980) range volatility: sqrt(mean(ln(H/L)^2) / (4 ln 2)) over the window."""
    hl2 = np.log(high / low) ** 2
    return np.sqrt(talib.SMA(hl2, timeperiod=window) / (4.0 * np.log(2.0)))


def macd(close: np.ndarray, fast: int, slow: int, signal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    line, sig, hist = talib.MACD(close, fastperiod=fast, slowperiod=slow, signalperiod=signal)
    return line / close, sig / close, hist / close


def stochastic(high, low, close, k: int, slow_k: int, slow_d: int) -> tuple[np.ndarray, np.ndarray]:
    sk, sd = talib.STOCH(high, low, close, fastk_period=k, slowk_period=slow_k, slowk_matype=0,
                         slowd_period=slow_d, slowd_matype=0)
    return sk / 100.0, sd / 100.0


def bollinger(close: np.ndarray, window: int, width: float) -> tuple[np.ndarray, np.ndarray]:
    """%b (where close sits in the band) and band width relative to the middle; NaN for a flat band."""
    upper, mid, lower = talib.BBANDS(close, timeperiod=window, nbdevup=width, nbdevdn=width, matype=0)
    span = upper - lower
    with np.errstate(divide="ignore", invalid="ignore"):
        pctb = np.where(span > 0, (close - lower) / span, np.nan)
        bw = np.where(mid > 0, span / mid, np.nan)
    return pctb, bw


def obv_flow(close: np.ndarray, volume: np.ndarray, window: int) -> np.ndarray:
    """Net on-balance volume over the window relative to total volume: in [-1, 1]."""
    obv = talib.OBV(close, volume)
    out = np.full(close.shape, np.nan)
    if close.shape[0] > window:
        total = rolling_sum_complete(volume, window)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[window:] = (obv[window:] - obv[:-window]) / total[window:]
    return np.where(np.isfinite(out), out, np.nan)
