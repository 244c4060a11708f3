"""Browser sign-in in the cloud: the user pool's managed login pages through the OAuth 2.0 authorization-code grant
with PKCE; the session and CSRF cookies are those of the local sign-in.

`/login` sends the browser to `{domain}/oauth2/authorize` with a fresh `state` and an S256 code challenge; the state,
the code verifier and the page to return to wait in a short-lived HttpOnly cookie that only `/auth/callback` sees
(SameSite=Lax: it has to ride along on the navigation back from Cognito). The callback checks the state, redeems the
code at `{domain}/oauth2/token` (a public client: the verifier, no secret), verifies the ID token with the API's own
verifier and stores it as the `cst_session` cookie for the token's lifetime. That cookie is SameSite=Strict, so a
browser would not send it on a redirect whose chain began at Cognito: the callback answers a small page that moves on
with a meta refresh (a same-site navigation; no script, the CSP stays `default-src 'self'`). `/logout` clears the
session and ends the Cognito session too. Every refusal is a JSON error code, never a trace.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.client
import json
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

import jwt
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from services.api.auth import Unauthorized, Verifier
from services.api.login import (
    SESSION_COOKIE,
    safe_next,
    set_csrf_cookie,
    set_session_cookie,
)
from shared.errors import CstError

FLOW_COOKIE = "cst_login"
# Where the user pool client sends browsers after signing in and after signing out (the CDK app registers both).
CALLBACK_PATH, LOGIN_PATH = "/auth/callback", "/login"
# Long enough to type a password and a one-time code on the managed login page.
FLOW_SECONDS = 600
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,64}$")

# (token endpoint URL, form fields) -> the endpoint's JSON answer; raises CstError when there is none.
TokenFetch = Callable[[str, dict[str, str]], dict]


def post_form(url: str, form: dict[str, str], timeout_s: float = 10.0) -> dict:
    """A form POST to the user pool's token endpoint over HTTPS (urllib: nothing beyond the standard library)."""
    request = urllib.request.Request(url, data=urlencode(form).encode(), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              "Accept": "application/json"})
    try:
        # nosec B310 - the user pool's token endpoint from the settings (an HTTPS URL the CDK app sets; no file: or
        # custom scheme reaches here from a request)
        with urllib.request.urlopen(request, timeout=timeout_s) as r:  # nosec B310
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        # Cognito answers 400 {"error": "invalid_grant"} for a used, expired or foreign code or a wrong verifier.
        try:
            reason = json.loads(exc.read()).get("error", "")
        except (OSError, ValueError, AttributeError):
            reason = ""
        reason = reason if isinstance(reason, str) and _OAUTH_ERROR.match(reason) else f"HTTP {exc.code}"
        raise CstError("token_exchange_refused", f"the sign-in service refused the code ({reason})") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:  # unreachable, reset, timed out, not JSON
        raise CstError("token_exchange_failed",
                       f"the sign-in service could not be reached ({type(exc).__name__})") from None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def code_challenge(verifier: str) -> str:
    """RFC 7636 S256: base64url(SHA-256(verifier)) without padding."""
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


def _pack(flow: dict[str, str]) -> str:
    return _b64(json.dumps(flow, separators=(",", ":")).encode())


def _unpack(value: str | None) -> dict[str, str] | None:
    if not value or len(value) > 2048:
        return None
    try:
        flow = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except ValueError:
        return None
    if not isinstance(flow, dict) or not all(isinstance(flow.get(k), str) for k in ("state", "verifier", "next")):
        return None
    return flow


def _refuse(status: int, code: str, message: str) -> JSONResponse:
    response = JSONResponse({"error": code, "message": message}, status_code=status)
    response.delete_cookie(FLOW_COOKIE, path=CALLBACK_PATH)
    return response


def _onward(next_path: str) -> str:
    target = html.escape(next_path, quote=True)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="0;url={target}"><title>cst: signed in</title>
