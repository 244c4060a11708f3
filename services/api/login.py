"""Browser sign-in to the dashboard on one machine: a login form for the users of `cst users add`, an HttpOnly
session cookie, a CSRF cookie, and a rate limit on failed attempts. (In the cloud: services/api/hosted_login.py.)"""

import html
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from services.api.auth import Unauthorized
from services.api.issuer import TOKEN_SECONDS, DevIssuer

SESSION_COOKIE, CSRF_COOKIE = "cst_session", "cst_csrf"


class Throttle:
    """At most `limit` failed sign-ins per user name and per client address within `window_s`."""

    def __init__(self, limit: int = 5, window_s: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._failures: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str) -> deque:
        q, now = self._failures[key], self.clock()
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def blocked(self, *keys: str) -> bool:
        with self._lock:
            return any(len(self._recent(k)) >= self.limit for k in keys)

    def failed(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._recent(k).append(self.clock())


def safe_next(target: str | None) -> str:
    """Only a path on this site: no scheme, no host, no protocol-relative `//`, no backslash tricks."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target or "\n" in target:
        return "/"
    return target


def set_csrf_cookie(response, token: str, *, secure: bool):
    """The double-submit CSRF cookie: readable by the page (it copies it into a header or a form field)."""
    response.set_cookie(CSRF_COOKIE, token, httponly=False, samesite="strict", secure=secure, path="/")
    return response


def set_session_cookie(response, token: str, *, max_age: int, secure: bool):
    """The session: the signed token itself, HttpOnly, sent only on same-site requests, for the token's lifetime."""
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure, max_age=max_age,
                        path="/")
    return response


def _form(next_path: str, csrf: str, message: str = "", where: str = "") -> str:
    note = f'<p class="error">{html.escape(message)}</p>' if message else ""
    if where:
        note += f'<p class="meta" id="lake">{html.escape(where)}</p>'
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>cst: sign in</title>
<link rel="stylesheet" href="/static/cst.css"></head><body class="login"><main>
<h1>cst</h1>{note}
<form method="post" action="/login">
<input type="hidden" name="next" value="{html.escape(next_path)}">
<input type="hidden" name="csrf" value="{html.escape(csrf)}">
<label>User <input name="username" id="username" autocomplete="username" required maxlength="64"></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password" required
maxlength="256"></label>
<button type="submit" id="sign-in">Sign in</button></form></main></body></html>"""


def add_login(app: FastAPI, issuer: DevIssuer, *, secure_cookies: bool, throttle: Throttle | None = None,
              lake_uri: str = "") -> None:
    """`lake_uri`: the lake whose users sign in here, said on the form (one machine, on loopback: a user added to
    another lake, e.g. ./lake when --lake was forgotten, is told where this server looks)."""
    throttle = throttle or Throttle()

    def _where() -> str:
        if not lake_uri:
            return ""
        n = len(issuer.users())
        if not n:
            return (f"No user in the lake at {lake_uri} yet: add one with `cst users add NAME --group viewer "
                    f"--lake {lake_uri}`.")
        return f"Signing in to the lake at {lake_uri} ({n} user{'s' if n != 1 else ''})."

    def _csrf(request: Request) -> str:
        return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)

    def _with_csrf(response, token: str):
        return set_csrf_cookie(response, token, secure=secure_cookies)

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002 - the query's name
        token = _csrf(request)
        return _with_csrf(HTMLResponse(_form(safe_next(next), token, where=_where())), token)

    @app.post("/login", include_in_schema=False)
    def login(request: Request, username: str = Form(max_length=64), password: str = Form(max_length=256),
              csrf: str = Form(max_length=128), next: str = Form("/", max_length=512)):  # noqa: A002
        expected = request.cookies.get(CSRF_COOKIE, "")
        if not expected or not secrets.compare_digest(csrf, expected):
            return JSONResponse({"error": "csrf", "message": "reload the sign-in page"}, status_code=403)
        client = request.client.host if request.client else "unknown"
        keys = (f"user:{username}", f"ip:{client}")
        if throttle.blocked(*keys):
            return JSONResponse({"error": "too_many_attempts", "message": "wait a few minutes"}, status_code=429)
        try:
            token = issuer.login(username, password)
        except Unauthorized as exc:
            throttle.failed(*keys)
            return _with_csrf(HTMLResponse(_form(safe_next(next), expected, exc.message, _where()), status_code=401),
                              expected)
        response = RedirectResponse(safe_next(next), status_code=303)
        set_session_cookie(response, token, max_age=TOKEN_SECONDS, secure=secure_cookies)
        # A fresh CSRF token with every session.
        return _with_csrf(response, secrets.token_urlsafe(24))

    @app.post("/logout", include_in_schema=False)
    def logout() -> RedirectResponse:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/auth/.well-known/jwks.json", include_in_schema=False)
    def jwks() -> dict:
        return issuer.jwks()
