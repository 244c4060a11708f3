"""`cst train`: per-horizon models on the lake's stored history, published through its registry's gate."""

from __future__ import annotations

import argparse

from services.cli.common import activity, console, lake_of, step_progress
from services.cli.render import training_table
from services.orchestrator import runner, usecases
from shared.contracts import iso_to_ms
from shared.errors import CstError
from shared.settings import Settings


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from services.training.train import train

    lake = lake_of(args, settings)
    horizons = [h for h in args.horizons.split(",") if h] if args.horizons else None
    if args.run_id:
        run_id = args.run_id
    elif args.source:
        # Files reach training through the lake: imported as a run's staged series, then read from there.
        ref = usecases.open_run(settings, lake, args.source, iso_to_ms(args.until) if args.until else None)
        with step_progress(settings, lake, f"importing {args.source}") as (ctx, _):
            runner.run_ingest(ctx, ref)
        run_id = ref.run_id
    else:
        raise CstError("train_needs_data", "give --source DIR (imported into the lake first) or --run-id of a run")
    with activity("training") as tick:
        results = train(settings, lake, run_id, until=args.until, horizons=horizons, budget=args.budget, tick=tick)
    console.print(training_table(results))
    return 0


def register(sub, lake: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[lake],
                       help="train per-horizon models on the lake's stored history into its registry")
    p.add_argument("--source", help="directory laid out like ../shared/data, imported into the lake first")
    p.add_argument("--run-id", help="train on the series this stored run landed (instead of --source)")
    p.add_argument("--until", help="train on data published strictly before this UTC date/time")
    p.add_argument("--horizons", help="comma-separated, default all: 1h,24h,7d,30d")
    p.add_argument("--budget", default="quick", help="tuning/training budget profile: quick or full")
    p.set_defaults(func=cmd_train)
