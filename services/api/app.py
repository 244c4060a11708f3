"""The API: JSON endpoints over the lake for viewers, run and retrain actions for operators, an audit log of actions.

Every endpoint but `/health` needs a verified token: `Authorization: Bearer <JWT>` (API clients, API Gateway) or the
`cst_session` cookie (browsers; HttpOnly, SameSite=Strict). A state-changing request made with the cookie must carry
the `X-CSRF-Token` header equal to the `cst_csrf` cookie (double submit); bearer requests cannot be forged by another
site. Errors answer `{"error": code, "message": ...}` and never a stack trace.
"""


# No `from __future__ import annotations` here: FastAPI reads the endpoints' `Annotated[..., Depends(...)]` at runtime,
# and the dependencies are local to create_app.
import json
import logging
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api import reads
from services.api.auth import Identity, Unauthorized, Verifier
from services.api.issuer import DevIssuer
from services.api.login import CSRF_COOKIE, SESSION_COOKIE, add_login
from services.api.models import (
    CoinForecast,
    HorizonForecast,
    HorizonModels,
    HorizonPerformance,
    Me,
    ModelCard,
    PredictionPage,
    QualityView,
    RunPage,
    RunRow,
    SignalsView,
    Started,
    Stored,
    errors,
)
from services.api.pages import add_pages
from shared.audit import audit_key, feedback_key
from shared.errors import CstError
from shared.pipeline.contracts import RunStart
from shared.records import RunSummary
from shared.settings import Settings
from shared.storage import Lake

