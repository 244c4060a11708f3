"""Walk-forward portfolio simulation of out-of-sample signals on daily closes, with honest costs and the risk guards.

Timing (no look-ahead): a signal decided at the close of day t (its `ts_ms` is that candle's close time, i.e. the
next candle's open) is entered at close[t] and exited at close[t + horizon_days]; positions are marked at every
close. Sizing, the guards and the entry cost see only closes and volumes up to and including day t.

Costs, per side and on traded notional: `fee_bps` plus the square-root impact model of risk.py (a MODEL, labelled
"sqrt_impact" in every trade; daily history has no order book). The exit cost is priced with the volatility and
average daily volume known at the exit close.

Edge handed to the cost guard (bps): with p the probability of the signal's direction and gain/loss taken from
the favourable/unfavourable quantile exactly as `kelly_fraction` takes them (long: gain q90, loss -q10; short:
gain -q10, loss q90), gross edge = 1e4 * (p * gain - (1 - p) * loss). The guard compares one side's impact with
it, so it is given the edge net of the other costs of the round trip: gross - 2 * fee_bps - exit impact (the same
model at the same notional). The guard's "cost < edge" is then "round-trip cost < gross edge".

A signal for a coin that already has an open position is skipped ("already_open"), never added to or extended:
each trade is one signal with the horizon that sized it, and a coin's exposure stays within `max_position`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from services.features.indicators import log_return, rolling_mean, rolling_std
from services.predict.risk import (
    GUARDS,
    Book,
    Order,
    apply_guards,
    impact_model,
    kelly_fraction,
    mean_variance_fractions,
    vol_target_scale,
)
from shared.errors import CstError

DAY_MS = 86_400_000
COST_MODEL = "sqrt_impact"


@dataclass
class Market:
    """Daily grid of candle OPEN times (ms, UTC), one column per coin; NaN where there is no candle or no volume."""

    ts: np.ndarray  # (T,) int64
    coins: list[str]
    close: np.ndarray  # (T, C)
    quote_volume: np.ndarray  # (T, C) volume in quote currency; NaN = unavailable (never read as zero)

    def __post_init__(self) -> None:
        self.ts = np.asarray(self.ts, dtype=np.int64)
        self.close = np.asarray(self.close, dtype=np.float64)
        self.quote_volume = np.asarray(self.quote_volume, dtype=np.float64)
        shape = (len(self.ts), len(self.coins))
        if self.close.shape != shape or self.quote_volume.shape != shape:
            raise CstError("market_shape", f"close {self.close.shape} and quote_volume {self.quote_volume.shape} "
                                           f"must both be (len(ts), len(coins)) = {shape}")
        if len(self.ts) > 1 and np.any(np.diff(self.ts) != DAY_MS):
            raise CstError("market_grid", "ts must be a gap-free daily grid (one row per day, NaN where no candle)")

    @property
    def close_ts(self) -> np.ndarray:
        """When each close is known: the candle's close time, which is also the next candle's open."""
        return self.ts + DAY_MS

    def window(self, start_ms: int, end_ms: int) -> slice:
        """Rows whose close time lies in [start_ms, end_ms]."""
        lo = int(np.searchsorted(self.close_ts, start_ms, side="left"))
        return slice(lo, int(np.searchsorted(self.close_ts, end_ms, side="right")))


@dataclass
class Signal:
    """One consensus trade signal decided at the close `ts_ms`; quantiles are of the horizon's forward log return."""

    ts_ms: int
    coin: str
    direction: int  # +1 long, -1 short
    p_up: float
    q10: float
    q50: float
    q90: float
    horizon_days: int


