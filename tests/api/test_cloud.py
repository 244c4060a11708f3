"""The API as it runs in Lambda: browser sign-in through the user pool's managed login (authorization code with PKCE
against a loopback stand-in for Cognito's token endpoint and JWKS, tokens signed by a test key), and operators'
runs and retrains through the Mangum handler starting Step Functions executions (moto)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from services.api.app import CSRF_HEADER, create_app
from services.api.auth import OPERATOR, VIEWER, KeySet, Verifier
from services.api.hosted_login import FLOW_COOKIE, add_hosted_login
from services.api.login import CSRF_COOKIE, SESSION_COOKIE
from shared.settings import Settings
from shared.storage import LocalLake
from tests.ingest.fakes.server import closed_port

CLIENT_ID = "dashboard-client"
SITE = "https://testserver"
REDIRECT_URI = f"{SITE}/auth/callback"
KID = "test-key-1"
TOKEN_SECONDS = 3600


class FakeCognito:
    """The parts of a user pool's domain the API talks to, on 127.0.0.1: the JWKS under the issuer, and the token
    endpoint redeeming a code once, for the client and redirect URI it was issued to, when the code verifier hashes
    to the challenge sent to /oauth2/authorize (Cognito's documented answers: the five token fields, or 400
    {"error": "invalid_grant"}). `sign_in` plays the user at the managed login page: it turns the authorize URL the
    API sent the browser to into the code Cognito would send back."""

    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwks = {"keys": [{**json.loads(RSAAlgorithm.to_jwk(self.key.public_key())), "kid": KID,
                               "alg": "RS256", "use": "sig"}]}
        self.codes: dict[str, dict] = {}
        self.token_requests: list[tuple[dict[str, str], str | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, status: int, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/pool/.well-known/jwks.json":
                    self._answer(200, fake.jwks)
                else:
                    self._answer(404, {"error": "not_found"})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                fake.token_requests.append((form, self.headers.get("Authorization")))
                if self.path != "/oauth2/token":
                    return self._answer(404, {"error": "not_found"})
                issued = fake.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if (form.get("grant_type") != "authorization_code" or issued is None
                        or form.get("client_id") != issued["client_id"]
                        or form.get("redirect_uri") != issued["redirect_uri"] or challenge != issued["challenge"]):
                    return self._answer(400, {"error": "invalid_grant"})
                user = {k: v for k, v in issued["claims"].items() if k in ("username", "groups")}
                self._answer(200, {"id_token": fake.token(**issued["claims"]),
                                   "access_token": fake.token(token_use="access", client_id=issued["client_id"], **user),
                                   "refresh_token": secrets.token_urlsafe(64), "expires_in": TOKEN_SECONDS,
                                   "token_type": "Bearer"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.issuer = f"{self.url}/pool"
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-cognito", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def token(self, *, username: str = "otto", groups: tuple[str, ...] = (OPERATOR,), aud: str = CLIENT_ID,
              token_use: str = "id", **extra) -> str:
        now = int(time.time())
        claims = {"sub": f"sub-{username}", "iss": self.issuer, "token_use": token_use, "aud": aud,
                  "cognito:username": username, "cognito:groups": list(groups), "auth_time": now, "iat": now,
                  "exp": now + TOKEN_SECONDS, **extra}
        if token_use == "access":
            claims.pop("aud")
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KID})

    def verifier(self) -> Verifier:
        return Verifier(self.issuer, CLIENT_ID, KeySet(lambda: self.jwks))

    def sign_in(self, authorize_url: str, **claims) -> dict[str, str]:
        """The user signs in at the managed login: Cognito checks the request and redirects back with a code and the
        state it was given. Returns the callback's query."""
        url = urlsplit(authorize_url)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        assert f"{url.scheme}://{url.netloc}{url.path}" == f"{self.url}/oauth2/authorize"
        assert q["response_type"] == "code" and q["scope"] == "openid" and q["code_challenge_method"] == "S256"
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"client_id": q["client_id"], "redirect_uri": q["redirect_uri"],
                            "challenge": q["code_challenge"], "claims": claims}
        return {"code": code, "state": q["state"]}


@pytest.fixture
def cognito():
    fake = FakeCognito()
    yield fake
    fake.close()


@pytest.fixture
def browser(cognito, tmp_path):
    app = create_app(Settings(_env_file=None), LocalLake(tmp_path), cognito.verifier())
    add_hosted_login(app, cognito.verifier(), domain_url=cognito.url, client_id=CLIENT_ID, redirect_uri=REDIRECT_URI)
    return TestClient(app, base_url=SITE, follow_redirects=False)


