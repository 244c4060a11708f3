"""The paper books' arithmetic: the signals book advanced close by close through the risk gate's own entry and exit
rules (services/risk/gate.Portfolio, which the backtest runs), and the research book held at the market-neutral
basket's weights; both carried from one step to the next in a `BookState`, so the same closes and orders give the
same fills whether stepped run by run or replayed in one pass.

Timing: an order decided at a daily close fills at that close's price (the next bar's open), as in the backtest.
Costs: the backtest's (fee per side plus the square-root impact model) and perpetual funding per day held where the
venue is a perpetual's (an assumed rate, the basket's: no funding rates are recorded in the lake).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.risk.basket import Leg
from services.risk.gate import Portfolio, Position
from services.risk.guards import SizedOrder, impact_bps, liquidity
from services.risk.history import DAY_MS, PriceHistory
from services.risk.orders import Order
from shared.records import BookDecision, BookMark, BookName, BookPosition, BookState, Fill
from shared.settings import RiskSettings, Settings

LABELS: dict[str, str] = {
    "signals": "Signals book: the actionable consensus signals (at least 80% and several horizons agreeing), sized, "
               "guarded and costed exactly as the backtest enters them",
    "research": "Research book: the market-neutral basket of the cross-sectional score, held at its weights and "
                "rebalanced at each of its decisions; research, not a signal, unless the score's skill is demonstrated",
}


def book_risk(settings: Settings, venue: str | None) -> RiskSettings:
    """The risk settings a book trades by: the backtest's, plus the basket's assumed funding on a perpetual venue."""
    if venue is None or not venue.endswith("-perp"):
        return settings.risk
    b = settings.risk.basket
    return settings.risk.model_copy(update={"funding_long_bps_per_day": b.funding_long_bps_per_day,
                                            "funding_short_bps_per_day": b.funding_short_bps_per_day})


def new_state(book: BookName, close_ts: int, equity: float, venue: str | None) -> BookState:
    return BookState(book=book, label=LABELS[book], venue=venue, start_ts=close_ts, last_close_ts=close_ts - DAY_MS,
                     cash=equity, peak_equity=equity)


def closes_to_step(history: PriceHistory, state: BookState, through_ts: int) -> list[int]:
    """Rows of `history` whose close lies after the book's last close and at or before `through_ts`."""
    ts = history.close_ts
    return [int(i) for i in np.flatnonzero((ts > state.last_close_ts) & (ts <= through_ts))]


@dataclass
class Stepped:
    fills: list[Fill] = field(default_factory=list)
    decisions: list[BookDecision] = field(default_factory=list)
    closes: list[int] = field(default_factory=list)


def _with_coins(history: PriceHistory, coins: list[str]) -> PriceHistory:
    """The history with a column of no candles for each coin a book holds that the history does not list."""
    missing = [c for c in coins if c not in history.coins]
    if not missing:
        return history
    pad = np.full((len(history.ts), len(missing)), np.nan)
    return PriceHistory(history.ts, history.coins + missing, np.hstack([history.close, pad]),
                        np.hstack([history.quote_volume, pad]))


# -- the signals book ----------------------------------------------------------------------------------------------
def _restore(history: PriceHistory, cfg: RiskSettings, state: BookState) -> Portfolio:
    pf = Portfolio(_with_coins(history, [p.coin for p in state.positions]), cfg)
    pf.close_at_end = False
    pf.cash, pf.fees, pf.impact, pf.funding = state.cash, state.fees, state.impact, state.funding
    pf.traded_notional = state.traded_notional
    pf.book.peak_equity, pf.book.halted = state.peak_equity, state.halted
    for p in state.positions:
        j = pf.history.coins.index(p.coin)
        o = Order(p.decision_ts, p.coin, p.direction, p.p_up, p.q10, p.q50, p.q90, p.horizon_days, p.vol_forecast)
        pf.open[p.coin] = Position(o, j, p.qty, p.entry_ts, p.exit_ts, p.entry_price, p.entry_notional,
                                   p.entry_impact_bps, p.entry_cost, p.adv, p.daily_vol,
                                   SizedOrder(p.coin, p.direction, p.entry_notional, p.edge_bps, adv_quote=p.adv,
                                              daily_vol=p.daily_vol))
        # A coin without a candle since before this window is marked at the book's last mark of it.
        pf.mark[:, j] = np.where(np.isfinite(pf.mark[:, j]), pf.mark[:, j], p.last_price)
    return pf