@dataclass
class BacktestConfig:
    initial_equity: float = 100_000.0
    fee_bps: float = 10.0  # per side, on traded notional
    allow_short: bool = False  # spot: shorts are skipped (and counted) unless enabled
    kelly_fraction: float = 0.25
    max_position: float = 0.10  # of equity
    target_daily_vol: float = 0.02
    vol_window: int = 30  # daily log returns in the volatility (sample std); all must exist
    corr_window: int = 60  # daily log returns handed to the correlation guard
    adv_window: int = 30  # days of quote volume in the average daily volume; all must exist
    guards: bool = True  # apply the risk.py guards
    guard_names: tuple[str, ...] = ("liquidity", "correlation", "drawdown", "cost")
    guard_params: dict[str, dict] = field(default_factory=dict)  # e.g. {"drawdown": {"max_drawdown": 0.15}}
    # Gross exposure the book may reach, as a share of equity (1.0 = no leverage): spot cannot spend more than it has.
    max_gross_exposure: float = 1.0
    # Exit when a position has lost this fraction since entry, judged at closes only (no intraday data); None = off.
    stop_loss: float | None = None
    periods_per_year: float = 365.0  # crypto trades every day
    # "kelly": fractional Kelly x volatility targeting per signal; "mean_variance": the day's long signals
    # together, inv(Sigma) mu with a Ledoit-Wolf covariance, scaled to target_daily_vol, capped per position.
    allocation: str = "kelly"


@dataclass
class BacktestResult:
    ts: np.ndarray  # close times of the marks
    equity: np.ndarray  # mark-to-market equity at each close, after that close's exits and entries
    trades: list[dict]
    decisions: list[dict]  # every guard decision, and every signal turned away before the guards
    metrics: dict
    skipped: dict[str, int]
    gross_exposure: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class _Position:
    signal: Signal
    col: int
    qty: float  # coins, > 0; the sign is the signal's direction
    entry_i: int
    exit_i: int
    entry_price: float
    entry_notional: float
    entry_impact_bps: float
    entry_cost: float
    adv: float  # inputs of the entry's cost, reused at an exit whose own are unknown
    daily_vol: float
    order: Order


