"""The ingest step: fetch every source (or read the files), land raw responses, stage the parsed series for validation."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import numpy as np

from services.ingest import logic
from services.ingest.sources.files import FileSource, FileSpec, file_state_key
from shared.contracts import Series, iso_to_ms
from shared.datasets import get_table, put_series, table_to_series
from shared.errors import LakeKeyNotFound
from shared.pipeline import STAGING, IngestOutput, RunRef, StepContext
from shared.settings import Settings
from shared.storage import Lake


def trades_state_key(exchange: str, coin: str) -> str:
    return f"state/trades/source={exchange}/coin={coin}.json"


def _trades_since(lake: Lake, settings: Settings) -> dict[str, int]:
    """Per coin, where the trades collected by earlier runs end: this run continues from there."""
    found = {}
    for coin in settings.universe:
        try:
            found[coin] = int(lake.get_json(trades_state_key(settings.exchange.id, coin))["covered_to_ms"])
        except LakeKeyNotFound:
            pass
    return found


def _known_files(lake: Lake, root: str) -> dict[str, dict]:
    """What earlier imports of `root` landed, per file: only entries whose staged part the lake still holds."""
    try:
        files = lake.get_json(file_state_key(Path(root)))["files"]
    except LakeKeyNotFound:
        return {}
    held = {part: lake.exists(part) for part in {f["part"] for f in files.values()}}
    return {rel: f for rel, f in files.items() if held[f["part"]]}


def stage_files(lake: Lake, source: FileSource, fresh: list[Series]) -> list[str]:
    """Staged parts of a file import, one per (layer, timeframe), as a full import of the same files would stage
    them: a part whose files are all unchanged is the part the lake already holds (nothing read back); otherwise
    the unchanged and grown files' series come from the parts they were staged in (a grown one joined to its new
    lines) beside the newly parsed ones. Records what each file's bytes are and where its series is staged."""
    groups: dict[tuple[str, str], list[FileSpec]] = defaultdict(list)
    for spec in source.specs:
        if source.rel(spec) in source.read:  # a file that could not be read stages nothing
            groups[(spec.layer, spec.timeframe)].append(spec)
    parsed = defaultdict(list)
    for s in fresh:
        parsed[(s.layer, s.timeframe)].append(s)
    keys: list[str] = []
    files: dict[str, dict] = {}
    for group, specs in sorted(groups.items()):
        rels = [source.rel(spec) for spec in specs]
        old = [r for r in rels if r in source.unchanged or r in source.tails]
        parts = sorted({source.known[r]["part"] for r in old})
        same = (all(r in source.unchanged for r in rels) and len(parts) == 1
                and sorted(r for r, f in source.known.items() if f["part"] == parts[0]) == sorted(rels))
        if same:
            key = parts[0]
        else:
            held = {(s.key, s.source): s for part in parts for s in table_to_series(get_table(lake, part))}
            series = list(parsed[group])
            for spec, rel in zip(specs, rels, strict=True):
                if rel in old:
                    s = held[(f"{spec.layer}/{spec.timeframe}/{spec.symbol}", spec.source)]
                    series.append(join_series(s, source.tails[rel]) if rel in source.tails else s)
            [key] = put_series(lake, STAGING, series, content_addressed=True)
        keys.append(key)
        files.update({rel: {**source.read[rel], "part": key} for rel in rels})
    lake.put_json(file_state_key(source.root), {"root": str(source.root.resolve()), "files": files})
    return keys


def join_series(head: Series, tail: Series) -> Series:
    """A series the lake holds followed by the rows of its file's new lines: the series of the whole file."""
    return Series(head.layer, head.timeframe, head.symbol, head.source, np.concatenate([head.ts, tail.ts]),
                  {f: np.concatenate([v, tail.fields[f]]) for f, v in head.fields.items()},
                  [*head.origin, *tail.origin], [*head.parse_errors, *tail.parse_errors])


def ingest(ctx: StepContext, ref: RunRef) -> IngestOutput:
    settings, lake = ctx.settings, ctx.lake
    live = ref.source == "live"
    sources = logic.build_sources(ref.source, settings, iso_to_ms(ref.as_of),
                                  trades_since=_trades_since(lake, settings) if live else None,
                                  known_files=None if live else _known_files(lake, ref.source))
    ignored = {} if live else sources[0].ignored
    fetched = asyncio.run(logic.fetch_sources(sources, settings, *(ctx.fetch_progress or (None, None))))
    if not fetched.results and fetched.unreachable:
        raise logic.unreachable_error(fetched)
    landed, present = logic.land(lake, fetched)
    series = [s for _, r in fetched.results for s in r.series]
    staged = put_series(lake, STAGING, series, content_addressed=True) if live else stage_files(lake, sources[0], series)
    for src in sources:
        # Only after the trades landed: the next run continues from the end of what this one covered.
        for coin, (_, covered_to) in getattr(src, "coverage", {}).items():
            lake.put_json(trades_state_key(settings.exchange.id, coin), {"covered_to_ms": covered_to, "run_id": ref.run_id})
    return IngestOutput(run_id=ref.run_id, landed=landed, already_present=present, failures=fetched.failures,
                        files_ignored=dict(ignored), staged=staged)
