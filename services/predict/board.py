"""The board of forecasts: every prediction of a run as a trader reads it (P(up) and its interval, P(beats), the
volatility forecast, the 80% range as prices, the verdict in words), for the terminal and the dashboard alike."""

from __future__ import annotations

import math

import numpy as np

from services.features.store import read_panel
from shared.contracts import ms_to_iso
from shared.records import Forecast, Prediction
from shared.settings import Settings, timeframe_ms


def decision_closes(settings: Settings, lake, predictions) -> dict[tuple[str, int], float]:
    """The close of the candle each prediction's features end with (its decision time), where the lake holds it."""
    out: dict[tuple[str, int], float] = {}
    by_tf: dict[str, list] = {}
    for p in predictions:
        by_tf.setdefault(settings.training.horizons[p.horizon].timeframe, []).append(p)
    for tf, ps in by_tf.items():
        step = timeframe_ms(tf)
        opens = {p.decision_ts - step for p in ps}
        panel = read_panel(lake, tf, since_ms=min(opens), until_ms=max(opens))
        if panel is None:
            continue
        row = {int(t): i for i, t in enumerate(panel.open_ts)}
        col = {c: j for j, c in enumerate(panel.coins)}
        for p in ps:
            i, j = row.get(p.decision_ts - step), col.get(p.coin)
            if i is not None and j is not None and np.isfinite(panel.fields["close"][i, j]):
                out[(p.coin, p.decision_ts)] = float(panel.fields["close"][i, j])
    return out


def forecast_rows(predictions: list[Prediction], horizons: list[str], uncertified: dict[str, str],
                  threshold: float, closes: dict[tuple[str, int], float],
                  previous: dict[tuple[str, str], Prediction] | None = None) -> list[Forecast]:
    """Every forecast of the run, horizons in their configured order and coins by name: P(up) with its interval,
    P(beats the universe), the volatility forecast, the 80% range as returns and as prices (from the close at the
    decision time, where the lake holds it), in words whether it is actionable and why not, and how P(up) moved since
    the coin's previous forecast of the horizon (`previous`, by (horizon, coin), where there is one)."""
    order = {h: k for k, h in enumerate(horizons)}
    rows = []
    for p in sorted(predictions, key=lambda p: (order.get(p.horizon, len(order)), p.coin)):
        close = closes.get((p.coin, p.decision_ts))
        has = p.range_low is not None and p.range_high is not None
        if p.actionable:
            why = "actionable"
        elif p.horizon in uncertified:
            why = f"not actionable: {uncertified[p.horizon]}"
        else:
            why = f"not actionable: confidence {p.confidence:.3f} < {threshold}"
        rows.append(Forecast(
            coin=p.coin, horizon=p.horizon, decision=ms_to_iso(p.decision_ts),
            p_up=p.p_up, p_up_low=p.p_low, p_up_high=p.p_high, p_beats=p.p_beats,
            vol_forecast=p.vol_forecast, range_low=p.range_low, range_high=p.range_high, close=close,
            price_low=close * math.exp(p.range_low) if has and close else None,
            price_high=close * math.exp(p.range_high) if has and close else None,
            skill=p.skill, confidence=p.confidence, actionable=p.actionable, why=why,
            horizon_certified=p.horizon not in uncertified,
            change=(p.p_up - previous[(p.horizon, p.coin)].p_up) if previous and (p.horizon, p.coin) in previous
            else None))
    return rows


def price_text(x: float | None) -> str:
    """A price as people read it: two decimals from 100 up, four significant digits below."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:,.2f}" if x >= 100 else f"{x:.4g}"
