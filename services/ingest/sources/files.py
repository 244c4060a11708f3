"""File import: the offline path, reading a directory laid out like ../shared/data (see its README)."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import multiprocessing as mp
import os
import re
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np

from services.ingest.fetch import Fetcher
from services.ingest.sources.base import FetchResult, FetchTask, Source
from services.ingest.sources.layouts import (  # noqa: F401  (the formats, re-exported for their readers)
    BINANCE,
    BLOCKCHAIN,
    FEAR_GREED,
    YAHOO,
    CsvFormat,
    FileSpec,
    file_text,
    recognize,
    split_pair,
)
from shared.contracts import Provenance, RawRecord, RejectedRow, Series, utcnow
from shared.errors import CstError

# An import with more bytes to parse than this parses in a pool of spawned workers, one per core. Parsing costs
# ~30 ns a byte in either process; the pool adds ~1.2 s of CPU whatever the size (each worker imports the CLI and
# this module) and about a second before the first file is parsed. Measured on two cores with tiled copies of the
# recorded files (benchmarks/tiles.py), the fetch of an import, in process against pooled: with the machine to
# itself 38 MB 1.0 s / 1.4 s, 75 MB 2.2 s / 1.8-2.2 s, 150 MB 4.5-4.7 s / 2.9-4.7 s, 375 MB (1,000 coins) 12.5 s /
# 8.0-8.7 s; while other jobs held more than a core 75 MB 2.5-4.9 s / 3.1-4.6 s, 150 MB 7.6-8.4 s / 7.1 s. So the
# pool starts at 100 MB (~270 coins of daily and hourly files); the recorded directory (~5 MB) and every test
# parse in process.
POOL_MIN_BYTES = 100 * 10**6


def parse_time(text: str) -> int:
    """'YYYY-MM-DD', 'YYYY-MM-DD HH:MM:SS[+00:00]', ISO with Z, or epoch s/ms digits -> epoch ms UTC."""
    text = text.strip().strip('"')
    if text.isdigit():
        value = int(text)
        # Epoch seconds have at most 10 digits until the year 2286; microseconds (Binance's spot dumps from 2025)
        # have 16 digits.
        return value * 1000 if value < 10**11 else value // 1000 if value >= 10**14 else value
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


# Physical line breaks as a text-mode read sees them; str.splitlines would also break at form feeds and
# Unicode separators inside a line, pairing rows with the wrong source text.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _lines(text: str) -> list[str]:
    lines = _LINE_BREAK.split(text.removeprefix("\ufeff"))  # a UTF-8 BOM is encoding, not part of the header
    if lines and lines[-1] == "":
        lines.pop()
    return lines


_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _cells(line: str) -> list[str]:
    # One physical line is one record in every supported format, so an unbalanced quote
    # spoils its own line only instead of swallowing the lines after it.
    if _UNDECODABLE.search(line):
        raise ValueError("bytes that are not UTF-8")
    return next(csv.reader([line]), [])


# A plain file (no quotes, no blank or short lines, numbers Python reads, one of the usual time forms) is
# parsed a column at a time; anything else goes line by line below, where every odd line becomes a parse_error row.
# Both give the same Series for a plain file (tests/ingest/test_files_plain.py holds them to it).
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.M)
_SECOND = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\+00:00|Z)?$", re.M)
_EPOCH = re.compile(r"^\d{1,18}$", re.M)


def _plain_times(cells: tuple[str, ...]) -> np.ndarray | None:
    try:
        return _plain_times_of(cells)
    except ValueError:  # e.g. month 13: the line-by-line parse names the line
        return None


def _plain_times_of(cells: tuple[str, ...]) -> np.ndarray | None:
    joined, n = "\n".join(cells), len(cells)
    if len(_EPOCH.findall(joined)) == n:
        value = np.array(cells, dtype=np.int64)
        return np.where(value < 10**11, value * 1000, np.where(value >= 10**14, value // 1000, value))
    if len(_DAY.findall(joined)) == n:
        return np.array(cells, dtype="datetime64[D]").astype("datetime64[ms]").astype(np.int64)
    if len(_SECOND.findall(joined)) == n:
        iso = [c[:19].replace(" ", "T") for c in cells]
        return np.array(iso, dtype="datetime64[s]").astype("datetime64[ms]").astype(np.int64)
    return None


def _parse_plain(lines: list[str], header: list[str], fmt: CsvFormat
                 ) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]] | None:
    body = lines[1:]
    if not body or any('"' in line or not line.strip() for line in body):
        return None
    if _UNDECODABLE.search("".join(body)):
        return None
    rows = [line.split(",") for line in body]
    if any(len(r) != len(header) for r in rows):
        return None
    columns = list(zip(*rows, strict=True))
    ts = _plain_times(columns[header.index(fmt.time_column)])
    if ts is None:
        return None
    values = {}
    for field, col in fmt.fields.items():
        cells = columns[header.index(col)]
        try:  # Python's float, as line by line: the same numbers, the same refusals
            values[field] = np.fromiter(map(float, cells), np.float64, len(cells))
        except ValueError:
            return None
        if not np.isfinite(values[field]).all():
            return None
    return ts, values, list(body)


def parse_csv(text: str, fmt: CsvFormat, *, layer: str, timeframe: str, symbol: str, source: str,
              lines_before: int = 0) -> Series:
    """Parse every line; a line that cannot be parsed becomes a parse_error row, never a guessed value.
    `lines_before`: data lines of the file before this text's first (a file's new tail), for the line numbers."""
    lines = _lines(text)
    try:
        header = _cells(lines[0]) if lines else None
    except csv.Error:
        header = []
    errors: list[RejectedRow] = []
    ts: list[int] = []
    values: dict[str, list[float]] = {f: [] for f in fmt.fields}
    origin: list[str] = []
    wanted = [fmt.time_column, *fmt.fields.values()]
    missing = [c for c in wanted if header is None or c not in header]
    if missing:
        detail = f"header lacks columns {missing} (format {fmt.name})"
        errors = [RejectedRow("parse_error", line, None, detail) for line in lines[1:] if line.strip()]
        if header is None or not errors:
            errors.append(RejectedRow("parse_error", lines[0] if lines else "", None, detail))
    elif (plain := _parse_plain(lines, header, fmt)) is not None:
        ts, values, origin = plain
    else:
        idx = {c: header.index(c) for c in wanted}
        for n, line in enumerate(lines[1:], start=1):
            try:
                if not line.strip():
                    continue  # a blank line carries no record
                row = _cells(line)
                if not any(cell.strip() for cell in row):
                    raise ValueError("a record with every cell empty")
                if len(row) != len(header):
                    raise ValueError(f"{len(row)} cells, header has {len(header)}")
                t = parse_time(row[idx[fmt.time_column]])
                parsed = {f: float(row[idx[col]]) for f, col in fmt.fields.items()}
                if any(not np.isfinite(v) for v in parsed.values()):
                    raise ValueError("non-finite number")
            except (ValueError, IndexError, OverflowError, csv.Error) as exc:
                errors.append(RejectedRow("parse_error", line, None, f"line {n + 1 + lines_before}: {exc}"))
                continue
            ts.append(t)
            for f, v in parsed.items():
                values[f].append(v)
            origin.append(line)
    return Series(
        layer,
        timeframe,
        symbol,
        source,
        np.asarray(ts, dtype=np.int64),
        {f: np.asarray(v, dtype=np.float64) for f, v in values.items()},
        origin,
        errors,
    )


def discover(root: Path) -> tuple[list[FileSpec], dict[str, str]]:
    """Map every file under root to a series, or to the reason it is not one (nothing is skipped silently)."""
    specs: list[FileSpec] = []
    ignored: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name == "README.md" or path.name.startswith("."):
            ignored[path.relative_to(root).as_posix()] = "not a data file"
            continue
        found = recognize(root, path)
        if isinstance(found, FileSpec):
            specs.append(found)
        else:
            ignored[path.relative_to(root).as_posix()] = found
    return specs, ignored


def file_state_key(root: Path) -> str:
    """Where the lake keeps what it holds of each file under `root`: the next import reads only what is new."""
    return f"state/files/root={hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]}.json"


class FileSource(Source):
    """Reads a directory in the formats of ../shared/data; each file is one task and one raw record.

    `known` (relative path -> {"size", "sha256", ...}) is what an earlier import of this directory landed. A file
    with the same content is not parsed again (`unchanged`); a file that only grew after its known bytes (the
    known bytes unchanged, ending at a line break) has only its new lines parsed and landed (`tails`), to be
    joined to the series the lake already holds; any other change parses the whole file again.

    An import with more than `pool_min_bytes` to parse (POOL_MIN_BYTES unless given) parses in a pool of spawned
    workers, one per core, made by `tasks` and shut by `close`; its series are the ones an in-process parse gives.
    """

    name = "files"

    def __init__(self, root: str | Path, known: dict[str, dict] | None = None, pool_min_bytes: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise CstError("source_unreadable", f"source directory {str(self.root)!r} does not exist or is not a directory")
        self.specs, self.ignored = discover(self.root)
        self.venue: str | None = None  # the one venue whose prices are read (None: every venue's)
        self.known = dict(known or {})
        self.read: dict[str, dict] = {}  # relative path -> {"size", "sha256"} of what this import read
        self.unchanged: set[str] = set()
        self.tails: dict[str, Series] = {}
        self.pool_min_bytes = POOL_MIN_BYTES if pool_min_bytes is None else pool_min_bytes
        self._pool: ProcessPoolExecutor | None = None
        self._turn: asyncio.Future | None = None  # done when the latest pooled parse has handed its series back

    def venues(self) -> list[str]:
        """The venues whose prices the folder holds."""
        return sorted({spec.venue for spec in self.specs if spec.layer == "ohlcv"})

    def keep_venue(self, venue: str | None, preference: list[str]) -> str | None:
        """Read one venue's prices, `venue` or the first of `preference` the folder holds (else the first by name);
        the other venues' price files are reported as not read, with how to read them. The chosen venue."""
        present = self.venues()
        if venue is not None and venue not in present:
            raise CstError("unknown_venue", f"venue {venue!r} has no price files in {str(self.root)!r}; "
                           f"it holds {present or 'none'} (set sources.venue, CST_SOURCES__VENUE, to one of them)")
        chosen = venue or next((v for v in preference if v in present), present[0] if present else None)
        self.venue = chosen
        kept = []
        for spec in self.specs:
            if spec.layer == "ohlcv" and spec.venue != chosen:
                self.ignored[self.rel(spec)] = (f"venue {spec.venue}: this run reads {chosen} (a universe is one "
                                                f"venue; CST_SOURCES__VENUE={spec.venue} reads this one)")
            else:
                kept.append(spec)
        self.specs = kept
        return chosen

    def rel(self, spec: FileSpec) -> str:
        return spec.path.relative_to(self.root).as_posix()

    def tasks(self) -> list[FetchTask]:
        workers = os.cpu_count() or 1
        if self._pool is None and workers > 1 and self._bytes_to_parse() > self.pool_min_bytes:
            # Spawned, not forked: the parent may hold threads (a progress bar's, a lake client's).
            self._pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
        return [FetchTask(spec.source, self.rel(spec), self._reader(spec)) for spec in self.specs]

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _bytes_to_parse(self) -> int:
        """About how many bytes this import parses, from the files' sizes alone: a file of its known size counts
        as unchanged, one larger than known as its new bytes (the reads decide; this only sizes the pool)."""
        total = 0
        for spec in self.specs:
            try:
                size = spec.path.stat().st_size
            except OSError:
                continue  # its read reports it
            known = int(self.known.get(self.rel(spec), {}).get("size", 0))
            total += size - known if size >= known else size
        return total

    async def _parse(self, text: str, parse: dict, lines_before: int = 0) -> Series:
        if self._pool is None:
            return parse_csv(text, lines_before=lines_before, **parse)
        loop = asyncio.get_running_loop()
        # The series crosses back pickled as it is: for 1,000 coins its origin lines cost ~0.5 s of CPU as lists of
        # strings and ~0.4 s joined into one string and split again, too little to be worth a second form.
        # The fetch keeps results in the order tasks finish, and staging keeps that order among series of one key,
        # so each pooled parse hands its series back only after the one started before it: the order of the
        # in-process parse, whichever worker finishes first.
        turn = loop.create_future()
        before, self._turn = self._turn, turn
        try:
            return await loop.run_in_executor(self._pool, partial(parse_csv, text, lines_before=lines_before, **parse))
        finally:
            if before is not None:
                await asyncio.wait([before])  # unlike a bare await, never cancels the turn before this one
            turn.set_result(None)

    def _grown_from(self, rel: str, data: bytes) -> int:
        """The byte where the new part of a file that only grew begins; 0 when it must be read whole."""
        prev = self.known.get(rel)
        size = int(prev["size"]) if prev else 0
        if not (0 < size < len(data)) or data[size - 1:size] != b"\n":
            return 0
        return size if hashlib.sha256(data[:size]).hexdigest() == prev["sha256"] else 0

    def _reader(self, spec: FileSpec):
        rel = self.rel(spec)

        async def run(_: Fetcher) -> FetchResult:
            try:
                data = spec.path.read_bytes()
            except OSError as exc:
                raise CstError("source_unreadable", f"cannot read {spec.path}: {exc}") from None
            digest = hashlib.sha256(data).hexdigest()
            read = {"size": len(data), "sha256": digest}
            if self.known.get(rel, {}).get("sha256") == digest:
                self.read[rel] = read
                self.unchanged.add(rel)
                return FetchResult()
            try:
                data = file_text(spec, data)  # a zip's CSV, a freqtrade file as CSV, or the file itself
            except Exception as exc:  # noqa: BLE001 (a broken zip or feather file: its own error, the rest goes on)
                raise CstError("source_unreadable", f"cannot read {spec.path}: {exc}") from None
            # A file that only grew is read from its known size (a zip or a freqtrade file is read whole).
            start = self._grown_from(rel, data) if spec.path.suffix.lower() == ".csv" else 0
            # Bytes that are not UTF-8 spoil their own line (a parse_error), not the whole file.
            text = data[start:].decode("utf-8", errors="surrogateescape")
            head, lines_before = None, 0  # the header line, when only the lines after `lines_before` are parsed
            if start:
                before = _lines(data[:start].decode("utf-8", errors="surrogateescape"))
                if spec.headerless:
                    head, lines_before = ",".join(spec.fmt.columns), len(before)
                else:
                    try:
                        header = _cells(before[0])
                    except csv.Error:
                        header = []
                    if all(c in header for c in (spec.fmt.time_column, *spec.fmt.fields.values())):
                        head, lines_before = before[0], len(before) - 1
            if head is None:  # read whole: the known bytes changed, or the header never held the columns
                start, text = 0, data.decode("utf-8", errors="surrogateescape")
                if spec.headerless:  # parsed under the layout's own header; line numbers stay the file's
                    head, lines_before = ",".join(spec.fmt.columns), -1
            del data  # the text is kept (the record's body); the bytes need not wait for the parse
            request = {"file": rel, "format": spec.fmt.name, **({"from_byte": start} if start else {})}
            record = RawRecord(
                provenance=Provenance(source=spec.source, request=request, fetched_at=utcnow()),
                layer=spec.layer,  # type: ignore[arg-type]
                symbol=spec.symbol,
                timeframe=spec.timeframe,
                body=text,
            )
            parse = {"fmt": spec.fmt, "layer": spec.layer, "timeframe": spec.timeframe, "symbol": spec.symbol,
                     "source": spec.source}
            series = await self._parse(text if head is None else f"{head}\n{text}", parse, lines_before)
            self.read[rel] = read
            if not start:
                return FetchResult([record], [series])
            self.tails[rel] = series
            return FetchResult([record], [])

        return run
