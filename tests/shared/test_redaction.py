"""A canary secret never reaches a log record (any level, any handler) or the lake, on good and error paths."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from services import cli
from shared.logging import REDACTED, redact, set_secrets

CANARY = "canary-7f3a9c1e5b"
SECOND = "second-canary-0d2e"


def test_redact_replaces_longest_first():
    assert redact(f"a {CANARY} b {CANARY}x", [CANARY, "canary"]) == f"a {REDACTED} b {REDACTED}x"
    assert redact("nothing here", [CANARY]) == "nothing here"


def test_every_level_and_traceback_is_redacted(caplog, capsys):
    set_secrets([CANARY])
    try:
        log = logging.getLogger("cst.test.redaction")
        with caplog.at_level(logging.DEBUG):
            for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
                log.log(level, "key is %s", CANARY)
                log.log(level, f"inline {CANARY}")
                log.log(level, "as dict %(k)s", {"k": CANARY})
            try:
                raise RuntimeError(f"request failed for api_key={CANARY}")
            except RuntimeError:
                log.exception("boom")
        handler = logging.StreamHandler()
        text = "\n".join(handler.format(r) for r in caplog.records)
        assert caplog.records, "nothing was captured: the test would pass vacuously"
        assert CANARY not in text and REDACTED in text
        assert "RuntimeError" in text  # the traceback survives, only the secret is gone
    finally:
        set_secrets([])


# A loopback stand-in for every live source, each answering on an error path; Coin Metrics
# echoes its request URL (which carries the api_key) in a page body, as paginated APIs do.
def _fake_app() -> web.Application:
    async def kraken(request: web.Request) -> web.Response:
        return web.json_response({"error": ["EAPI:Rate limit exceeded"]}, status=429)

    async def fng(request: web.Request) -> web.Response:
        return web.Response(text='{"data": [', content_type="application/json")  # malformed JSON

    async def blockchain(request: web.Request) -> web.Response:
        return web.Response(text="upstream error", status=500)

    async def coinmetrics(request: web.Request) -> web.Response:
        page = request.query.get("next_page_token")
        base = f"http://{request.host}/v4/timeseries/asset-metrics"
        if page is None:
            return web.json_response({
                "data": [{"asset": "eth", "time": "2024-01-01T00:00:00.000000000Z", "TxCnt": "1000"}],
                "next_page_url": f"{base}?api_key={request.query.get('api_key')}"
                                 f"&next_page_token=p2-{request.query.get('assets')}",
            })
        if request.query.get("assets") == "eth" or "eth" in page:
            # ETH: the last page, echoing the request URL with its key; this lands (redacted).
            return web.json_response({
                "data": [{"asset": "eth", "time": "2024-01-02T00:00:00.000000000Z", "TxCnt": "1100"}],
                "echo": str(request.url),
                "next_page_url": None,
            })
        # LTC: the second page is refused with the key in the error text.
        return web.Response(text=f"bad token for key {request.query.get('api_key')}", status=400)

    app = web.Application()
    app.router.add_route("*", "/0/{tail:.*}", kraken)
    app.router.add_get("/fng/", fng)
    app.router.add_get("/charts/{metric}", blockchain)
    app.router.add_get("/v4/timeseries/asset-metrics", coinmetrics)
    return app


@pytest.fixture
def fake_sources() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_fake_app())
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.run_until_complete(runner.cleanup())
    loop.close()


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_canary_never_reaches_logs_or_lake(monkeypatch, tmp_path, caplog, capsys, fake_sources, shared_data):
    base = fake_sources
    env = {
        "CST_EXCHANGE__API_KEY": CANARY,
        "CST_EXCHANGE__API_SECRET": SECOND,
        "CST_SOURCES__COINMETRICS_API_KEY": CANARY,
        "CST_EXCHANGE__BASE_URL": base,
        "CST_SOURCES__FEAR_GREED_URL": f"{base}/fng/",
        "CST_SOURCES__BLOCKCHAIN_URL": f"{base}/charts",
        "CST_SOURCES__BLOCKCHAIN_METRICS": '["hash-rate"]',
        "CST_SOURCES__COINMETRICS_URL": f"{base}/v4",
        "CST_SOURCES__COINMETRICS_ASSETS": '["ETH","LTC"]',
        "CST_UNIVERSE": '["BTC","ETH","LTC"]',
        "CST_TIMEFRAMES": '["1d"]',
        "CST_HTTP__MAX_RETRIES": "1",
        "CST_HTTP__BACKOFF_BASE_S": "0.01",
        "CST_HTTP__BACKOFF_MAX_S": "0.02",
        "CST_HTTP__TIMEOUT_S": "5",
        "CST_LOG_LEVEL": "DEBUG",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    lake = tmp_path / "lake"
    try:
        with caplog.at_level(logging.DEBUG):
            # Live: every source fails or half-fails; the failures are reported, the run completes.
            assert cli.main(["ingest", "--source", "live", "--lake", str(lake)]) == 0
            # Files: the healthy path, same process and same redaction.
            assert cli.main(["ingest", "--source", str(shared_data), "--lake", str(lake),
                             "--as-of", "2024-07-01T00:00:00Z"]) == 0
            logging.getLogger("cst.test").debug("direct %s", CANARY)
            logging.getLogger("cst.test").error("direct %s %s", CANARY, SECOND)
    finally:
        set_secrets([])
    out = capsys.readouterr()
    logs = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    landed = _all_bytes(lake)
    assert len(caplog.records) > 10 and landed, "nothing captured or landed: the check would be vacuous"
    # The error paths were really driven: a failure of each live source is said (the CLI prints the run's fetch
    # failures, grouped by source and code, instead of logging each one).
    console = out.out + out.err
    for code in ("rate_limited", "malformed_response", "server_error", "http_400"):
        assert f"[{code}]" in logs + console, code
    for text in (logs, console):
        assert CANARY not in text and SECOND not in text
    assert CANARY.encode() not in landed and SECOND.encode() not in landed
    # The Coin Metrics page that echoed the key did land, redacted.
    assert list((lake / "raw").glob("source=coinmetrics/symbol=ETH/*/*.json"))
    assert REDACTED.encode() in landed
