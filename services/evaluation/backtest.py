"""Walk-forward portfolio simulation of out-of-sample orders on daily closes, with honest costs and the risk guards.

Timing (no look-ahead): an order decided at the close of day t (its `ts_ms` is that candle's close time, i.e. the
next candle's open) is entered at close[t] through the risk gate's one entry rule (services.risk.gate: sizing,
guards, entry cost) and exited at close[t + horizon_days]; positions are marked at every close.

Costs, per side and on traded notional: `fee_bps` plus the square-root impact model of services.risk.guards (a
MODEL, labelled "sqrt_impact" in every trade; daily history has no order book). The exit cost is priced with the
volatility and average daily volume known at the exit close.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from services.risk.gate import COST_MODEL, Portfolio  # noqa: F401 - the backtest's cost label
from services.risk.history import PriceHistory, mark_at_last_close
from services.risk.orders import Order
from shared.errors import CstError
from shared.records import BookDecision
from shared.settings import RiskSettings

@dataclass
class BacktestResult:
    ts: np.ndarray  # close times of the marks
    equity: np.ndarray  # mark-to-market equity at each close, after that close's exits and entries
    trades: list[dict]
    decisions: list[BookDecision]  # every guard decision, and every order turned away before the guards
    metrics: dict
    skipped: dict[str, int]
    gross_exposure: np.ndarray = field(default_factory=lambda: np.zeros(0))
    open: dict = field(default_factory=dict)  # coin -> gate.Position still open at the end (hold_open only)


def drawdown(equity) -> np.ndarray:
    """Fraction below the running peak at each point (0 at a new high, 0.25 = 25% under the peak)."""
    e = np.asarray(equity, dtype=np.float64)
    return 1.0 - e / np.maximum.accumulate(e)


def _years(ts: np.ndarray, periods_per_year: float) -> float:
    """Span of the curve in years, counted in its own steps (a daily grid: (T - 1) / 365)."""
    ts = np.asarray(ts, dtype=np.int64)
    if len(ts) < 2:
        return 0.0
    return float((ts[-1] - ts[0]) / np.median(np.diff(ts)) / periods_per_year)


def performance(equity: np.ndarray, ts: np.ndarray, periods_per_year: float) -> dict:
    """Return and risk figures of an equity curve; None where a figure is undefined (flat curve, one point).

    Returns are simple per-period returns; Sharpe and Sortino have a zero risk-free rate, Sortino's downside
    deviation is sqrt(mean(min(r, 0)^2)) over all periods; max_drawdown is a positive fraction; calmar = cagr / mdd.
    """
    e = np.asarray(equity, dtype=np.float64)
    if len(e) == 0 or not np.all(np.isfinite(e)) or e[0] <= 0:
        raise CstError("equity_invalid", "an equity curve needs at least one point, all finite, starting above 0")
    r = e[1:] / e[:-1] - 1.0
    years = _years(ts, periods_per_year)
    growth = e[-1] / e[0]
    cagr = float(growth ** (1.0 / years) - 1.0) if years > 0 and growth > 0 else None
    sd = float(r.std(ddof=1)) if len(r) > 1 else None
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) if len(r) else 0.0
    ann = math.sqrt(periods_per_year)
    mdd = float(drawdown(e).max())
    return {
        "total_return": float(growth - 1.0),
        "cagr": cagr,
        "sharpe": float(r.mean() / sd * ann) if sd else None,
        "sortino": float(r.mean() / downside * ann) if downside > 0 else None,
        "max_drawdown": mdd,
        "calmar": cagr / mdd if cagr is not None and mdd > 0 else None,
        "ann_vol": sd * ann if sd is not None else None,
    }


def _start_row(history: PriceHistory, sl: slice) -> int:
    if sl.start >= sl.stop:
        raise CstError("window_empty", "no close of the price history lies in the requested window")
    return sl.start


def buy_and_hold(history: PriceHistory, coin: str, start_ms: int, end_ms: int, fee_bps: float = 0.0) -> np.ndarray:
    """Growth of 1 bought at the close `start_ms` (paying `fee_bps` once) and marked at each close up to `end_ms`."""
    if coin not in history.coins:
        raise CstError("unknown_coin", f"{coin} is not in the price history ({', '.join(history.coins)})")
    sl = history.window(start_ms, end_ms)
    j = history.coins.index(coin)
    first = history.close[_start_row(history, sl), j]
    if not np.isfinite(first):
        raise CstError("no_price", f"{coin} has no close at the start of the window")
    return mark_at_last_close(history.close[:, [j]])[sl, 0] / first * (1.0 - fee_bps / 1e4)


def equal_weight(history: PriceHistory, start_ms: int, end_ms: int, rebalance_days: int = 1,
                 fee_bps: float = 0.0) -> np.ndarray:
    """Growth of 1 split equally across the coins with a close, rebalanced every `rebalance_days` closes.

    A coin without a close on a rebalance day is neither bought nor sold that day (its holding, if any, is kept
    and marked at its last close); a coin listed later joins at the next rebalance. `fee_bps` is paid on the
    notional each rebalance trades.
    """
    if rebalance_days < 1:
        raise CstError("bad_rebalance", "rebalance_days must be at least 1")
    sl = history.window(start_ms, end_ms)
    _start_row(history, sl)
    raw, px = history.close[sl], mark_at_last_close(history.close)[sl]
    if not np.isfinite(raw[0]).any():
        raise CstError("no_price", "no coin has a close at the start of the window")
    units = np.zeros(raw.shape[1])
    out = np.empty(len(raw))
    cash = 1.0  # only before the first purchase and when nothing is tradable
    # One step per rebalance (path-dependent); the marks inside a segment are vectorised.
    for k in range(0, len(raw), rebalance_days):
        tradable = np.isfinite(raw[k])
        held = np.where(units > 0, units * np.nan_to_num(px[k]), 0.0)
        budget = cash + held[tradable].sum()
        if tradable.any():
            target = np.zeros_like(units)
            target[tradable] = budget / tradable.sum() / raw[k, tradable]
            traded = float(np.abs(target - units)[tradable] @ raw[k, tradable])
            if budget > 0:  # the fee comes out of what is bought (to first order in fee_bps)
                target[tradable] *= 1.0 - fee_bps / 1e4 * traded / budget
            units = np.where(tradable, target, units)
            cash = 0.0
        seg = px[k:k + rebalance_days]
        out[k:k + rebalance_days] = cash + np.where(units > 0, units * np.nan_to_num(seg), 0.0).sum(axis=1)
    return out


def run_backtest(history: PriceHistory, orders: list[Order], cfg: RiskSettings, start_ms: int | None = None,
                 end_ms: int | None = None, hold_open: bool = False) -> BacktestResult:
    """Simulate `orders` on `history` close by close: exits, marks, then that close's entries.

    The whole history is simulated (sizing and guards read the days before an order), but the curve and the
    metrics cover only the closes in [start_ms, end_ms] when given: exposure and turnover are per period traded,
    not diluted by years before the first order. `hold_open`: as a paper book trades (services/books), an order
    whose horizon ends beyond the data is entered and what is open at the last close stays open
    (`BacktestResult.open`), instead of being refused and closed.
    """
    if len(history.ts) == 0:
        raise CstError("history_empty", "the price history has no rows to simulate on")
    run = Portfolio(history, cfg)
    run.close_at_end = not hold_open
    row = {int(t): i for i, t in enumerate(history.close_ts)}
    today: dict[int, list[Order]] = defaultdict(list)
    for o in sorted(orders, key=lambda o: (o.ts_ms, o.coin, o.horizon_days)):
        if o.direction not in (1, -1) or o.horizon_days < 1:
            run.turn_away(o, "bad_order", "direction must be +1/-1 and horizon_days at least 1")
        elif o.coin not in history.coins:
            run.turn_away(o, "unknown_coin", f"{o.coin} is not in the price history")
        elif int(o.ts_ms) not in row:
            run.turn_away(o, "off_grid", "ts_ms is not the close time of a candle in the price history")
        else:
            today[row[int(o.ts_ms)]].append(o)
    T = len(history.ts)
    equity, gross = np.empty(T), np.empty(T)
    for i in range(T):
        equity[i], gross[i] = run.step(i, today.get(i, []), require_exit=not hold_open)
    run.trades.sort(key=lambda t: (t["entry_ts"], t["coin"]))  # appended as they closed; read in entry order
    sl = history.window(history.close_ts[0] if start_ms is None else start_ms,
                        history.close_ts[-1] if end_ms is None else end_ms)
    ts, equity, gross = history.close_ts[sl], equity[sl], gross[sl]
    if ts.size == 0:
        raise CstError("window_empty", "no close lies in the requested backtest window")
    return BacktestResult(ts, equity, run.trades, run.decisions, _metrics(run, equity, gross, ts, len(orders)),
                          dict(run.skipped), gross, dict(run.open))


def _metrics(run: Portfolio, equity: np.ndarray, gross: np.ndarray, ts: np.ndarray, n_orders: int) -> dict:
    """performance() plus trading figures. turnover = traded notional (entries + exits) / mean equity, per year."""
    ppy = run.cfg.periods_per_year
    out = performance(equity, ts, ppy)
    pnl = np.array([t["pnl"] for t in run.trades])
    years = _years(ts, ppy)
    out.update({
        "hit_rate": float((pnl > 0).mean()) if len(pnl) else None,
        "trades": len(pnl),
        "orders": n_orders,
        "turnover": float(run.traded_notional / equity.mean() / years) if years > 0 else None,
        "exposure": float(np.mean(gross / equity)),
        "costs_paid": float(run.fees + run.impact),
        "fees_paid": float(run.fees),
        "impact_paid": float(run.impact),
        "funding_paid": float(run.funding),
        "final_equity": float(equity[-1]),
        # Entries sized by the volatility forecast, and by the trailing daily sd where an order carried none.
        "sized_by": dict(run.sizing_vol),
    })
    return out
