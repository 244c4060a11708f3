"""Reconciliation: the backtest replayed over the paper books' period from the logged predictions alone, and every
way the replay and the books part, by cause.

The replay rebuilds each daily close's decisions from the prediction log (each horizon's logged decision at that
close; consensus and the risk gate for the signals, the market-neutral basket for the research book), runs them in
one pass on the lake's prices as they stand now (`run_backtest(hold_open=True)` for the signals; the research
book's own rebalancing for the basket), and sets each entry, exit and rebalance beside the book's. A difference has
a cause: a close without a run of its own (`missed_run`), a signal or basket the run had and the log does not give
again or the other way round (`signal`), a basket ranked by another model version (`model_version`), a coin the
run's prices did not hold (`universe`), the gate deciding otherwise on the same order (`gate`), a price revised since
(`fill_price`), a cost priced otherwise (`cost`). What remains is `unexplained`. Where there is no cause, the books'
P&L equals the replay's to the cent.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

from services.books import store
from services.books.paper import book_risk, new_state, step_research
from services.books.steps import basket_legs, history_rows
from services.evaluation.backtest import run_backtest
from services.features.store import read_panel
from services.predict import logbook
from services.predict.signals import consensus
from services.risk.basket import Leg
from services.risk.history import DAY_MS, price_history_from_panel
from services.risk.orders import Order, orders_from_signals
from services.risk.steps import market_neutral_basket
from shared.datasets import day_of
from shared.errors import CstError
from shared.records import BookState, BookStep, Difference, Prediction, Reconciliation
from shared.settings import Settings
from shared.storage import Lake

CENT = 0.005  # P&L and cash compare to the cent
PRICE_REL = 1e-9


def logged_at(lake: Lake, settings: Settings, close: int, horizons: list[str] | None = None) -> list[Prediction]:
    """What a run at this close served, as the log holds it: each horizon's decision at the close."""
    out: list[Prediction] = []
    for h in horizons or list(settings.training.horizons):
        got = logbook.logged_decision(lake, h, close)
        if got is not None:
            out += got[2]
    return out


def replay_orders(lake: Lake, settings: Settings, closes: list[int]) -> dict[int, list[Order]]:
    """close -> the orders the consensus of the logged predictions at that close asks the gate to enter."""
    out: dict[int, list[Order]] = {}
    for c in closes:
        signals = consensus(logged_at(lake, settings, c), settings.consensus_min_horizons)
        out[c] = [o for o in orders_from_signals(signals, settings.training.horizons) if o.ts_ms == c]
    return out


def replay_baskets(lake: Lake, settings: Settings, closes: list[int]) -> tuple[dict[int, list[Leg]], dict[int, str]]:
    """close -> the market-neutral basket's legs rebuilt from the logged scores and the prices up to that close, and
    the model version that ranked it."""
    h = settings.risk.basket.horizon
    legs: dict[int, list[Leg]] = {}
    versions: dict[int, str] = {}
    for c in closes:
        preds = logged_at(lake, settings, c, [h])
        if not preds:
            continue
        panel = read_panel(lake, "1d", since_ms=c - history_rows(settings) * DAY_MS, until_ms=c)
        basket, _ = market_neutral_basket(lake, settings, preds, panel)
        got = basket_legs(basket)
        if got is not None and basket is not None and basket.decision_ts == c:
            legs[c], versions[c] = got, basket.model_version
    return legs, versions


class _Diffs:
    def __init__(self, book: str):
        self.book, self.items = book, []

    def add(self, cause: str, detail: str, coin: str | None = None, ts: int | None = None,
            book_value: float | None = None, replay_value: float | None = None) -> None:
        self.items.append(Difference(book=self.book, cause=cause, coin=coin, ts=ts, detail=detail,
                                         book_value=book_value, replay_value=replay_value))


def _differs(a: float, b: float, rel: float = PRICE_REL) -> bool:
    return abs(a - b) > rel * max(abs(a), abs(b), 1e-300)