def _position(p: Position, last_price: float) -> BookPosition:
    o = p.order
    return BookPosition(coin=o.coin, direction=o.direction, qty=p.qty, entry_ts=p.entry_ts, exit_ts=p.exit_ts,
                        entry_price=p.entry_price, entry_notional=p.entry_notional,
                        entry_impact_bps=p.entry_impact_bps, entry_cost=p.entry_cost, adv=p.adv, daily_vol=p.daily_vol,
                        edge_bps=p.sized.expected_edge_bps, decision_ts=int(o.ts_ms), horizon_days=o.horizon_days,
                        p_up=o.p_up, q10=o.q10, q50=o.q50, q90=o.q90, vol_forecast=o.vol_forecast,
                        last_price=last_price)


def exit_fill(t: dict, run_id: str) -> Fill:
    """A closed position of the backtest's trade list as the fill that closed it."""
    value = t["exit_notional"]
    return Fill(book="signals", ts=t["exit_ts"], coin=t["coin"], action="exit", side=-t["direction"], qty=t["qty"],
                price=t["exit_price"], notional=value, fee=value * t["fee_bps"] / 1e4,
                impact=value * t["exit_cost_bps"] / 1e4, funding=t["funding"], pnl=t["pnl"], reason=t["exit_reason"],
                decision_ts=t["decision_ts"], run_id=run_id)


def entry_fill(p: Position, fee_bps: float, run_id: str) -> Fill:
    return Fill(book="signals", ts=p.entry_ts, coin=p.order.coin, action="entry", side=p.order.direction, qty=p.qty,
                price=p.entry_price, notional=p.entry_notional, fee=p.entry_notional * fee_bps / 1e4,
                impact=p.entry_notional * p.entry_impact_bps / 1e4, reason="signal", decision_ts=int(p.order.ts_ms),
                run_id=run_id)


def step_signals(state: BookState, history: PriceHistory, orders: dict[int, list[Order]], cfg: RiskSettings,
                 through_ts: int, run_id: str) -> tuple[BookState, Stepped]:
    """Advance the signals book through every close after its last one up to `through_ts`: exits, marks, then the
    orders decided at that close (`orders`: close time -> orders), entered through the risk gate."""
    pf = _restore(history, cfg, state)
    out = Stepped()
    marks = list(state.marks)
    for i in closes_to_step(pf.history, state, through_ts):
        ts = int(pf.history.close_ts[i])
        n_trades, n_decisions = len(pf.trades), len(pf.decisions)
        eq, gx = pf.step(i, orders.get(ts, []), require_exit=False)
        out.fills += [exit_fill(t, run_id) for t in pf.trades[n_trades:]]
        out.fills += [entry_fill(p, cfg.fee_bps, run_id) for _, p in sorted(pf.open.items()) if p.entry_ts == ts]
        out.decisions += pf.decisions[n_decisions:]
        out.closes.append(ts)
        marks.append(BookMark(ts=ts, equity=float(eq), gross=float(gx)))
    if not out.closes:
        return state, out
    last = int(np.flatnonzero(pf.history.close_ts == out.closes[-1])[0])
    new = state.model_copy(update={
        "last_close_ts": out.closes[-1], "cash": float(pf.cash), "peak_equity": float(pf.book.peak_equity),
        "halted": bool(pf.book.halted), "fees": float(pf.fees), "impact": float(pf.impact),
        "funding": float(pf.funding), "traded_notional": float(pf.traded_notional),
        "positions": [_position(p, float(pf.mark[last, p.col])) for _, p in sorted(pf.open.items())],
        "marks": marks, "runs": state.runs + [run_id]})
    return new, out


