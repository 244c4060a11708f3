"""The `cst` command: validate, ingest, train, run (the main job), evaluate and backtest."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from services.features.quality.gate import quarantine_documents
from services.ingest import logic
from services.orchestrator import runner, usecases
from shared import runs
from shared.contracts import QualityReport, iso_to_ms, ms_to_iso
from shared.errors import CstError
from shared.logging import configure_logging, redact
from shared.pipeline.context import StepContext
from shared.pipeline.contracts import RunRef
from shared.pipeline.definition import STEPS
from shared.records import Prediction, Signal
from shared.settings import Settings, resolve_secrets
from shared.storage import open_lake

# Piped output (CI logs, files) gets a wide fixed width instead of 80 columns of wrapped tables.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)



def _as_of(text: str | None) -> int | None:
    """The time given with --as-of, or None for now (the run's identity floors either to its cycle)."""
    if not text:
        return None
    try:
        return iso_to_ms(text)
    except ValueError:
        raise CstError("bad_as_of", f"--as-of {text!r} is not an ISO-8601 time (e.g. 2024-07-01T00:00:00Z)") from None


@contextmanager
def _progress(label: str):
    """Yields (on_start, on_done) callbacks for the ingest runner, drawn as a rich progress bar."""
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task_id = bar.add_task(label, total=None)
        yield (lambda n: bar.update(task_id, total=n), lambda _t: bar.advance(task_id))


def quality_table(report: QualityReport) -> Table:
    table = Table(title=f"quality at as-of {report.as_of}")
    table.add_column("series", no_wrap=True)
    table.add_column("status")
    table.add_column("rows", justify="right")
    table.add_column("rejected", justify="right")
    table.add_column("issues")
    colour = {"ok": "green", "quarantined": "yellow", "excluded": "red"}
    for key, s in report.series.items():
        issues = ", ".join(f"{k}={v}" for k, v in s.issues.items())
        table.add_row(key, f"[{colour[s.status]}]{s.status}[/]", str(s.rows), str(s.rejected_rows), issues)
    return table


def _summary_line(report: QualityReport) -> str:
    counts = Counter(s.status for s in report.series.values())
    return f"{len(report.series)} series: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("ok", "quarantined", "excluded"))


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    as_of = runs.cycle_as_of(settings, _as_of(args.as_of))
    from services.ingest.sources.files import FileSource

    source = FileSource(args.source)
    with _progress("reading files") as cb:
        fetched = asyncio.run(logic.fetch_sources([source], settings, *cb))
    outcome = logic.gate(fetched, settings, as_of, source.ignored)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = outcome.report.model_dump(mode="json")
    doc["read_failures"] = [f.model_dump() for f in fetched.failures]
    (out / "quality.json").write_text(json.dumps(doc, indent=2))
    rejected = [{"lake_key": k, **d} for k, d in quarantine_documents(outcome).items()]
    (out / "quarantine.json").write_text(json.dumps(rejected, indent=2))
    console.print(quality_table(outcome.report))
    console.print(_summary_line(outcome.report) + f"; report: {out / 'quality.json'}")
    for f in fetched.failures:
        console.print(f"[red]could not read[/] {f.task}: [{f.code}] {f.message}")
    if outcome.report.series and all(s.issues.get("stale") or s.issues.get("no_data") for s in outcome.report.series.values()):
        console.print("[yellow]every series is stale or empty at this as-of: recorded files need --as-of "
                      "(e.g. 2024-07-01T00:00:00Z for the daily files)[/]")
    return 0


def _lake(args: argparse.Namespace, settings: Settings):
    return open_lake(args.lake or settings.lake.uri, region=settings.aws_region)


@contextmanager
def _step_progress(settings: Settings, lake, label: str):
    """A step context whose fetch progress and step names are drawn as rich progress bars."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        steps = bar.add_task(label, total=None)
        fetch = bar.add_task("fetching", total=None, visible=False)
        ctx = StepContext(settings, lake, tick=lambda msg: bar.update(steps, description=msg),
                          fetch_progress=(lambda n: bar.update(fetch, total=n, visible=True),
                                          lambda _t: bar.advance(fetch)))
        yield ctx, (lambda name: bar.update(steps, description=f"step {name}"))


def _print_ingest(ctx: StepContext, ref: RunRef) -> None:
    from services.features.steps import quality_report

    ingested = ctx.output(ref.run_id, "ingest")
    report = quality_report(ctx, ref.run_id)
    console.print(quality_table(report))
    if ingested is not None:
        console.print(f"run {ref.run_id}: landed {ingested.landed} raw records ({ingested.already_present} already "
                      f"present), {len(ingested.failures)} fetch failures; {_summary_line(report)}; lake {ctx.lake.uri}")
        for f in ingested.failures:
            console.print(f"[red]failed[/] {f.source} {f.task}: [{f.code}] {f.message}")


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    lake = _lake(args, settings)
    ref = usecases.open_run(settings, lake, args.source, _as_of(args.as_of))
    with _step_progress(settings, lake, f"ingesting from {args.source}") as (ctx, _):
        runner.run_ingest(ctx, ref)
        runner.run_step(ctx, "validate", ref)
    _print_ingest(ctx, ref)
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    """Recorded files into the lake as a run's staged series, the history training reads."""
    lake = _lake(args, settings)
    ref = usecases.open_run(settings, lake, args.source, _as_of(args.as_of))
    with _step_progress(settings, lake, f"importing {args.source}") as (ctx, _):
        out = runner.run_ingest(ctx, ref)
    console.print(f"imported {args.source} as run {ref.run_id}: {out.landed} raw records landed "
                  f"({out.already_present} already present), {len(out.staged)} staged parts, "
                  f"{len(out.failures)} read failures; train with: cst train --run-id {ref.run_id} --lake {lake.uri}")
    for f in out.failures:
        console.print(f"[red]could not read[/] {f.task}: [{f.code}] {f.message}")
    return 0


def signals_table(predictions: list[Prediction], signals: list[Signal]) -> Table:
    table = Table(title="actionable predictions (confidence >= threshold) and consensus signals")
    for col in ("coin", "horizon", "direction", "p_up", "interval", "confidence", "q10 / q50 / q90", "top features", "signal"):
        table.add_column(col)
    signalled = {s.coin: s for s in signals}
    for p in sorted((p for p in predictions if p.actionable), key=lambda p: (p.coin, p.horizon)):
        tops = ", ".join(f"{t.feature} {t.contribution:+.2f}" for t in p.tops()[:3])
        table.add_row(p.coin, p.horizon, "up" if p.direction == 1 else "down", f"{p.p_up:.3f}",
                      f"[{p.p_low:.3f}, {p.p_high:.3f}]", f"{p.confidence:.3f}",
                      f"{p.q10:+.3f} / {p.q50:+.3f} / {p.q90:+.3f}", tops, _signal_cell(signalled.get(p.coin)))
    return table


def _signal_cell(sig: Signal | None) -> str:
    if not sig:
        return ""
    head = f"[bold]{sig.direction} ({', '.join(sig.horizons)})[/]"
    risk = sig.risk
    if risk is None:
        return head
    if risk.allow:
        return f"{head} size {risk.size_fraction:.1%} of equity, cost {risk.cost_bps:.1f} bps"
    return f"{head} [red]not traded[/]: {risk.refusal}"


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from services.predict.steps import served_predictions
    lake = _lake(args, settings)
    ref = runs.new_ref(settings, args.source, _as_of(args.as_of))
    done = runs.complete_summary(lake, ref.run_id)
    if done is not None:
        console.print(f"run {ref.run_id} (as-of {done.as_of}) is already complete; nothing changed. "
                      f"{done.predictions} predictions, {done.actionable} actionable, {len(done.signals)} signals.")
        return 0
    if usecases.needs_history(lake, ref):
        # Nothing to train on yet: the history training needs comes first, saying how much and how long.
        now = iso_to_ms(ref.as_of)
        since = usecases.history_start(settings, now)
        console.print(f"empty lake: backfilling the history training needs ({ms_to_iso(since)} to {ref.as_of}) "
                      "before the first run")
        _backfill(settings, lake, since, now)
    runs.save_ref(lake, ref)
    with _step_progress(settings, lake, "running") as (ctx, on_step):
        result = runner.run_pipeline(ctx, ref, on_step=on_step)
    doc = runs.load_summary(lake, ref.run_id)
    if ctx.output(ref.run_id, "validate") is not None:
        _print_ingest(ctx, ref)
    if ctx.output(ref.run_id, "risk") is not None:
        console.print(signals_table(served_predictions(ctx, ref), doc.signals))
        drift = ctx.output(ref.run_id, "drift")
        retrain = drift.retrain if drift is not None else []
        console.print(f"run {ref.run_id}: as-of {doc.as_of}, {doc.coins_predicted}/{doc.coins_total} coins "
                      f"predicted, {doc.predictions} predictions ({doc.new_predictions} new), {doc.actionable} "
                      f"actionable, {len(doc.signals)} signals ({doc.tradable_signals} past the risk gate), "
                      f"{doc.outcomes_recorded} outcomes recorded, retrain: {', '.join(retrain) or 'none'}; "
                      f"summary {runs.summary_key(ref.run_id)}")
    for h, why in doc.uncertified_horizons.items():
        console.print(f"[yellow]{h} predictions are logged but never actionable[/]: {escape(why)}")
    for h, why in doc.horizons_without_model.items():
        console.print(f"[yellow]{h} has no model[/]: {escape(why)}")
    if result.status != "complete":
        for f in doc.failures:
            where = f.step + (f"[{f.item}]" if f.item else "")
            console.print(f"[red]step {escape(where)} failed[/]: {escape('[' + f.code + '] ' + f.message)}")
        console.print(f"run {ref.run_id} is not complete (summary {runs.summary_key(ref.run_id)}); running the same "
                      "command again finishes it, keeping every step that landed")
        return 1
    return 0


def _backfill(settings: Settings, lake, since_ms: int, now_ms: int) -> int:
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
    for f in report.failures:
        console.print(f"[red]failed[/] {escape(f.task)}: {escape('[' + f.code + '] ' + f.message)}")
    return len(report.failures)


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    """Real history into the lake, page by page; an interrupted backfill continues where it stopped."""
    lake = _lake(args, settings)
    now = runs.cycle_as_of(settings)
    since = iso_to_ms(args.since) if args.since else usecases.history_start(settings, now)
    return 1 if _backfill(settings, lake, since, now) else 0


def cmd_step(args: argparse.Namespace, settings: Settings) -> int:
    """One pipeline step alone, from what the lake holds: the call a Lambda handler makes."""
    lake = _lake(args, settings)
    if args.run_id:
        ref = runs.load_ref(lake, args.run_id)
    elif args.source:
        ref = usecases.open_run(settings, lake, args.source, _as_of(args.as_of))
    else:
        raise CstError("step_needs_run", "give --run-id of a stored run, or --source (and --as-of) to start one")
    with _step_progress(settings, lake, f"step {args.name}") as (ctx, _):
        out = runner.run_step(ctx, args.name, ref, args.item)
    print(out.model_dump_json(indent=2))
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from services.training.train import train

    lake = _lake(args, settings)
    horizons = [h for h in args.horizons.split(",") if h] if args.horizons else None
    if args.run_id:
        run_id = args.run_id
    elif args.source:
        # Files reach training through the lake: imported as a run's staged series, then read from there.
        ref = usecases.open_run(settings, lake, args.source, iso_to_ms(args.until) if args.until else None)
        with _step_progress(settings, lake, f"importing {args.source}") as (ctx, _):
            runner.run_ingest(ctx, ref)
        run_id = ref.run_id
    else:
        raise CstError("train_needs_data", "give --source DIR (imported into the lake first) or --run-id of a run")
    with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("training", total=None)
        results = train(settings, lake, run_id, until=args.until, horizons=horizons, budget=args.budget,
                        tick=lambda msg: bar.update(task, description=msg))
    console.print(training_table(results))
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import os

    import uvicorn

    from services.api.issuer import DevIssuer

    uri = args.lake or settings.lake.uri
    if not uri.startswith("s3://"):
        uri = str(Path(uri).resolve())  # the workers may start elsewhere; they must open the same folder
    issuer_url = f"http://{args.host}:{args.port}/auth"
    # Created here, once, before any worker: workers only load the key, never race to create it.
    issuer = DevIssuer.for_lake(uri, issuer_url)
    if not issuer.users():
        console.print("no users yet: add one with `cst users add NAME --group viewer|operator`", markup=False)
    # Each worker builds the app from the settings (serve_app): the lake and the issuer it trusts travel as the
    # settings' own variables, the only thing a worker process inherits.
    os.environ["CST_LAKE__URI"], os.environ["CST_API__ISSUER"] = uri, issuer_url
    uvicorn.run("services.cli:serve_app", factory=True, workers=args.workers, host=args.host, port=args.port,
                log_level="warning", access_log=False, server_header=False)
    return 0


def serve_app():
    """The app one `cst serve` worker runs: the lake and the development issuer named by the settings."""
    import gc

    from services.api.app import create_app, local_actions
    from services.api.issuer import DevIssuer

    settings = resolve_secrets(Settings())
    configure_logging(settings.log_level, settings.secret_values())
    issuer = DevIssuer.for_lake(settings.lake.uri, settings.api.issuer)
    lake = open_lake(settings.lake.uri, region=settings.aws_region)
    app = create_app(settings, lake, issuer.verifier(), local_actions(settings, lake), issuer=issuer,
                     secure_cookies=False)  # plain HTTP on this machine; the cloud serves HTTPS only
    # What is imported and built by now lives as long as the process: out of the collector's full passes, which
    # otherwise walk its ~100,000 objects every few seconds under load and were the API's p99 (40 ms pauses).
    gc.freeze()
    return app


def cmd_users(args: argparse.Namespace, settings: Settings) -> int:
    from services.api.issuer import DevIssuer

    issuer = DevIssuer.for_lake(args.lake or settings.lake.uri, "http://127.0.0.1/auth")
    if args.action == "list":
        for name, user in sorted(issuer.users().items()):
            console.print(f"{name}: {', '.join(user['groups'])}", markup=False)
        return 0
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        import getpass

        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise CstError("password_mismatch", "the two passwords differ")
    issuer.add_user(args.name, password, args.group)
    console.print(f"{args.name}: {args.group}", markup=False)
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from services.evaluation.evaluate import evaluate, load_experiment

    if getattr(args, "from_snapshot", None):
        settings, stored = load_experiment(args.from_snapshot, args.source)
        kwargs = {k: stored[k] for k in ("train_until", "train_until_1h", "horizons", "budget", "backtest_threshold")}
        # Snapshots from before periodic retraining trained once.
        kwargs["retrain_every"] = stored.get("retrain_every", "none")
        source = stored["source"]
    else:
        if not args.source or not args.train_until:
            raise CstError("missing_argument", f"cst {args.command} needs --source and --train-until "
                                               "(or --from OUT/experiment.json)")
        horizons = [h for h in args.horizons.split(",") if h] if getattr(args, "horizons", None) else None
        if args.command == "backtest":
            horizons = [h for h in settings.horizons if settings.training.horizons[h].timeframe == "1d"]
        kwargs = {"train_until": args.train_until, "train_until_1h": getattr(args, "train_until_1h", None),
                  "horizons": horizons, "budget": args.budget, "backtest_threshold": args.threshold,
                  "retrain_every": args.retrain_every}
        source = args.source
    out = Path(args.out)
    with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("evaluating", total=None)
        res = evaluate(settings, source, out, tick=lambda msg: bar.update(task, description=msg), **kwargs)
    console.print(evaluation_table(res["metrics"]))
    bt = res["backtest"]
    if "table" in bt:
        console.print(backtest_table(bt))
    console.print(f"wrote {out / 'metrics.json'}, {out / 'backtest.json'}, {out / 'report.html'} and its PNGs")
    return 0


def evaluation_table(metrics: dict) -> Table:
    table = Table(title=f"out of sample after {metrics['train_until']} (1h after {metrics['train_until_1h']}); "
                        "[90% block-bootstrap intervals]")
    for col in ("horizon", "n", "base rate", "skill", "ECE", "plain GBT skill", "outside cal.", "80% range cov. / width",
                "naive cov. / width", "conf n / hit", "skill verdicts"):
        table.add_column(col)

    def f(v, spec=".4f"):
        return "-" if v is None else format(v, spec)

    def ci(v, iv, spec):
        return f"{f(v, spec)} [{f(iv[0], spec)}, {f(iv[1], spec)}]" if iv else f(v, spec)

    for h, m in metrics["horizons"].items():
        c = m["confident"]
        plain = m.get("references", {}).get("plain_gbt", {})
        verdicts = sorted({str(x.get("skill")) for x in m.get("models", [])})
        table.add_row(h, str(m["n"]), f(m["base_rate"], ".3f"), ci(m["brier_skill"], m.get("brier_skill_interval"), "+.3f"),
                      ci(m["ece"], m.get("ece_interval"), ".3f"),
                      ci(plain.get("brier_skill"), plain.get("brier_skill_interval"), "+.3f"),
                      f((m["scores"] or {}).get("served_outside_calibration_range"), ".3f"),
                      f"{f(m.get('range_coverage'), '.3f')} / {f(m.get('range_median_width'), '.3f')}",
                      f"{f(m.get('range_naive_coverage'), '.3f')} / {f(m.get('range_naive_median_width'), '.3f')}",
                      f"{c['n']} / {f(c['hit_rate'], '.3f')}", ", ".join(verdicts))
    return table


def backtest_table(bt: dict) -> Table:
    table = Table(title=f"backtest {bt['from'][:10]} to {bt['to'][:10]}, threshold {bt['threshold']}, "
                        f"{bt['signals']} consensus signals")
    cols = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar", "trades", "hit_rate", "turnover",
            "exposure")
    table.add_column("curve")
    for c in cols:
        table.add_column(c)
    for name, m in bt["table"].items():
        table.add_row(name, *["-" if m.get(c) is None else (f"{m[c]:.3f}" if isinstance(m[c], float) else str(m[c]))
                              for c in cols])
    return table


