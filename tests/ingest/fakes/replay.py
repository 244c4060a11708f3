"""Serves recorded response bodies byte for byte on 127.0.0.1: one route per path, each with its status and type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from tests.ingest.fakes.server import LoopbackServer

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
TYPES = {".json": "application/json", ".html": "text/html", ".txt": "text/plain"}


@dataclass(frozen=True)
class Body:
    file: str
    status: int = 200

    def response(self) -> web.Response:
        path = CORPUS / self.file
        return web.Response(body=path.read_bytes(), status=self.status,
                            headers={"Content-Type": TYPES[path.suffix] + "; charset=utf-8"})


class Replay:
    """`routes`: path -> Body; every request is logged as (path, query)."""

    def __init__(self, routes: dict[str, Body]):
        self.routes = dict(routes)
        self.requests: list[tuple[str, dict[str, str]]] = []
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._answer)
        self._server = LoopbackServer(app)
        self.url = ""

    def __enter__(self) -> Replay:
        self.url = self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    async def _answer(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        body = self.routes.get(request.path)
        return body.response() if body is not None else web.Response(status=404, text="Not Found")
