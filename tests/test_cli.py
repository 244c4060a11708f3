"""The `cst` command: validate's exit codes and output files, and `cst run` replaying the real files into a lake."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from services.cli import main

AS_OF = "2024-07-01T00:00:00Z"
HEADER = "Date,Close,High,Low,Open,Volume"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run from an empty folder: no .env is picked up and nothing lands in the repository by default."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """The CLI adds a stderr handler to the root logger once per process; take it back off so no
    later test inherits a handler bound to this test's captured stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def text(capsys) -> str:
    """Everything the command printed, with rich's line wrapping undone."""
    out = capsys.readouterr()
    return " ".join((out.out + out.err).split())


def tiny_source(root: Path) -> Path:
    """Three daily candles, the middle one with a high below its low, and a file that is not data."""
    (root / "ohlcv" / "1d").mkdir(parents=True)
    (root / "ohlcv" / "1d" / "AAA-USD.csv").write_text(
        f"{HEADER}\n"
        "2024-06-28,10.0,10.5,9.5,10.0,100\n"
        "2024-06-29,10.0,9.0,9.5,10.0,100\n"
        "2024-06-30,11.0,11.5,9.8,10.0,100\n"
    )
    (root / "notes.txt").write_text("not data")
    return root


def test_validate_writes_the_report_and_quarantine(tmp_path, capsys):
    src = tiny_source(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["validate", "--source", str(src), "--out", str(out), "--as-of", AS_OF]) == 0

    quality = json.loads((out / "quality.json").read_text())
    assert set(quality) == {"as_of", "series", "files_ignored", "read_failures"}
    assert quality["as_of"] == AS_OF
    assert list(quality["files_ignored"]) == ["notes.txt"]
    assert quality["files_ignored"]["notes.txt"].startswith("not a data file cst reads (supported: Yahoo export")
    assert quality["read_failures"] == []
    s = quality["series"]["ohlcv/1d/AAA-USD"]
    # The 06-29 candle is rejected, which leaves one day missing between the two kept candles.
    assert (s["status"], s["rows"], s["rejected_rows"]) == ("quarantined", 2, 1)
    assert s["issues"] == {"gap": 1, "ohlc_inconsistent": 1}
    assert (s["first"], s["last"], s["source"]) == ("2024-06-28T00:00:00Z", "2024-06-30T00:00:00Z", "yahoo")

    (doc,) = json.loads((out / "quarantine.json").read_text())
    assert doc["series"] == "ohlcv/1d/AAA-USD"
    assert doc["lake_key"].startswith("quarantine/source=yahoo/symbol=AAA-USD/timeframe=1d/")
    assert [(r["rule"], r["ts"], r["row"]) for r in doc["rows"]] == [
        ("ohlc_inconsistent", "2024-06-29T00:00:00Z", "2024-06-29,10.0,9.0,9.5,10.0,100")
    ]
    assert "1 series: 0 ok, 1 quarantined, 0 excluded" in text(capsys)


def test_validate_without_as_of_judges_now_and_says_how_to_replay(tmp_path, capsys):
    src = tiny_source(tmp_path / "src")
    assert main(["validate", "--source", str(src), "--out", str(tmp_path / "out")]) == 0
    s = json.loads((tmp_path / "out" / "quality.json").read_text())["series"]["ohlcv/1d/AAA-USD"]
    assert s["status"] == "excluded" and s["issues"]["stale"] == 1
    assert "recorded files need --as-of" in text(capsys)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--as-of", "yesterday"], "[bad_as_of]", "--as-of 'yesterday' is not an ISO-8601 time"),
        (["--source", "{missing}"], "[source_unreadable]", "does not exist or is not a directory"),
        (["--source", "{file}"], "[source_unreadable]", "does not exist or is not a directory"),
    ],
)
def test_validate_fails_with_a_code_when_the_input_cannot_be_read(tmp_path, capsys, argv, code, message):
    src = tiny_source(tmp_path / "src")
    values = {"--source": str(src), "--out": str(tmp_path / "out"), "--as-of": AS_OF}
    values.update(dict(zip(argv[::2], argv[1::2])))
    values["--source"] = values["--source"].format(missing=tmp_path / "absent", file=src / "notes.txt")
    args = ["validate", *(x for kv in values.items() for x in kv)]
    assert main(args) == 2
    printed = text(capsys)
    assert code in printed and message in printed
    assert not (tmp_path / "out" / "quality.json").exists()


