"""The ingest step: fetch every source (or read the files), land raw responses, stage the parsed series for validation."""

from __future__ import annotations

import asyncio

from services.ingest import logic
from shared.contracts import iso_to_ms
from shared.datasets import put_series
from shared.pipeline import STAGING, IngestOutput, RunRef, StepContext


def ingest(ctx: StepContext, ref: RunRef) -> IngestOutput:
    settings, lake = ctx.settings, ctx.lake
    sources = logic.build_sources(ref.source, settings, iso_to_ms(ref.as_of))
    ignored = getattr(sources[0], "ignored", {}) if ref.source != "live" else {}
    fetched = asyncio.run(logic.fetch_sources(sources, settings, *(ctx.fetch_progress or (None, None))))
    if not fetched.results and fetched.unreachable:
        raise logic.unreachable_error(fetched)
    landed, present = logic.land(lake, fetched)
    series = [s for _, r in fetched.results for s in r.series]
    staged = put_series(lake, STAGING, series, content_addressed=True)
    return IngestOutput(run_id=ref.run_id, landed=landed, already_present=present, failures=fetched.failures,
                        files_ignored=dict(ignored), staged=staged)
