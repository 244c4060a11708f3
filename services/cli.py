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
from shared.contracts import QualityReport, iso_to_ms, utcnow
from shared.errors import CstError
from shared.logging import configure_logging, redact
from shared.settings import Settings, resolve_secrets
from shared.storage import open_lake

# Piped output (CI logs, files) gets a wide fixed width instead of 80 columns of wrapped tables.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)



def _as_of(text: str | None) -> int:
    if not text:
        return int(utcnow().timestamp() * 1000)
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
    as_of = _as_of(args.as_of)
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


def _ingest(args: argparse.Namespace, settings: Settings):
    lake = open_lake(args.lake or settings.lake.uri, region=settings.aws_region)
    as_of = _as_of(args.as_of)
    with _progress(f"ingesting from {args.source}") as cb:
        report, outcome = logic.ingest(settings, args.source, lake, as_of, progress=cb)
    console.print(quality_table(outcome.report))
    console.print(f"run {report.run_id}: landed {report.landed} raw records ({report.already_present} already present), "
                  f"{len(report.failures)} fetch failures; {_summary_line(outcome.report)}; lake {lake.uri}")
    for f in report.failures:
        console.print(f"[red]failed[/] {f.source} {f.task}: [{f.code}] {f.message}")
    return report, outcome


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    _ingest(args, settings)
    return 0


def features_table(frames: dict) -> Table:
    table = Table(title="features")
    for col in ("timeframe", "rows", "coins", "features", "excluded rows by reason", "layers left out"):
        table.add_column(col)
    for tf, frame in frames.items():
        table.add_row(tf, str(len(frame)), str(len(frame.rows_per_coin)), str(len(frame.names)),
                      ", ".join(f"{k}={v}" for k, v in sorted(frame.excluded.items())) or "-",
                      ", ".join(sorted(frame.declared["excluded_layers"])) or "-")
    return table


def build_features(settings: Settings, outcome, lake) -> dict:
    """Features for every configured timeframe that has a declared feature set; written to the lake."""
    from services.features.frame import build_frame
    from services.features.store import write_frame

    frames = {}
    for tf in settings.timeframes:
        if tf not in settings.features.sets:
            console.print(f"[yellow]no feature set declared for {tf}; skipped[/]")
            continue
        frame = build_frame(outcome.clean, outcome.unavailable, tf, settings)
        if lake is not None:
            write_frame(lake, frame)
        frames[tf] = frame
    return frames


def signals_table(res) -> Table:
    table = Table(title="actionable predictions (confidence >= threshold) and consensus signals")
    for col in ("coin", "horizon", "direction", "p_up", "interval", "confidence", "q10 / q50 / q90", "top features", "signal"):
        table.add_column(col)
    signalled = {s["coin"]: s for s in res.signals}
    for p in sorted((p for p in res.predictions if p["actionable"]), key=lambda p: (p["coin"], p["horizon"])):
        tops = ", ".join(f"{t['feature']} {t['contribution']:+.2f}" for t in json.loads(p["top_features"])[:3])
        sig = signalled.get(p["coin"])
        table.add_row(p["coin"], p["horizon"], "up" if p["direction"] == 1 else "down", f"{p['p_up']:.3f}",
                      f"[{p['p_low']:.3f}, {p['p_high']:.3f}]", f"{p['confidence']:.3f}",
                      f"{p['q10']:+.3f} / {p['q50']:+.3f} / {p['q90']:+.3f}", tops,
                      _signal_cell(sig))
    return table


