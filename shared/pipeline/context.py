"""What every step's logic is given besides its run reference: settings, the lake, progress callbacks, and the
outputs earlier steps of the run stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from shared import runs
from shared.pipeline.contracts import StepOutput
from shared.settings import Settings
from shared.storage import Lake


@dataclass
class StepContext:
    settings: Settings
    lake: Lake
    tick: Callable[[str], None] = field(default=lambda _msg: None)
    # (on_start(n_tasks), on_done(task)) for fetching, drawn as a progress bar by the CLI.
    fetch_progress: tuple[Callable, Callable] | None = None

    def output(self, run_id: str, step: str, item: str | None = None) -> StepOutput | None:
        """An earlier step's stored output for this run, or None when that step has not run."""
        return runs.load_output(self.lake, run_id, step, item)
