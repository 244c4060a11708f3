"""The validate and features steps: the quality gate on the run's staged series, then frames and panels into the lake."""

from __future__ import annotations

import logging
from collections import Counter

from services.features.frame import build_frame, build_panel
from services.features.quality.gate import quarantine_documents, run_gate
from services.features.store import write_frame, write_panel
from shared.contracts import QualityReport, Series, iso_to_ms
from shared.datasets import get_series, put_series
from shared.errors import CstError, LakeKeyNotFound
from shared.pipeline.context import StepContext
from shared.pipeline.contracts import (
    FeaturesOutput,
    FrameSummary,
    IngestOutput,
    RunRef,
    ValidateOutput,
)
from shared.registry import current_version
from shared.runs import clean_prefix, quality_key, step_output_key
from shared.storage import Lake

log = logging.getLogger(__name__)


def staged_series(lake: Lake, run_id: str) -> list[Series]:
    """The series the ingest step staged for a run (validation and training read them)."""
    try:
        ingested = IngestOutput.model_validate(lake.get_json(step_output_key(run_id, "ingest")))
    except LakeKeyNotFound:
        raise CstError("step_input_missing", f"run {run_id} has no staged series in {lake.uri}: run its ingest "
                                             "step first (cst step ingest, or cst import for files)") from None
    return get_series(lake, ingested.staged)


def validate(ctx: StepContext, ref: RunRef) -> ValidateOutput:
    settings, lake = ctx.settings, ctx.lake
    ingested = ctx.output(ref.run_id, "ingest")
    # Over the run's span only (what a live run fetches): a run's cost stays flat as the history grows.
    outcome = run_gate(staged_series(lake, ref.run_id), iso_to_ms(ref.as_of), settings.quality,
                       span_ms=settings.run_span_ms)
    outcome.report.files_ignored = dict(ingested.files_ignored) if ingested else {}
    for key, doc in quarantine_documents(outcome).items():
        lake.put_json(key, doc, if_absent=True)
    # Clean rows keep no source text: quarantine (written above) is where rows are shown as delivered.
    clean = [Series(s.layer, s.timeframe, s.symbol, s.source, s.ts, s.fields, []) for s in outcome.clean.values()]
    keys = put_series(lake, clean_prefix(ref.run_id), clean)
    qkey = quality_key(ref.run_id)
    lake.put_json(qkey, outcome.report.model_dump(mode="json"))
    statuses = Counter(s.status for s in outcome.report.series.values())
    return ValidateOutput(run_id=ref.run_id, quality_key=qkey, statuses=dict(statuses), clean=keys)


def quality_report(ctx: StepContext, run_id: str) -> QualityReport:
    return QualityReport.model_validate(ctx.lake.get_json(quality_key(run_id)))


def features(ctx: StepContext, ref: RunRef) -> FeaturesOutput:
    """Frames for every configured timeframe that has a declared feature set, and the price panels."""
    settings, lake = ctx.settings, ctx.lake
    report = quality_report(ctx, ref.run_id)
    validated = ctx.output(ref.run_id, "validate")
    if validated is None:
        raise CstError("step_input_missing", f"run {ref.run_id} has not been validated: run its validate step first")
    clean = {s.key: s for s in get_series(lake, validated.clean)}
    unavailable = {k: v.unavailable_fields for k, v in report.series.items() if v.unavailable_fields}
    out = FeaturesOutput(run_id=ref.run_id)
    as_of = iso_to_ms(ref.as_of)
    for tf in settings.timeframes:
        if tf not in settings.features.sets:
            log.warning("no feature set declared for timeframe %s: no features built for it", tf)
            continue
        frame = build_frame(clean, unavailable, tf, settings)
        # The span's first rows carry the truncated start of recursive indicators: only settled rows are written
        # (earlier runs wrote the rest); candles have no memory and are written from the span's start.
        out.written += write_frame(lake, frame, settings.settled_from_ms(tf, as_of))
        out.written += write_panel(lake, build_panel(clean, unavailable, tf, settings), as_of - settings.run_span_ms(tf))
        out.frames[tf] = FrameSummary(rows=int(frame.members().sum()), coins=len(frame.rows_per_coin), features=len(frame.names),
                                      excluded=dict(sorted(frame.excluded.items())),
                                      excluded_layers=sorted(frame.declared["excluded_layers"]),
                                      universe=frame.universe)
    # Whether the (costly, SageMaker) training step has anything to do.
    out.untrained = [h for h in ref.horizons if current_version(lake, h) is None]
    return out