def mark_at_last_close(x: np.ndarray) -> np.ndarray:
    """Last known value down each column (marks through a missing candle); NaN before the first one."""
    idx = np.where(np.isfinite(x), np.arange(len(x))[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    return x[idx, np.arange(x.shape[1])]  # before a column's first value idx is 0, where x is NaN


def expected_edge_bps(s: Signal) -> float:
    """Gross edge of the bet in bps: p * gain - (1 - p) * loss, gain/loss as `kelly_fraction` takes them."""
    p = s.p_up if s.direction == 1 else 1.0 - s.p_up
    gain, loss = (s.q90, -s.q10) if s.direction == 1 else (-s.q10, s.q90)
    return 1e4 * (p * gain - (1 - p) * loss)


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


def performance(equity: np.ndarray, ts: np.ndarray, periods_per_year: float = 365.0) -> dict:
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


def _start_row(market: Market, sl: slice) -> int:
    if sl.start >= sl.stop:
        raise CstError("window_empty", "no close of the market lies in the requested window")
    return sl.start


def buy_and_hold(market: Market, coin: str, start_ms: int, end_ms: int, fee_bps: float = 0.0) -> np.ndarray:
    """Growth of 1 bought at the close `start_ms` (paying `fee_bps` once) and marked at each close up to `end_ms`."""
    if coin not in market.coins:
        raise CstError("unknown_coin", f"{coin} is not in the market ({', '.join(market.coins)})")
    sl = market.window(start_ms, end_ms)
    j = market.coins.index(coin)
    first = market.close[_start_row(market, sl), j]
    if not np.isfinite(first):
        raise CstError("no_price", f"{coin} has no close at the start of the window")
    return mark_at_last_close(market.close[:, [j]])[sl, 0] / first * (1.0 - fee_bps / 1e4)


def equal_weight(market: Market, start_ms: int, end_ms: int, rebalance_days: int = 1,
                 fee_bps: float = 0.0) -> np.ndarray:
    """Growth of 1 split equally across the coins with a close, rebalanced every `rebalance_days` closes.

    A coin without a close on a rebalance day is neither bought nor sold that day (its holding, if any, is kept
    and marked at its last close); a coin listed later joins at the next rebalance. `fee_bps` is paid on the
    notional each rebalance trades.
    """
    if rebalance_days < 1:
        raise CstError("bad_rebalance", "rebalance_days must be at least 1")
    sl = market.window(start_ms, end_ms)
    _start_row(market, sl)
    raw, px = market.close[sl], mark_at_last_close(market.close)[sl]
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


class _Run:
    """One backtest's state, advanced close by close by run_backtest (a portfolio is path-dependent)."""

    def __init__(self, market: Market, cfg: BacktestConfig):
        if cfg.allocation not in ("kelly", "mean_variance"):
            raise CstError("bad_allocation", f"allocation {cfg.allocation!r}: use 'kelly' or 'mean_variance'")
        self.m, self.cfg = market, cfg
        close = market.close
        with np.errstate(divide="ignore", invalid="ignore"):
            self.lr = log_return(close, 1)  # NaN wherever a close is missing
        # The features' causal rolling statistics: NaN unless the whole window is known.
        self.vol = rolling_std(self.lr, cfg.vol_window)
        self.adv = rolling_mean(market.quote_volume, cfg.adv_window)
        self.mark = mark_at_last_close(close)
        self.guards = [GUARDS[n](**cfg.guard_params.get(n, {})) for n in cfg.guard_names] if cfg.guards else []
        self.cash = cfg.initial_equity
        self.book = Book(cfg.initial_equity, cfg.initial_equity)
        self.open: dict[str, _Position] = {}
        self.trades: list[dict] = []
        self.decisions: list[dict] = []
        self.skipped: Counter[str] = Counter()
        self.traded_notional = 0.0
        self.fees = 0.0
        self.impact = 0.0

    # -- bookkeeping ------------------------------------------------------------------------------------------
    def value(self, i: int) -> tuple[float, float]:
        """(equity, gross exposure) at close i, positions marked at their last known close."""
        net = gross = 0.0
        for p in self.open.values():
            v = p.qty * self.mark[i, p.col]
            net += p.signal.direction * v
            gross += v
        return self.cash + net, gross

    def turn_away(self, s: Signal, code: str, reason: str) -> None:
        """A signal refused before (or without) the guards: counted under `code` and logged with its reason."""
        self.skipped[code] += 1
        self.decisions.append(self._record(s, "backtest", False, 0.0, f"{code}: {reason}", None))

    @staticmethod
    def _record(s: Signal, guard: str, allow: bool, scale: float, reason: str, notional: float | None) -> dict:
        return {"ts": int(s.ts_ms), "coin": s.coin, "direction": s.direction, "horizon_days": s.horizon_days,
                "guard": guard, "allow": allow, "scale": scale, "reason": reason, "notional": notional}

    def cost_bps(self, notional: float, adv: float, daily_vol: float) -> float:
        return float(impact_model(notional, adv, daily_vol).slippage_bps)

    def returns_tail(self, i: int, j: int) -> np.ndarray | None:
        """The longest gap-free run of log returns ending at day i, at most `corr_window` long."""
        w = self.lr[max(0, i - self.cfg.corr_window + 1):i + 1, j]
        bad = np.flatnonzero(~np.isfinite(w))
        w = w[bad[-1] + 1:] if len(bad) else w
        return w if len(w) >= 3 else None

    # -- one close ----------------------------------------------------------------------------------------------
    def exits(self, i: int) -> None:
        last, stop = i == len(self.m.ts) - 1, self.cfg.stop_loss
        for coin, p in list(self.open.items()):
            px = self.m.close[i, p.col]
            if not np.isfinite(px):
                if not last:
                    continue  # no candle: the exit waits for the next close, the mark holds the last one
                px, reason = self.mark[i, p.col], "end_of_data"
            elif i >= p.exit_i:
                reason = "horizon" if i == p.exit_i else "delayed_exit"
            elif stop is not None and p.signal.direction * (px / p.entry_price - 1) <= -stop:
                reason = "stop_loss"  # judged at closes: daily history has no intraday path
            else:
                continue
            value = float(p.qty * px)
            adv, dv = float(self.adv[i, p.col]), float(self.vol[i, p.col])
            if not (np.isfinite(adv) and adv > 0 and np.isfinite(dv)):
                adv, dv = p.adv, p.daily_vol  # the exit day's inputs are unknown: the entry's are the last known
            impact = self.cost_bps(value, adv, dv)
            fee = value * self.cfg.fee_bps / 1e4
            slip = value * impact / 1e4
            self.cash += p.signal.direction * value - fee - slip
            self.fees += fee
            self.impact += slip
            self.traded_notional += value
            pnl = p.signal.direction * p.qty * (px - p.entry_price) - p.entry_cost - fee - slip
            self.trades.append({
                "coin": coin, "direction": p.signal.direction, "horizon_days": p.signal.horizon_days,
                "entry_ts": int(self.m.close_ts[p.entry_i]), "exit_ts": int(self.m.close_ts[i]),
                "entry_price": p.entry_price, "exit_price": float(px), "qty": p.qty,
                "entry_notional": p.entry_notional, "exit_notional": float(value),
                "fee_bps": self.cfg.fee_bps, "entry_cost_bps": p.entry_impact_bps, "exit_cost_bps": impact,
                "cost_model": COST_MODEL, "costs": p.entry_cost + fee + slip, "pnl": float(pnl),
                "return": float(pnl / p.entry_notional), "exit_reason": reason, "p_up": p.signal.p_up,
            })
            del self.open[coin]

    def allocate(self, i: int, signals: list[Signal]) -> dict[int, float]:
        """Mean-variance shares of equity for the day's long signals (Ledoit-Wolf covariance over the last
        `corr_window` days where every one of their coins has a return); {id(signal): fraction}."""
        longs = [s for s in signals if s.direction == 1 and s.coin not in self.open]
        if not longs:
            return {}
        cols = [self.m.coins.index(s.coin) for s in longs]
        R = self.lr[max(0, i - self.cfg.corr_window + 1):i + 1][:, cols]
        R = R[np.isfinite(R).all(axis=1)]
        if len(R) < max(3, len(cols) + 1):
            return {id(s): 0.0 for s in longs}  # too little joint history to estimate a covariance
        mu = np.array([expected_edge_bps(s) / 1e4 / s.horizon_days for s in longs])
        w = mean_variance_fractions(mu, R, self.cfg.target_daily_vol, self.cfg.max_position)
        return {id(s): float(f) for s, f in zip(longs, w, strict=True)}

    def entry(self, i: int, s: Signal, equity: float, gross: float, require_exit: bool = True,
              fraction: float | None = None) -> tuple[float, float]:
        """Size, guard and enter one signal at close i; returns the updated (equity, gross exposure).

        `require_exit=False` is the live gate: today's signal has no exit close yet, and that is not a reason
        to refuse it.
        """
        cfg, j = self.cfg, self.m.coins.index(s.coin)
        px = self.m.close[i, j]
        if s.direction == -1 and not cfg.allow_short:
            self.turn_away(s, "short_not_allowed", "spot backtest: shorts are not allowed")
            return equity, gross
        if not (np.isfinite(px) and px > 0):
            self.turn_away(s, "no_price", "no close at the decision time")
            return equity, gross
        if s.coin in self.open:
            self.turn_away(s, "already_open", f"a position in {s.coin} is already open: not added to or extended")
            return equity, gross
        if require_exit and i + s.horizon_days >= len(self.m.ts):
            self.turn_away(s, "beyond_data", "the exit close lies beyond the data: outcome unknown")
            return equity, gross
        dv = float(self.vol[i, j])
        if not np.isfinite(dv):
            self.turn_away(s, "no_history", f"volatility needs {cfg.vol_window} gap-free daily returns")
            return equity, gross
        if fraction is None:
            f = kelly_fraction(s.p_up, s.q10, s.q50, s.q90, s.direction, cfg.kelly_fraction, cap=cfg.max_position)
            notional = equity * f * vol_target_scale(dv, cfg.target_daily_vol)
        else:
            notional = equity * fraction
        if not notional > 0:
            self.turn_away(s, "no_edge", "no positive edge from the probability and quantiles: size 0")
            return equity, gross
        adv = float(self.adv[i, j])
        known = bool(np.isfinite(adv) and adv > 0)
        gross_edge = expected_edge_bps(s)
        if self.guards:
            order = Order(s.coin, s.direction, notional,
                          gross_edge - 2 * cfg.fee_bps - (self.cost_bps(notional, adv, dv) if known else 0.0),
                          returns=self.returns_tail(i, j), adv_quote=adv if known else None, daily_vol=dv)
            # The book's positions carry returns over the same window as the order's, ending today.
            self.book.positions = {c: replace(p.order, returns=self.returns_tail(i, p.col))
                                   for c, p in self.open.items()}
            with np.errstate(invalid="ignore", divide="ignore"):
                scale, ds = apply_guards(order, self.book, self.guards)
            self.decisions += [self._record(s, d.guard, d.allow, d.scale, d.reason, notional) for d in ds]
            if not scale > 0:  # a rejection, or a guard that scaled the order to nothing
                self.skipped["guard_rejected"] += 1
                return equity, gross
            # A guard only ever shrinks an order: risk.CorrelationGuard returns a scale > 1 for an opposite-direction
            # order on an anti-correlated coin, which must not lift the size above what Kelly and vol allow.
            notional *= min(scale, 1.0)
        elif not known:
            self.turn_away(s, "cost_unknown", "no average daily volume: the entry cost cannot be priced")
            return equity, gross
        else:
            self.decisions.append(self._record(s, "backtest", True, 1.0, "guards disabled", notional))
            order = Order(s.coin, s.direction, notional, gross_edge, adv_quote=adv, daily_vol=dv)
        room = cfg.max_gross_exposure * equity - gross
        if room <= 0:
            self.turn_away(s, "exposure_cap", f"gross exposure already at {cfg.max_gross_exposure:.0%} of equity")
            return equity, gross
        notional = min(notional, room)
        impact = self.cost_bps(notional, adv, dv)
        fee, slip = notional * cfg.fee_bps / 1e4, notional * impact / 1e4
        self.cash -= s.direction * notional + fee + slip
        self.fees += fee
        self.impact += slip
        self.traded_notional += notional
        self.open[s.coin] = _Position(s, j, float(notional / px), i, i + s.horizon_days, float(px), notional, impact,
                                      fee + slip, adv, dv, replace(order, notional=notional))
        return equity - fee - slip, gross + notional


def run_backtest(market: Market, signals: list[Signal], cfg: BacktestConfig, start_ms: int | None = None,
                 end_ms: int | None = None) -> BacktestResult:
    """Simulate `signals` on `market` close by close: exits, marks, then that close's entries.

    The whole market is simulated (sizing and guards read the history before a signal), but the curve and the
    metrics cover only the closes in [start_ms, end_ms] when given: exposure and turnover are per period traded,
    not diluted by years before the first signal.
    """
    if len(market.ts) == 0:
        raise CstError("market_empty", "the market has no rows to simulate on")
    run = _Run(market, cfg)
    row = {int(t): i for i, t in enumerate(market.close_ts)}
    today: dict[int, list[Signal]] = defaultdict(list)
    for s in sorted(signals, key=lambda s: (s.ts_ms, s.coin, s.horizon_days)):
        if s.direction not in (1, -1) or s.horizon_days < 1:
            run.turn_away(s, "bad_signal", "direction must be +1/-1 and horizon_days at least 1")
        elif s.coin not in market.coins:
            run.turn_away(s, "unknown_coin", f"{s.coin} is not in the market")
        elif int(s.ts_ms) not in row:
            run.turn_away(s, "off_grid", "ts_ms is not the close time of a candle in the market")
        else:
            today[row[int(s.ts_ms)]].append(s)
    T = len(market.ts)
    equity, gross = np.empty(T), np.empty(T)
    for i in range(T):
        run.exits(i)
        eq, gx = run.value(i)
        run.book.equity, run.book.peak_equity = eq, max(run.book.peak_equity, eq)
        alloc = run.allocate(i, today.get(i, [])) if cfg.allocation == "mean_variance" else {}
        for s in today.get(i, []):
            eq, gx = run.entry(i, s, eq, gx, fraction=alloc.get(id(s)))
        equity[i], gross[i] = run.value(i)
    run.trades.sort(key=lambda t: (t["entry_ts"], t["coin"]))  # appended as they closed; read in entry order
    sl = market.window(market.close_ts[0] if start_ms is None else start_ms,
                       market.close_ts[-1] if end_ms is None else end_ms)
    ts, equity, gross = market.close_ts[sl], equity[sl], gross[sl]
    if ts.size == 0:
        raise CstError("window_empty", "no close lies in the requested backtest window")
    return BacktestResult(ts, equity, run.trades, run.decisions, _metrics(run, equity, gross, ts, len(signals)),
                          dict(run.skipped), gross)


def _metrics(run: _Run, equity: np.ndarray, gross: np.ndarray, ts: np.ndarray, n_signals: int) -> dict:
    """performance() plus trading figures. turnover = traded notional (entries + exits) / mean equity, per year."""
    ppy = run.cfg.periods_per_year
    out = performance(equity, ts, ppy)
    pnl = np.array([t["pnl"] for t in run.trades])
    years = _years(ts, ppy)
    out.update({
        "hit_rate": float((pnl > 0).mean()) if len(pnl) else None,
        "trades": len(pnl),
        "signals": n_signals,
        "turnover": float(run.traded_notional / equity.mean() / years) if years > 0 else None,
        "exposure": float(np.mean(gross / equity)),
        "costs_paid": float(run.fees + run.impact),
        "fees_paid": float(run.fees),
        "impact_paid": float(run.impact),
        "final_equity": float(equity[-1]),
    })
    return out


def market_from_panel(panel) -> Market:
    """A daily features Panel as the backtest reads it. Yahoo's crypto `Volume` is already in USD (BTC about
    1.7e10 a day; in coins it would exceed the supply), so it is the quote volume as it stands. A coin whose
    volume the quality gate declared unavailable gets NaN: never tradable, never assumed liquid."""
    vol = panel.fields["volume"].copy()
    for j, c in enumerate(panel.coins):
        if "volume" in panel.unavailable.get(c, set()):
            vol[:, j] = np.nan
    return Market(panel.open_ts, list(panel.coins), panel.fields["close"], vol)


def live_gate(market: Market, signals: list[Signal], cfg: BacktestConfig) -> list[dict]:
    """The main job's risk gate: today's signals sized and guarded exactly as the backtest enters them.

    cst holds no executed positions, so the book starts empty at `cfg.initial_equity`; signals of the same run
    are entered in turn, which is what the correlation guard and the exposure cap judge the next one against.
    Returns, per signal in the order given: allow, size as a share of equity, notional, and every decision.
    """
    run = _Run(market, cfg)
    row = {int(t): i for i, t in enumerate(market.close_ts)}
    equity, gross = cfg.initial_equity, 0.0
    alloc: dict[int, float] = {}
    if cfg.allocation == "mean_variance":
        by_row: dict[int, list[Signal]] = defaultdict(list)
        for s in signals:
            if int(s.ts_ms) in row and s.coin in market.coins:
                by_row[row[int(s.ts_ms)]].append(s)
        for i, sigs in by_row.items():
            alloc.update(run.allocate(i, sigs))
    out = []
    for s in signals:
        before = len(run.decisions)
        if int(s.ts_ms) not in row or s.coin not in market.coins:
            run.turn_away(s, "no_market_row", "no daily close for this coin at the decision time")
        else:
            equity, gross = run.entry(row[int(s.ts_ms)], s, equity, gross, require_exit=False,
                                      fraction=alloc.get(id(s)))
        pos = run.open.get(s.coin)
        taken = pos is not None and pos.signal is s
        out.append({"coin": s.coin, "allow": taken,
                    "size_fraction": float(pos.entry_notional / cfg.initial_equity) if taken else 0.0,
                    "notional": float(pos.entry_notional) if taken else 0.0,
                    "cost_bps": float(pos.entry_impact_bps + cfg.fee_bps) if taken else None,
                    "decisions": [{k: d[k] for k in ("guard", "allow", "scale", "reason")}
                                  for d in run.decisions[before:]]})
    return out
