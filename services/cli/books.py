"""`cst reconcile`: the backtest replayed from the logged predictions over the paper books' period, set against
the books, every difference listed with its cause; the verdict is kept in the lake for the Track record page."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from rich.table import Table

from services.cli.common import console, lake_of, parse_as_of
from shared.records import Reconciliation
from shared.settings import Settings


def _day(ts: int | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def _money(x: float | None) -> str:
    return "" if x is None else f"{round(x, 2) + 0.0:,.2f}"  # -1e-10 reads 0.00


def print_reconciliation(doc: Reconciliation, limit: int = 50) -> None:
    t = Table(title=f"Paper books against the replayed backtest, {_day(doc.from_ts)} to {_day(doc.to_ts)}")
    for c in ("book", "closes", "fills", "replay fills", "equity", "replay equity", "gap", "differences by cause"):
        t.add_column(c, justify="left" if c in ("book", "differences by cause") else "right")
    for name, b in doc.books.items():
        t.add_row(name, str(b["closes"]), str(b["fills"]), str(b["replay_trades"]), _money(b["equity"]),
                  _money(b["replay_equity"]), _money(b["gap"]),
                  ", ".join(f"{k} {v}" for k, v in b["by_cause"].items()) or "none")
    console.print(t)
    if doc.differences:
        d = Table(title=f"Differences ({len(doc.differences)}; the first {min(limit, len(doc.differences))})")
        for c in ("book", "cause", "date", "coin", "detail", "book", "replay"):
            d.add_column(c)
        for x in doc.differences[:limit]:
            d.add_row(x.book, x.cause, _day(x.ts), x.coin or "", x.detail, _money(x.book_value),
                      _money(x.replay_value))
        console.print(d)
    colour = "red" if doc.unexplained else "green"
    console.print(f"[{colour}]{doc.verdict}[/]")


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from services.books import store
    from services.books.reconcile import reconcile

    lake = lake_of(args, settings)
    doc = reconcile(lake, settings, parse_as_of(args.since))
    store.save_reconciliation(lake, doc)
    if args.format == "json":
        print(json.dumps(doc.model_dump(mode="json"), indent=2))
    else:
        print_reconciliation(doc)
    return 1 if doc.unexplained else 0


def register(sub, lake: argparse.ArgumentParser) -> None:
    p = sub.add_parser("reconcile", parents=[lake],
                       help="replay the backtest from the logged predictions over the paper books' period and list "
                            "every difference from the books, by cause (exit code 1 when one is unexplained)")
    p.add_argument("--from", dest="since", help="list differences from this UTC date (the replay itself starts at "
                                                "the books' first close, since a book's path depends on its past)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_reconcile)