def set_cookies(response) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


def attributes(header: str) -> dict[str, str]:
    parts = [p.strip() for p in header.split(";")[1:]]
    return {p.split("=", 1)[0].lower(): (p.split("=", 1)[1] if "=" in p else "") for p in parts}


def test_sign_in_sends_the_browser_to_the_managed_login_with_pkce_and_keeps_the_flow_for_the_callback(browser,
                                                                                                        cognito):
    r = browser.get("/login", params={"next": "/runs"})
    assert r.status_code == 303
    url = urlsplit(r.headers["location"])
    q = parse_qs(url.query)
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{cognito.url}/oauth2/authorize"
    assert {k: v[0] for k, v in q.items() if k not in ("state", "code_challenge")} == {
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI, "scope": "openid",
        "code_challenge_method": "S256"}
    assert len(q["state"][0]) >= 32 and len(q["code_challenge"][0]) == 43  # base64url of a SHA-256, unpadded
    flow = attributes(set_cookies(r)[FLOW_COOKIE])
    # Lax: the cookie has to come back on the navigation from Cognito; only the callback sees it, briefly.
    assert flow["samesite"] == "lax" and "httponly" in flow and "secure" in flow
    assert flow["path"] == "/auth/callback" and int(flow["max-age"]) == 600
    again = browser.get("/login")
    assert parse_qs(urlsplit(again.headers["location"]).query)["state"] != q["state"]


@pytest.mark.parametrize("asked,lands", [("/runs?coin=BTC", "/runs?coin=BTC"), ("//evil.example", "/"),
                                         ("https://evil.example/x", "/"), ("/\\evil.example", "/")])
def test_the_callback_redeems_the_code_and_sets_a_strict_session_for_the_token_lifetime(browser, cognito, asked,
                                                                                        lands):
    authorize = browser.get("/login", params={"next": asked}).headers["location"]
    r = browser.get("/auth/callback", params=cognito.sign_in(authorize, username="otto", groups=(OPERATOR,)))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    # A page, not a redirect: the Strict cookie is sent only once the browser moves on from our own page.
    assert f'<meta http-equiv="refresh" content="0;url={lands.replace("&", "&amp;")}">' in r.text
    assert "<script" not in r.text and "default-src 'self'" in r.headers["content-security-policy"]
    cookies = set_cookies(r)
    session, csrf, flow = (attributes(cookies[k]) for k in (SESSION_COOKIE, CSRF_COOKIE, FLOW_COOKIE))
    assert "httponly" in session and "secure" in session and session["samesite"] == "strict"
    assert session["path"] == "/" and TOKEN_SECONDS - 60 <= int(session["max-age"]) <= TOKEN_SECONDS
    assert "httponly" not in csrf and "secure" in csrf and csrf["samesite"] == "strict"
    assert int(flow["max-age"]) == 0  # the flow is spent
    # The code was redeemed as a public client does: the verifier, no secret.
    ((form, authorization),) = cognito.token_requests
    assert set(form) == {"grant_type", "client_id", "code", "redirect_uri", "code_verifier"}
    assert form["grant_type"] == "authorization_code" and form["redirect_uri"] == REDIRECT_URI
    assert authorization is None
    me = browser.get("/api/me")
    assert me.status_code == 200 and me.json() == {"username": "otto", "groups": [OPERATOR], "operator": True}
    # The fresh CSRF cookie is what state changes must echo.
    assert browser.post("/api/actions/run").status_code == 403
    assert browser.post("/api/actions/run", headers={CSRF_HEADER: browser.cookies[CSRF_COOKIE]}).status_code == 503


def test_a_wrong_state_is_refused_before_any_code_is_redeemed(browser, cognito):
    authorize = browser.get("/login").headers["location"]
    answer = cognito.sign_in(authorize)
    r = browser.get("/auth/callback", params={**answer, "state": "forged" + answer["state"][6:]})
    assert r.status_code == 400 and r.json()["error"] == "bad_state"
    assert SESSION_COOKIE not in set_cookies(r) and cognito.token_requests == []
    # One attempt per sign-in: the flow is spent, even the right state is turned away now.
    again = browser.get("/auth/callback", params=answer)
    assert again.status_code == 400 and again.json()["error"] == "sign_in_expired" and cognito.token_requests == []