def _signals(lake: Lake, settings: Settings, state: BookState, steps: list[BookStep], history,
             cfg) -> tuple[list[Difference], dict]:
    closes = [int(t) for t in history.close_ts if state.start_ts <= t <= state.last_close_ts]
    orders = replay_orders(lake, settings, closes)
    flat = [o for c in closes for o in orders[c]]
    res = run_backtest(history, flat, cfg, state.start_ts, state.last_close_ts, hold_open=True)
    d = _Diffs("signals")
    stepped = {c for s in steps for c in s.closes[-1:]}  # the close each run decided at
    book_fills = [f for s in steps for f in s.fills]
    entries = {(f.coin, f.decision_ts): f for f in book_fills if f.action == "entry"}
    exits = {(f.coin, f.decision_ts): f for f in book_fills if f.action == "exit"}
    refused = {(x.coin, x.ts): x.reason for s in steps for x in s.decisions if not x.allow}
    replay_refused = {(x.coin, x.ts): x.reason for x in res.decisions if not x.allow}
    r_trades = {(t["coin"], t["decision_ts"]): t for t in res.trades}
    r_open = {(p.order.coin, int(p.order.ts_ms)): p for p in res.open.values()}
    r_orders = {(o.coin, int(o.ts_ms)) for o in flat}
    r_entry = {k: (t["entry_price"], t["entry_notional"]) for k, t in r_trades.items()}
    r_entry.update({k: (p.entry_price, p.entry_notional) for k, p in r_open.items()})
    for key in sorted(set(entries) | set(r_entry), key=lambda k: (k[1], k[0])):
        coin, ts = key
        if key not in entries:
            if ts not in stepped:
                d.add("missed_run", f"no run decided at {day_of(ts)}: the replay entered {coin}, the book could not",
                      coin, ts)
            elif key in refused:
                d.add("gate", f"the book's gate refused {coin}: {refused[key]}", coin, ts)
            elif coin not in history.coins:
                d.add("universe", f"{coin} has no daily prices in the lake now", coin, ts)
            else:
                d.add("signal", f"the log gives a signal for {coin} that the run did not act on", coin, ts)
            continue
        f = entries[key]
        if key not in r_entry:
            if key not in r_orders:
                d.add("signal", f"the run's signal for {coin} is not rebuilt from the log", coin, ts)
            elif key in replay_refused:
                d.add("gate", f"the replay's gate refused {coin}: {replay_refused[key]}", coin, ts)
            else:
                d.add("universe", f"{coin}: no replay entry", coin, ts)
            continue
        price, notional = r_entry[key]
        if _differs(f.price, price):
            d.add("fill_price", f"{coin} entry price: the close was revised", coin, ts, f.price, price)
        elif abs(f.notional - notional) > CENT:
            d.add("gate", f"{coin} sized otherwise", coin, ts, f.notional, notional)
        x, t = exits.get(key), r_trades.get(key)
        if (x is None) != (t is None):
            d.add("fill_price", f"{coin} closed in {'the book' if x else 'the replay'} only", coin, ts)
        elif x is not None and t is not None:
            if _differs(x.price, t["exit_price"]):
                d.add("fill_price", f"{coin} exit price", coin, x.ts, x.price, t["exit_price"])
            elif abs((x.fee + x.impact + x.funding) - t["exit_costs"]) > CENT:
                d.add("cost", f"{coin} exit costs", coin, x.ts, x.fee + x.impact + x.funding, t["exit_costs"])
            elif abs((x.pnl or 0.0) - t["pnl"]) > CENT:
                d.add("unexplained", f"{coin} P&L differs with the same prices and costs", coin, x.ts, x.pnl, t["pnl"])
    book_eq = state.marks[-1].equity if state.marks else state.cash
    replay_eq = float(res.equity[-1])
    return d.items, {"equity": book_eq, "replay_equity": replay_eq, "fills": len(book_fills),
                     "replay_trades": len(res.trades) + len(res.open), "closes": len(closes)}


