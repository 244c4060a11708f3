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
import secrets
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.api import reads
from services.api.auth import Identity, Unauthorized, Verifier
from services.api.issuer import DevIssuer
from services.api.login import CSRF_COOKIE, SESSION_COOKIE, add_login
from services.api.pages import add_pages
from shared.contracts import iso_to_ms
from shared.errors import CstError
from shared.settings import Settings
from shared.storage import Lake

log = logging.getLogger(__name__)
CSRF_HEADER = "x-csrf-token"
STATIC = FilePath(__file__).resolve().parent / "static"
COIN = r"^[A-Z0-9]{1,15}$"
MAX_PAGE = 500
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
}


class Feedback(BaseModel):
    horizon: str = Field(pattern=r"^[0-9]{1,3}[hdw]$")
    coin: str = Field(pattern=COIN)
    run_id: str = Field(pattern=reads.RUN_ID.pattern)
    decision_ts: int = Field(ge=0)
    useful: bool | None = None
    traded: bool | None = None
    note: str = Field("", max_length=2000)


class RetrainRequest(BaseModel):
    horizon: str = Field(pattern=r"^[0-9]{1,3}[hdw]$")


class Actions:
    """What an operator may start. Locally the runner runs in a thread; in the cloud this starts an execution."""

    def __init__(self, start_run: Callable[[dict], str]):
        self.start_run = start_run


