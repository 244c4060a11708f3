"""What every `cst` command shares: the console, the --as-of and --lake options, progress bars."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from contextlib import contextmanager, nullcontext

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from shared.contracts import iso_to_ms
from shared.errors import CstError
from shared.pipeline.context import StepContext
from shared.settings import Settings
from shared.storage import open_lake

# Piped output (CI logs, files) gets a wide fixed width instead of 80 columns of wrapped tables.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def lake_option() -> argparse.ArgumentParser:
    """The --lake option, declared once and inherited by every command that reads or writes a lake."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--lake", help="lake folder or s3://bucket[/prefix] (default: settings, ./lake; serve and users need a local folder)")
    return parent


def parse_as_of(text: str | None) -> int | None:
    """The time given with --as-of, or None for now (the run's identity floors either to its cycle)."""
    if not text:
        return None
    try:
        return iso_to_ms(text)
    except ValueError:
        raise CstError("bad_as_of", f"--as-of {text!r} is not an ISO-8601 time (e.g. 2024-07-01T00:00:00Z)") from None


HEARTBEAT_S = 10.0


class Heartbeat:
    """Where no terminal draws the progress bars (CI logs, files, a scheduler), one line on stderr at the start and
    then every `every` seconds: the time elapsed and the latest thing being done, so long work never looks hung."""

    def __init__(self, label: str, every: float = HEARTBEAT_S, stream=None):
        self.label, self.every, self.stream = label, every, stream or sys.stderr
        self.message = "starting"
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="cst-heartbeat", daemon=True)

    def tick(self, message: str) -> None:
        self.message = message

    def line(self) -> str:
        return f"[{time.monotonic() - self.t0:7.1f}s] {self.label}: {self.message}"

    def _beat(self) -> None:
        while True:
            print(self.line(), file=self.stream, flush=True)
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def activity(label: str):
    """Yields tick(message): a rich status line with the time elapsed on a terminal, a heartbeat elsewhere."""
    if console.is_terminal:
        with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as bar:
            task = bar.add_task(label, total=None)
            yield lambda msg: bar.update(task, description=msg)
    else:
        with Heartbeat(label) as beat:
            yield beat.tick


@contextmanager
def progress(label: str):
    """Yields (on_start, on_done) callbacks for the ingest runner, drawn as a rich progress bar."""
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task_id = bar.add_task(label, total=None)
        yield (lambda n: bar.update(task_id, total=n), lambda _t: bar.advance(task_id))


def lake_of(args: argparse.Namespace, settings: Settings):
    return open_lake(args.lake or settings.lake.uri, region=settings.aws_region)


@contextmanager
def step_progress(settings: Settings, lake, label: str):
    """A step context whose fetch progress and step names are drawn as rich progress bars."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar, \
            (nullcontext() if console.is_terminal else Heartbeat(label)) as beat:
        steps = bar.add_task(label, total=None)
        fetch = bar.add_task("fetching", total=None, visible=False)

        def tick(msg: str) -> None:
            bar.update(steps, description=msg)
            if beat is not None:
                beat.tick(msg)

        ctx = StepContext(settings, lake, tick=tick,
                          fetch_progress=(lambda n: bar.update(fetch, total=n, visible=True),
                                          lambda _t: bar.advance(fetch)))
        yield ctx, (lambda name: tick(f"step {name}"))
