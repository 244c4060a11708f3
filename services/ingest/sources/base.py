"""The source interface: a source yields fetch tasks; a task returns raw records (as fetched) and parsed series."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.ingest.fetch import Fetcher
from shared.contracts import RawRecord, Series


@dataclass
class FetchResult:
    records: list[RawRecord] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)


@dataclass
class FetchTask:
    """One unit of fetching that succeeds or fails whole: nothing of a failed task lands."""

    source: str
    name: str
    run: Callable[[Fetcher], Awaitable[FetchResult]]
    # Host the task talks to, so an unreachable-network report can name it.
    host: str = ""


class Source:
    name: str = "source"

    def tasks(self) -> list[FetchTask]:
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections; sources without any keep this."""
