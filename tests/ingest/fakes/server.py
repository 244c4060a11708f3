"""Runs an aiohttp app on 127.0.0.1 (ephemeral port) in a thread of its own, so sync code like ingest() can call it;
or a whole fake in a child process, when the fake's own work must not share the client's GIL."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from aiohttp import web

# Handlers still sleeping at shutdown are released by the app's on_shutdown hook; this only bounds a stuck one.
SHUTDOWN_TIMEOUT_S = 2.0


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read, released): connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoopbackServer:
    """One aiohttp app served from a daemon thread's event loop; usable as a context manager."""

    def __init__(self, app: web.Application):
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="loopback-server", daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> str:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self.url

    async def _start(self) -> str:
        self._runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> LoopbackServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class Pauses:
    """Sleeps handlers can take (latency, slow answers) that end early when the app shuts down."""

    def __init__(self, app: web.Application):
        self._stopping: asyncio.Event | None = None
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)

    async def _on_startup(self, app: web.Application) -> None:
        self._stopping = asyncio.Event()

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0 or self._stopping is None:
            return
        # Timing out is the normal case: the pause ran its full length.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


def _serve_in_child(conn: Connection, factory: Callable[[], Any]) -> None:
    with factory() as fake:
        conn.send(fake.url)
        conn.recv()  # the parent's stop
        conn.send(fake.snapshot())
    conn.close()


class ChildProcess:
    """A fake (a context manager with `.url` and `.snapshot()`) served from a spawned process of its own.

    In a thread, the fake shares the client's GIL: while one side builds or parses a large body the other's
    event loop stalls, and requests sent on time reach the fake's handlers in bunches. A rate limit measured
    at the fake then reports the client's CPU, not its pacing. In a process of its own, the fake sees requests
    when they arrive. `factory` must pickle (a class or functools.partial of one); after exit, `snapshot` holds
    what the fake's `snapshot()` returned when it stopped.
    """

    def __init__(self, factory: Callable[[], Any], start_timeout_s: float = 30.0):
        self._factory = factory
        self._timeout = start_timeout_s
        self._ctx = multiprocessing.get_context("spawn")
        self._conn: Connection | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None
        self.url = ""
        self.snapshot: Any = None

    def __enter__(self) -> ChildProcess:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve_in_child, args=(child, self._factory), daemon=True,
                                       name="loopback-fake")
        self._proc.start()
        child.close()
        if not parent.poll(self._timeout):
            self._proc.kill()
            raise RuntimeError(f"the fake's process did not start within {self._timeout:.0f} s")
        self._conn = parent
        self.url = parent.recv()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._conn is not None and self._proc is not None
        try:
            self._conn.send("stop")
            if self._conn.poll(self._timeout):
                self.snapshot = self._conn.recv()
        finally:
            self._conn.close()
            self._proc.join(timeout=self._timeout)
            if self._proc.is_alive():
                self._proc.kill()
