"""The file layouts traders have, recognised by content: which series a file holds, on which venue, or why it is none.

Supported (a file that is none of these is reported with the list, never skipped silently):
- the recorded folder of ../shared/data: Yahoo daily/hourly exports (`ohlcv/<tf>/<BASE>-<QUOTE>.csv`), the Binance
  spot export (`binance/<PAIR>-<tf>.csv`), Fear & Greed, blockchain.com charts;
- the Binance kline export `timestamp,open,high,low,close,volume,quote_volume,trades,close_time` (epoch ms);
- Binance's public data dumps (data.binance.vision): `<PAIR>-<tf>-<YYYY-MM[-DD]>.csv` or `.zip`, with or without
  the header row, spot and USDT-M (`futures/um` in the path), times in ms or, in spot files from 2025, in µs;
- Bybit's kline export `timestamp,open,high,low,close,volume,turnover`;
- a freqtrade data directory: `<exchange>/<BASE>_<QUOTE>-<tf>.json|feather` (spot) and
  `<exchange>/futures/<BASE>_<QUOTE>_<SETTLE>-<tf>-futures.json|feather`.

A perpetual keeps its contract name and its settlement currency in the symbol, as ccxt writes it: Binance's
`1000PEPEUSDT` perpetual is `1000PEPE-USDT:USDT` (1,000 PEPE per contract; not PEPE, not the spot pair). A venue is
the source and its market type (`venue_of`): `binance` (spot) and `binance-perp` are two venues, and the same coin on
two venues is two instruments.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from shared.contracts import venue_of
from shared.errors import CstError

QUOTES = ("USDT", "USDC", "BUSD", "FDUSD", "USD", "EUR", "BTC")
_TIMEFRAME = re.compile(r"^\d+[mhdwM]$")


@dataclass(frozen=True)
class CsvFormat:
    """Which column holds time, and which columns become which float fields (matched by header name).
    `columns`: the header of a layout whose files may come without one (data.binance.vision)."""

    name: str
    time_column: str
    fields: dict[str, str]
    columns: tuple[str, ...] = ()


_PRICE = {"open": "open", "high": "high", "low": "low", "close": "close", "volume": "volume"}
# Yahoo's crypto Volume is in the quote currency (BTC about 1.7e10 USD a day; in coins it would exceed the supply).
YAHOO = CsvFormat("yahoo", "Date", {"open": "Open", "high": "High", "low": "Low", "close": "Close", "volume": "Volume",
                                    "quote_volume": "Volume"})
BINANCE = CsvFormat("binance", "datetime", {**_PRICE, "quote_volume": "quote_asset_volume", "trades": "num_trades",
                                            "taker_buy_volume": "taker_buy_base_vol",
                                            "taker_buy_quote_volume": "taker_buy_quote_vol"})
BINANCE_EXPORT = CsvFormat("binance-export", "timestamp", {**_PRICE, "quote_volume": "quote_volume", "trades": "trades"})
VISION_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
                  "taker_buy_volume", "taker_buy_quote_volume", "ignore")
BINANCE_VISION = CsvFormat("binance-vision", "open_time", {**_PRICE, "quote_volume": "quote_volume", "trades": "count",
                                                           "taker_buy_volume": "taker_buy_volume",
                                                           "taker_buy_quote_volume": "taker_buy_quote_volume"},
                           VISION_COLUMNS)
BYBIT = CsvFormat("bybit-export", "timestamp", {**_PRICE, "quote_volume": "turnover"})
# freqtrade's candles, as cst reads them once converted to CSV text (epoch ms).
FREQTRADE = CsvFormat("freqtrade", "date", dict(_PRICE))
FEAR_GREED = CsvFormat("alternative.me", "timestamp", {"value": "value"})
BLOCKCHAIN = CsvFormat("blockchain.com", "x", {"value": "y"})

# The header line of each layout recognised by its header (spaces and case as the exports write them).
_HEADERS = {
    "timestamp,open,high,low,close,volume,quote_volume,trades,close_time": BINANCE_EXPORT,
    ",".join(VISION_COLUMNS): BINANCE_VISION,
    "timestamp,open,high,low,close,volume,turnover": BYBIT,
    "value,value_classification,timestamp": FEAR_GREED,
}

SUPPORTED = ("Yahoo export (ohlcv/<tf>/<BASE>-<QUOTE>.csv), Binance spot export (binance/<PAIR>-<tf>.csv), "
             "Binance kline export (timestamp,open,high,low,close,volume,quote_volume,trades,close_time), "
             "data.binance.vision klines (<PAIR>-<tf>-<YYYY-MM[-DD]>.csv|.zip, with or without header), "
             "Bybit kline export (timestamp,open,high,low,close,volume,turnover), "
             "freqtrade data (<exchange>/[futures/]<BASE>_<QUOTE>[_<SETTLE>]-<tf>[-futures].json|feather), "
             "the alternative.me Fear & Greed export (value,value_classification,timestamp), "
             "blockchain.com charts (onchain/<coin>/<metric>.csv)")

_VISION_NAME = re.compile(r"^(?P<pair>[A-Z0-9]+)-(?P<tf>\d+[mhdw])-\d{4}-\d{2}(?:-\d{2})?$")
_PAIR_TF = re.compile(r"^(?P<pair>[A-Z0-9]+)-(?P<tf>\d+[mhdw])$")
_FREQTRADE_NAME = re.compile(
    r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)(?:_(?P<settle>[A-Z0-9]+))?-(?P<tf>\d+[mhdwM])(?:-(?P<kind>[a-z_]+))?$")
_PERP_HINTS = ("futures", "um", "usdm", "perp", "perpetual", "perpetuals", "linear", "binance-futures")


@dataclass(frozen=True)
class FileSpec:
    """One file as one series: where it is, how to read it, and what it holds. `headerless`: the file has no header
    row (the format's `columns` are its header)."""

    path: Path
    fmt: CsvFormat
    layer: str
    timeframe: str
    symbol: str
    source: str
    headerless: bool = False

    @property
    def venue(self) -> str:
        return venue_of(self.source, self.symbol)


def split_pair(name: str) -> str:
    """'BTC-USD' stays; 'BTCUSDT' -> 'BTC-USDT' (the quote is matched from the known quote list)."""
    if "-" in name:
        return name.upper()
    for quote in QUOTES:
        if name.upper().endswith(quote) and len(name) > len(quote):
            return f"{name[: -len(quote)].upper()}-{quote}"
    raise CstError("unknown_pair", f"cannot split {name!r} into base and quote")


def perpetual(pair: str) -> str:
    """A linear perpetual settled in its quote: 'BTC-USDT' -> 'BTC-USDT:USDT' (ccxt's unified symbol)."""
    return f"{pair}:{pair.partition('-')[2]}"


def _first_line(path: Path) -> tuple[str, str | None]:
    """The first line of a CSV file or of the one CSV inside a zip, and the member's name (None for a plain file)."""
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.lower().endswith(".csv")]
            if len(names) != 1:
                raise ValueError(f"a zip with {len(names)} CSV files (one expected)")
            with z.open(names[0]) as f:
                return f.readline(4096).decode("utf-8", errors="replace").strip().removeprefix("\ufeff"), names[0]
    with path.open("rb") as f:
        return f.readline(4096).decode("utf-8", errors="replace").strip().removeprefix("\ufeff"), None


