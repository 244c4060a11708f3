"""The API: JSON endpoints over the lake for viewers, run and retrain actions for operators, an audit log of actions,
and the dashboard's pages.

Every endpoint but `/health` needs a verified token: `Authorization: Bearer <JWT>` (API clients, API Gateway) or the
`cst_session` cookie (browsers; HttpOnly, SameSite=Strict). A state-changing request made with the cookie must carry
the `X-CSRF-Token` header equal to the `cst_csrf` cookie (double submit); bearer requests cannot be forged by another
site. Errors answer `{"error": code, "message": ...}` and never a stack trace.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from services.api.auth import Verifier
from services.api.context import CSRF_HEADER, Actions, ApiContext, token_identity
from services.api.errors import add_error_handlers
from services.api.issuer import DevIssuer
from services.api.login import CSRF_COOKIE, SESSION_COOKIE, add_login
from services.api.pages import add_pages
from services.api.routes import ROUTERS
from shared.pipeline.contracts import RunStart
from shared.settings import Settings
from shared.storage import Lake

__all__ = ["CSRF_COOKIE", "CSRF_HEADER", "SESSION_COOKIE", "Actions", "create_app", "local_actions"]

STATIC = Path(__file__).resolve().parent / "static"
SWAGGER = Path(__file__).resolve().parent / "node_modules" / "swagger-ui-dist"
SWAGGER_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>cst API</title><link rel="stylesheet" href="/static/vendor/swagger/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/static/vendor/swagger/swagger-ui-bundle.js"></script><script src="/static/docs.js"></script>
</body></html>"""
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
}


def local_actions(settings: Settings, lake: Lake) -> Actions:
    """Runs and retrains on this machine: the orchestrator's run of the current cycle, in a thread."""
    from services.orchestrator.usecases import start_in_background

    return Actions(lambda request: start_in_background(settings, lake, RunStart.model_validate(request)))


def create_app(settings: Settings, lake: Lake, verifier: Verifier, actions: Actions | None = None,
               now: Callable[[], datetime] = lambda: datetime.now(UTC), *, issuer: DevIssuer | None = None,
               secure_cookies: bool = True) -> FastAPI:
    from fastapi.staticfiles import StaticFiles

    # The interactive docs load Swagger UI from the app itself (npm's swagger-ui-dist), never from a CDN: the
    # content-security policy allows only this origin, and a machine without internet still has its docs.
    app = FastAPI(title="cst", version="1", description=__doc__, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    ctx = ApiContext(settings=settings, lake=lake, verifier=verifier, actions=actions, now=now)
    app.state.cst = ctx
    if issuer is not None:
        add_login(app, issuer, secure_cookies=secure_cookies, lake_uri=lake.uri)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(DOCS_PAGE)

    @app.get("/static/vendor/swagger/{name}", include_in_schema=False)
    def swagger_file(name: str):
        if name not in SWAGGER_FILES or not (SWAGGER / name).is_file():
            raise HTTPException(404, detail={"error": "docs_not_installed",
                                             "message": "run npm ci --prefix services/api"})
        return FileResponse(SWAGGER / name, media_type=SWAGGER_FILES[name])

    for router in ROUTERS:
        app.include_router(router)
    add_pages(app, settings, lake, ctx.horizons, token_identity, ctx.act, secure_cookies=secure_cookies)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    add_error_handlers(app)
    return app
