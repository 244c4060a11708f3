"""The books step of the pipeline: at a run on a daily close, both paper books advance to that close; the signals
book takes the run's consensus signals through the risk gate, the research book the run's market-neutral basket.

A run between daily closes (an hourly run) leaves the books as they are: a book fills only at the close a decision
was made at, never later at that close's price. A book already at the run's close (a re-run, a retried execution)
is left as it is too, so neither changes a book twice.
"""

from __future__ import annotations

from services.books import store
from services.books.paper import book_risk, new_state, step_research, step_signals
from services.features.store import read_panel
from services.risk.basket import Leg
from services.risk.history import DAY_MS, price_history_from_panel
from services.risk.orders import orders_from_signals
from shared.contracts import iso_to_ms
from shared.pipeline.context import StepContext
from shared.pipeline.contracts import BookMove, BooksOutput, RunRef
from shared.records import Basket, BookName, BookStep
from shared.settings import Settings

BOOK_NAMES: tuple[BookName, ...] = ("signals", "research")


def history_rows(settings: Settings) -> int:
    """Daily closes a book step reads before the first close it advances through: what sizing, the guards and the
    liquidity of the basket look back over."""
    r = settings.risk
    return max(r.vol_window, r.corr_window, r.adv_window, 30) + 2


def basket_legs(basket: Basket | None) -> list[Leg] | None:
    if basket is None:
        return None
    return [Leg(x.coin, x.side, x.score, x.weight, x.notional, x.impact_bps) for x in basket.long + basket.short]


def books(ctx: StepContext, ref: RunRef) -> BooksOutput:
    """Both paper books advanced to the run's daily close, or left as they are with the reason."""
    settings, lake = ctx.settings, ctx.lake
    as_of = iso_to_ms(ref.as_of)
    close = as_of - as_of % DAY_MS
    out = BooksOutput(run_id=ref.run_id)
    if as_of != close:
        for name in BOOK_NAMES:
            out.books[name] = BookMove(note="a run between daily closes: the books move only at a daily close")
        return out
    risk_out, features = ctx.output(ref.run_id, "risk"), ctx.output(ref.run_id, "features")
    frame = features.frames.get("1d") if features else None
    venue = frame.universe.venue if frame is not None and frame.universe is not None else settings.sources.venue
    states = {name: store.load_state(lake, name) for name in BOOK_NAMES}
    behind = [s.last_close_ts for s in states.values() if s is not None and s.last_close_ts < close]
    first = min(behind, default=close - DAY_MS) + DAY_MS
    panel = read_panel(lake, "1d", since_ms=first - (history_rows(settings) + 1) * DAY_MS, until_ms=close)
    if panel is None or not panel.open_ts.size:
        for name in BOOK_NAMES:
            out.books[name] = BookMove(note="no daily prices in the lake up to this close")
        return out
    history = price_history_from_panel(panel)
    cfg = book_risk(settings, venue)
    for name in BOOK_NAMES:
        state = states[name] or new_state(name, close, settings.risk.initial_equity, venue)
        if state.last_close_ts >= close:
            out.books[name] = BookMove(note=f"already at this close (stepped by {state.runs[-1]})" if state.runs
                                       else "already at this close")
            continue
        version, targets = None, {}
        if name == "signals":
            signals = risk_out.signals if risk_out else []
            orders = [o for o in orders_from_signals(signals, settings.training.horizons) if o.ts_ms == close]
            new, moved = step_signals(state, history, {close: orders}, cfg, close, ref.run_id)
            handed = len(orders)
        else:
            basket = risk_out.basket if risk_out and risk_out.basket and risk_out.basket.decision_ts == close else None
            legs = basket_legs(basket)
            version = basket.model_version if basket else None
            new, moved = step_research(state, history, {close: legs} if legs is not None else {}, settings, close,
                                       ref.run_id)
            handed = len(legs or [])
            targets = {leg.coin: leg.weight for leg in legs or []}
        if not moved.closes:
            out.books[name] = BookMove(note="the daily prices do not reach this close yet")
            continue
        note = None if len(moved.closes) == 1 else (
            f"advanced through {len(moved.closes)} closes: {len(moved.closes) - 1} without a run of their own "
            "(their decisions were not followed)")
        store.save(lake, new, BookStep(book=name, run_id=ref.run_id, as_of=ref.as_of, closes=moved.closes,
                                       fills=moved.fills, decisions=moved.decisions, orders=handed,
                                       targets=targets, model_version=version, note=note))
        out.books[name] = BookMove(closes=len(moved.closes), fills=len(moved.fills), equity=new.marks[-1].equity,
                                   note=note)
    return out
