"""What every API route shares: the settings, the lake, the token verifier, what an operator may start and the clock,
set once on the app; and the dependencies that say who is asking (viewer, operator) and what they may do.

Every endpoint but `/health` needs a verified token: `Authorization: Bearer <JWT>` (API clients, API Gateway) or the
`cst_session` cookie (browsers; HttpOnly, SameSite=Strict). A state-changing request made with the cookie must carry
the `X-CSRF-Token` header equal to the `cst_csrf` cookie (double submit); bearer requests cannot be forged by another
site.
"""

# No `from __future__ import annotations`: FastAPI reads the dependencies' `Annotated[..., Depends(...)]` at runtime.
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from services.api.auth import Identity, Unauthorized, Verifier
from services.api.login import CSRF_COOKIE, SESSION_COOKIE
from shared.audit import AUDIT, audit_key
from shared.records import Alert
from shared.settings import Settings
from shared.storage import Lake

CSRF_HEADER = "x-csrf-token"


class Actions:
    """What an operator may start. Locally the runner runs in a thread; in the cloud this starts an execution."""

    def __init__(self, start_run: Callable[[dict], str]):
        self.start_run = start_run


@dataclass(frozen=True)
class ApiContext:
    settings: Settings
    lake: Lake
    verifier: Verifier
    actions: Actions | None
    now: Callable[[], datetime]

    @property
    def horizons(self) -> list[str]:
        """The horizons the service forecasts and trains, in the settings' order."""
        return [h for h in self.settings.horizons if h in self.settings.training.horizons]

    def known_horizon(self, horizon: str | None) -> None:
        """A 404 the client can act on when a horizon is not one the service forecasts."""
        if horizon is not None and horizon not in self.horizons:
            raise HTTPException(404, detail={"error": "unknown_horizon", "message": f"horizons: {self.horizons}"})

    def audit(self, who: Identity, action: str, detail: dict, result: str) -> None:
        at = self.now()
        self.lake.put_json(audit_key(at),
                           {"who": who.username, "subject": who.subject, "groups": sorted(who.groups),
                            "action": action, "detail": detail, "result": result, "at": at.isoformat()})

    def act(self, who: Identity, action: str, detail: dict) -> str:
        """Start a run or a horizon's retrain for an operator, and write it to the audit log."""
        if action == "retrain":
            self.known_horizon(detail.get("horizon"))
        if self.actions is None:
            raise HTTPException(503, detail={"error": "no_runner", "message": "runs cannot be started here"})
        from services.orchestrator.usecases import AlreadyRunning

        limit = self.settings.api.actions_per_user_per_hour
        if self.recent_actions(who) >= limit:
            self.audit(who, action, detail, f"refused: {limit} actions in the last hour")
            raise HTTPException(429, detail={"error": "too_many_actions", "message": f"at most {limit} runs or "
                                             "retrains per operator per hour; try again later"},
                                headers={"Retry-After": "600"})
        request = {"source": self.settings.api.run_source}
        if action == "retrain":
            request.update(retrain=True, retrain_only=[detail["horizon"]])
        try:
            started = self.actions.start_run(request)
        except AlreadyRunning as exc:
            self.audit(who, action, detail, f"refused: already running {exc.running}")
            raise HTTPException(409, detail={"error": "already_running", "message": "this cycle's run is still "
                                             f"running: {exc.running}"}) from None
        except Exception as exc:
            self.audit(who, action, detail, f"failed: {type(exc).__name__}")
            raise
        self.audit(who, action, detail, started)
        return started

    def send_test_alert(self, who: Identity) -> Alert | str:
        """An operator's test alert (the Alert with its deliveries, or in the cloud the topic's message id), audited."""
        from services.alerts.notify import dispatch_test

        out = dispatch_test(self.settings, self.lake, who.username)
        self.audit(who, "test_alert", {}, f"published {out}" if isinstance(out, str) else
                   f"{sum(d.ok for d in out.deliveries)}/{len(out.deliveries)} delivered")
        return out

    def recent_actions(self, who: Identity) -> int:
        """How many runs and retrains this operator started (or tried to) in the last hour, from the audit log."""
        from datetime import timedelta

        since = self.now() - timedelta(hours=1)
        count = 0
        for day in {since.date().isoformat(), self.now().date().isoformat()}:
            for key in self.lake.list(f"{AUDIT}date={day}/"):
                doc = self.lake.get_json(key)
                if doc.get("who") == who.username and doc.get("action") in ("start_run", "retrain") \
                        and doc.get("at", "") >= since.isoformat() and not str(doc.get("result", "")).startswith("refused"):
                    count += 1
        return count


def context(request: Request) -> ApiContext:
    return request.app.state.cst


def token_identity(request: Request) -> Identity:
    """Who sent the request, from the bearer token or the session cookie (no CSRF check: pages do their own)."""
    verifier = context(request).verifier
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


Context = Annotated[ApiContext, Depends(context)]
Viewer = Annotated[Identity, Depends(viewer)]
Operator = Annotated[Identity, Depends(operator)]
