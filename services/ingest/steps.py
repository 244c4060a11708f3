"""The ingest step: fetch every source (or read the files), land raw responses, stage the parsed series for validation."""

from __future__ import annotations

import asyncio

from services.ingest import logic
from shared.contracts import iso_to_ms
from shared.datasets import put_series
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


def ingest(ctx: StepContext, ref: RunRef) -> IngestOutput:
    settings, lake = ctx.settings, ctx.lake
    live = ref.source == "live"
    sources = logic.build_sources(ref.source, settings, iso_to_ms(ref.as_of),
                                  trades_since=_trades_since(lake, settings) if live else None)
    ignored = getattr(sources[0], "ignored", {}) if ref.source != "live" else {}
    fetched = asyncio.run(logic.fetch_sources(sources, settings, *(ctx.fetch_progress or (None, None))))
    if not fetched.results and fetched.unreachable:
        raise logic.unreachable_error(fetched)
    landed, present = logic.land(lake, fetched)
    series = [s for _, r in fetched.results for s in r.series]
    staged = put_series(lake, STAGING, series, content_addressed=True)
    for src in sources:
        # Only after the trades landed: the next run continues from the end of what this one covered.
        for coin, (_, covered_to) in getattr(src, "coverage", {}).items():
            lake.put_json(trades_state_key(settings.exchange.id, coin), {"covered_to_ms": covered_to, "run_id": ref.run_id})
    return IngestOutput(run_id=ref.run_id, landed=landed, already_present=present, failures=fetched.failures,
                        files_ignored=dict(ignored), staged=staged)
