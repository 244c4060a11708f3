"""`cst run` (the main job: every pipeline step of one cycle) and `cst step` (one step alone, as a Lambda runs it)."""

from __future__ import annotations

import argparse

from rich.markup import escape

from services.cli.common import console, lake_of, parse_as_of, step_progress
from services.cli.ingest import backfill_with_progress, print_ingest
from services.cli.render import basket_table, forecasts_table, signals_table
from services.orchestrator import runner, usecases
from services.predict.board import decision_closes, forecast_rows
from shared import runs
from shared.contracts import iso_to_ms, ms_to_iso
from shared.errors import CstError
from shared.records import Forecast
from shared.pipeline.definition import STEPS
from shared.settings import Settings


def check_source(source: str) -> None:
    """A folder source must exist and hold at least one file cst can read, before a run is recorded for it."""
    from pathlib import Path

    from services.ingest.sources.files import discover

    if source == "live":
        return
    root = Path(source)
    if not root.is_dir():
        raise CstError("source_unreadable", f"source folder {source!r} does not exist or is not a folder; give a folder "
                                            "laid out like ../shared/data (see the README) or 'live'")
    specs, ignored = discover(root)
    if not specs:
        said = "; ".join(f"{k}: {v}" for k, v in list(ignored.items())[:5]) or "the folder is empty"
        raise CstError("source_empty", f"no file in {source!r} is a series cst reads ({len(ignored)} ignored: {said}); "
                                       "see the README for the layout")


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from services.predict.steps import served_predictions
    lake = lake_of(args, settings)  # a mistyped lake is refused first (nothing is created by opening one)
    check_source(args.source)
    ref = runs.new_ref(settings, args.source, parse_as_of(args.as_of), no_retrain=args.no_retrain)
    done = runs.complete_summary(lake, ref.run_id)
    if done is not None:
        from shared.pipeline.context import StepContext

        served = served_predictions(StepContext(settings, lake), ref)
        print_forecasts(forecast_rows(served, list(settings.horizons), done.uncertified_horizons,
                                      settings.confidence_threshold, decision_closes(settings, lake, served)),
                        args.format, done.uncertified_horizons)
        console.print(f"run {ref.run_id} (as-of {done.as_of}) is already complete; nothing changed. "
                      f"{done.predictions} predictions, {done.actionable} actionable, {len(done.signals)} signals.")
        return 0
    if usecases.needs_history(lake, ref):
        # Nothing to train on yet: the history training needs comes first, saying how much and how long.
        now = iso_to_ms(ref.as_of)
        since = usecases.history_start(settings, now)
        console.print(f"empty lake: backfilling the history training needs ({ms_to_iso(since)} to {ref.as_of}) "
                      "before the first run")
        backfill_with_progress(settings, lake, since, now)
    runs.save_ref(lake, ref)
    with step_progress(settings, lake, "running") as (ctx, on_step):
        result = runner.run_pipeline(ctx, ref, on_step=on_step)
    doc = runs.load_summary(lake, ref.run_id)
    if ctx.output(ref.run_id, "validate") is not None:
        print_ingest(ctx, ref, compact=True)
    for u in doc.universes.values():
        console.print(escape(u.describe()))
    if ctx.output(ref.run_id, "risk") is not None:
        served = served_predictions(ctx, ref)
        rows = forecast_rows(served, list(settings.horizons), doc.uncertified_horizons,
                             settings.confidence_threshold, decision_closes(settings, lake, served))
        print_forecasts(rows, args.format, doc.uncertified_horizons)
        console.print(signals_table(served, doc.signals))
        if doc.basket is not None:
            console.print(basket_table(doc.basket, doc.cross_section_signals))
        elif doc.basket_note:
            console.print(f"no market-neutral basket: {escape(doc.basket_note)}")
        drift = ctx.output(ref.run_id, "drift")
        retrain = [h + (f" ({'; '.join(drift.report[h].reasons)})" if h in drift.report and drift.report[h].reasons
                        else "") for h in drift.retrain] if drift is not None else []
        console.print(f"run {ref.run_id}: as-of {doc.as_of}, {doc.coins_predicted}/{doc.coins_total} coins "
                      f"predicted, {doc.predictions} predictions ({doc.new_predictions} new), {doc.actionable} "
                      f"actionable, {len(doc.signals)} signals ({doc.tradable_signals} past the risk gate), "
                      f"{doc.outcomes_recorded} outcomes recorded, retrain: {', '.join(retrain) or 'none'}; "
                      f"summary {runs.summary_key(ref.run_id)}")
    moved = ctx.output(ref.run_id, "books")
    if moved is not None and moved.books:
        console.print("paper books: " + "; ".join(
            f"{name} " + (f"equity {m.equity:,.2f} after {m.closes} close(s), {m.fills} fill(s)"
                          if m.equity is not None else "unchanged")
            + (f" ({m.note})" if m.note else "") for name, m in moved.books.items())
            + " (cst reconcile: against the replayed backtest)")
    told = ctx.output(ref.run_id, "summary")
    if told is not None and (told.alerts or told.alerts_already_sent):
        said = ", ".join(f"{n} {event.replace('_', ' ')}" for event, n in told.alerts.items()) or "none new"
        channels = len(settings.alerts.urls)
        console.print(f"alerts: {said}" + (f" ({told.alerts_already_sent} already sent for this decision)"
                                           if told.alerts_already_sent else "")
                      + (f"; to {channels} channel(s), {told.alert_deliveries_failed} deliveries failed" if channels
                         else "; recorded in the lake (no channel configured: alerts.urls)"))
    for h, reasons in doc.no_outcome.items():
        said = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in reasons.items())
        console.print(f"[yellow]{h}: {sum(reasons.values())} matured predictions have no outcome[/]: {said}")
    for h, why in doc.uncertified_horizons.items():
        console.print(f"[yellow]{h} predictions are logged but never actionable[/]: {escape(why)}")
    for h, why in doc.cross_section_uncertified.items():
        console.print(f"[yellow]{h} P(beats the universe) is logged but never actionable[/]: {escape(why)}")
    for h, why in doc.retrain_deferred.items():
        console.print(f"[yellow]{h}: retraining is due ({escape(why)}); served with the current model "
                      "(--no-retrain): a run without --no-retrain retrains it[/]")
    for h, why in doc.horizons_without_model.items():
        console.print(f"[yellow]{h} has no model[/]: {escape(why)}")
    if result.status != "complete":
        from services.ingest.logic import OFFLINE_HINT

        for f in doc.failures:
            where = f.step + (f"[{f.item}]" if f.item else "")
            message = f.message.replace(f"\n  {OFFLINE_HINT}", "")  # said once, below
            console.print(f"[red]step {escape(where)} failed[/]: {escape('[' + f.code + '] ' + message)}")
        unreachable = bool(doc.failures) and all(f.code == "sources_unreachable" for f in doc.failures)
        if unreachable:
            console.print(f"no source could be reached from this machine: {escape(OFFLINE_HINT)}")
        console.print(f"run {ref.run_id} is not complete (summary {runs.summary_key(ref.run_id)}); "
                      + ("once the sources can be reached, the same command finishes it" if unreachable else
                         "running the same command again finishes it")
                      + ", keeping every step that landed")
        return 1
    return 0


