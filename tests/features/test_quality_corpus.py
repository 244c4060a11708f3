"""Bad-input corpus: real files copied to a temporary folder, one defect each, judged through `cst validate`.

Every case names the defect, what the gate must count, the series status it must give, and the exact
source lines it must quarantine. The clean copy is judged first as the baseline: the defect may change
its own series only, and only in the ways listed.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shared.contracts import iso_to_ms, ms_to_iso

pytestmark = pytest.mark.realdata

AS_OF = "2024-07-01T00:00:00Z"
# The on-chain files end 2024-04-27; here they are fresh, so a rejected row shows as `quarantined`.
ONCHAIN_AS_OF = "2024-04-28T12:00:00Z"
FILES = {
    "ohlcv/1d/BTC-USD.csv": "ohlcv/1d/BTC-USD",
    "ohlcv/1d/ETH-USD.csv": "ohlcv/1d/ETH-USD",
    "binance/BTCUSDT-1d.csv": "ohlcv/1d/BTC-USDT",
    "sentiment/fear_greed.csv": "sentiment/1d/market",
    "onchain/btc/hash-rate.csv": "onchain/1d/BTC.hash-rate",
}
DAY = "2021-03-10"  # a quiet day in the middle of every file but on-chain (no outlier near it)
SENTIMENT_DAY = "2023-05-10"
ONCHAIN_DAY = "2024-01-10"


# ---- editing helpers: a file is a list of lines, header first -------------------------------------------


def cells(line: str) -> list[str]:
    return next(csv.reader([line]))


def on_day(lines: list[str], day: str) -> list[int]:
    """Indexes of the data lines dated `day` (an ISO date, or its epoch ms for blockchain.com)."""
    ms = str(iso_to_ms(day))
    found = []
    for i, line in enumerate(lines[1:], 1):
        c = cells(line)
        if c[0] in (day, ms) or c[-1].startswith(day):  # time first (prices, on-chain) or last (sentiment)
            found.append(i)
    return found


def with_cells(lines: list[str], i: int, **values: str) -> str:
    """Line i with some cells (by header name) replaced; quoting follows the blockchain.com export."""
    header = cells(lines[0])
    row = cells(lines[i])
    for name, value in values.items():
        row[header.index(name)] = value
    if lines[i].startswith('"'):
        return ",".join(f'"{c}"' for c in row)
    return ",".join(row)


@dataclass
class Defect:
    lines: list[str]
    quarantined: list[str] = field(default_factory=list)  # exact source lines the gate must quarantine


# ---- the defects -------------------------------------------------------------------------------------------


def repeat_a_day(lines):
    (i,) = on_day(lines, DAY)
    return Defect(lines[: i + 1] + [lines[i]] + lines[i + 1 :])


def sentiment_copies_disagree(lines):
    first, second = on_day(lines, SENTIMENT_DAY)
    value = int(cells(lines[second])[0])
    lines = list(lines)
    lines[second] = with_cells(lines, second, value=str(value + 1))
    return Defect(lines, [lines[first], lines[second]])


def swap_two_days(lines):
    (i,) = on_day(lines, DAY)
    lines = list(lines)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return Defect(lines)


def drop_a_day(lines):
    (i,) = on_day(lines, DAY)
    return Defect(lines[:i] + lines[i + 1 :])


def high_below_low(lines):
    (i,) = on_day(lines, DAY)
    low = float(cells(lines[i])[cells(lines[0]).index("Low")])
    lines = list(lines)
    lines[i] = with_cells(lines, i, High=repr(low * 0.99))
    return Defect(lines, [lines[i]])


def zero_close(lines):
    (i,) = on_day(lines, DAY)
    lines = list(lines)
    lines[i] = with_cells(lines, i, Close="0.0")
    return Defect(lines, [lines[i]])


def negative_binance_volume(lines):
    (i,) = on_day(lines, DAY)
    volume = cells(lines[i])[cells(lines[0]).index("volume")]
    lines = list(lines)
    lines[i] = with_cells(lines, i, volume="-" + volume)
    return Defect(lines, [lines[i]])


def volume_column_zero(lines):
    return Defect([lines[0]] + [with_cells(lines, i, Volume="0") for i in range(1, len(lines))])


def feed_stops_three_days_early(lines):
    return Defect(lines[:-3])


def last_candle_tripled(lines):
    header = cells(lines[0])
    row = cells(lines[-1])
    tripled = {k: repr(float(row[header.index(k)]) * 3) for k in ("Open", "High", "Low", "Close")}
    return Defect(lines[:-1] + [with_cells(lines, len(lines) - 1, **tripled)])


def yahoo_null_row(lines):
    # Yahoo writes `null` in every price cell for a day it has no data for.
    (i,) = on_day(lines, DAY)
    lines = list(lines)
    lines[i] = f"{DAY},null,null,null,null,null"
    return Defect(lines, [lines[i]])


def unbalanced_quote(lines):
    (i,) = on_day(lines, DAY)
    lines = list(lines)
    lines[i] = lines[i].replace(",", ',"', 1)
    return Defect(lines, [lines[i]])


def sentiment_value_150(lines):
    first, second = on_day(lines, SENTIMENT_DAY)
    lines = list(lines)
    lines[first] = with_cells(lines, first, value="150")
    lines[second] = with_cells(lines, second, value="150")
    return Defect(lines, [lines[first]])


def negative_hash_rate(lines):
    (i,) = on_day(lines, ONCHAIN_DAY)
    lines = list(lines)
    lines[i] = with_cells(lines, i, y="-" + cells(lines[i])[1])
    return Defect(lines, [lines[i]])


def header_only(lines):
    return Defect(lines[:1])


def close_column_renamed(lines):
    return Defect([lines[0].replace("Close", "Price")] + lines[1:], lines[1:])


@dataclass(frozen=True)
class Case:
    file: str
    defect: Callable[[list[str]], Defect]
    status: str
    # Issue counts that differ from the clean copy's (None: the code disappears).
    changes: dict[str, int | None]
    rows: int  # change in usable rows
    rule: str | None = None  # the rule quarantined lines are filed under
    day: str = DAY  # the day the defect sits on
    as_of: str = AS_OF
    unavailable: tuple[str, ...] = ()


CASES = {
    # The kept copy carries the same values: one dropped, counted, nothing else changes.
    "duplicate_identical": Case("ohlcv/1d/BTC-USD.csv", repeat_a_day, "ok", {"duplicate_identical": 1}, 0),
    # Both copies of the day leave (which one is right is unknown): 2 rejected, the day becomes a gap,
    # its pair no longer counts as identical, and one fewer row steps back in time.
    "duplicate_conflict": Case(
        "sentiment/fear_greed.csv",
        sentiment_copies_disagree,
        "quarantined",
        {"duplicate_conflict": 2, "duplicate_identical": 2338, "gap": 4, "non_monotonic": 2337},
        -1,
        "duplicate_conflict",
        day=SENTIMENT_DAY,
    ),
    # Two neighbours swapped: one step back in time, reordered, nothing lost.
    "non_monotonic": Case("ohlcv/1d/BTC-USD.csv", swap_two_days, "ok", {"non_monotonic": 1}, 0),
    "gap": Case("ohlcv/1d/BTC-USD.csv", drop_a_day, "ok", {"gap": 1}, -1),
    # A rejected row leaves a hole in the grid, so every rejection below also counts one gap.
    "ohlc_inconsistent": Case(
        "ohlcv/1d/BTC-USD.csv",
        high_below_low,
        "quarantined",
        {"ohlc_inconsistent": 1, "gap": 1},
        -1,
        "ohlc_inconsistent",
    ),
    "non_positive_price": Case(
        "ohlcv/1d/BTC-USD.csv",
        zero_close,
        "quarantined",
        {"non_positive_price": 1, "gap": 1},
        -1,
        "non_positive_price",
    ),
    "negative_volume": Case(
        "binance/BTCUSDT-1d.csv",
        negative_binance_volume,
        "quarantined",
        {"negative_volume": 1, "gap": 1},
        -1,
        "negative_volume",
    ),
    # Every candle with zero volume: volume is unknown, the prices stay usable. Count = zero candles.
    "volume_unavailable": Case(
        "ohlcv/1d/ETH-USD.csv", volume_column_zero, "ok", {"volume_unavailable": 2426}, 0,
        unavailable=("quote_volume", "volume"),  # Yahoo's Volume is its quote volume: both go together
    ),
    # Last candle 2024-06-27: 4 days old at as-of, the limit is 2.
    "stale": Case("ohlcv/1d/BTC-USD.csv", feed_stops_three_days_early, "excluded", {"stale": 1}, -3),
    # ln 3 = 1.10 against daily returns with a robust sigma of a few percent: one flagged return more
    # than the clean copy's single one (the 2020-03-12 crash).
    "outlier_return": Case("ohlcv/1d/ETH-USD.csv", last_candle_tripled, "ok", {"outlier_return": 2}, 0),
    "parse_error": Case(
        "ohlcv/1d/BTC-USD.csv", yahoo_null_row, "quarantined", {"parse_error": 1, "gap": 1}, -1, "parse_error"
    ),
    # An unbalanced quote spoils its own line only, never the lines after it.
    "parse_error_unbalanced_quote": Case(
        "ohlcv/1d/BTC-USD.csv", unbalanced_quote, "quarantined", {"parse_error": 1, "gap": 1}, -1, "parse_error"
    ),
    # The day is 150 in both copies: the copies agree (one dropped as usual), the value is out of range.
    # Order is judged before range, so non_monotonic keeps the clean copy's count.
    "out_of_range_sentiment": Case(
        "sentiment/fear_greed.csv",
        sentiment_value_150,
        "quarantined",
        {"out_of_range": 1, "gap": 4},
        -1,
        "out_of_range",
        day=SENTIMENT_DAY,
    ),
    "out_of_range_onchain": Case(
        "onchain/btc/hash-rate.csv",
        negative_hash_rate,
        "quarantined",
        {"out_of_range": 1, "gap": 1},
        -1,
        "out_of_range",
        day=ONCHAIN_DAY,
        as_of=ONCHAIN_AS_OF,
    ),
    # Header only: nothing to judge, so the clean copy's outlier flag goes too.
    "no_data": Case("ohlcv/1d/ETH-USD.csv", header_only, "excluded", {"no_data": 1, "outlier_return": None}, -2426),
    # Without a Close column no line can be read: each is a parse_error and nothing is left.
    "header_missing_column": Case(
        "ohlcv/1d/BTC-USD.csv",
        close_column_renamed,
        "excluded",
        {"parse_error": 3575, "no_data": 1, "outlier_return": None},
        -3575,
        "parse_error",
    ),
}


# ---- running ------------------------------------------------------------------------------------------------


def copy_corpus(shared_data: Path, dest: Path) -> Path:
    for rel in FILES:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / rel, dest / rel)
    return dest


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture(scope="module")
def baseline(shared_data, run_validate, tmp_path_factory):
    """The clean copy judged at an as-of, computed once per as-of."""
    runs = {}

    def at(as_of: str):
        if as_of not in runs:
            src = copy_corpus(shared_data, tmp_path_factory.mktemp("clean"))
            runs[as_of] = run_validate(src, tmp_path_factory.mktemp("clean-out"), as_of)
        return runs[as_of]

    return at


def test_the_clean_copy_is_clean(baseline):
    for as_of in (AS_OF, ONCHAIN_AS_OF):
        clean = baseline(as_of)
        assert clean.exit_code == 0
        assert sorted(clean.quality["series"]) == sorted(FILES.values())
        assert all(s["rejected_rows"] == 0 for s in clean.quality["series"].values())
        assert clean.quarantine == []
    assert baseline(AS_OF).series("onchain/1d/BTC.hash-rate")["status"] == "excluded"
    assert baseline(ONCHAIN_AS_OF).series("onchain/1d/BTC.hash-rate")["status"] == "ok"
    assert baseline(AS_OF).series("ohlcv/1d/ETH-USD")["issues"] == {"outlier_return": 1}


@pytest.mark.parametrize("name", CASES)
def test_one_defect(name, shared_data, run_validate, baseline, tmp_path):
    case = CASES[name]
    src = copy_corpus(shared_data, tmp_path / "src")
    defect = case.defect(read_lines(src / case.file))
    write_lines(src / case.file, defect.lines)
    got = run_validate(src, tmp_path / "out", case.as_of)
    clean = baseline(case.as_of)
    key = FILES[case.file]
    assert got.exit_code == 0

    report, before = got.series(key), clean.series(key)
    expected = {k: v for k, v in {**before["issues"], **case.changes}.items() if v is not None}
    assert report["issues"] == expected
    assert report["status"] == case.status
    assert report["rows"] == before["rows"] + case.rows
    assert report["rejected_rows"] == len(defect.quarantined)
    assert report["unavailable_fields"] == list(case.unavailable)

    # Rejected rows reach quarantine.json as delivered, with the rule that rejected them.
    rejected = got.rejected(key)
    assert sorted((r["rule"], r["row"]) for r in rejected) == sorted((case.rule, line) for line in defect.quarantined)
    # An unreadable line has no trusted time; any other rejected row carries its own.
    assert {r["ts"] for r in rejected} <= {None if case.rule == "parse_error" else f"{case.day}T00:00:00Z"}

    # Nothing else moves.
    for other, before_other in clean.quality["series"].items():
        if other != key:
            assert got.series(other) == before_other, other
    assert [doc["series"] for doc in got.quarantine] == ([key] if defect.quarantined else [])
    assert got.quality["read_failures"] == []


def test_every_reason_code_is_in_the_corpus():
    covered = {code for case in CASES.values() for code, n in case.changes.items() if n}
    assert covered >= {
        "duplicate_identical", "duplicate_conflict", "non_monotonic", "gap", "ohlc_inconsistent",
        "non_positive_price", "negative_volume", "volume_unavailable", "stale", "outlier_return",
        "parse_error", "out_of_range", "no_data",
    }  # fmt: skip


def test_quarantine_keeps_the_right_line_after_a_unicode_line_separator(shared_data, run_validate, baseline, tmp_path):
    # U+2028 inside a cell is not a line break for a CSV reader; the rejected line further down must
    # still be quarantined with its own text, not its neighbour's.
    src = copy_corpus(shared_data, tmp_path / "src")
    path = src / "ohlcv/1d/BTC-USD.csv"
    lines = read_lines(path)
    (i,) = on_day(lines, DAY)
    lines[i - 5] = lines[i - 5] + "\u2028"
    lines[i] = with_cells(lines, i, Close="0.0")
    write_lines(path, lines)
    got = run_validate(src, tmp_path / "out", AS_OF)
    report = got.series("ohlcv/1d/BTC-USD")
    clean = baseline(AS_OF).series("ohlcv/1d/BTC-USD")
    assert report["issues"] == {**clean["issues"], "non_positive_price": 1, "gap": 1}
    assert [(r["rule"], r["row"], r["ts"]) for r in got.rejected("ohlcv/1d/BTC-USD")] == [
        ("non_positive_price", lines[i], ms_to_iso(iso_to_ms(DAY)))
    ]


def test_a_byte_order_mark_is_not_part_of_the_header(shared_data, run_validate, baseline, tmp_path):
    src = copy_corpus(shared_data, tmp_path / "src")
    path = src / "ohlcv/1d/BTC-USD.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    got = run_validate(src, tmp_path / "out", AS_OF)
    assert got.quality["series"] == baseline(AS_OF).quality["series"]


def test_bytes_that_are_not_utf8_spoil_only_their_line(shared_data, run_validate, baseline, tmp_path):
    src = copy_corpus(shared_data, tmp_path / "src")
    path = src / "ohlcv/1d/ETH-USD.csv"
    data = path.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 1
    path.write_bytes(data[:cut] + b"2021-03-10,\xff\xfe,1,1,1,1\n" + data[cut:])  # latin-1 bytes, invalid UTF-8
    got = run_validate(src, tmp_path / "out", AS_OF)
    assert got.exit_code == 0
    assert got.quality["read_failures"] == []
    eth = got.quality["series"]["ohlcv/1d/ETH-USD"]
    clean = baseline(AS_OF).quality["series"]
    # The bad line is one parse_error in quarantine; every real row of the file is still read.
    assert eth["status"] == "quarantined" and eth["issues"]["parse_error"] == 1 and eth["rejected_rows"] == 1
    assert eth["rows"] == clean["ohlcv/1d/ETH-USD"]["rows"]
    (doc,) = [d for d in got.quarantine if d["series"] == "ohlcv/1d/ETH-USD"]
    assert doc["rows"][0]["rule"] == "parse_error" and "UTF-8" in doc["rows"][0]["detail"]
    assert {k: v for k, v in got.quality["series"].items() if k != "ohlcv/1d/ETH-USD"} == \
        {k: v for k, v in clean.items() if k != "ohlcv/1d/ETH-USD"}


def test_a_missing_input_directory_fails_with_a_clear_message(tmp_path, capsys):
    from services.cli import main

    missing = tmp_path / "no-such-folder"
    code = main(["validate", "--source", str(missing), "--out", str(tmp_path / "out"), "--as-of", AS_OF])
    err = " ".join(capsys.readouterr().err.split())
    assert code != 0
    assert "[source_unreadable]" in err
    assert f"{str(missing)!r} does not exist or is not a directory" in err
    assert not (tmp_path / "out" / "quality.json").exists()