log = logging.getLogger(__name__)
CSRF_HEADER = "x-csrf-token"
STATIC = FilePath(__file__).resolve().parent / "static"
COIN = r"^[A-Z0-9]{1,15}$"
HORIZON = r"^[0-9]{1,3}[hdw]$"
MAX_PAGE = 500
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
}


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: Any) -> Any:
    """A time as the schema's `date-time` says (RFC 3339: 2024-05-01T00:00:00Z), not a number or a bare date."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be a time such as 2024-05-01T00:00:00Z (RFC 3339, with its zone)")
    return value


Time = Annotated[datetime, BeforeValidator(_rfc3339)]


def _json_integer(value: Any) -> Any:
    """A JSON integer: 6465 or 6465.0 (JSON Schema's integer), never a string or a boolean."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Feedback(BaseModel):
    # A flag is a boolean (not 0.0 or "yes"), a time a JSON integer; nothing the schema does not name.
    model_config = ConfigDict(extra="forbid")

    horizon: str = Field(pattern=HORIZON)
    coin: str = Field(pattern=COIN)
    run_id: str = Field(pattern=reads.RUN_ID.pattern)
    decision_ts: Annotated[int, BeforeValidator(_json_integer)] = Field(ge=0)
    useful: StrictBool | None = None
    traded: StrictBool | None = None
    note: str = Field("", max_length=2000)


class RetrainRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    horizon: str = Field(pattern=HORIZON)


class Actions:
    """What an operator may start. Locally the runner runs in a thread; in the cloud this starts an execution."""

    def __init__(self, start_run: Callable[[dict], str]):
        self.start_run = start_run


def local_actions(settings: Settings, lake: Lake) -> Actions:
    """Runs and retrains on this machine: the orchestrator's run of the current cycle, in a thread."""
    from services.orchestrator.usecases import start_in_background

    return Actions(lambda request: start_in_background(settings, lake, RunStart.model_validate(request)))


def create_app(settings: Settings, lake: Lake, verifier: Verifier, actions: Actions | None = None,
               now: Callable[[], datetime] = lambda: datetime.now(UTC), *, issuer: DevIssuer | None = None,
               secure_cookies: bool = True) -> FastAPI:
    from fastapi.staticfiles import StaticFiles

    app = FastAPI(title="cst", version="1", description=__doc__, docs_url="/api/docs", redoc_url=None,
                  openapi_url="/api/openapi.json")
    if issuer is not None:
        add_login(app, issuer, secure_cookies=secure_cookies)
    horizons = [h for h in settings.horizons if h in settings.training.horizons]

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

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

    def token_identity(request: Request) -> Identity:
        """Who sent the request, from the bearer token or the session cookie (no CSRF check: pages do their own)."""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return verifier.verify(auth[7:].strip())
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            return verifier.verify(cookie)
        raise Unauthorized("no_token", "sign in first")

    def identity(request: Request) -> Identity:
        who = token_identity(request)
        cookie_only = not request.headers.get("authorization", "").lower().startswith("bearer ")
        if cookie_only and request.method not in ("GET", "HEAD", "OPTIONS"):
            sent, expected = request.headers.get(CSRF_HEADER, ""), request.cookies.get(CSRF_COOKIE, "")
            if not expected or not secrets.compare_digest(sent, expected):
                raise HTTPException(403, detail={"error": "csrf", "message": "missing or wrong CSRF token"})
        return who

    def viewer(who: Annotated[Identity, Depends(identity)]) -> Identity:
        if not who.is_viewer:
            raise HTTPException(403, detail={"error": "forbidden", "message": "no dashboard group"})
        return who

    def operator(who: Annotated[Identity, Depends(identity)]) -> Identity:
        if not who.is_operator:
            raise HTTPException(403, detail={"error": "forbidden", "message": "operators only"})
        return who

    def audit(who: Identity, action: str, detail: dict, result: str) -> None:
        at = now()
        lake.put_json(audit_key(at),
                      {"who": who.username, "subject": who.subject, "groups": sorted(who.groups), "action": action,
                       "detail": detail, "result": result, "at": at.isoformat()})

    def _ms(value: datetime | None) -> int | None:
        return None if value is None else int(value.timestamp() * 1000)

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/me", responses=errors())
    def me(who: Annotated[Identity, Depends(viewer)]) -> Me:
        return Me(username=who.username, groups=sorted(who.groups), operator=who.is_operator)

    @app.get("/api/signals", responses=errors())
    def signals(_: Annotated[Identity, Depends(viewer)]) -> SignalsView:
        doc = reads.latest_summary(lake)
        if doc is None:
            return SignalsView(run_id=None, signals=[], why_none={"all": "no run has completed yet"})
        return SignalsView(run_id=doc.run_id, as_of=doc.as_of, signals=doc.signals,
                           why_none=dict(doc.uncertified_horizons) if not doc.signals else {})

    @app.get("/api/predictions", responses=errors(404))
    def predictions(_: Annotated[Identity, Depends(viewer)],
                    coin: Annotated[str | None, Query(pattern=COIN)] = None,
                    horizon: Annotated[str | None, Query(pattern=HORIZON)] = None,
                    run_id: Annotated[str | None, Query(pattern=reads.RUN_ID.pattern)] = None,
                    since: Annotated[Time | None, Query(description="decision times from (RFC 3339 time)")] = None,
                    until: Annotated[Time | None, Query(description="decision times up to (RFC 3339 time)")] = None,
                    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> PredictionPage:
        if horizon is not None and horizon not in horizons:
            raise HTTPException(404, detail={"error": "unknown_horizon", "message": f"horizons: {horizons}"})
        rows = reads.predictions(lake, [horizon] if horizon else horizons, coin=coin, run_id=run_id,
                                 since_ms=_ms(since), until_ms=_ms(until))
        return PredictionPage(total=len(rows), offset=offset, limit=limit, items=rows[offset:offset + limit])

    @app.get("/api/coins/{coin}", responses=errors(404))
    def coin_forecast(coin: Annotated[str, Path(pattern=COIN)], _: Annotated[Identity, Depends(viewer)]) -> CoinForecast:
        latest = reads.latest_per_horizon(lake, horizons, coin)
        if not latest:
            raise HTTPException(404, detail={"error": "unknown_coin", "message": f"no forecast for {coin}"})
        uncertified = (doc.uncertified_horizons if (doc := reads.latest_summary(lake)) else {})
        return CoinForecast(coin=coin, horizons={h: HorizonForecast(
            p_up=r.p_up, interval=[r.p_low, r.p_high], direction=r.direction, confidence=r.confidence,
            range_80=[r.range_low, r.range_high], top_features=json.loads(r.top_features or "[]"), skill=r.skill,
            decision_ts=r.decision_ts, model_version=r.model_version,
            certified=h not in uncertified, why_not_certified=uncertified.get(h)) for h, r in latest.items()})

    @app.get("/api/performance", responses=errors(404))
    def performance(_: Annotated[Identity, Depends(viewer)],
                    horizon: Annotated[str | None, Query(pattern=HORIZON)] = None) -> dict[str, HorizonPerformance]:
        """Per horizon: each coin's hit rate, Brier and ECE over its recent outcomes, the reliability of the recent
        outcomes (mean P(up) against the realized up-rate per bin) and the latest drift verdict."""
        if horizon is not None and horizon not in horizons:
            raise HTTPException(404, detail={"error": "unknown_horizon", "message": f"horizons: {horizons}"})
        drift = doc.drift if (doc := reads.latest_summary(lake)) else {}
        out = {}
        for h in [horizon] if horizon else horizons:
            recent = reads.recent_outcomes(lake, h)
            out[h] = HorizonPerformance(outcomes=len(recent), reliability=reads.reliability(recent),
                                        coins=reads.latest_performance(lake, h), drift=drift.get(h))
        return out

    @app.get("/api/runs", responses=errors())
    def runs(_: Annotated[Identity, Depends(viewer)], limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
             offset: Annotated[int, Query(ge=0)] = 0) -> RunPage:
        ids = reads.run_ids(lake)
        page = [d for d in (reads.summary(lake, r) for r in ids[offset:offset + limit]) if d]
        return RunPage(total=len(ids), items=[RunRow(**d.model_dump(include=set(RunRow.model_fields))) for d in page])

    @app.get("/api/runs/{run_id}", responses=errors(404))
    def run(run_id: Annotated[str, Path(pattern=reads.RUN_ID.pattern)],
            _: Annotated[Identity, Depends(viewer)]) -> RunSummary:
        doc = reads.summary(lake, run_id)
        if doc is None:
            raise HTTPException(404, detail={"error": "unknown_run", "message": "no such run"})
        return doc

    @app.get("/api/models", responses=errors())
    def model_list(_: Annotated[Identity, Depends(viewer)]) -> dict[str, HorizonModels]:
        return reads.models(lake, horizons)

    @app.get("/api/models/{horizon}/{version}/card", responses=errors(404))
    def card(horizon: Annotated[str, Path(pattern=HORIZON)], version: Annotated[str, Path(pattern=reads.RUN_ID.pattern)],
             _: Annotated[Identity, Depends(viewer)]) -> ModelCard:
        text = reads.model_card(lake, horizon, version) if horizon in horizons else None
        if text is None:
            raise HTTPException(404, detail={"error": "unknown_model", "message": "no such model version"})
        return ModelCard(horizon=horizon, version=version, card=text)

    @app.get("/api/quality", responses=errors(404))
    def quality(_: Annotated[Identity, Depends(viewer)]) -> QualityView:
        doc = reads.quality(lake)
        if doc is None:
            raise HTTPException(404, detail={"error": "no_quality_report", "message": "no run has been validated"})
        return doc

    @app.post("/api/feedback", status_code=201, responses=errors())
    def feedback(body: Feedback, who: Annotated[Identity, Depends(viewer)]) -> Stored:
        key = feedback_key(body.horizon, body.coin, body.run_id, now())
        lake.put_json(key, {**body.model_dump(), "by": who.username, "at": now().isoformat()})
        return Stored(stored=key)

    def act(who: Identity, action: str, detail: dict) -> str:
        """Start a run or a horizon's retrain for an operator, and write it to the audit log."""
        if action == "retrain" and detail.get("horizon") not in horizons:
            raise HTTPException(404, detail={"error": "unknown_horizon", "message": f"horizons: {horizons}"})
        if actions is None:
            raise HTTPException(503, detail={"error": "no_runner", "message": "runs cannot be started here"})
        request = {"source": settings.api.run_source}
        if action == "retrain":
            request.update(retrain=True, retrain_only=[detail["horizon"]])
        try:
            started = actions.start_run(request)
        except Exception as exc:
            audit(who, action, detail, f"failed: {type(exc).__name__}")
            raise
        audit(who, action, detail, started)
        return started

    @app.post("/api/actions/run", status_code=202, responses=errors(503))
    def start_run(who: Annotated[Identity, Depends(operator)]) -> Started:
        return Started(started=act(who, "start_run", {}))

    @app.post("/api/actions/retrain", status_code=202, responses=errors(404, 503))
    def retrain(body: RetrainRequest, who: Annotated[Identity, Depends(operator)]) -> Started:
        return Started(started=act(who, "retrain", {"horizon": body.horizon}))

    add_pages(app, settings, lake, horizons, token_identity, act, secure_cookies=secure_cookies)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Starlette's own (an unknown path, a method a path does not take) and FastAPI's alike: one error shape.
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

    return app
