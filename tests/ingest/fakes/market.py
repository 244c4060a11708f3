"""Fakes of alternative.me /fng/, blockchain.com /charts/<metric> and Coin Metrics v4 asset-metrics on 127.0.0.1."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlencode

from aiohttp import web

from tests.ingest.fakes.server import LoopbackServer

# Hand-written bodies in each API's documented format; the values are plausible, not recorded history.
DAY = 86_400
D0 = 1_703_894_400  # 2023-12-30T00:00:00Z

# https://alternative.me/crypto/fear-and-greed-index/#api: newest first, value and timestamp (epoch s) as strings,
# metadata.error null on success. time_until_update (s) is only on the newest entry.
FEAR_GREED: dict[str, Any] = {
    "name": "Fear and Greed Index",
    "data": [
        {"value": "65", "value_classification": "Greed", "timestamp": str(D0 + 2 * DAY), "time_until_update": "38127"},
        {"value": "70", "value_classification": "Greed", "timestamp": str(D0 + DAY)},
        {"value": "54", "value_classification": "Neutral", "timestamp": str(D0)},
    ],
    "metadata": {"error": None},
}
# What alternative.me answers to a bad query: HTTP 200, no data, the reason in metadata.error.
FEAR_GREED_ERROR: dict[str, Any] = {"name": "Fear and Greed Index", "data": [], "metadata": {"error": "Invalid limit"}}

# https://www.blockchain.com/explorer/api/charts_api: oldest first, x = day (epoch s), y = value (TH/s here).
HASH_RATE: dict[str, Any] = {
    "status": "ok",
    "name": "Total Hash Rate (TH/s)",
    "unit": "Hash Rate TH/s",
    "period": "day",
    "description": "The estimated number of terahashes per second the bitcoin network is performing.",
    "values": [
        {"x": D0, "y": 512_000_000.0},
        {"x": D0 + DAY, "y": 498_500_000.5},
        {"x": D0 + 2 * DAY, "y": 530_250_000.0},
    ],
}
# A chart the service cannot serve: status other than "ok" and no values.
CHART_ERROR: dict[str, Any] = {"status": "error", "error": "Chart unavailable"}

# https://docs.coinmetrics.io/api/v4/#operation/getTimeseriesAssetMetrics: one row per (asset, day), metric values
# as strings, time with nanoseconds. ETH has no HashRate (proof of stake): with ignore_unsupported_errors=true the
# column is simply absent. The fake serves two rows per page so next_page_url is always exercised.
COINMETRICS_ROWS: list[dict[str, str]] = [
    {"asset": "eth", "time": "2023-12-30T00:00:00.000000000Z", "AdrActCnt": "412345", "TxCnt": "1003456"},
    {"asset": "eth", "time": "2023-12-31T00:00:00.000000000Z", "AdrActCnt": "398765", "TxCnt": "987654"},
    {"asset": "eth", "time": "2024-01-01T00:00:00.000000000Z", "AdrActCnt": "401234", "TxCnt": "1012345"},
]
COINMETRICS_PAGE = 2
# The time formats the API documents for start_time / end_time (anything else is a 400).
COINMETRICS_TIME = re.compile(r"\d{4}-\d{2}-\d{2}|\d{8}|\d{4}-\d{2}-\d{2}T\d{2}(:\d{2}(:\d{2}(\.\d{1,9})?)?)?Z?|"
                              r"\d{8}T\d{2}(\d{2}(\d{2}(\.\d{1,9})?)?)?Z?")
# Coin Metrics rejects a bad query with HTTP 400 and a typed error object.
COINMETRICS_ERROR: dict[str, Any] = {"error": {"type": "bad_parameter", "message": "Bad parameter 'metrics'."}}

MALFORMED = '{"status": "ok", "values": [{"x": 1703894400, "y": 5'

Mode = Literal["ok", "api_error", "malformed"]


class FakeMarketApis:
    """The three market / on-chain APIs under one loopback host; `mode[api]` picks the answer per API."""

    def __init__(self) -> None:
        self.mode: dict[str, Mode] = {"fear_greed": "ok", "blockchain": "ok", "coinmetrics": "ok"}
        # Every request as (path, query), in arrival order.
        self.requests: list[tuple[str, dict[str, str]]] = []
        app = web.Application()
        app.router.add_get("/fng/", self._fear_greed)
        app.router.add_get("/charts/{metric}", self._chart)
        app.router.add_get("/v4/timeseries/asset-metrics", self._asset_metrics)
        self._server = LoopbackServer(app)
        self.url = ""

    def __enter__(self) -> FakeMarketApis:
        self.url = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    @property
    def fear_greed_url(self) -> str:
        return f"{self.url}/fng/"

    @property
    def blockchain_url(self) -> str:
        return f"{self.url}/charts"

    @property
    def coinmetrics_url(self) -> str:
        return f"{self.url}/v4"

    def _log(self, request: web.Request) -> None:
        self.requests.append((request.path, dict(request.query)))

    async def _fear_greed(self, request: web.Request) -> web.Response:
        self._log(request)
        return _answer(self.mode["fear_greed"], FEAR_GREED, FEAR_GREED_ERROR)

    async def _chart(self, request: web.Request) -> web.Response:
        self._log(request)
        if request.match_info["metric"] != "hash-rate":
            return web.json_response(CHART_ERROR, status=404)
        return _answer(self.mode["blockchain"], HASH_RATE, CHART_ERROR)

    async def _asset_metrics(self, request: web.Request) -> web.Response:
        self._log(request)
        if self.mode["coinmetrics"] == "api_error":
            return web.json_response(COINMETRICS_ERROR, status=400)
        start = request.query.get("start_time")
        if start is not None and not COINMETRICS_TIME.fullmatch(start):
            # What the API answers to a time outside its documented formats.
            return web.json_response({"error": {"type": "bad_parameter", "message": (
                f"Bad parameter 'start_time'. Supported formats are: yyyy-MM-dd, yyyyMMdd, "
                f"yyyy-MM-ddTHH:mm:ss, ... Provided value: '{start}'.")}}, status=400)
        start = int(request.query.get("next_page_token", "0"))
        rows = [r for r in COINMETRICS_ROWS if r["asset"] == request.query.get("assets")]
        body: dict[str, Any] = {"data": rows[start:start + COINMETRICS_PAGE]}
        if start + COINMETRICS_PAGE < len(rows):
            # Like Coin Metrics, the next page's URL repeats the whole query, api_key included.
            query = {k: v for k, v in request.query.items() if k != "next_page_token"}
            query["next_page_token"] = str(start + COINMETRICS_PAGE)
            body["next_page_token"] = query["next_page_token"]
            body["next_page_url"] = f"{self.coinmetrics_url}/timeseries/asset-metrics?{urlencode(query)}"
        return _answer(self.mode["coinmetrics"], body, COINMETRICS_ERROR)


def _answer(mode: Mode, ok: dict[str, Any], error: dict[str, Any]) -> web.Response:
    if mode == "malformed":
        return web.Response(text=MALFORMED, content_type="application/json")
    return web.json_response(ok if mode == "ok" else error)
