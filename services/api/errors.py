"""The API's one error shape, `{"error": code, "message": ...}`, for every error: the service's own, FastAPI's (a
parameter or body that cannot be read), Starlette's (an unknown path, a method a path does not take) and anything
unexpected (logged, answered without a stack trace)."""

import html
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api.auth import Unauthorized
from shared.errors import CstError

log = logging.getLogger(__name__)

TITLES = {400: "Bad request", 401: "Not signed in", 403: "Not allowed", 404: "Not found",
          405: "Not allowed here", 422: "Cannot read the request", 500: "Something went wrong"}


def wants_page(request: Request) -> bool:
    """A browser asking for a page (not /api/, and HTML accepted) is answered with a page, not JSON."""
    return not request.url.path.startswith("/api") and "text/html" in request.headers.get("accept", "")


def error_page(status: int, body: dict) -> HTMLResponse:
    """The error as a page a person can read: what went wrong, its code, and ways back."""
    title = TITLES.get(status, "Error")
    return HTMLResponse(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>cst: {title}</title>
<link rel="stylesheet" href="/static/cst.css"></head><body><main class="error-page">
<h1>{title}</h1><p id="error-message">{html.escape(str(body.get("message", "")))}</p>
<p class="meta">code <code id="error-code">{html.escape(str(body.get("error", "")))}</code>, status {status}</p>
<p><a href="/">Signals</a> · <a href="/ranges">Ranges</a> · <a href="/runs">Runs</a></p></main></body></html>""",
        status_code=status)


def answer(request: Request, body: dict, status: int, headers: dict | None = None):
    if wants_page(request):
        return error_page(status, body)
    return JSONResponse(body, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CstError)
    async def cst_error(request: Request, exc: CstError):
        status = 401 if isinstance(exc, Unauthorized) else 400
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return answer(request, {"error": exc.code, "message": exc.message}, status, headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error")
        return answer(request, {"error": "internal_error", "message": "the request could not be answered"}, 500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail: Any = exc.detail
        if isinstance(detail, dict):
            body = detail
        else:
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
            body = {"error": code, "message": str(detail)}
        return answer(request, body, exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()[:5])
        return answer(request, {"error": "bad_request", "message": where or "the request cannot be read"}, 422)
