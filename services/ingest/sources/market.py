"""Market-wide and on-chain HTTP sources: Fear & Greed (alternative.me), blockchain.com charts, Coin Metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse, urlsplit, urlunsplit

import numpy as np

from services.ingest.fetch import Fetcher
from services.ingest.sources.base import FetchResult, FetchTask, Source
from services.ingest.sources.files import parse_time
from shared.contracts import Provenance, RawRecord, RejectedRow, Series, utcnow
from shared.errors import CstError
from shared.settings import SourceSettings


def _host(url: str) -> str:
    return urlparse(url).netloc


def points_to_series(
    points: list[tuple[Any, Any]], *, layer: str, timeframe: str, symbol: str, source: str
) -> Series:
    """(time, value) pairs as delivered -> a Series; a pair that does not parse is a parse_error row."""
    ts: list[int] = []
    vals: list[float] = []
    origin: list[str] = []
    errors: list[RejectedRow] = []
    for t, v in points:
        text = json.dumps([t, v])
        try:
            stamp = parse_time(str(t))
            value = float(v)
            if not np.isfinite(value):
                raise ValueError("non-finite")
        except (TypeError, ValueError) as exc:
            errors.append(RejectedRow("parse_error", text, None, str(exc)))
            continue
        ts.append(stamp)
        vals.append(value)
        origin.append(text)
    return Series(layer, timeframe, symbol, source, np.asarray(ts, dtype=np.int64),
                  {"value": np.asarray(vals, dtype=float)}, origin, errors)


def _record(source: str, request: dict, layer: str, symbol: str, body: Any) -> RawRecord:
    return RawRecord(provenance=Provenance(source=source, request=request, fetched_at=utcnow()),
                     layer=layer, symbol=symbol, timeframe="1d", body=body)  # type: ignore[arg-type]


class FearGreedSource(Source):
    """alternative.me /fng/: {"data": [{"value": "40", "value_classification": "Fear", "timestamp": "<epoch s>"}], "metadata": {"error": null}}."""

    name = "fear_greed"

    def __init__(self, settings: SourceSettings):
        self.url = settings.fear_greed_url

    def tasks(self) -> list[FetchTask]:
        async def run(fetcher: Fetcher) -> FetchResult:
            params = {"limit": "0", "format": "json"}
            body = await fetcher.get_json(self.name, self.url, params)
            error = (body.get("metadata") or {}).get("error") if isinstance(body, dict) else "not an object"
            if error or not isinstance(body.get("data"), list):
                raise CstError("malformed_response", f"fear_greed: {error or 'no data list'}")
            if not body["data"]:
                raise CstError("no_data", "fear_greed: the API answered an empty index history")
            record = _record("alternative.me", {"url": self.url, "params": params}, "sentiment", "market", body)
            points = [(d.get("timestamp"), d.get("value")) for d in body["data"]]
            series = points_to_series(points, layer="sentiment", timeframe="1d", symbol="market", source="alternative.me")
            return FetchResult([record], [series])

        return [FetchTask("alternative.me", "fear_greed", run, host=_host(self.url))]


class BlockchainSource(Source):
    """blockchain.com charts API: {"status": "ok", "values": [{"x": <epoch s>, "y": <float>}]} per metric (BTC)."""

    name = "blockchain"

    def __init__(self, settings: SourceSettings):
        self.url = settings.blockchain_url.rstrip("/")
        self.metrics = settings.blockchain_metrics
        self.timespan = settings.blockchain_timespan

    def tasks(self) -> list[FetchTask]:
        return [FetchTask("blockchain.com", f"onchain BTC.{m}", self._run(m), host=_host(self.url)) for m in self.metrics]

    def _run(self, metric: str):
        async def run(fetcher: Fetcher) -> FetchResult:
            url = f"{self.url}/{metric}"
            params = {"timespan": self.timespan, "format": "json", "sampled": "false"}
            body = await fetcher.get_json(self.name, url, params)
            if not isinstance(body, dict) or body.get("status") != "ok" or not isinstance(body.get("values"), list):
                raise CstError("malformed_response", f"blockchain.com {metric}: status {body.get('status') if isinstance(body, dict) else '?'}")
            if not body["values"]:
                raise CstError("no_data", f"blockchain.com {metric}: the chart has no values")
            symbol = f"BTC.{metric}"
            record = _record("blockchain.com", {"url": url, "params": params}, "onchain", symbol, body)
            points = [(p.get("x"), p.get("y")) for p in body["values"]]
            return FetchResult([record], [points_to_series(points, layer="onchain", timeframe="1d", symbol=symbol,
                                                           source="blockchain.com")])

        return run


def _without_api_key(body: dict) -> dict:
    """Coin Metrics repeats the whole query in next_page_url, api_key included: the copy that lands drops it."""
    url = body.get("next_page_url")
    if not isinstance(url, str):
        return body
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "api_key"]
    return {**body, "next_page_url": urlunsplit(parts._replace(query=urlencode(query)))}


class CoinMetricsSource(Source):
    """Coin Metrics community API v4 /timeseries/asset-metrics, following next_page_url; one series per metric."""

    name = "coinmetrics"

    def __init__(self, settings: SourceSettings, assets: list[str], *, now_ms: int | None = None):
        self.url = settings.coinmetrics_url.rstrip("/")
        self.metrics = settings.coinmetrics_metrics
        self.assets = assets
        self.key = settings.coinmetrics_api_key
        self.lookback: timedelta = settings.coinmetrics_lookback
        self.now_ms = now_ms

    def tasks(self) -> list[FetchTask]:
        return [FetchTask("coinmetrics", f"onchain {a}", self._run(a), host=_host(self.url)) for a in self.assets]

    def _run(self, asset: str):
        async def run(fetcher: Fetcher) -> FetchResult:
            now = utcnow() if self.now_ms is None else None
            start = ((now.timestamp() * 1000) if now else self.now_ms) - self.lookback.total_seconds() * 1000
            params: dict[str, str] = {
                "assets": asset.lower(),
                "metrics": ",".join(self.metrics),
                "frequency": "1d",
                # The API takes dates only in its documented formats (yyyy-MM-dd, ...); epoch seconds get a 400.
                "start_time": datetime.fromtimestamp(start / 1000, tz=UTC).strftime("%Y-%m-%d"),
                "page_size": "10000",
                # A metric the asset lacks is left out instead of failing the whole request.
                "ignore_unsupported_errors": "true",
            }
            request_params = dict(params)  # what provenance records: never the key
            if self.key is not None:
                params["api_key"] = self.key.get_secret_value()
            url: str | None = f"{self.url}/timeseries/asset-metrics"
            records: list[RawRecord] = []
            rows: list[dict] = []
            query: dict[str, str] | None = params
            while url:
                body = await fetcher.get_json(self.name, url, query)
                if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                    raise CstError("malformed_response", f"coinmetrics {asset}: no data list")
                records.append(_record("coinmetrics", {"url": url.split("?")[0], "params": request_params, "page": len(records)},
                                       "onchain", asset.upper(), _without_api_key(body)))
                rows.extend(body["data"])
                url = body.get("next_page_url")
                query = None  # next_page_url carries the query (and the key, if any) itself
            series = []
            for metric in self.metrics:
                points = [(r.get("time"), r.get(metric)) for r in rows if r.get(metric) is not None]
                if points:
                    series.append(points_to_series(points, layer="onchain", timeframe="1d",
                                                   symbol=f"{asset.upper()}.{metric}", source="coinmetrics"))
            if not series:
                raise CstError("no_data", f"coinmetrics has none of {self.metrics} for {asset}")
            return FetchResult(records, series)

        return run
