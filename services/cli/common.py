"""What every `cst` command shares: the console, the --as-of and --lake options, progress bars."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

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
                  console=console, transient=True) as bar:
        steps = bar.add_task(label, total=None)
        fetch = bar.add_task("fetching", total=None, visible=False)
        ctx = StepContext(settings, lake, tick=lambda msg: bar.update(steps, description=msg),
                          fetch_progress=(lambda n: bar.update(fetch, total=n, visible=True),
                                          lambda _t: bar.advance(fetch)))
        yield ctx, (lambda name: bar.update(steps, description=f"step {name}"))