def test_validate_requires_source_and_out(capsys):
    with pytest.raises(SystemExit) as info:
        main(["validate", "--source", "."])
    assert info.value.code == 2
    assert "--out" in capsys.readouterr().err


@pytest.fixture(scope="module")
def replay(shared_data, tmp_path_factory):
    """`cst run` on the real files into a fresh lake, as a user replays the recorded data."""
    lake = tmp_path_factory.mktemp("lake")
    return lake, ["run", "--source", str(shared_data), "--lake", str(lake), "--as-of", AS_OF]


def lake_keys(lake: Path) -> list[str]:
    return sorted(p.relative_to(lake).as_posix() for p in lake.rglob("*") if p.is_file())


@pytest.mark.realdata
def test_run_replays_the_real_files_into_the_lake_and_again_lands_nothing(shared_data, replay, capsys, monkeypatch):
    lake, argv = replay
    # One horizon on a one-trial budget: this test is about landing and replay, not model quality.
    monkeypatch.setenv("CST_HORIZONS", '["24h"]')
    monkeypatch.setenv("CST_TRAINING__BUDGETS", json.dumps({"quick": {
        "folds": 2, "trials": {"lr": 1, "gbt": 1, "gru": 1}, "timeout_s": 120, "epochs": 1, "gbt_max_estimators": 50}}))
    assert main(argv) == 0
    first = text(capsys)
    keys = lake_keys(lake)
    # A run reads one venue's prices (here Yahoo's, the first of sources.venue_preference): Binance's spot BTCUSDT is
    # named as not read, with how to read it, in the ingest output; every other file lands.
    (ingested,) = [k for k in keys if k.endswith("/steps/ingest.json")]
    ignored = json.loads((lake / ingested).read_text())["files_ignored"]
    rel = {p: p.relative_to(shared_data).as_posix() for p in shared_data.rglob("*.csv")}
    unread = {r: ignored[r] for r in rel.values() if r in ignored}
    assert list(unread) == ["binance/BTCUSDT-1d.csv"] and "CST_SOURCES__VENUE=binance" in unread["binance/BTCUSDT-1d.csv"]
    csvs = sorted(p for p, r in rel.items() if r not in unread)

    raw = [k for k in keys if k.startswith("raw/")]
    assert len(raw) == len(csvs) == 31
    sources = {re.match(r"raw/source=([^/]+)/", k)[1] for k in raw}
    assert sources == {"yahoo", "alternative.me", "blockchain.com"}
    # A raw record is the file as read, with where it came from.
    (btc,) = [k for k in raw if k.startswith("raw/source=yahoo/symbol=BTC-USD/timeframe=1d/")]
    record = json.loads((lake / btc).read_text())
    assert record["provenance"]["request"] == {"file": "ohlcv/1d/BTC-USD.csv", "format": "yahoo"}
    assert record["body"] == (shared_data / "ohlcv/1d/BTC-USD.csv").read_text()

    (quality_key,) = [k for k in keys if k.startswith("quality/")]
    assert re.fullmatch(r"quality/run_id=20240701T000000Z-[0-9a-f]{8}/report.json", quality_key)
    report = json.loads((lake / quality_key).read_text())
    assert report["as_of"] == AS_OF
    assert len(report["series"]) == 31
    assert report["series"]["ohlcv/1d/BTC-USD"]["status"] == "ok"
    assert report["series"]["ohlcv/1h/BTC-USD"]["status"] == "excluded"
    assert not [k for k in keys if k.startswith("quarantine/")]  # no real row is rejected at this as-of

    assert "landed 31 raw records (0 already present)" in first

    # The same cycle again: the run is recognised as complete and the lake stays byte-identical.
    landed = {k: (lake / k).read_bytes() for k in keys}
    assert main(argv) == 0
    again = text(capsys)
    assert lake_keys(lake) == keys
    assert {k: (lake / k).read_bytes() for k in landed} == landed
    assert "already complete; nothing changed" in again
    # Every forecast of the run on the console (the board), and as JSON on stdout for a file or a pipe.
    assert main([*argv, "--format", "json"]) == 0
    board = json.loads(capsys.readouterr().out)
    predicted = int(re.search(r"(\d+)/\d+ coins predicted", first)[1])
    assert len(board) == predicted >= 8 and {r["horizon"] for r in board} == {"24h"}
    assert f"every forecast of this run ({predicted})" in first and f"every forecast of this run ({predicted})" in again
    assert [r["coin"] for r in board] == sorted(r["coin"] for r in board)
    for r in board:
        assert 0 <= r["p_up_low"] <= r["p_up"] <= r["p_up_high"] <= 1 and r["vol_forecast"] > 0
        assert r["close"] > 0 and r["why"].startswith(("actionable", "not actionable: "))
        # The first run: no outcome yet, the range starts from the model's held-out scores, centred on no move.
        assert r["range_low"] < 0 < r["range_high"] and r["range_low"] == pytest.approx(-r["range_high"])
        assert r["price_low"] < r["close"] < r["price_high"]
    assert {(r["coin"], r["decision"]) for r in board} == {(r["coin"], "2024-07-01T00:00:00Z") for r in board}
    assert main([*argv, "--no-retrain", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("coin,horizon,decision,p_up,") and len(lines) == 1 + len(board)
    # Ingest of another as-of (a new run) reads nothing new from unchanged files (nothing landed, nothing even
    # offered to the lake again), and stages the same content-addressed parts.
    staged = sorted(k for k in keys if k.startswith("staging/"))
    assert main(["ingest", *argv[1:-1], "2024-07-02T00:00:00Z"]) == 0
    assert "landed 0 raw records (0 already present)" in text(capsys)
    assert sorted(k for k in lake_keys(lake) if k.startswith("staging/")) == staged


def test_a_heartbeat_speaks_at_once_and_then_every_interval_where_no_terminal_draws():
    """Off a terminal (logs, files, schedulers) long work prints a line at its start and then one per interval with
    the latest step; the interval is the one asked (checked without sleeping: the waits are recorded)."""
    import io

    from services.cli.common import HEARTBEAT_S, Heartbeat

    out = io.StringIO()
    waits: list[float] = []
    beat = Heartbeat("running", stream=out)

    def wait(timeout):  # three beats, then the work ends
        waits.append(timeout)
        beat.tick(f"step {len(waits)}")
        return len(waits) >= 3

    beat._stop.wait = wait
    with beat:
        pass
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].endswith("running: starting") and lines[2].endswith("running: step 2")
    assert waits == [HEARTBEAT_S] * 3 and HEARTBEAT_S <= 10


def test_a_mistyped_s3_lake_exits_2_and_writes_no_local_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--source", str(tmp_path), "--lake", "s3:/bucket"]) == 2
    printed = text(capsys)
    assert "lake_bad_uri" in printed and "s3://bucket[/prefix]" in printed
    assert not (tmp_path / "s3:").exists()


def _folder_with(folder, name):
    folder.mkdir()
    (folder / name).write_text("not a series")
    return folder


@pytest.mark.parametrize("make, code, said", [
    (lambda d: d / "absent", "source_unreadable", "does not exist"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "source_empty", "the folder is empty"),
    (lambda d: _folder_with(d / "junk", "notes.txt"), "source_empty", "notes.txt"),
])
def test_a_source_folder_cst_cannot_read_exits_2_before_any_run_is_recorded(make, code, said, tmp_path, capsys):
    src = make(tmp_path)
    lake = tmp_path / "lake"
    assert main(["run", "--source", str(src), "--lake", str(lake)]) == 2
    printed = text(capsys)
    assert code in printed and said in printed
    assert not lake.exists()  # no failed run recorded, no advice to run the same command again


def test_users_add_without_a_terminal_asks_for_password_stdin(tmp_path, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["users", "add", "vera", "--group", "viewer", "--lake", str(tmp_path)]) == 2
    printed = text(capsys)
    assert "no_terminal" in printed and "--password-stdin" in printed