def test_a_callback_without_the_flow_cookie_is_refused(browser, cognito):
    answer = cognito.sign_in(browser.get("/login").headers["location"])
    browser.cookies.clear()  # another browser, or the flow cookie expired
    r = browser.get("/auth/callback", params=answer)
    assert r.status_code == 400 and r.json()["error"] == "sign_in_expired"
    assert SESSION_COOKIE not in set_cookies(r) and cognito.token_requests == []


def test_a_token_issued_to_another_client_is_refused(browser, cognito):
    authorize = browser.get("/login").headers["location"]
    r = browser.get("/auth/callback", params=cognito.sign_in(authorize, aud="another-client"))
    assert r.status_code == 401 and r.json()["error"] == "wrong_audience"
    assert SESSION_COOKIE not in set_cookies(r)
    assert browser.get("/api/me").status_code == 401
    # An access token for the right client in the ID token's place is not a sign-in either.
    authorize = browser.get("/login").headers["location"]
    swapped = browser.get("/auth/callback", params=cognito.sign_in(authorize, token_use="access", client_id=CLIENT_ID))
    assert swapped.status_code == 401 and swapped.json()["error"] == "wrong_token_use"
    assert SESSION_COOKIE not in set_cookies(swapped)


def test_refused_and_unreachable_token_endpoints_answer_codes_not_traces(browser, cognito, tmp_path):
    authorize = browser.get("/login").headers["location"]
    answer = cognito.sign_in(authorize)
    cognito.codes.clear()  # the code expired at Cognito before the browser came back
    r = browser.get("/auth/callback", params=answer)
    assert r.status_code == 502 and r.json() == {"error": "token_exchange_refused",
                                                 "message": "the sign-in service refused the code (invalid_grant)"}
    app = create_app(Settings(_env_file=None), LocalLake(tmp_path), cognito.verifier())
    add_hosted_login(app, cognito.verifier(), domain_url=f"http://127.0.0.1:{closed_port()}", client_id=CLIENT_ID,
                     redirect_uri=REDIRECT_URI)
    c = TestClient(app, base_url=SITE, follow_redirects=False)
    state = parse_qs(urlsplit(c.get("/login").headers["location"]).query)["state"][0]
    down = c.get("/auth/callback", params={"code": "abc", "state": state})
    assert down.status_code == 502 and down.json()["error"] == "token_exchange_failed"
    assert "Traceback" not in down.text and "Traceback" not in r.text
    denied = browser.get("/auth/callback", params={"error": "access_denied", "state": "x"})
    assert denied.status_code == 400 and denied.json()["error"] == "sign_in_failed"


