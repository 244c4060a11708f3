"""Runs: a run's identity (one rule for the CLI, the schedule, the start handler and the API) and the store that
alone knows a run's keys in the lake (its reference, each step's output, the summary, the quality report and the
clean series).

A run is identified by its source and its as-of, and its as-of is the close of the latest candle of the shortest
timeframe at or before the time it was asked for (or now). The same cycle started from the terminal, the dashboard
or the schedule (which fires a few minutes past the hour) is one run: it writes the same keys, and a run that
completed is not run again.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from shared.contracts import ms_to_iso, utcnow
from shared.errors import CstError, LakeKeyNotFound
from shared.pipeline.contracts import RunRef, StepOutput
from shared.pipeline.definition import STEPS
from shared.records import RunSummary
from shared.settings import Settings, timeframe_ms
from shared.storage import Lake

RUNS = "runs/"
SUMMARY_KEY = re.compile(r"runs/run_id=([^/]+)/summary\.json$")


# --- identity ---------------------------------------------------------------------------------------------------


def source_id(source: str) -> str:
    """'live', or a folder of files by its absolute path (the same folder named two ways is one source)."""
    return source if source == "live" else str(Path(source).resolve())


def run_id_for(source: str, as_of_ms: int) -> str:
    """Deterministic per (source, as-of): re-running the same cycle writes the same keys."""
    stamp = ms_to_iso(as_of_ms).replace("-", "").replace(":", "")
    return f"{stamp}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"


def cycle_as_of(settings: Settings, at_ms: int | None = None) -> int:
    """The run's as-of for a request at `at_ms` (now when None): the close of the latest candle of the shortest
    timeframe at or before it."""
    at = int(utcnow().timestamp() * 1000) if at_ms is None else at_ms
    step = min(timeframe_ms(tf) for tf in settings.timeframes)
    return at // step * step


def fetch_batches(settings: Settings) -> list[str]:
    """A live run's fetch batches ("0", "1", ...): the universe in order, `exchange.batch_symbols` symbols each."""
    coins = settings.universe.coins
    # "listed": the markets are read by each batch, so the plan covers as many as may be fetched.
    count = settings.exchange.max_symbols if coins == "listed" else len(coins)
    return [str(i) for i in range(-(-count // settings.exchange.batch_symbols))]


def batch_coins(settings: Settings, item: str, coins: list[str] | None = None) -> list[str]:
    """The symbols in fetch batch `item` of `coins` (the configured universe unless given)."""
    n = settings.exchange.batch_symbols
    coins = settings.universe.coins if coins is None else coins
    if coins == "listed":
        raise ValueError("a listed universe's batches are read from the exchange's markets (exchange_coins)")
    return coins[int(item) * n:(int(item) + 1) * n]


def new_ref(settings: Settings, source: str, at_ms: int | None = None, *, retrain: bool = False,
            retrain_only: list[str] | None = None, no_retrain: bool = False) -> RunRef:
    """The run of `source` for the cycle at `at_ms` (now when None): the one way every face names a run."""
    sid = source_id(source)
    as_of = cycle_as_of(settings, at_ms)
    return RunRef(run_id=run_id_for(sid, as_of), as_of=ms_to_iso(as_of), source=sid,
                  horizons=[h for h in settings.horizons if h in settings.training.horizons],
                  batches=fetch_batches(settings) if sid == "live" else [], retrain=retrain,
                  retrain_only=list(retrain_only or []), no_retrain=no_retrain)


# --- the store --------------------------------------------------------------------------------------------------


def run_prefix(run_id: str) -> str:
    return f"{RUNS}run_id={run_id}/"


def ref_key(run_id: str) -> str:
    return run_prefix(run_id) + "ref.json"


def step_output_key(run_id: str, step: str, item: str | None = None) -> str:
    return run_prefix(run_id) + f"steps/{step}" + (f"/{item}" if item else "") + ".json"


def summary_key(run_id: str) -> str:
    return run_prefix(run_id) + "summary.json"


def quality_key(run_id: str) -> str:
    """The run's quality report (validation's verdict per series)."""
    return f"quality/run_id={run_id}/report.json"


def clean_prefix(run_id: str) -> str:
    """The run's series after the quality gate (validation's hand-off to features)."""
    return f"clean/run_id={run_id}/"


def save_ref(lake: Lake, ref: RunRef) -> None:
    """The run's reference, written once: a run started again keeps its first reference."""
    lake.put_json(ref_key(ref.run_id), ref.model_dump(mode="json"), if_absent=True)


def load_ref(lake: Lake, run_id: str) -> RunRef:
    try:
        return RunRef.model_validate(lake.get_json(ref_key(run_id)))
    except LakeKeyNotFound:
        raise CstError("unknown_run", f"no run {run_id!r} in {lake.uri}: start it with --source (and --as-of)") from None


def load_output(lake: Lake, run_id: str, step: str, item: str | None = None) -> StepOutput | None:
    """A step's stored output for the run, or None when that step has not run."""
    try:
        doc = lake.get_json(step_output_key(run_id, step, item))
    except LakeKeyNotFound:
        return None
    return STEPS[step].output_model().model_validate(doc)


def store_output(lake: Lake, out: StepOutput) -> None:
    """The step's output contract under the run: the next steps' input and the mark that it has run."""
    lake.put_json(step_output_key(out.run_id, out.step, out.item), out.model_dump(mode="json"))


def load_summary(lake: Lake, run_id: str) -> RunSummary | None:
    """The run's summary, or None when the run has not reached its summary step."""
    try:
        return RunSummary.model_validate(lake.get_json(summary_key(run_id)))
    except LakeKeyNotFound:
        return None


def complete_summary(lake: Lake, run_id: str) -> RunSummary | None:
    """The run's summary when the run completed; a failed or unfinished run has none that counts."""
    doc = load_summary(lake, run_id)
    return doc if doc is not None and doc.status == "complete" else None


def previous_summary(lake: Lake, run_id: str) -> RunSummary | None:
    """The summary of the latest earlier run from the same source (run ids sort by as-of), or None."""
    stamp, _, source = run_id.partition("-")
    earlier = sorted((f[len("run_id="):] for f in lake.folders(RUNS) if f.startswith("run_id=")), reverse=True)
    for other in earlier:
        if other < run_id and other.partition("-")[2] == source:
            doc = load_summary(lake, other)
            if doc is not None:
                return doc
    return None


def put_summary(lake: Lake, summary: RunSummary) -> str:
    key = summary_key(summary.run_id)
    lake.put_json(key, summary.model_dump(mode="json"))
    return key
