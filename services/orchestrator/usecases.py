"""What the faces offer, once: the CLI's commands and the API's actions start and finish runs through these, so a
run started from the terminal, the dashboard or the schedule is the same run (`shared.runs.new_ref`) and the
decisions about a run (is it done, does the lake need history first) are made here, not in a command."""

from __future__ import annotations

import logging
import threading

from services.orchestrator import runner
from shared import runs
from shared.datasets import history_parts
from shared.pipeline.context import StepContext
from shared.pipeline.contracts import RunRef, RunStart
from shared.registry import current_version
from shared.settings import Settings
from shared.storage import Lake

log = logging.getLogger(__name__)


def open_run(settings: Settings, lake: Lake, source: str, at_ms: int | None = None, *, retrain: bool = False,
             retrain_only: list[str] | None = None) -> RunRef:
    """The run of this cycle, its reference stored (a run opened again keeps its first reference)."""
    ref = runs.new_ref(settings, source, at_ms, retrain=retrain, retrain_only=retrain_only)
    runs.save_ref(lake, ref)
    return ref


def history_start(settings: Settings, now_ms: int) -> int:
    """The start of the history training needs: the deepest `exchange.history` of the run's timeframes."""
    depth = max(settings.exchange.history[tf] for tf in settings.timeframes if tf in settings.exchange.history)
    return now_ms - int(depth.total_seconds() * 1000)


def needs_history(lake: Lake, ref: RunRef) -> bool:
    """A live run on a lake with neither backfilled history nor any model has nothing to train on: the history
    training needs comes first."""
    return (ref.source == "live" and not history_parts(lake)
            and all(current_version(lake, h) is None for h in ref.horizons))


class AlreadyRunning(Exception):
    """A start asked for while the same run (this cycle, this action) is still running: `running` names it."""

    def __init__(self, running: str):
        super().__init__(running)
        self.running = running


_RUNNING: dict[str, threading.Thread] = {}
_RUNNING_LOCK = threading.Lock()


def action_name(request: RunStart, run_id: str) -> str:
    """One execution per cycle and action: the run id, and the horizons a retrain asks for."""
    what = "retrain-" + "-".join(request.retrain_only or ["all"]) if request.retrain else "run"
    return f"{run_id}-{what}"


def start_in_background(settings: Settings, lake: Lake, request: RunStart) -> str:
    """An operator's run or retrain on this machine: the run of the current cycle, run in a thread (its failures are
    in its summary and the log). Returns the run id; raises AlreadyRunning while the same one still runs."""
    ref = runs.new_ref(settings, request.source, retrain=request.retrain, retrain_only=request.retrain_only)
    name = action_name(request, ref.run_id)
    with _RUNNING_LOCK:
        alive = _RUNNING.get(name)
        if alive is not None and alive.is_alive():
            raise AlreadyRunning(ref.run_id)
        runs.save_ref(lake, ref)

        def work() -> None:
            try:
                runner.run_pipeline(StepContext(settings, lake), ref)
            except Exception:  # noqa: BLE001 - a background run's failure is in its summary and the log
                log.exception("run %s failed", ref.run_id)

        thread = threading.Thread(target=work, name=name, daemon=True)
        _RUNNING[name] = thread
        thread.start()
    return ref.run_id