def _is_perp(parts: tuple[str, ...]) -> bool:
    return any(p.lower() in _PERP_HINTS or "futures" in p.lower() for p in parts[:-1])


def _timeframe_hint(parts: tuple[str, ...], stem: str) -> str | None:
    for p in reversed(parts[:-1]):
        if _TIMEFRAME.match(p):
            return p
    m = _PAIR_TF.match(stem) or _VISION_NAME.match(stem)
    return m["tf"] if m else None


def _timeframe_from_rows(path: Path, fmt: CsvFormat) -> str | None:
    """The bar length from a file's own rows: close time minus open time (+1 ms), or the spacing of two rows."""
    with path.open("rb") as f:
        lines = [f.readline(4096).decode("utf-8", errors="replace").strip() for _ in range(3)]
    header = lines[0].split(",")
    try:
        first, second = (line.split(",") for line in lines[1:3])
        t0 = int(first[header.index(fmt.time_column)])
        if "close_time" in header:
            ms = int(first[header.index("close_time")]) + 1 - t0
        else:
            ms = int(second[header.index(fmt.time_column)]) - t0
    except (ValueError, IndexError):
        return None
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if ms > 0 and ms % size == 0:
            return f"{ms // size}{unit}"
    return None


def recognize(root: Path, path: Path) -> FileSpec | str:
    """The series a file holds, or the reason it holds none."""
    parts = path.relative_to(root).parts
    suffix = path.suffix.lower()
    # The recorded folder's layouts, named by their place (their symbol is in the path).
    if suffix == ".csv" and len(parts) == 3 and parts[0] == "ohlcv":
        return FileSpec(path, YAHOO, "ohlcv", parts[1], split_pair(path.stem), "yahoo")
    if suffix == ".csv" and len(parts) == 2 and parts[0] == "binance" and (m := _PAIR_TF.match(path.stem)):
        return FileSpec(path, BINANCE, "ohlcv", m["tf"], split_pair(m["pair"]), "binance")
    if suffix == ".csv" and len(parts) == 3 and parts[0] == "onchain":
        return FileSpec(path, BLOCKCHAIN, "onchain", "1d", f"{parts[1].upper()}.{path.stem}", "blockchain.com")
    if suffix in (".json", ".feather"):
        return _freqtrade(parts, path)
    if suffix not in (".csv", ".zip"):
        return f"not a data file cst reads (supported: {SUPPORTED})"
    try:
        head, member = _first_line(path)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        return f"cannot read its first line: {exc}"
    stem = Path(member).stem if member else path.stem
    fmt = _HEADERS.get(head.replace(" ", "").lower())
    headerless = False
    if fmt is None and _VISION_NAME.match(stem) and len(head.split(",")) == len(VISION_COLUMNS):
        fmt, headerless = BINANCE_VISION, True
    if fmt is FEAR_GREED:
        return FileSpec(path, FEAR_GREED, "sentiment", "1d", "market", "alternative.me")
    if fmt is None:
        return f"layout not recognized from its header {head[:80]!r} (supported: {SUPPORTED})"
    name = (_VISION_NAME.match(stem) or _PAIR_TF.match(stem))
    contract = name["pair"] if name else stem.upper()
    try:
        pair = split_pair(contract)
    except CstError as exc:
        return f"{exc.message} (a contract name such as BTCUSDT or 1000PEPEUSDT is expected)"
    tf = _timeframe_hint(parts, stem) or (None if member or headerless else _timeframe_from_rows(path, fmt))
    if tf is None:
        return "timeframe neither in the path (e.g. 1h/, -1h) nor readable from the first rows"
    source = "bybit" if fmt is BYBIT else "binance"
    return FileSpec(path, fmt, "ohlcv", tf, perpetual(pair) if _is_perp(parts) else pair, source, headerless)


