"""The ingest step: fetch every source (or read the files), land raw responses, stage the parsed series for validation."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import numpy as np

from services.ingest import logic
from services.ingest.sources.base import Source
from services.ingest.sources.files import FileSource, FileSpec, file_state_key
from shared.contracts import FetchFailure, Series, iso_to_ms
from shared.datasets import STAGING, get_table, put_series, table_to_series
from shared.errors import CstError, LakeKeyNotFound
from shared.pipeline.context import StepContext
from shared.pipeline.contracts import IngestOutput, RunRef
from shared.runs import batch_coins, store_output
from shared.settings import Settings
from shared.storage import Lake


def trades_state_key(exchange: str, coin: str) -> str:
    return f"state/trades/source={exchange}/coin={coin}.json"


def _trades_since(lake: Lake, settings: Settings, coins: list[str]) -> dict[str, int]:
    """Per coin, where the trades collected by earlier runs end: this run continues from there."""
    found = {}
    for coin in coins:
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


def _fetch_and_land(ctx: StepContext, sources: list[Source]) -> tuple[logic.Fetched, int, int]:
    """Every task of the sources, then the raw records of those that succeeded; nothing reachable is an error."""
    fetched = asyncio.run(logic.fetch_sources(sources, ctx.settings, *(ctx.fetch_progress or (None, None))))
    if not fetched.results and fetched.unreachable:
        raise logic.unreachable_error(fetched)
    landed, present = logic.land(ctx.lake, fetched)
    return fetched, landed, present


def fetch(ctx: StepContext, ref: RunRef) -> IngestOutput:
    """One batch of a live run's symbols (the first batch also fetches the market-wide sources): fetched, landed,
    staged; the trades' coverage recorded once they landed."""
    settings, lake = ctx.settings, ctx.lake
    if ref.item is None or not ref.item.isdigit():
        raise CstError("step_needs_item", f"the fetch step runs once per symbol batch (0, 1, ...), not {ref.item!r}")
    universe, unlisted = logic.exchange_coins(settings)
    coins = batch_coins(settings, ref.item, universe)
    if not coins:
        # A batch past the end of a listed universe (the plan allows for exchange.max_symbols).
        return IngestOutput(run_id=ref.run_id)
    sources = logic.build_sources("live", settings, iso_to_ms(ref.as_of), trades_since=_trades_since(lake, settings, coins),
                                  coins=coins, market=ref.item == "0", universe=universe)
    fetched, landed, present = _fetch_and_land(ctx, sources)
    if ref.item == "0":
        fetched.failures += unlisted
    staged = put_series(lake, STAGING, [s for _, r in fetched.results for s in r.series], content_addressed=True)
    for src in sources:
        # Only after the trades landed: the next run continues from the end of what this one covered.
        for coin, (_, covered_to) in getattr(src, "coverage", {}).items():
            lake.put_json(trades_state_key(settings.exchange.id, coin), {"covered_to_ms": covered_to, "run_id": ref.run_id})
    return IngestOutput(run_id=ref.run_id, landed=landed, already_present=present, failures=fetched.failures,
                        staged=staged)


def ingest(ctx: StepContext, ref: RunRef) -> IngestOutput:
    """The run's staged series: a live run's fetch batches joined (a batch without output is a failure, its coins
    missing from the run); a file import read, landed and staged here."""
    settings, lake = ctx.settings, ctx.lake
    if ref.source == "live":
        out = IngestOutput(run_id=ref.run_id)
        for item in ref.batches:
            batch = ctx.output(ref.run_id, "fetch", item)
            if batch is None:
                n = settings.exchange.batch_symbols
                if settings.universe.coins == "listed":
                    which = f"listed markets {int(item) * n + 1}..{(int(item) + 1) * n}"
                else:
                    coins = batch_coins(settings, item)
                    which = f"{len(coins)} symbols, {coins[0]}..{coins[-1]}"
                out.failures.append(FetchFailure(
                    source=settings.exchange.id, task=f"batch {item}", code="batch_failed", attempts=1,
                    message=f"fetch batch {item} ({which}) has no output: it failed (the run's failures say why); "
                            "its symbols are missing from this run"))
                continue
            out.landed += batch.landed
            out.already_present += batch.already_present
            out.failures += batch.failures
            out.staged += batch.staged
        if not out.staged:
            raise CstError("sources_unreachable", f"no fetch batch of run {ref.run_id} staged anything; nothing was "
                                                  f"ingested.\n  {logic.OFFLINE_HINT}")
        return out
    source = logic.build_sources(ref.source, settings, iso_to_ms(ref.as_of), known_files=_known_files(lake, ref.source))[0]
    fetched, landed, present = _fetch_and_land(ctx, [source])
    staged = stage_files(lake, source, [s for _, r in fetched.results for s in r.series])
    return IngestOutput(run_id=ref.run_id, landed=landed, already_present=present, failures=fetched.failures,
                        files_ignored=dict(source.ignored), staged=staged)


def import_files(ctx: StepContext, ref: RunRef) -> IngestOutput:
    """A folder of files landed and staged as the run's ingest output, outside a pipeline run (an evaluation's
    history): stored where the run's readers of staged series look for it."""
    out = ingest(ctx, ref)
    out.step = "ingest"
    store_output(ctx.lake, out)
    return out
