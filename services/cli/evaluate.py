"""`cst evaluate` and `cst backtest`: one experiment in, one report out (metrics, report, backtest)."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.cli.common import activity, console
from services.cli.render import backtest_table, evaluation_table
from shared.errors import CstError
from shared.settings import Settings


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from services.evaluation.evaluate import evaluate, judge_ranges_again, load_experiment

    out = Path(args.out)
    if getattr(args, "ranges_again", False):
        res = judge_ranges_again(settings, out)
        console.print(evaluation_table(res["metrics"]))
        console.print(f"the ranges judged again on the rows in {out / 'rows'}; wrote {out / 'metrics.json'} and "
                      f"{out / 'report.html'}")
        return 0
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
    with activity("evaluating") as tick:
        res = evaluate(settings, source, out, tick=tick, **kwargs)
    console.print(evaluation_table(res["metrics"]))
    bt = res["backtest"]
    if "table" in bt:
        console.print(backtest_table(bt))
    console.print(f"wrote {out / 'metrics.json'}, {out / 'backtest.json'}, {out / 'report.html'} and its PNGs")
    return 0


def register(sub, _lake: argparse.ArgumentParser) -> None:
    for name, text in (("evaluate", "train before a split, predict the rest out of sample, write metrics, report, "
                                    "backtest"),
                       ("backtest", "walk-forward backtest of consensus signals (daily horizons) with and without "
                                    "guards")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--source", help="directory laid out like ../shared/data")
        p.add_argument("--train-until", help="train on data before this UTC date; test after it")
        p.add_argument("--from", dest="from_snapshot",
                       help="run again the experiment stored in OUT/experiment.json (its settings and arguments)")
        if name == "evaluate":
            p.add_argument("--train-until-1h", help="the split for the 1h horizon (default: --train-until)")
            p.add_argument("--horizons", help="comma-separated, default all: 1h,24h,7d,30d")
            p.add_argument("--ranges-again", action="store_true",
                           help="serve and judge the 80%% ranges again on the rows of the evaluation in OUT with "
                                "these settings' range rules (run.range_*), without training again")
        p.add_argument("--budget", default="quick", help="tuning/training budget profile: quick or full")
        p.add_argument("--retrain-every", default="production",
                       help="retrain during the test: 'production' (the main job's cadence per timeframe, "
                            "run.retrain_every), a period such as 30d or 2w, or 'none' (train once before the split)")
        p.add_argument("--threshold", type=float,
                       help="confidence threshold of the backtest's signals (default: the production threshold)")
        p.add_argument("--out", required=True, help="output directory")
        p.set_defaults(func=cmd_evaluate)