def training_table(results: dict) -> Table:
    table = Table(title="training (held-out: later half of out-of-fold stacked predictions)")
    for col in ("horizon", "version", "rows", "CV Brier", "Brier skill", "ECE", "calibrator", "conf>=thr n / hit",
                "CURRENT", "wall s"):
        table.add_column(col)
    for h, m in results.items():
        if "error" in m:
            table.add_row(h, f"[red]not trained[/]: [{m['error']}] {m['message']}", *[""] * 8)
            continue
        mt, conf = m["metrics"], m["metrics"]["confident"]
        hit = "-" if conf["hit_rate"] is None else f"{conf['hit_rate']:.3f}"
        table.add_row(h, m["version"], str(m["training_window"]["rows"]), f"{mt['cv_brier']:.4f}",
                      f"{mt['brier_skill']:+.4f}", f"{mt['ece']:.4f}", m["calibration"]["method"],
                      f"{conf['n']} / {hit}", "moved" if m["gate"]["promote"] else f"kept ({m['gate']['reason']})",
                      str(m.get("wall_seconds", "")))
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cst", description="CryptoSmartTrader: multi-horizon crypto forecasts from real data")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="run the quality gate on a directory of files and write OUT/quality.json")
    p.add_argument("--source", required=True, help="directory laid out like ../shared/data")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--as-of", help="judge as if now were this UTC time; later rows are not read")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("train", help="train per-horizon models on the lake's stored history into its registry")
    p.add_argument("--source", help="directory laid out like ../shared/data, imported into the lake first")
    p.add_argument("--run-id", help="train on the series this stored run landed (instead of --source)")
    p.add_argument("--lake", help="lake folder or s3://bucket[/prefix] (default: settings, ./lake)")
    p.add_argument("--until", help="train on data published strictly before this UTC date/time")
    p.add_argument("--horizons", help="comma-separated, default all: 1h,24h,7d,30d")
    p.add_argument("--budget", default="quick", help="tuning/training budget profile: quick or full")
    p.set_defaults(func=cmd_train)

    for name, text in (("evaluate", "train before a split, predict the rest out of sample, write metrics, report, backtest"),
                       ("backtest", "walk-forward backtest of consensus signals (daily horizons) with and without guards")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--source", help="directory laid out like ../shared/data")
        p.add_argument("--train-until", help="train on data before this UTC date; test after it")
        p.add_argument("--from", dest="from_snapshot",
                       help="run again the experiment stored in OUT/experiment.json (its settings and arguments)")
        if name == "evaluate":
            p.add_argument("--train-until-1h", help="the split for the 1h horizon (default: --train-until)")
            p.add_argument("--horizons", help="comma-separated, default all: 1h,24h,7d,30d")
        p.add_argument("--budget", default="quick", help="tuning/training budget profile: quick or full")
        p.add_argument("--retrain-every", default="production",
                       help="retrain during the test: 'production' (the main job's cadence per timeframe, "
                            "run.retrain_every), a period such as 30d or 2w, or 'none' (train once before the split)")
        p.add_argument("--threshold", type=float,
                       help="confidence threshold of the backtest's signals (default: the production threshold)")
        p.add_argument("--out", required=True, help="output directory")
        p.set_defaults(func=cmd_evaluate)

    for name, func, text in (("ingest", cmd_ingest, "land raw data and the quality report in the lake"),
                             ("import", cmd_import, "land a directory of recorded files in the lake (the history training reads)"),
                             ("run", cmd_run, "the main job: every pipeline step, " + " -> ".join(STEPS))):
        p = sub.add_parser(name, help=text)
        p.add_argument("--source", default="live" if name != "import" else None, required=name == "import",
                       help="'live' (exchange + public APIs) or a directory of files")
        p.add_argument("--lake", help="lake folder or s3://bucket[/prefix] (default: settings, ./lake)")
        p.add_argument("--as-of", help="replay as if now were this UTC time")
        p.set_defaults(func=func)

    p = sub.add_parser("backfill", help="land real history (OHLCV pages, Fear & Greed, on-chain) in the lake; resumable")
    p.add_argument("--lake", help="lake folder or s3://bucket[/prefix] (default: settings, ./lake)")
    p.add_argument("--since", help="start of the history (UTC date); default: exchange.history; a resumed series "
                                   "continues from where it stopped")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("step", help="run one pipeline step alone from what the lake holds (what a Lambda handler does)")
    p.add_argument("name", choices=list(STEPS), help="the step")
    p.add_argument("--run-id", help="a run stored in the lake (its source and as-of are read from there)")
    p.add_argument("--source", help="start a new run from this source ('live' or a directory) instead of --run-id")
    p.add_argument("--as-of", help="with --source: the run's as-of")
    p.add_argument("--item", help="the element of a Map step (predict: a horizon, e.g. 24h)")
    p.add_argument("--lake", help="lake folder or s3://bucket[/prefix] (default: settings, ./lake)")
    p.set_defaults(func=cmd_step)

    p = sub.add_parser("serve", help="the dashboard and API on this machine (uvicorn; users from `cst users add`)")
    p.add_argument("--lake", help="the local lake folder to serve (default: settings, ./lake)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (default 1); a Python process answers on one core at a time, so one per "
                        "core serves more. Each keeps its own caches and its own sign-in throttle, so a client can "
                        "try up to workers x the limit of failed sign-ins")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("users", help="users of the local dashboard (the development issuer; in the cloud: Cognito)")
    users = p.add_subparsers(dest="action", required=True)
    add = users.add_parser("add", help="add a user, or set an existing user's password and group")
    add.add_argument("name")
    add.add_argument("--group", required=True, choices=["viewer", "operator"])
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--lake", help="the local lake folder the dashboard serves (default: settings, ./lake)")
    add.set_defaults(func=cmd_users)
    lst = users.add_parser("list", help="the users and their groups")
    lst.add_argument("--lake", help="the local lake folder (default: settings, ./lake)")
    lst.set_defaults(func=cmd_users)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = resolve_secrets(Settings())
        configure_logging(settings.log_level, settings.secret_values())
        return args.func(args, settings)
    except CstError as exc:
        console.print(f"error {redact(str(exc))}", markup=False, highlight=False)
        return exc.exit_code


def entry() -> None:
    """The `cst` command: main(), then leave without tearing down native thread pools.

    Once a command has returned, everything it wrote is closed; what remains are the worker threads of the native
    libraries (ONNX Runtime, PyTorch, LightGBM's OpenMP). About one exit in sixteen after a training run, one of them
    was still joinable while the interpreter tore down, and the C++ runtime aborted the finished process (exit 134,
    "terminate called without an active exception"), so a complete run read as a crash. Streams and log handlers
    are flushed here, then the process ends with the command's own exit code."""
    import logging
    import os

    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
