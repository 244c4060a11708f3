"""`cst ingest`, `cst import`, `cst backfill`: data into the lake, with what landed and the quality verdicts."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.progress import MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.cli.common import console, lake_of, parse_as_of, step_progress
from services.cli.render import quality_table, summary_line
from services.orchestrator import runner, usecases
from shared import runs
from shared.contracts import iso_to_ms, ms_to_iso
from shared.pipeline.context import StepContext
from shared.pipeline.contracts import RunRef
from shared.settings import Settings


def print_ingest(ctx: StepContext, ref: RunRef, compact: bool = False) -> None:
    from services.features.steps import quality_report

    ingested = ctx.output(ref.run_id, "ingest")
    report = quality_report(ctx, ref.run_id)
    console.print(quality_table(report, compact))
    if ingested is not None:
        console.print(f"run {ref.run_id}: landed {ingested.landed} raw records ({ingested.already_present} already "
                      f"present), {len(ingested.failures)} fetch failures; {summary_line(report)}; lake {ctx.lake.uri}")
        print_failures(ingested.failures, compact)


def print_failures(failures, compact: bool) -> None:
    """Fetch failures: each on its line, or (compact) one line per source and code with how many and one example,
    so an offline run says "no network" once per source rather than once per coin."""
    if not compact:
        for f in failures:
            console.print(f"[red]failed[/] {escape(f'{f.source} {f.task}: [{f.code}] {f.message}')}")
        return
    groups: dict[tuple[str, str], list] = {}
    for f in failures:
        groups.setdefault((getattr(f, "source", ""), f.code), []).append(f)
    for (source, code), fs in groups.items():
        more = f" (and {len(fs) - 1} more tasks: {', '.join(x.task for x in fs[1:4])}{'…' if len(fs) > 4 else ''})" \
            if len(fs) > 1 else ""
        where = f"{source}: " if source else ""
        console.print(f"[red]failed[/] {escape(f'{where}[{code}] {fs[0].task}: {fs[0].message}{more}')}")


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    lake = lake_of(args, settings)
    ref = usecases.open_run(settings, lake, args.source, parse_as_of(args.as_of))
    with step_progress(settings, lake, f"ingesting from {args.source}") as (ctx, _):
        runner.run_ingest(ctx, ref)
        runner.run_step(ctx, "validate", ref)
    print_ingest(ctx, ref)
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    """Recorded files into the lake as a run's staged series, the history training reads."""
    lake = lake_of(args, settings)
    ref = usecases.open_run(settings, lake, args.source, parse_as_of(args.as_of))
    with step_progress(settings, lake, f"importing {args.source}") as (ctx, _):
        out = runner.run_ingest(ctx, ref)
    console.print(f"imported {args.source} as run {ref.run_id}: {out.landed} raw records landed "
                  f"({out.already_present} already present), {len(out.staged)} staged parts, "
                  f"{len(out.failures)} read failures; train with: cst train --run-id {ref.run_id} --lake {lake.uri}")
    for f in out.failures:
        console.print(f"[red]could not read[/] {f.task}: [{f.code}] {f.message}")
    return 0


def backfill_with_progress(settings: Settings, lake, since_ms: int, now_ms: int) -> int:
    """Backfill with a progress bar and a table of what landed; returns the number of failures."""
    import time

    from services.ingest.backfill import backfill

    started = time.perf_counter()
    with Progress(TextColumn("{task.description}"), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("backfilling pages", total=None)
        report = backfill(settings, lake, since_ms=since_ms, now_ms=now_ms,
                          on_page=lambda what: bar.update(task, advance=1, description=f"backfilled {what}"))
    table = Table(title=f"backfill into {lake.uri} from {ms_to_iso(since_ms)} to {ms_to_iso(now_ms)}")
    for col in ("series", "from", "to", "pages", "candles"):
        table.add_column(col)
    for name, st in sorted(report.series.items()):
        table.add_row(name, ms_to_iso(st["from"]), ms_to_iso(st["to"]) if st["to"] else "-", str(st["pages"]),
                      str(st["candles"]))
    console.print(table)
    console.print(f"backfilled {report.pages} pages, {report.candles} candles in {time.perf_counter() - started:.1f} s "
                  f"({report.already_present} raw records already present); {len(report.failures)} failures")
    print_failures(report.failures, compact=True)
    return len(report.failures)


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    """Real history into the lake, page by page; an interrupted backfill continues where it stopped."""
    lake = lake_of(args, settings)
    now = runs.cycle_as_of(settings)
    since = iso_to_ms(args.since) if args.since else usecases.history_start(settings, now)
    return 1 if backfill_with_progress(settings, lake, since, now) else 0


def register(sub, lake: argparse.ArgumentParser) -> None:
    for name, func, text in (("ingest", cmd_ingest, "land raw data and the quality report in the lake"),
                             ("import", cmd_import, "land a directory of recorded files in the lake (the history "
                                                    "training reads)")):
        p = sub.add_parser(name, help=text, parents=[lake])
        p.add_argument("--source", default="live" if name != "import" else None, required=name == "import",
                       help="'live' (exchange + public APIs) or a directory of files")
        p.add_argument("--as-of", help="replay as if now were this UTC time")
        p.set_defaults(func=func)
    p = sub.add_parser("backfill", parents=[lake],
                       help="land real history (OHLCV pages, Fear & Greed, on-chain) in the lake; resumable")
    p.add_argument("--since", help="start of the history (UTC date); default: exchange.history; a resumed series "
                                   "continues from where it stopped")
    p.set_defaults(func=cmd_backfill)