def _research(lake: Lake, settings: Settings, state: BookState, steps: list[BookStep],
              history) -> tuple[list[Difference], dict]:
    closes = [int(t) for t in history.close_ts if state.start_ts <= t <= state.last_close_ts]
    baskets, versions = replay_baskets(lake, settings, closes)
    fresh = new_state("research", state.start_ts, settings.risk.initial_equity, state.venue)
    replayed, moved = step_research(fresh, history, baskets, settings, state.last_close_ts, "replay")
    d = _Diffs("research")
    stepped = {s.closes[-1]: s for s in steps}
    book_fills = {(f.ts, f.coin): f for s in steps for f in s.fills}
    replay_fills = {(f.ts, f.coin): f for f in moved.fills}
    earlier = False  # a difference before this fill: its size follows from that one
    for key in sorted(set(book_fills) | set(replay_fills)):
        ts, coin = key
        f, r = book_fills.get(key), replay_fills.get(key)
        step = stepped.get(ts)
        if f is None or r is None:
            same_basket = step is not None and step.targets == {x.coin: x.weight for x in baskets.get(ts, [])}
            if step is None:
                d.add("missed_run", f"no run decided at {day_of(ts)}: the replay rebalanced {coin}, the book could not",
                      coin, ts)
            elif same_basket and earlier:
                pass  # the same basket traded from holdings an earlier difference left apart: not a new cause
            elif step.model_version and versions.get(ts) and step.model_version != versions[ts]:
                d.add("model_version", f"{coin}: the run's basket was ranked by {step.model_version}, the log's by "
                                       f"{versions[ts]}", coin, ts)
            elif coin not in history.coins:
                d.add("universe", f"{coin} has no daily prices in the lake now", coin, ts)
            else:
                d.add("signal", f"{coin} traded in {'the book' if f else 'the replay'} only: the baskets differ",
                      coin, ts)
            earlier = True
            continue
        if _differs(f.price, r.price):
            d.add("fill_price", f"{coin} price: the close was revised", coin, ts, f.price, r.price)
            earlier = True
        elif abs(f.notional - r.notional) > CENT:
            if not earlier:
                d.add("unexplained", f"{coin} traded another size with no earlier difference", coin, ts,
                      f.notional, r.notional)
        elif abs((f.fee + f.impact) - (r.fee + r.impact)) > CENT:
            d.add("cost", f"{coin} costs", coin, ts, f.fee + f.impact, r.fee + r.impact)
            earlier = True
    book_eq = state.marks[-1].equity if state.marks else state.cash
    return d.items, {"equity": book_eq, "replay_equity": replayed.marks[-1].equity if replayed.marks else fresh.cash,
                     "fills": len(book_fills), "replay_trades": len(replay_fills), "closes": len(closes)}


def reconcile(lake: Lake, settings: Settings, since: int | None = None) -> Reconciliation:
    """Replay both books from their first close and list every difference from `since` (default: their start)."""
    states = {name: store.load_state(lake, name) for name in ("signals", "research")}
    live = {n: s for n, s in states.items() if s is not None and s.marks}
    if not live:
        raise CstError("no_books", "no paper book has a step yet: run the pipeline at a daily close first "
                                   "(`cst run`, whose books step starts them)")
    start = min(s.start_ts for s in live.values())
    end = max(s.last_close_ts for s in live.values())
    panel = read_panel(lake, "1d", since_ms=start - (history_rows(settings) + 1) * DAY_MS, until_ms=end)
    if panel is None:
        raise CstError("no_prices", "the lake holds no daily prices over the books' period")
    history = price_history_from_panel(panel)
    since = start if since is None else max(since, start)
    diffs: list[Difference] = []
    books: dict[str, dict] = {}
    for name, state in live.items():
        steps = store.steps(lake, name)
        if name == "signals":
            got, fig = _signals(lake, settings, state, steps, history, book_risk(settings, state.venue))
        else:
            got, fig = _research(lake, settings, state, steps, history)
        fig["gap"] = fig["equity"] - fig["replay_equity"]
        if abs(fig["gap"]) > CENT and not got:
            got.append(Difference(book=name, cause="unexplained", detail="equity differs with no difference found",
                                  book_value=fig["equity"], replay_value=fig["replay_equity"]))
        listed = [x for x in got if x.ts is None or x.ts >= since]
        fig["by_cause"] = dict(sorted(_count(listed).items()))
        fig["differences_before"] = len(got) - len(listed)  # before --from: they explain part of the gap
        diffs += listed
        books[name] = fig
    unexplained = sum(x.cause == "unexplained" for x in diffs)
    verdict = ("the books and the replay agree to the cent" if not diffs else
               f"{len(diffs)} differences, {unexplained} unexplained" if unexplained else
               f"{len(diffs)} differences, every one with its cause")
    return Reconciliation(from_ts=since, to_ts=end, made_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          books=books, differences=diffs, unexplained=unexplained, verdict=verdict)


def _count(diffs: list[Difference]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for x in diffs:
        out[x.cause] += 1
    return out


__all__ = ["reconcile", "replay_baskets", "replay_orders"]
