"""The one entry rule: size an order, run the guards, enter it; the live gate and the backtest both enter through it.

Sizing and the guards see only closes and volumes up to and including the decision close. Costs, per side and on
traded notional: `fee_bps` plus the square-root impact model of guards.py (a MODEL, labelled "sqrt_impact"; daily
history has no order book).

Edge handed to the cost guard (bps): with p the probability of the order's direction and gain/loss taken from the
favourable/unfavourable quantile exactly as `kelly_fraction` takes them (long: gain q90, loss -q10; short: gain
-q10, loss q90), gross edge = 1e4 * (p * gain - (1 - p) * loss). The guard compares one side's impact with it, so
it is given the edge net of the other costs of the round trip: gross - 2 * fee_bps - exit impact (the same model at
the same notional). The guard's "cost < edge" is then "round-trip cost < gross edge".

An order for a coin that already has an open position is turned away ("already_open"), never added to or
extended: each position is one order with the horizon that sized it, and a coin's exposure stays within
`max_position`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, replace

import numpy as np

from services.risk.guards import GUARDS, Book, SizedOrder, apply_guards, impact_model
from services.risk.history import DAY_MS, PriceHistory, mark_at_last_close
from services.risk.orders import Order
from services.risk.sizing import (
    expected_edge_bps,
    kelly_fraction,
    mean_variance_fractions,
    vol_target_scale,
)
from shared.errors import CstError
from shared.records import BookDecision, GuardDecision, RiskDecision
from shared.rolling import log_return, rolling_mean, rolling_std
from shared.settings import RiskSettings

COST_MODEL = "sqrt_impact"


@dataclass
class Position:
    order: Order
    col: int
    qty: float  # coins, > 0; the sign is the order's direction
    entry_ts: int  # close time of the entry (ms)
    exit_ts: int  # close time the horizon ends at: the exit's close unless the coin has no candle then
    entry_price: float
    entry_notional: float
    entry_impact_bps: float
    entry_cost: float
    adv: float  # inputs of the entry's cost, reused at an exit whose own are unknown
    daily_vol: float
    sized: SizedOrder


class Portfolio:
    """One book on a price history: cash, open positions and every decision, entered through `entry`.

    The backtest advances it close by close (and adds exits); the live gate enters today's orders into an empty one.
    """

    def __init__(self, history: PriceHistory, cfg: RiskSettings):
        if cfg.allocation not in ("kelly", "mean_variance"):
            # RiskSettings validates it, but model_copy(update=...) does not.
            raise CstError("bad_allocation", f"allocation {cfg.allocation!r}: use 'kelly' or 'mean_variance'")
        self.history, self.cfg = history, cfg
        close = history.close
        with np.errstate(divide="ignore", invalid="ignore"):
            self.lr = log_return(close, 1)  # NaN wherever a close is missing
        # Causal rolling statistics (shared with the features): NaN unless the whole window is known.
        self.vol = rolling_std(self.lr, cfg.vol_window)
        self.adv = rolling_mean(history.quote_volume, cfg.adv_window)
        self.mark = mark_at_last_close(close)
        self.guards = [GUARDS[n](**cfg.guard_params.get(n, {})) for n in cfg.guard_names] if cfg.guards else []
        self.cash = cfg.initial_equity
        self.book = Book(cfg.initial_equity, cfg.initial_equity)
        self.open: dict[str, Position] = {}
        self.decisions: list[BookDecision] = []
        self.skipped: Counter[str] = Counter()
        # Which volatility sized each entry: the model's forecast, or the trailing daily sd where it had none.
        self.sizing_vol: Counter[str] = Counter()
        self.traded_notional = 0.0
        self.fees = 0.0
        self.impact = 0.0
        self.funding = 0.0
        self.trades: list[dict] = []  # closed positions, in the order they closed
        # A backtest closes what is open at its last close; a paper book (and its replay) holds it to its horizon.
        self.close_at_end = True

    # -- one close ----------------------------------------------------------------------------------------------
    def step(self, i: int, orders: list[Order], require_exit: bool = True) -> tuple[float, float]:
        """Close i: exits, marks, then that close's entries (by coin, then horizon: the same orders are entered in
        the same order however they were handed over); returns (equity, gross exposure) after them."""
        orders = sorted(orders, key=lambda o: (o.coin, o.horizon_days))
        self.exits(i)
        eq, gx = self.value(i)
        self.book.equity, self.book.peak_equity = eq, max(self.book.peak_equity, eq)
        alloc = self.allocate(i, orders) if self.cfg.allocation == "mean_variance" else {}
        for o in orders:
            eq, gx = self.entry(i, o, eq, gx, require_exit=require_exit, fraction=alloc.get(id(o)))
        return self.value(i)

    def funding_cost(self, p: Position, exit_ts: int) -> float:
        """Perpetual funding over the days held (0 on spot): a long pays `funding_long_bps_per_day` of its entry
        notional, a short receives `funding_short_bps_per_day`."""
        rate = self.cfg.funding_long_bps_per_day if p.order.direction == 1 else -self.cfg.funding_short_bps_per_day
        return p.entry_notional * rate / 1e4 * (exit_ts - p.entry_ts) / DAY_MS

    def exits(self, i: int) -> None:
        """Close the positions due at close i: their horizon reached (or passed, where the coin had no candle), the
        stop-loss hit, or the history's last close unless the book holds its positions open past it."""
        last = self.close_at_end and i == len(self.history.ts) - 1
        stop, now = self.cfg.stop_loss, int(self.history.close_ts[i])
        for coin, p in list(self.open.items()):
            px = self.history.close[i, p.col]
            if not np.isfinite(px):
                if not last:
                    continue  # no candle: the exit waits for the next close, the mark holds the last one
                px, reason = self.mark[i, p.col], "end_of_data"
            elif now >= p.exit_ts:
                reason = "horizon" if now == p.exit_ts else "delayed_exit"
            elif stop is not None and p.order.direction * (px / p.entry_price - 1) <= -stop:
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
            funding = self.funding_cost(p, now)
            self.cash += p.order.direction * value - fee - slip - funding
            self.fees += fee
            self.impact += slip
            self.funding += funding
            self.traded_notional += value
            pnl = p.order.direction * p.qty * (px - p.entry_price) - p.entry_cost - fee - slip - funding
            self.trades.append({
                "coin": coin, "direction": p.order.direction, "horizon_days": p.order.horizon_days,
                "decision_ts": int(p.order.ts_ms), "entry_ts": p.entry_ts, "exit_ts": now,
                "entry_price": p.entry_price, "exit_price": float(px), "qty": p.qty,
                "entry_notional": p.entry_notional, "exit_notional": float(value),
                "fee_bps": self.cfg.fee_bps, "entry_cost_bps": p.entry_impact_bps, "exit_cost_bps": impact,
                "cost_model": COST_MODEL, "funding": funding, "exit_costs": fee + slip + funding,
                "costs": p.entry_cost + fee + slip + funding,
                "pnl": float(pnl), "return": float(pnl / p.entry_notional), "exit_reason": reason,
                "p_up": p.order.p_up,
            })
            del self.open[coin]

    # -- bookkeeping ------------------------------------------------------------------------------------------
    def value(self, i: int) -> tuple[float, float]:
        """(equity, gross exposure) at close i, positions marked at their last known close."""
        net = gross = 0.0
        for p in self.open.values():
            v = p.qty * self.mark[i, p.col]
            net += p.order.direction * v
            gross += v
        return self.cash + net, gross

    def turn_away(self, o: Order, code: str, reason: str) -> None:
        """An order refused before (or without) the guards: counted under `code` and logged with its reason."""
        self.skipped[code] += 1
        self.decisions.append(self._record(o, "backtest", False, 0.0, f"{code}: {reason}", None))

    @staticmethod
    def _record(o: Order, guard: str, allow: bool, scale: float, reason: str, notional: float | None) -> BookDecision:
        return BookDecision(ts=int(o.ts_ms), coin=o.coin, direction=o.direction, horizon_days=o.horizon_days,
                            guard=guard, allow=allow, scale=scale, reason=reason, notional=notional)

    def cost_bps(self, notional: float, adv: float, daily_vol: float) -> float:
        return float(impact_model(notional, adv, daily_vol).slippage_bps)

    def returns_tail(self, i: int, j: int) -> np.ndarray | None:
        """The longest gap-free run of log returns ending at day i, at most `corr_window` long."""
        w = self.lr[max(0, i - self.cfg.corr_window + 1):i + 1, j]
        bad = np.flatnonzero(~np.isfinite(w))
        w = w[bad[-1] + 1:] if len(bad) else w
        return w if len(w) >= 3 else None

    # -- entries ----------------------------------------------------------------------------------------------
    def allocate(self, i: int, orders: list[Order]) -> dict[int, float]:
        """Mean-variance shares of equity for the day's long orders (Ledoit-Wolf covariance over the last
        `corr_window` days where every one of their coins has a return); {id(order): fraction}."""
        longs = [o for o in orders if o.direction == 1 and o.coin not in self.open]
        if not longs:
            return {}
        cols = [self.history.coins.index(o.coin) for o in longs]
        R = self.lr[max(0, i - self.cfg.corr_window + 1):i + 1][:, cols]
        R = R[np.isfinite(R).all(axis=1)]
        if len(R) < max(3, len(cols) + 1):
            return {id(o): 0.0 for o in longs}  # too little joint history to estimate a covariance
        mu = np.array([expected_edge_bps(o) / 1e4 / o.horizon_days for o in longs])
        w = mean_variance_fractions(mu, R, self.cfg.target_daily_vol, self.cfg.max_position)
        return {id(o): float(f) for o, f in zip(longs, w, strict=True)}

    def entry(self, i: int, o: Order, equity: float, gross: float, require_exit: bool = True,
              fraction: float | None = None) -> tuple[float, float]:
        """Size, guard and enter one order at close i; returns the updated (equity, gross exposure).

        `require_exit=False` is the live gate: today's order has no exit close yet, and that is not a reason
        to refuse it.
        """
        cfg, j = self.cfg, self.history.coins.index(o.coin)
        px = self.history.close[i, j]
        if o.direction == -1 and not cfg.allow_short:
            self.turn_away(o, "short_not_allowed", "spot backtest: shorts are not allowed")
            return equity, gross
        if not (np.isfinite(px) and px > 0):
            self.turn_away(o, "no_price", "no close at the decision time")
            return equity, gross
        if o.coin in self.open:
            self.turn_away(o, "already_open", f"a position in {o.coin} is already open: not added to or extended")
            return equity, gross
        if require_exit and i + o.horizon_days >= len(self.history.ts):
            self.turn_away(o, "beyond_data", "the exit close lies beyond the data: outcome unknown")
            return equity, gross
        dv = float(self.vol[i, j])
        if not np.isfinite(dv):
            self.turn_away(o, "no_history", f"volatility needs {cfg.vol_window} gap-free daily returns")
            return equity, gross
        if fraction is None:
            f = kelly_fraction(o.p_up, o.q10, o.q50, o.q90, o.direction, cfg.kelly_fraction, cap=cfg.max_position)
            fv = o.forecast_daily_vol()
            self.sizing_vol["forecast" if fv is not None else "trailing"] += 1
            notional = equity * f * vol_target_scale(fv if fv is not None else dv, cfg.target_daily_vol)
        else:
            notional = equity * fraction
        if not notional > 0:
            self.turn_away(o, "no_edge", "no positive edge from the probability and quantiles: size 0")
            return equity, gross
        adv = float(self.adv[i, j])
        known = bool(np.isfinite(adv) and adv > 0)
        gross_edge = expected_edge_bps(o)
        if self.guards:
            sized = SizedOrder(o.coin, o.direction, notional,
                               gross_edge - 2 * cfg.fee_bps - (self.cost_bps(notional, adv, dv) if known else 0.0),
                               returns=self.returns_tail(i, j), adv_quote=adv if known else None, daily_vol=dv)
            # The book's positions carry returns over the same window as the order's, ending today.
            self.book.positions = {c: replace(p.sized, returns=self.returns_tail(i, p.col))
                                   for c, p in self.open.items()}
            with np.errstate(invalid="ignore", divide="ignore"):
                scale, ds = apply_guards(sized, self.book, self.guards)
            self.decisions += [self._record(o, d.guard, d.allow, d.scale, d.reason, notional) for d in ds]
            if not scale > 0:  # a rejection, or a guard that scaled the order to nothing
                self.skipped["guard_rejected"] += 1
                return equity, gross
            # A guard only ever shrinks an order: CorrelationGuard returns a scale > 1 for an opposite-direction
            # order on an anti-correlated coin, which must not lift the size above what Kelly and vol allow.
            notional *= min(scale, 1.0)
        elif not known:
            self.turn_away(o, "cost_unknown", "no average daily volume: the entry cost cannot be priced")
            return equity, gross
        else:
            self.decisions.append(self._record(o, "backtest", True, 1.0, "guards disabled", notional))
            sized = SizedOrder(o.coin, o.direction, notional, gross_edge, adv_quote=adv, daily_vol=dv)
        room = cfg.max_gross_exposure * equity - gross
        if room <= 0:
            self.turn_away(o, "exposure_cap", f"gross exposure already at {cfg.max_gross_exposure:.0%} of equity")
            return equity, gross
        notional = min(notional, room)
        impact = self.cost_bps(notional, adv, dv)
        fee, slip = notional * cfg.fee_bps / 1e4, notional * impact / 1e4
        self.cash -= o.direction * notional + fee + slip
        self.fees += fee
        self.impact += slip
        self.traded_notional += notional
        entry_ts = int(self.history.close_ts[i])
        self.open[o.coin] = Position(o, j, float(notional / px), entry_ts, entry_ts + o.horizon_days * DAY_MS,
                                     float(px), notional, impact, fee + slip, adv, dv, replace(sized, notional=notional))
        return equity - fee - slip, gross + notional


