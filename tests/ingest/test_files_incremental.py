"""Incremental file import: a run reads only what is new, and stages exactly what a full import of the files would."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.ingest.sources.files import file_state_key
from services.orchestrator import runner
from shared import runs
from shared.contracts import iso_to_ms
from shared.datasets import get_series
from shared.pipeline.context import StepContext
from shared.settings import Settings
from shared.storage import LocalLake

AS_OF = [iso_to_ms(t) for t in ("2024-12-01T00:00:00Z", "2024-12-02T00:00:00Z", "2024-12-03T00:00:00Z")]
COINS = ("BTC", "ETH", "SOL", "XRP")


def _copy(shared_data: Path, dest: Path) -> Path:
    for tf in ("1d", "1h"):
        (dest / "ohlcv" / tf).mkdir(parents=True)
        for coin in COINS:
            shutil.copy(shared_data / "ohlcv" / tf / f"{coin}-USD.csv", dest / "ohlcv" / tf)
    (dest / "sentiment").mkdir()
    shutil.copy(shared_data / "sentiment" / "fear_greed.csv", dest / "sentiment")
    return dest


def _ingest(lake: LocalLake, src: Path, as_of: int):
    cfg = Settings(_env_file=None)
    ref = runs.new_ref(cfg, str(src), as_of)
    return runner.run_step(StepContext(cfg, lake), "ingest", ref)


def _cut(path: Path, keep_lines: int) -> str:
    """Keep the first lines of a file; return the rest (the lines a later version of the file adds)."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:keep_lines]))
    return "".join(lines[keep_lines:])


def test_an_unchanged_directory_is_not_parsed_again_and_stages_the_same_parts(shared_data, tmp_path):
    src = _copy(shared_data, tmp_path / "src")
    lake = LocalLake(tmp_path / "lake")
    first = _ingest(lake, src, AS_OF[0])
    raw_before = sorted(lake.list("raw/"))
    second = _ingest(lake, src, AS_OF[1])
    assert second.staged == first.staged
    assert second.landed == 0 and second.already_present == 0  # nothing read as new, nothing landed again
    assert sorted(lake.list("raw/")) == raw_before
    state = lake.get_json(file_state_key(src))["files"]
    assert set(state) == {p.relative_to(src).as_posix() for p in src.rglob("*.csv")}
    assert {f["part"] for f in state.values()} == set(first.staged)


def test_grown_changed_added_and_removed_files_stage_what_a_full_import_stages(shared_data, tmp_path):
    src = _copy(shared_data, tmp_path / "src")
    hourly = src / "ohlcv" / "1h"
    # Earlier versions of the files: BTC and ETH end 200 lines early; SOL's tail will bring a line that cannot be
    # parsed; XRP's earlier version had a different (wrong) close in its second row, so it is re-read whole.
    tails = {c: _cut(hourly / f"{c}-USD.csv", 1200) for c in ("BTC", "ETH", "SOL")}
    tails["SOL"] = tails["SOL"].replace("\n", "\nnot,a,row\n", 1)
    xrp = (hourly / "XRP-USD.csv").read_text()
    lines = xrp.splitlines(keepends=True)
    lines[2] = lines[2].replace(",", ",9", 1)
    (hourly / "XRP-USD.csv").write_text("".join(lines))
    lake = LocalLake(tmp_path / "lake")
    _ingest(lake, src, AS_OF[0])

    for coin, tail in tails.items():
        with open(hourly / f"{coin}-USD.csv", "a") as f:
            f.write(tail)
    (hourly / "XRP-USD.csv").write_text(xrp)
    (src / "ohlcv" / "1d" / "ETH-USD.csv").unlink()
    shutil.copy(shared_data / "ohlcv" / "1d" / "ADA-USD.csv", src / "ohlcv" / "1d")
    raw_before = set(lake.list("raw/"))
    grown = _ingest(lake, src, AS_OF[1])

    full = _ingest(LocalLake(tmp_path / "fresh"), src, AS_OF[1])
    # Staged parts are content-addressed: the same keys are the same series, byte for byte.
    assert grown.staged == full.staged
    series = {s.key: s for s in get_series(lake, grown.staged)}
    errors = [e for e in series["ohlcv/1h/SOL-USD"].parse_errors]
    assert [e.row for e in errors] == ["not,a,row"] and errors[0].detail.startswith("line 1202:")
    # What landed: the three tails (new bytes only, with where they start), XRP whole, ADA whole.
    new = [lake.get_json(k)["provenance"]["request"] for k in set(lake.list("raw/")) - raw_before]
    assert sorted((r["file"], r.get("from_byte", 0) > 0) for r in new) == [
        ("ohlcv/1d/ADA-USD.csv", False), ("ohlcv/1h/BTC-USD.csv", True), ("ohlcv/1h/ETH-USD.csv", True),
        ("ohlcv/1h/SOL-USD.csv", True), ("ohlcv/1h/XRP-USD.csv", False)]
    # A third run over the same files reads nothing new and stages the same parts.
    again = _ingest(lake, src, AS_OF[2])
    assert again.staged == full.staged and again.landed == 0


@pytest.mark.parametrize("change", ["shrunk", "rewritten_head"])
def test_a_file_that_did_not_only_grow_is_read_whole(shared_data, tmp_path, change):
    src = _copy(shared_data, tmp_path / "src")
    path = src / "ohlcv" / "1h" / "BTC-USD.csv"
    lake = LocalLake(tmp_path / "lake")
    _ingest(lake, src, AS_OF[0])
    text = path.read_text()
    if change == "shrunk":
        _cut(path, 1000)
    else:  # same length and more lines after, but the known bytes differ
        path.write_text(text.replace("\n", "\r\n", 1) + text.splitlines(keepends=True)[-1])
    grown = _ingest(lake, src, AS_OF[1])
    assert grown.staged == _ingest(LocalLake(tmp_path / "fresh"), src, AS_OF[1]).staged