# -- the research book ---------------------------------------------------------------------------------------------
def step_research(state: BookState, history: PriceHistory, baskets: dict[int, list[Leg]], settings: Settings,
                  through_ts: int, run_id: str) -> tuple[BookState, Stepped]:
    """Advance the research book through every close after its last one up to `through_ts`: funding for the day
    held, the mark, then at a close with a basket decision (`baskets`: close time -> its legs) a rebalance to the
    legs' signed weights of the equity; a coin no longer in the basket is closed. A coin without a candle is neither
    bought nor sold (held, marked at its last close)."""
    cfg = book_risk(settings, state.venue)
    b = settings.risk.basket
    hist = _with_coins(history, sorted(state.holdings))
    col = {c: j for j, c in enumerate(hist.coins)}
    close = hist.close
    adv, vol = liquidity(close, hist.quote_volume, DAY_MS)
    units = dict(state.holdings)
    last_px = dict(state.last_prices)
    cash, fees, imp, fund, traded = state.cash, state.fees, state.impact, state.funding, state.traded_notional
    peak, marks, out = state.peak_equity, list(state.marks), Stepped()
    prev_ts = state.last_close_ts
    for i in closes_to_step(hist, state, through_ts):
        ts = int(hist.close_ts[i])
        for c in units:
            px = close[i, col[c]]
            if np.isfinite(px):
                last_px[c] = float(px)
        days = (ts - prev_ts) / DAY_MS
        for c, u in sorted(units.items()):
            v = u * last_px[c]
            rate = cfg.funding_long_bps_per_day if v > 0 else cfg.funding_short_bps_per_day
            f = (abs(v) if v > 0 else -abs(v)) * rate / 1e4 * days  # longs pay, shorts receive
            cash -= f
            fund += f
        equity = cash + sum(u * last_px[c] for c, u in units.items())
        legs = baskets.get(ts)
        if legs is not None:
            target = {leg.coin: leg.weight for leg in legs}
            for c in sorted(set(units) | set(target)):
                j = col.get(c)
                px = close[i, j] if j is not None else np.nan
                if not (np.isfinite(px) and px > 0):
                    continue  # no candle: not traded this close
                want = target.get(c, 0.0) * equity / px
                du = want - units.get(c, 0.0)
                if du == 0.0:
                    continue
                notional = abs(du) * px
                a, d = float(adv[i, j]), float(vol[i, j])
                bps = float(impact_bps(notional, a, d, b.half_spread_bps, b.impact_k)) if (
                    np.isfinite(a) and a > 0 and np.isfinite(d)) else 0.0
                fee, slip = notional * b.taker_fee_bps / 1e4, notional * bps / 1e4
                cash -= du * px + fee + slip
                fees, imp, traded = fees + fee, imp + slip, traded + notional
                units[c] = want
                last_px[c] = float(px)
                out.fills.append(Fill(book="research", ts=ts, coin=c, action="rebalance", side=1 if du > 0 else -1,
                                      qty=float(abs(du)), price=float(px), notional=float(notional), fee=float(fee),
                                      impact=float(slip), reason="rebalance", decision_ts=ts, run_id=run_id))
            units = {c: u for c, u in units.items() if u != 0.0}
            last_px = {c: p for c, p in last_px.items() if c in units}
        equity = cash + sum(u * last_px[c] for c, u in units.items())
        gross = sum(abs(u * last_px[c]) for c, u in units.items())
        peak = max(peak, equity)
        marks.append(BookMark(ts=ts, equity=float(equity), gross=float(gross)))
        out.closes.append(ts)
        prev_ts = ts
    if not out.closes:
        return state, out
    new = state.model_copy(update={
        "last_close_ts": out.closes[-1], "cash": float(cash), "peak_equity": float(peak), "fees": float(fees),
        "impact": float(imp), "funding": float(fund), "traded_notional": float(traded), "holdings": units,
        "last_prices": last_px, "marks": marks, "runs": state.runs + [run_id]})
    return new, out