def _signal_cell(sig: dict | None) -> str:
    if not sig:
        return ""
    head = f"[bold]{sig['direction']} ({', '.join(sig['horizons'])})[/]"
    risk = sig.get("risk")
    if risk is None:
        return head
    if risk["allow"]:
        return f"{head} size {risk['size_fraction']:.1%} of equity, cost {risk['cost_bps']:.1f} bps"
    why = next((d["reason"] for d in risk["decisions"] if not d["allow"]), "refused")
    return f"{head} [red]not traded[/]: {why}"


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from services.features.frame import build_panel, coin_of
    from services.predict import cycle
    from services.predict.model import current_version
    from shared.contracts import ms_to_iso

    as_of = _as_of(args.as_of)
    lake = open_lake(args.lake or settings.lake.uri, region=settings.aws_region)
    run_id = logic.run_id_for(logic.source_id(args.source), as_of)
    done = cycle.existing_summary(lake, run_id)
    if done is not None:
        console.print(f"run {run_id} (as-of {done['as_of']}) is already complete; nothing changed. "
                      f"{done['predictions']} predictions, {done['actionable']} actionable, {len(done['signals'])} signals.")
        return 0
    timings: dict[str, float] = {}
    with cycle.Timer(timings, "ingest_and_quality"):
        report, outcome = _ingest(args, settings)
    with cycle.Timer(timings, "features"):
        frames = build_features(settings, outcome, lake)
        panels = {tf: build_panel(outcome.clean, outcome.unavailable, tf, settings) for tf in frames}
    horizons = [h for h in settings.horizons if h in settings.training.horizons]
    missing = [h for h in horizons if current_version(lake, h) is None]
    trained: dict = {}
    if missing:
        if args.source == "live":
            raise CstError("no_model", f"no CURRENT model for {missing}; train from recorded files first: "
                                       "cst train --source DIR --lake ...")
        from services.training.train import train

        console.print(f"no CURRENT model for {', '.join(missing)}: training them first with the quick budget "
                      f"(data before {ms_to_iso(as_of)})")
        with cycle.Timer(timings, "train"), Progress(TextColumn("{task.description}"), TimeElapsedColumn(),
                                                     console=console, transient=True) as bar:
            task = bar.add_task("training", total=None)
            results = train(settings, args.source, lake, until=ms_to_iso(as_of), horizons=missing, budget="quick",
                            tick=lambda msg: bar.update(task, description=msg))
        trained = {h: m.get("version") or f"not trained: {m.get('message')}" for h, m in results.items()}
    models = cycle.load_models(lake, horizons)
    # A horizon without a model is named in the summary with why, never dropped silently.
    no_model = {h: trained.get(h, "no CURRENT model") for h in horizons if h not in models}
    coins = sorted({coin_of(k.split("/")[2])[0] for k in outcome.report.series if k.startswith("ohlcv/")})
    inp = cycle.CycleInput(run_id, as_of, frames, panels,
                           {k: v.model_dump() for k, v in outcome.report.series.items()}, coins)
    with cycle.Timer(timings, "predict"), Progress(TextColumn("{task.description}"), console=console,
                                                   transient=True) as bar:
        task = bar.add_task("predicting", total=None)
        res = cycle.predict_all(settings, lake, inp, models, lambda msg: bar.update(task, description=msg))
    with cycle.Timer(timings, "risk"):
        cycle.risk_gate(settings, inp, res)
    with cycle.Timer(timings, "log"):
        cycle.write_predictions(lake, run_id, res.predictions)
    with cycle.Timer(timings, "outcomes_and_performance"):
        touched = cycle.record_outcomes(settings, lake, inp)
        res.outcomes_recorded = len(touched)
        cycle.update_performance(settings, lake, run_id, touched)
    with cycle.Timer(timings, "drift"):
        res.drift = cycle.check_drift(settings, lake, inp, models)
    retrain = [h for h, d in res.drift.items() if d.get("retrain")]
    retrained: dict = {}
    if retrain and args.source != "live":
        from services.training.train import train

        console.print(f"drift in {', '.join(retrain)}: retraining ({settings.run.retrain_budget} budget)")
        with cycle.Timer(timings, "retrain"):
            results = train(settings, args.source, lake, until=ms_to_iso(as_of), horizons=retrain,
                            budget=settings.run.retrain_budget)
        retrained = {h: {"version": m.get("version"), "promoted": m.get("gate", {}).get("promote"),
                         "error": m.get("message")} for h, m in results.items()}
    res.timings = timings
    doc = cycle.summary(inp, res, trained, {"retrained": retrained, "quality_key": report.quality_key,
                                            "fetch_failures": len(report.failures),
                                            "horizons_without_model": no_model})
    lake.put_json(f"runs/run_id={run_id}/summary.json", doc, if_absent=True)
    console.print(signals_table(res))
    console.print(f"run {run_id}: as-of {doc['as_of']}, {doc['coins_predicted']}/{doc['coins_total']} coins predicted, "
                  f"{doc['predictions']} predictions, {doc['actionable']} actionable, {len(doc['signals'])} signals "
                  f"({doc['tradable_signals']} past the risk gate), "
                  f"{doc['outcomes_recorded']} outcomes recorded, retrain: {', '.join(retrain) or 'none'}; "
                  f"summary runs/run_id={run_id}/summary.json")
    for h, why in res.uncertified.items():
        console.print(f"[yellow]{h} predictions are logged but never actionable[/]: {why}")
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from services.training.train import train

    lake = open_lake(args.lake or settings.lake.uri, region=settings.aws_region)
    horizons = [h for h in args.horizons.split(",") if h] if args.horizons else None
    with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("training", total=None)
        results = train(settings, args.source, lake, until=args.until, horizons=horizons, budget=args.budget,
                        tick=lambda msg: bar.update(task, description=msg))
    console.print(training_table(results))
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from services.training.evaluate import evaluate

    horizons = [h for h in args.horizons.split(",") if h] if getattr(args, "horizons", None) else None
    if args.command == "backtest":
        horizons = [h for h in settings.horizons if settings.training.horizons[h].timeframe == "1d"]
    out = Path(args.out)
    with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("evaluating", total=None)
        res = evaluate(settings, args.source, out, train_until=args.train_until,
                       train_until_1h=getattr(args, "train_until_1h", None), horizons=horizons,
                       budget=args.budget, tick=lambda msg: bar.update(task, description=msg),
                       backtest_threshold=args.threshold)
    console.print(evaluation_table(res["metrics"]))
    bt = res["backtest"]
    if "table" in bt:
        console.print(backtest_table(bt))
    console.print(f"wrote {out / 'metrics.json'}, {out / 'backtest.json'}, {out / 'report.html'} and its PNGs")
    return 0