def local_actions(settings: Settings, lake: Lake) -> Actions:
    def start(request: dict) -> str:
        from services import runner
        from shared.contracts import utcnow
        from shared.pipeline import StepContext

        ref = runner.make_ref(settings, request.get("source", "live"), int(utcnow().timestamp() * 1000))
        ref = ref.model_copy(update={"retrain": bool(request.get("retrain")),
                                     "retrain_only": list(request.get("retrain_only") or [])})
        runner.save_ref(lake, ref)

        def work() -> None:
            try:
                runner.run_pipeline(StepContext(settings, lake), ref)
            except Exception:  # noqa: BLE001 - a background run's failure is in its summary and the log
                log.exception("run %s failed", ref.run_id)

        threading.Thread(target=work, name=ref.run_id, daemon=True).start()
        return ref.run_id

    return Actions(start)


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
        lake.put_json(f"audit/date={at.date().isoformat()}/{at.strftime('%H%M%S%f')}-{uuid.uuid4().hex[:8]}.json",
                      {"who": who.username, "subject": who.subject, "groups": sorted(who.groups), "action": action,
                       "detail": detail, "result": result, "at": at.isoformat()})

    def _ms(value: str | None, name: str) -> int | None:
        if value is None:
            return None
        try:
            return iso_to_ms(value)
        except (CstError, ValueError):
            raise HTTPException(422, detail={"error": "bad_time", "message": f"{name} is not an ISO time"}) from None

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/me")
    def me(who: Annotated[Identity, Depends(viewer)]) -> dict:
        return {"username": who.username, "groups": sorted(who.groups), "operator": who.is_operator}

    @app.get("/api/signals")
    def signals(_: Annotated[Identity, Depends(viewer)]) -> dict:
        doc = reads.latest_summary(lake)
        if doc is None:
            return {"run_id": None, "signals": [], "why_none": {"all": "no run has completed yet"}}
        why = {h: reason for h, reason in doc.get("uncertified_horizons", {}).items()}
        return {"run_id": doc["run_id"], "as_of": doc["as_of"], "signals": doc.get("signals", []),
                "why_none": why if not doc.get("signals") else {}}

    @app.get("/api/predictions")
    def predictions(_: Annotated[Identity, Depends(viewer)],
                    coin: Annotated[str | None, Query(pattern=COIN)] = None,
                    horizon: Annotated[str | None, Query(pattern=r"^[0-9]{1,3}[hdw]$")] = None,
                    run_id: Annotated[str | None, Query(pattern=reads.RUN_ID.pattern)] = None,
                    since: Annotated[str | None, Query(max_length=40)] = None,
                    until: Annotated[str | None, Query(max_length=40)] = None,
                    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> dict:
        if horizon is not None and horizon not in horizons:
            raise HTTPException(404, detail={"error": "unknown_horizon", "message": f"horizons: {horizons}"})
        rows = reads.predictions(lake, [horizon] if horizon else horizons, coin=coin, run_id=run_id,
                                 since_ms=_ms(since, "since"), until_ms=_ms(until, "until"))
        return {"total": len(rows), "offset": offset, "limit": limit, "items": rows[offset:offset + limit]}

    @app.get("/api/coins/{coin}")
    def coin_forecast(coin: Annotated[str, Path(pattern=COIN)], _: Annotated[Identity, Depends(viewer)]) -> dict:
        latest = reads.latest_per_horizon(lake, horizons, coin)
        if not latest:
            raise HTTPException(404, detail={"error": "unknown_coin", "message": f"no forecast for {coin}"})
        doc = reads.latest_summary(lake) or {}
        return {"coin": coin, "horizons": {h: {
            "p_up": r["p_up"], "interval": [r["p_low"], r["p_high"]], "direction": r["direction"],
            "confidence": r["confidence"], "range_80": [r.get("range_low"), r.get("range_high")],
            "top_features": json.loads(r["top_features"] or "[]"), "skill": r.get("skill"),
            "decision_ts": r["decision_ts"], "model_version": r["model_version"],
            "certified": h not in doc.get("uncertified_horizons", {}),
            "why_not_certified": doc.get("uncertified_horizons", {}).get(h)} for h, r in latest.items()}}

    @app.get("/api/performance")
    def performance(_: Annotated[Identity, Depends(viewer)],
                    horizon: Annotated[str | None, Query(pattern=r"^[0-9]{1,3}[hdw]$")] = None) -> dict:
        """Per horizon: each coin's hit rate, Brier and ECE over its recent outcomes, the reliability of the recent
        outcomes (mean P(up) against the realized up-rate per bin) and the latest drift verdict."""
        if horizon is not None and horizon not in horizons:
            raise HTTPException(404, detail={"error": "unknown_horizon", "message": f"horizons: {horizons}"})
        drift = (reads.latest_summary(lake) or {}).get("drift", {})
        out = {}
        for h in [horizon] if horizon else horizons:
            recent = reads.recent_outcomes(lake, h)
            out[h] = {"outcomes": len(recent), "reliability": reads.reliability(recent),
                      "coins": reads.latest_performance(lake, h), "drift": drift.get(h)}
        return out

    @app.get("/api/runs")
    def runs(_: Annotated[Identity, Depends(viewer)], limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
             offset: Annotated[int, Query(ge=0)] = 0) -> dict:
        ids = reads.run_ids(lake)
        page = [reads.summary(lake, r) for r in ids[offset:offset + limit]]
        return {"total": len(ids), "items": [{k: d.get(k) for k in ("run_id", "as_of", "status", "coins_predicted",
                                                                   "predictions", "actionable", "failures")}
                                             for d in page if d]}

    @app.get("/api/runs/{run_id}")
    def run(run_id: str, _: Annotated[Identity, Depends(viewer)]) -> dict:
        doc = reads.summary(lake, run_id) if reads.RUN_ID.match(run_id) else None
        if doc is None:
            raise HTTPException(404, detail={"error": "unknown_run", "message": "no such run"})
        return doc

    @app.get("/api/models")
    def model_list(_: Annotated[Identity, Depends(viewer)]) -> dict:
        return reads.models(lake, horizons)

    @app.get("/api/models/{horizon}/{version}/card")
    def card(horizon: str, version: str, _: Annotated[Identity, Depends(viewer)]) -> dict:
        text = (reads.model_card(lake, horizon, version)
                if horizon in horizons and reads.RUN_ID.match(version) else None)
        if text is None:
            raise HTTPException(404, detail={"error": "unknown_model", "message": "no such model version"})
        return {"horizon": horizon, "version": version, "card": text}

    @app.get("/api/quality")
    def quality(_: Annotated[Identity, Depends(viewer)]) -> dict:
        doc = reads.quality(lake)
        if doc is None:
            raise HTTPException(404, detail={"error": "no_quality_report", "message": "no run has been validated"})
        return doc

    @app.post("/api/feedback", status_code=201)
    def feedback(body: Feedback, who: Annotated[Identity, Depends(viewer)]) -> dict:
        key = (f"feedback/horizon={body.horizon}/coin={body.coin}/run_id={body.run_id}/"
               f"{now().strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.json")
        lake.put_json(key, {**body.model_dump(), "by": who.username, "at": now().isoformat()})
        return {"stored": key}

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

    @app.post("/api/actions/run", status_code=202)
    def start_run(who: Annotated[Identity, Depends(operator)]) -> dict:
        return {"started": act(who, "start_run", {})}

    @app.post("/api/actions/retrain", status_code=202)
    def retrain(body: RetrainRequest, who: Annotated[Identity, Depends(operator)]) -> dict:
        return {"started": act(who, "retrain", {"horizon": body.horizon})}

    add_pages(app, settings, lake, horizons, token_identity, act, secure_cookies=secure_cookies)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException):
        detail: Any = exc.detail
        body = detail if isinstance(detail, dict) else {"error": "http_error", "message": str(detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    return app