def _freqtrade(parts: tuple[str, ...], path: Path) -> FileSpec | str:
    m = _FREQTRADE_NAME.match(path.stem)
    if m is None:
        return f"not a freqtrade candle file name (supported: {SUPPORTED})"
    kind = m["kind"] or "spot"
    if kind not in ("spot", "futures"):
        return f"freqtrade {kind} candles: not a traded price series (cst reads spot and futures candles)"
    if (kind == "futures") != bool(m["settle"]):
        return "freqtrade futures candles name their settlement currency (BASE_QUOTE_SETTLE-tf-futures)"
    folders = [p for p in parts[:-1] if p != "futures"]
    if not folders:
        return "a freqtrade file outside its exchange folder (user_data/data/<exchange>/...)"
    pair = f"{m['base']}-{m['quote']}"
    symbol = f"{pair}:{m['settle']}" if m["settle"] else pair
    return FileSpec(path, FREQTRADE, "ohlcv", m["tf"], symbol, folders[-1].lower())


def freqtrade_csv(path: Path, data: bytes) -> str:
    """A freqtrade candle file as CSV text in the FREQTRADE format (date in epoch ms), values unchanged."""
    lines = ["date,open,high,low,close,volume"]
    if path.suffix.lower() == ".json":
        for row in json.loads(data):
            lines.append(",".join(_json_cell(v) for v in row[:6]))
        return "\n".join(lines) + "\n"
    import pyarrow as pa
    import pyarrow.feather as feather

    table = feather.read_table(io.BytesIO(data))
    date = table.column("date").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_pylist()
    cols = [table.column(c).to_pylist() for c in ("open", "high", "low", "close", "volume")]
    for i, t in enumerate(date):
        lines.append(",".join([str(t), *(repr(float(c[i])) if c[i] is not None else "" for c in cols)]))
    return "\n".join(lines) + "\n"


def _json_cell(value) -> str:
    return "" if value is None else str(value) if isinstance(value, int) else repr(float(value))


def file_text(spec: FileSpec, data: bytes) -> bytes:
    """The CSV bytes of a file: a zip's one CSV member, a freqtrade file rendered as CSV, or the file itself."""
    if spec.path.suffix.lower() == ".zip":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            (name,) = [n for n in z.namelist() if n.lower().endswith(".csv")]
            return z.read(name)
    if spec.fmt is FREQTRADE:
        return freqtrade_csv(spec.path, data).encode()
    return data