def print_forecasts(rows: list[Forecast], fmt: str, uncertified: dict[str, str] | None = None) -> None:
    """The board of every forecast: a table on the console, or JSON / CSV on stdout (for a file or a pipe)."""
    import csv
    import json
    import sys

    if fmt == "json":
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=1))
    elif fmt == "csv":
        w = csv.DictWriter(sys.stdout, fieldnames=list(Forecast.model_fields))
        w.writeheader()
        w.writerows(r.model_dump(mode="json") for r in rows)
    else:
        console.print(forecasts_table(rows, uncertified))


def cmd_step(args: argparse.Namespace, settings: Settings) -> int:
    """One pipeline step alone, from what the lake holds: the call a Lambda handler makes."""
    lake = lake_of(args, settings)
    if args.run_id:
        ref = runs.load_ref(lake, args.run_id)
    elif args.source:
        ref = usecases.open_run(settings, lake, args.source, parse_as_of(args.as_of))
    else:
        raise CstError("step_needs_run", "give --run-id of a stored run, or --source (and --as-of) to start one")
    with step_progress(settings, lake, f"step {args.name}") as (ctx, _):
        out = runner.run_step(ctx, args.name, ref, args.item)
    print(out.model_dump_json(indent=2))
    return 0


def register(sub, lake: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[lake], help="the main job: every pipeline step, " + " -> ".join(STEPS))
    p.add_argument("--source", default="live", help="'live' (exchange + public APIs) or a directory of files")
    p.add_argument("--as-of", help="replay as if now were this UTC time")
    p.add_argument("--no-retrain", action="store_true",
                   help="serve with the current models: drift and cadence are judged and reported, nothing retrains")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="every forecast of the run as a table (console) or as JSON / CSV on stdout")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("step", parents=[lake],
                       help="run one pipeline step alone from what the lake holds (what a Lambda handler does)")
    p.add_argument("name", choices=list(STEPS), help="the step")
    p.add_argument("--run-id", help="a run stored in the lake (its source and as-of are read from there)")
    p.add_argument("--source", help="start a new run from this source ('live' or a directory) instead of --run-id")
    p.add_argument("--as-of", help="with --source: the run's as-of")
    p.add_argument("--item", help="the element of a Map step (predict: a horizon, e.g. 24h)")
    p.set_defaults(func=cmd_step)