def evaluation_table(metrics: dict) -> Table:
    table = Table(title=f"out of sample after {metrics['train_until']} (1h after {metrics['train_until_1h']})")
    for col in ("horizon", "n", "base rate", "Brier", "skill", "log loss", "ECE", "hit", "conf n / hit / wilson"):
        table.add_column(col)

    def f(v, spec=".4f"):
        return "-" if v is None else format(v, spec)

    for h, m in metrics["horizons"].items():
        c = m["confident"]
        table.add_row(h, str(m["n"]), f(m["base_rate"], ".3f"), f(m["brier"]), f(m["brier_skill"], "+.4f"),
                      f(m["log_loss"]), f(m["ece"]), f(m["hit_rate_all"], ".3f"),
                      f"{c['n']} / {f(c['hit_rate'], '.3f')} / {f(c['wilson_low'], '.3f')}")
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

    p = sub.add_parser("train", help="train per-horizon models from a directory of files into the lake's registry")
    p.add_argument("--source", required=True, help="directory laid out like ../shared/data")
    p.add_argument("--lake", help="lake folder or s3://bucket[/prefix] (default: settings, ./lake)")
    p.add_argument("--until", help="train on data published strictly before this UTC date/time")
    p.add_argument("--horizons", help="comma-separated, default all: 1h,24h,7d,30d")
    p.add_argument("--budget", default="quick", help="tuning/training budget profile: quick or full")
    p.set_defaults(func=cmd_train)

    for name, text in (("evaluate", "train before a split, predict the rest out of sample, write metrics, report, backtest"),
                       ("backtest", "walk-forward backtest of consensus signals (daily horizons) with and without guards")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--source", required=True, help="directory laid out like ../shared/data")
        p.add_argument("--train-until", required=True, help="train on data before this UTC date; test after it")
        if name == "evaluate":
            p.add_argument("--train-until-1h", help="the split for the 1h horizon (default: --train-until)")
            p.add_argument("--horizons", help="comma-separated, default all: 1h,24h,7d,30d")
        p.add_argument("--budget", default="quick", help="tuning/training budget profile: quick or full")
        p.add_argument("--threshold", type=float,
                       help="confidence threshold of the backtest's signals (default: the production threshold)")
        p.add_argument("--out", required=True, help="output directory")
        p.set_defaults(func=cmd_evaluate)

    for name, func, text in (("ingest", cmd_ingest, "land raw data and the quality report in the lake"),
                             ("run", cmd_run, "the main job: ingest, quality, features, predict, filter, consensus, risk, log, outcomes, drift")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--source", default="live", help="'live' (exchange + public APIs) or a directory of files")
        p.add_argument("--lake", help="lake folder or s3://bucket[/prefix] (default: settings, ./lake)")
        p.add_argument("--as-of", help="replay as if now were this UTC time")
        p.set_defaults(func=func)
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


if __name__ == "__main__":
    sys.exit(main())