def test_sign_out_clears_the_session_and_ends_the_cognito_session(browser, cognito):
    authorize = browser.get("/login").headers["location"]
    browser.get("/auth/callback", params=cognito.sign_in(authorize))
    r = browser.post("/logout")
    assert r.status_code == 303
    url = urlsplit(r.headers["location"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{cognito.url}/logout"
    assert parse_qs(url.query) == {"client_id": [CLIENT_ID], "logout_uri": [f"{SITE}/login"]}
    assert int(attributes(set_cookies(r)[SESSION_COOKIE])["max-age"]) == 0
    assert browser.get("/api/me").status_code == 401


# --- the Lambda handler -----------------------------------------------------------------------------------------


def http_api_event(method: str, path: str, *, token: str | None = None, body: dict | None = None,
                   query: dict | None = None) -> dict:
    """An API Gateway HTTP API (payload 2.0) event as the integration sends it."""
    headers = {"host": "abc123.execute-api.eu-west-1.amazonaws.com", "x-forwarded-proto": "https",
               "x-forwarded-port": "443"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if body is not None:
        headers["content-type"] = "application/json"
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": urlencode(query or {}),
            "headers": headers, "body": json.dumps(body) if body is not None else None, "isBase64Encoded": False,
            "requestContext": {"http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                        "sourceIp": "203.0.113.7", "userAgent": "test"},
                               "requestId": "r1", "routeKey": "$default", "stage": "$default",
                               "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
                               "accountId": "123456789012", "apiId": "abc123"}}


@pytest.fixture
def cloud(cognito, monkeypatch):
    """The Lambda handler built from the environment the CDK app sets, over moto's S3 and Step Functions."""
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    from services.api import lambda_handler
    from shared.settings import get_settings

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(key, value)
    with moto.mock_aws():
        boto3.client("s3", region_name="eu-west-1").create_bucket(
            Bucket="cst-lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        sfn = boto3.client("stepfunctions", region_name="eu-west-1")
        arn = sfn.create_state_machine(
            name="cst-pipeline", roleArn="arn:aws:iam::123456789012:role/cst-pipeline",
            definition=json.dumps({"StartAt": "start", "States": {"start": {"Type": "Pass", "End": True}}}),
        )["stateMachineArn"]
        for key, value in {"CST_LAKE__URI": "s3://cst-lake", "CST_AWS_REGION": "eu-west-1",
                           "CST_API__ISSUER": cognito.issuer, "CST_API__CLIENT_ID": CLIENT_ID,
                           "CST_API__LOGIN_DOMAIN": cognito.url, "CST_API__PUBLIC_URL": SITE,
                           "CST_API__STATE_MACHINE_ARN": arn}.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        monkeypatch.setattr(lambda_handler, "_handler", None)
        yield {"handler": lambda_handler.handler, "sfn": sfn, "arn": arn,
               "s3": boto3.client("s3", region_name="eu-west-1")}
    get_settings.cache_clear()


def test_an_operators_retrain_through_the_lambda_handler_starts_one_execution_with_that_run_start(cloud, cognito,
                                                                                                  lambda_context):
    handler, sfn, arn = cloud["handler"], cloud["sfn"], cloud["arn"]
    viewer = handler(http_api_event("POST", "/api/actions/run", token=cognito.token(username="vera",
                                                                                    groups=(VIEWER,))), lambda_context)
    assert viewer["statusCode"] == 403 and sfn.list_executions(stateMachineArn=arn)["executions"] == []
    answer = handler(http_api_event("POST", "/api/actions/retrain", token=cognito.token(), body={"horizon": "24h"}),
                     lambda_context)
    assert answer["statusCode"] == 202, answer["body"]
    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    assert json.loads(answer["body"]) == {"started": execution["executionArn"]}
    started = sfn.describe_execution(executionArn=execution["executionArn"])
    assert json.loads(started["input"]) == {"source": "live", "retrain": True, "retrain_only": ["24h"]}
    # The audit log in the lake names who asked and the execution it started.
    keys = [o["Key"] for o in cloud["s3"].list_objects_v2(Bucket="cst-lake", Prefix="audit/")["Contents"]]
    (audit,) = [json.loads(cloud["s3"].get_object(Bucket="cst-lake", Key=k)["Body"].read()) for k in keys]
    assert (audit["who"], audit["action"], audit["detail"], audit["result"]) == (
        "otto", "retrain", {"horizon": "24h"}, execution["executionArn"])
    run = handler(http_api_event("POST", "/api/actions/run", token=cognito.token()), lambda_context)
    assert run["statusCode"] == 202
    inputs = [json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"])
              for e in sfn.list_executions(stateMachineArn=arn)["executions"]]
    assert sorted(inputs, key=lambda i: i["retrain"]) == [
        {"source": "live", "retrain": False, "retrain_only": []},
        {"source": "live", "retrain": True, "retrain_only": ["24h"]}]
    # The execution is named after the cycle and the action: a second start of this cycle's run is refused with
    # the running one's ARN, and no second execution exists.
    again = handler(http_api_event("POST", "/api/actions/run", token=cognito.token()), lambda_context)
    running = json.loads(run["body"])["started"]
    assert again["statusCode"] == 409 and running in json.loads(again["body"])["message"], again["body"]
    assert len(sfn.list_executions(stateMachineArn=arn)["executions"]) == 2
    # An event that is not an HTTP API request answers 400 in the API's error shape.
    odd = handler({"hello": "world"}, lambda_context)
    assert odd["statusCode"] == 400 and json.loads(odd["body"])["error"] == "bad_event"


def test_the_lambda_handler_signs_browsers_in_through_the_pool_domain(cloud, cognito, lambda_context):
    handler = cloud["handler"]
    login = handler(http_api_event("GET", "/login", query={"next": "/runs"}), lambda_context)
    assert login["statusCode"] == 303
    location = login["headers"]["location"]
    assert location.startswith(f"{cognito.url}/oauth2/authorize?")
    assert parse_qs(urlsplit(location).query)["redirect_uri"] == [REDIRECT_URI]
    assert any(c.startswith(f"{FLOW_COOKIE}=") for c in login["cookies"])
    health = handler(http_api_event("GET", "/health"), lambda_context)
    assert health["statusCode"] == 200 and json.loads(health["body"]) == {"status": "ok"}
