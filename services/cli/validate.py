"""`cst validate`: the quality gate on a folder of files, its report written to a folder (no lake)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from services.cli.common import console, parse_as_of, progress
from services.cli.render import quality_table, summary_line
from services.features.quality.gate import quarantine_documents
from services.ingest import logic
from shared import runs
from shared.settings import Settings


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    as_of = runs.cycle_as_of(settings, parse_as_of(args.as_of))
    from services.ingest.sources.files import FileSource

    source = FileSource(args.source)
    with progress("reading files") as cb:
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
    console.print(summary_line(outcome.report) + f"; report: {out / 'quality.json'}")
    for f in fetched.failures:
        console.print(f"[red]could not read[/] {f.task}: [{f.code}] {f.message}")
    if outcome.report.series and all(s.issues.get("stale") or s.issues.get("no_data") for s in outcome.report.series.values()):
        console.print("[yellow]every series is stale or empty at this as-of: recorded files need --as-of "
                      "(e.g. 2024-07-01T00:00:00Z for the daily files)[/]")
    return 0


def register(sub, _lake: argparse.ArgumentParser) -> None:
    p = sub.add_parser("validate", help="run the quality gate on a directory of files and write OUT/quality.json")
    p.add_argument("--source", required=True, help="directory laid out like ../shared/data")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--as-of", help="judge as if now were this UTC time; later rows are not read")
    p.set_defaults(func=cmd_validate)
