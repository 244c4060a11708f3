"""The paper books' track record as the dashboard and the API show it: equity against BTC and the equal-weight
universe over the same closes, drawdown, hits, costs, the last reconciliation and the alerts sent."""

from __future__ import annotations

import numpy as np

from services.alerts.store import sent_by_event
from services.books import store
from services.evaluation.backtest import buy_and_hold, drawdown, equal_weight
from services.features.store import read_panel
from services.risk.history import DAY_MS, price_history_from_panel
from shared.datasets import day_of
from shared.errors import CstError
from shared.records import BookRecord, BookState, TrackRecord
from shared.settings import Settings
from shared.storage import Lake

BENCHMARK = "BTC"


def _curve(values: np.ndarray | None, n: int) -> list[float | None]:
    if values is None or len(values) != n:
        return [None] * n
    return [float(v) if np.isfinite(v) else None for v in values]


def book_record(lake: Lake, settings: Settings, state: BookState) -> BookRecord:
    ts = np.array([m.ts for m in state.marks], dtype=np.int64)
    eq = np.array([m.equity for m in state.marks])
    start, end = int(ts[0]), int(ts[-1])
    btc = ew = None
    panel = read_panel(lake, "1d", since_ms=start - DAY_MS, until_ms=end)
    if panel is not None and panel.open_ts.size:
        history = price_history_from_panel(panel)
        sl = history.window(start, end)
        if history.close_ts[sl].size == ts.size:
            try:
                btc = buy_and_hold(history, BENCHMARK, start, end)
            except CstError:
                btc = None  # the universe holds no BTC (or none at the start): the curve is left out
            try:
                ew = equal_weight(history, start, end, fee_bps=settings.risk.basket.taker_fee_bps)
            except CstError:
                ew = None
    steps = store.steps(lake, state.book)
    fills = [f for s in steps for f in s.fills]
    if state.book == "signals":
        exits = [f for f in fills if f.action == "exit"]
        closed, wins = len(exits), sum(1 for f in exits if (f.pnl or 0.0) > 0)
    else:
        r = np.diff(eq)
        closed, wins = int(r.size), int((r > 0).sum())
    first = settings.risk.initial_equity  # every book starts with it (paper.new_state)
    return BookRecord(
        book=state.book, label=state.label, venue=state.venue, start_ts=state.start_ts,
        last_close_ts=state.last_close_ts, ts=ts.tolist(), equity=eq.tolist(), growth=(eq / first).tolist(),
        btc=_curve(btc, ts.size), equal_weight=_curve(ew, ts.size), drawdown=drawdown(eq).tolist(),
        total_return=float(eq[-1] / first - 1.0), max_drawdown=float(drawdown(eq).max()), closed=closed, wins=wins,
        fills=len(fills), fees=state.fees, impact=state.impact, funding=state.funding, positions=state.positions,
        holdings=state.holdings)


def track_record(lake: Lake, settings: Settings) -> TrackRecord:
    books = [book_record(lake, settings, s) for s in (store.load_state(lake, n) for n in ("signals", "research"))
             if s is not None and s.marks]
    since = min((b.start_ts for b in books), default=None)
    day = day_of(since) if since is not None else None
    return TrackRecord(
        books=books, reconciliation=store.load_reconciliation(lake),
        alerts_sent=sent_by_event(lake, day) if day else {},
        benchmark_note=f"BTC bought at each book's first close; the equal-weight universe: every coin with a close, "
                       f"rebalanced daily, paying {settings.risk.basket.taker_fee_bps:g} bps on what it trades; "
                       "neither pays funding. The books hold only what the lake's prices held at each run: coins "
                       "delisted before the data was collected are absent (survivorship).")
