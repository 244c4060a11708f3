"""The API's one error shape, `{"error": code, "message": ...}`, for every error: the service's own, FastAPI's (a
parameter or body that cannot be read), Starlette's (an unknown path, a method a path does not take) and anything
unexpected (logged, answered without a stack trace)."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api.auth import Unauthorized
from shared.errors import CstError

log = logging.getLogger(__name__)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CstError)
    async def cst_error(_request: Request, exc: CstError):
        status = 401 if isinstance(exc, Unauthorized) else 400
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": exc.code, "message": exc.message}, status_code=status, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception):
        log.exception("unexpected error")
        return JSONResponse({"error": "internal_error", "message": "the request could not be answered"},
                            status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        detail: Any = exc.detail
        if isinstance(detail, dict):
            body = detail
        else:
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
            body = {"error": code, "message": str(detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError):
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()[:5])
        return JSONResponse({"error": "bad_request", "message": where or "the request cannot be read"},
                            status_code=422)