def live_gate(history: PriceHistory, orders: list[Order], cfg: RiskSettings) -> list[RiskDecision]:
    """The main job's risk gate: today's orders sized and guarded exactly as the backtest enters them.

    cst holds no executed positions, so the book starts empty at `cfg.initial_equity`; orders of the same run
    are entered in turn, which is what the correlation guard and the exposure cap judge the next one against.
    Returns, per order in the order given: allow, size as a share of equity, notional, and every decision.
    """
    book = Portfolio(history, cfg)
    row = {int(t): i for i, t in enumerate(history.close_ts)}
    equity, gross = cfg.initial_equity, 0.0
    alloc: dict[int, float] = {}
    if cfg.allocation == "mean_variance":
        by_row: dict[int, list[Order]] = defaultdict(list)
        for o in orders:
            if int(o.ts_ms) in row and o.coin in history.coins:
                by_row[row[int(o.ts_ms)]].append(o)
        for i, day in by_row.items():
            alloc.update(book.allocate(i, day))
    out = []
    for o in orders:
        before = len(book.decisions)
        if int(o.ts_ms) not in row or o.coin not in history.coins:
            book.turn_away(o, "no_market_row", "no daily close for this coin at the decision time")
        else:
            equity, gross = book.entry(row[int(o.ts_ms)], o, equity, gross, require_exit=False,
                                       fraction=alloc.get(id(o)))
        pos = book.open.get(o.coin)
        taken = pos is not None and pos.order is o
        out.append(RiskDecision(
            coin=o.coin, allow=taken, size_fraction=float(pos.entry_notional / cfg.initial_equity) if taken else 0.0,
            notional=float(pos.entry_notional) if taken else 0.0,
            cost_bps=float(pos.entry_impact_bps + cfg.fee_bps) if taken else None,
            decisions=[GuardDecision(**d.model_dump(include=set(GuardDecision.model_fields)))
                       for d in book.decisions[before:]]))
    return out