<link rel="stylesheet" href="/static/cst.css"></head><body class="login"><main>
<h1>cst</h1><p>Signed in. <a href="{target}">Continue</a></p></main></body></html>"""


def add_hosted_login(app: FastAPI, verifier: Verifier, *, domain_url: str, client_id: str, redirect_uri: str,
                     logout_uri: str | None = None, secure_cookies: bool = True, fetch_token: TokenFetch = post_form,
                     now: Callable[[], float] = time.time) -> None:
    """`/login`, `/auth/callback` and `/logout` against the user pool's domain. `redirect_uri` is this site's
    callback as registered on the client; `logout_uri` (default: this site's `/login`) is where Cognito sends the
    browser after signing out, registered on the client as well."""
    domain = domain_url.rstrip("/")
    if logout_uri is None:
        site = urlsplit(redirect_uri)
        logout_uri = f"{site.scheme}://{site.netloc}{LOGIN_PATH}"

    @app.get(LOGIN_PATH, include_in_schema=False)
    def login(next: str = Query("/", max_length=512)) -> RedirectResponse:
        state, code_verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(64)
        query = urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                           "scope": "openid", "state": state, "code_challenge": code_challenge(code_verifier),
                           "code_challenge_method": "S256"})
        response = RedirectResponse(f"{domain}/oauth2/authorize?{query}", status_code=303)
        response.set_cookie(FLOW_COOKIE, _pack({"state": state, "verifier": code_verifier, "next": safe_next(next)}),
                            max_age=FLOW_SECONDS, httponly=True, secure=secure_cookies, samesite="lax",
                            path=CALLBACK_PATH)
        return response

    @app.get(CALLBACK_PATH, include_in_schema=False)
    def callback(request: Request, code: str | None = Query(None, max_length=2048),
                 state: str | None = Query(None, max_length=512),
                 error: str | None = Query(None, max_length=256)):
        if error is not None:
            reason = error if _OAUTH_ERROR.match(error) else "an error"
            return _refuse(400, "sign_in_failed", f"the sign-in page answered {reason}; sign in again")
        flow = _unpack(request.cookies.get(FLOW_COOKIE))
        if flow is None:
            return _refuse(400, "sign_in_expired", "the sign-in took too long or began elsewhere; sign in again")
        if not state or not secrets.compare_digest(state.encode(), flow["state"].encode()):
            return _refuse(400, "bad_state", "the answer does not belong to this sign-in; sign in again")
        if not code:
            return _refuse(400, "no_code", "the sign-in page sent no code; sign in again")
        try:
            tokens = fetch_token(f"{domain}/oauth2/token", {
                "grant_type": "authorization_code", "client_id": client_id, "code": code,
                "redirect_uri": redirect_uri, "code_verifier": flow["verifier"]})
        except CstError as exc:
            return _refuse(502, exc.code, exc.message)
        id_token = tokens.get("id_token") if isinstance(tokens, dict) else None
        if not isinstance(id_token, str):
            return _refuse(502, "token_exchange_failed", "the sign-in service answered no ID token")
        try:
            who = verifier.verify(id_token)
        except Unauthorized as exc:
            return _refuse(401, exc.code, exc.message)
        if who.token_use != "id":
            return _refuse(401, "wrong_token_use", "the sign-in service answered no ID token")
        # Verified above; only the lifetime is read here.
        lifetime = int(float(jwt.decode(id_token, options={"verify_signature": False})["exp"]) - now())
        if lifetime <= 0:
            return _refuse(401, "token_expired", "the token has expired; sign in again")
        # The cookie is ours but travels through the browser: the target is checked again.
        response = HTMLResponse(_onward(safe_next(flow["next"])))
        set_session_cookie(response, id_token, max_age=lifetime, secure=secure_cookies)
        set_csrf_cookie(response, secrets.token_urlsafe(24), secure=secure_cookies)
        response.delete_cookie(FLOW_COOKIE, path=CALLBACK_PATH, secure=secure_cookies, httponly=True, samesite="lax")
        return response

    @app.post("/logout", include_in_schema=False)
    def logout() -> RedirectResponse:
        query = urlencode({"client_id": client_id, "logout_uri": logout_uri})
        response = RedirectResponse(f"{domain}/logout?{query}", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response
