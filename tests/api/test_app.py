"""The API over a lake written by real runs: roles, cookies and CSRF, the audit log, feedback, errors without
traces, security headers, and the Mangum handler answering API Gateway v2 events as the app answers directly."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("torch")

from fastapi.testclient import TestClient  # noqa: E402

from services.api.app import (  # noqa: E402
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    Actions,
    create_app,
)
from services.api.issuer import DevIssuer  # noqa: E402
from services.api.models import ReliabilityBin  # noqa: E402
from shared.contracts import ms_to_iso
from shared.settings import Settings  # noqa: E402
from shared.storage import LocalLake  # noqa: E402
from tests.conftest import daily_source  # noqa: E402

COINS = ("BTC", "ETH", "XRP", "LTC", "ADA")
TINY = {"folds": 2, "trials": {"lr": 1, "gbt": 1, "gru": 1}, "timeout_s": 120, "epochs": 1, "gbt_max_estimators": 50}
PASSWORD = "correct horse battery"
ISSUER = "http://127.0.0.1/auth"


@pytest.fixture(scope="module")
def served(shared_data, tmp_path_factory):
    """Two daily runs of the real cycle on five coins, a viewer and an operator, the app over that lake."""
    from services import cli

    src = daily_source(shared_data, tmp_path_factory.mktemp("src") / "data", COINS)
    lake_dir = tmp_path_factory.mktemp("lake")
    mp = pytest.MonkeyPatch()
    mp.setenv("CST_HORIZONS", '["24h","7d"]')
    mp.setenv("CST_TRAINING__BUDGETS", json.dumps({"quick": TINY}))
    mp.setenv("CST_TRAINING__CALIBRATION_GRID", "64")
    for as_of in ("2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z"):
        assert cli.main(["run", "--source", str(src), "--lake", str(lake_dir), "--as-of", as_of]) == 0
    settings = Settings()
    mp.undo()
    issuer = DevIssuer.for_lake(str(lake_dir), ISSUER)
    issuer.add_user("vera", PASSWORD, "viewer")
    issuer.add_user("otto", PASSWORD, "operator")
    started = []
    app = create_app(settings, LocalLake(lake_dir), issuer.verifier(),
                     Actions(lambda request: started.append(request) or f"run-{len(started)}"))
    return {"app": app, "client": TestClient(app), "issuer": issuer, "lake": lake_dir, "started": started}


def bearer(served, user: str) -> dict:
    return {"Authorization": f"Bearer {served['issuer'].login(user, PASSWORD)}"}


def test_health_needs_no_token_and_says_nothing_else(served):
    r = served["client"].get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_viewer_reads_signals_predictions_coins_runs_models_and_quality(served):
    c, h = served["client"], bearer(served, "vera")
    sig = c.get("/api/signals", headers=h).json()
    assert sig["run_id"] and sig["signals"] == [] and set(sig["why_none"]) == {"24h", "7d"}
    # The cross-section beside them: no certified candidates, and the research basket with its label and legs.
    assert sig["cross_section"] == [] and set(sig["cross_section_why_none"]) == {"24h", "7d"}
    basket = sig["basket"]
    assert basket["label"].startswith("Research (no demonstrated skill) basket by the 7d cross-sectional score")
    assert len(basket["long"]) == len(basket["short"]) == 1 and basket["ranked"] == 5
    page = c.get("/api/predictions", params={"coin": "BTC", "horizon": "24h", "limit": 1}, headers=h).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["items"][0]["coin"] == "BTC"
    ranged = c.get("/api/predictions", params={"since": "2024-05-02T00:00:00Z", "until": "2024-05-02T00:00:00Z"},
                   headers=h).json()
    assert ranged["total"] == 10 and {r["decision_ts"] for r in ranged["items"]} == {1714608000000}
    coin = c.get("/api/coins/BTC", headers=h).json()
    assert set(coin["horizons"]) == {"24h", "7d"}
    day = coin["horizons"]["24h"]
    assert day["skill"] in ("no demonstrated skill", "skill demonstrated out of sample")
    assert len(day["interval"]) == 2 and day["certified"] is False and day["why_not_certified"]
    runs = c.get("/api/runs", headers=h).json()
    assert runs["total"] == 2 and runs["items"][0]["as_of"] == "2024-05-02T00:00:00Z"
    assert c.get(f"/api/runs/{runs['items'][0]['run_id']}", headers=h).json()["status"] in ("complete", "failed")
    models = c.get("/api/models", headers=h).json()
    version = models["24h"]["current"]
    assert version and any(v["current"] for v in models["24h"]["versions"])
    assert "# Model card" in c.get(f"/api/models/24h/{version}/card", headers=h).json()["card"]
    assert "series" in c.get("/api/quality", headers=h).json()


def test_operator_actions_are_refused_to_viewers_and_audited_for_operators(served):
    c = served["client"]
    assert c.post("/api/actions/run", headers=bearer(served, "vera")).status_code == 403
    assert served["started"] == []
    r = c.post("/api/actions/retrain", json={"horizon": "7d"}, headers=bearer(served, "otto"))
    assert r.status_code == 202 and served["started"][-1] == {"source": "live", "retrain": True, "retrain_only": ["7d"]}
    audit = [json.loads(p.read_text()) for p in Path(served["lake"]).glob("audit/date=*/*.json")]
    assert [(a["who"], a["action"], a["detail"], a["result"]) for a in audit] == [
        ("otto", "retrain", {"horizon": "7d"}, r.json()["started"])]


def test_performance_per_coin_and_horizon_with_reliability_and_drift(served):
    from services.api.reads import reliability

    c, h = served["client"], bearer(served, "vera")
    perf = c.get("/api/performance", headers=h).json()
    assert set(perf) == {"24h", "7d"}
    day = perf["24h"]  # the second run recorded the first run's 24h outcomes: one per coin
    assert day["outcomes"] == len(COINS) and {r["coin"] for r in day["coins"]} == set(COINS)
    assert all(r["window"] == 1 and r["hit_rate"] in (0.0, 1.0) for r in day["coins"])
    assert day["drift"]["outcomes"] == len(COINS) and perf["7d"]["outcomes"] == 0
    assert c.get("/api/performance", params={"horizon": "7d"}, headers=h).json().keys() == {"7d"}
    assert c.get("/api/performance", params={"horizon": "2h"}, headers=h).status_code == 404
    # Reliability bins: equal width, only bins with enough outcomes, the realized rate of the outcomes inside.
    from types import SimpleNamespace

    rows = [SimpleNamespace(p_up=0.55, realized_return=r) for r in (0.1, -0.1, 0.2, 0.3, -0.2)] + [
        SimpleNamespace(p_up=0.95, realized_return=1.0)]
    assert reliability(rows) == [ReliabilityBin(bin=[0.5, 0.6], n=5, mean_p=0.55, up_rate=0.6)]
    assert reliability(rows, min_count=1)[-1] == ReliabilityBin(bin=[0.9, 1.0], n=1, mean_p=0.95, up_rate=1.0)


def test_feedback_is_stored_beside_the_outcomes_by_coin_horizon_and_run(served):
    c, h = served["client"], bearer(served, "vera")
    run_id = c.get("/api/runs", headers=h).json()["items"][0]["run_id"]
    r = c.post("/api/feedback", headers=h, json={"horizon": "24h", "coin": "BTC", "run_id": run_id,
                                                 "decision_ts": 1714608000000, "useful": True, "note": "fine"})
    assert r.status_code == 201 and r.json()["stored"].startswith(f"feedback/horizon=24h/coin=BTC/run_id={run_id}/")
    stored = json.loads((Path(served["lake"]) / r.json()["stored"]).read_text())
    assert stored["by"] == "vera" and stored["useful"] is True
    # Only on a prediction that was made: made-up horizons, runs, coins and times are refused with their codes.
    good = {"horizon": "24h", "coin": "BTC", "run_id": run_id, "decision_ts": 1714608000000}
    for change, code in (({"horizon": "0d"}, "unknown_horizon"), ({"run_id": "20240101T000000Z-0"}, "unknown_run"),
                         ({"coin": "ZZZ"}, "unknown_prediction"), ({"decision_ts": 0}, "unknown_prediction")):
        bad = c.post("/api/feedback", headers=h, json={**good, **change})
        assert bad.status_code == 404 and bad.json()["error"] == code, (change, bad.json())
    assert c.post("/api/feedback", headers=h, json={**good, "traded": "yes"}).status_code == 422


def test_a_second_start_of_the_same_cycle_is_refused_while_it_runs_and_starts_are_limited_per_operator(served):
    from services.api.context import Actions
    from services.orchestrator.usecases import AlreadyRunning

    running: set[str] = set()

    def start(request: dict) -> str:
        name = "run" if not request.get("retrain") else "retrain-" + "-".join(request["retrain_only"])
        if name in running:
            raise AlreadyRunning(f"cycle-{name}")
        running.add(name)
        return f"cycle-{name}"

    settings = Settings(_env_file=None)
    settings.api.actions_per_user_per_hour = 3
    app = create_app(settings, LocalLake(served["lake"]), served["issuer"].verifier(), Actions(start))
    served["issuer"].add_user("olga", PASSWORD, "operator")  # an operator with no start in the last hour
    c, h = TestClient(app), bearer(served, "olga")
    before = len(list(Path(served["lake"]).glob("audit/date=*/*.json")))
    assert c.post("/api/actions/run", headers=h).status_code == 202
    again = c.post("/api/actions/run", headers=h)
    assert again.status_code == 409 and again.json() == {
        "error": "already_running", "message": "this cycle's run is still running: cycle-run"}
    assert c.post("/api/actions/retrain", headers=h, json={"horizon": "7d"}).status_code == 202
    assert c.post("/api/actions/retrain", headers=h, json={"horizon": "24h"}).status_code == 202
    limited = c.post("/api/actions/retrain", headers=h, json={"horizon": "24h"})
    assert limited.status_code == 429 and limited.json()["error"] == "too_many_actions"
    assert limited.headers["Retry-After"] == "600"
    audit = sorted(Path(served["lake"]).glob("audit/date=*/*.json"))[before:]
    results = [json.loads(p.read_text())["result"] for p in audit]
    assert sum(r.startswith("refused") for r in results) == 2 and len(results) == 5


def test_cookie_sessions_need_the_csrf_token_on_state_changes(served):
    c = TestClient(served["app"])
    token = served["issuer"].login("otto", PASSWORD)
    c.cookies.set(SESSION_COOKIE, token)
    c.cookies.set(CSRF_COOKIE, "t0k3n")
    assert c.get("/api/me").json()["operator"] is True  # reads need no CSRF token
    assert c.post("/api/actions/run").status_code == 403
    assert c.post("/api/actions/run", headers={CSRF_HEADER: "other"}).status_code == 403
    assert c.post("/api/actions/run", headers={CSRF_HEADER: "t0k3n"}).status_code == 202


@pytest.mark.parametrize("path,params", [
    ("/api/predictions", {"coin": "../../etc/passwd"}),
    ("/api/predictions", {"coin": "BTC' OR '1'='1"}),
    ("/api/predictions", {"run_id": "../../models/horizon=24h/CURRENT"}),
    ("/api/predictions", {"horizon": "24h;drop"}),
    ("/api/predictions", {"limit": 10_000_000}),
    ("/api/predictions", {"since": "x" * 5000}),
    ("/api/predictions", {"since": "not a time", "until": "2024-05-02T00:00:00Z"}),
    ("/api/coins/..%2F..%2Fauth", {}),
    ("/api/runs/..%2F..%2Fauth%2Fusers.json", {}),
    ("/api/models/24h/..%2F..%2F..%2Fauth/card", {}),
])
def test_hostile_parameters_are_refused_without_traces(served, path, params):
    r = served["client"].get(path, params=params, headers=bearer(served, "vera"))
    assert r.status_code in (404, 422)
    assert "Traceback" not in r.text and "argon2" not in r.text and PASSWORD not in r.text


def test_errors_are_codes_and_every_answer_carries_the_security_headers(served):
    c = served["client"]
    r = c.get("/api/signals")
    assert r.status_code == 401 and r.json()["error"] == "no_token" and r.headers["WWW-Authenticate"] == "Bearer"
    bad = c.get("/api/signals", headers={"Authorization": "Bearer abc.def.ghi"})
    assert bad.status_code == 401 and bad.json()["error"] in ("malformed_token", "wrong_algorithm", "unknown_key")
    for resp in (r, bad, c.get("/health")):
        assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


def test_mangum_answers_http_api_events_as_the_app_answers_directly(served):
    from mangum import Mangum

    handler = Mangum(served["app"], lifespan="off")
    token = served["issuer"].login("vera", PASSWORD)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    for path, query in (("/api/signals", ""), ("/api/predictions", "coin=ETH&limit=3"), ("/api/runs", ""),
                        ("/health", "")):
        event = {
            "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
            "headers": {"authorization": f"Bearer {token}", "host": "api.example.com", "x-forwarded-proto": "https",
                        "x-forwarded-port": "443"},
            "requestContext": {"http": {"method": "GET", "path": path, "protocol": "HTTP/1.1",
                                        "sourceIp": "203.0.113.7", "userAgent": "test"},
                               "authorizer": {"jwt": {"claims": claims, "scopes": None}},
                               "requestId": "r1", "routeKey": "$default", "stage": "$default",
                               "domainName": "api.example.com", "accountId": "123456789012", "apiId": "abc"},
            "isBase64Encoded": False,
        }
        answer = handler(event, None)
        direct = served["client"].get(path + (f"?{query}" if query else ""), headers={"Authorization": f"Bearer {token}"})
        assert answer["statusCode"] == direct.status_code, path
        assert json.loads(answer["body"]) == direct.json(), path
        assert answer["headers"]["x-frame-options"] == "DENY"


@pytest.fixture
def browser_app(served):
    app = create_app(Settings(_env_file=None), LocalLake(served["lake"]), served["issuer"].verifier(),
                     issuer=served["issuer"], secure_cookies=True)
    return TestClient(app, base_url="https://testserver", follow_redirects=False)


def _sign_in(c: TestClient, user: str, password: str, next_path: str = "/"):
    c.get("/login")
    return c.post("/login", data={"username": user, "password": password, "next": next_path,
                                  "csrf": c.cookies.get(CSRF_COOKIE)})


def test_sign_in_sets_an_httponly_samesite_secure_session_and_redirects_only_inside_the_site(browser_app):
    c = browser_app
    r = _sign_in(c, "vera", PASSWORD, "/api/me")
    assert r.status_code == 303 and r.headers["location"] == "/api/me"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(f"{SESSION_COOKIE}="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie
    assert c.get("/api/me").json()["username"] == "vera"
    for hostile in ("//evil.example", "https://evil.example/x", "/\\evil.example", "javascript:alert(1)"):
        fresh = TestClient(browser_app.app, base_url="https://testserver", follow_redirects=False)
        assert _sign_in(fresh, "vera", PASSWORD, hostile).headers["location"] == "/"


def test_the_sign_in_form_says_which_lake_its_users_are_in(browser_app, served, tmp_path):
    lake = str(LocalLake(served["lake"]).uri)
    form = browser_app.get("/login").text
    assert f"Signing in to the lake at {lake}" in form
    refused = _sign_in(browser_app, "nobody", PASSWORD)
    assert refused.status_code == 401 and "unknown user or wrong password" in refused.text and lake in refused.text
    # A server over a lake without users says how to add one there (the user was added to another lake).
    from services.api.issuer import DevIssuer

    empty = DevIssuer(tmp_path / "keys", "http://127.0.0.1:8080/auth")
    other = LocalLake(tmp_path / "other")
    app = create_app(Settings(_env_file=None), other, empty.verifier(), issuer=empty, secure_cookies=True)
    page = TestClient(app, base_url="https://testserver").get("/login").text
    assert f"No user in the lake at {other.uri} yet" in page and f"--lake {other.uri}" in page


def test_sign_in_needs_its_csrf_token_and_throttles_guessing(browser_app):
    c = browser_app
    c.get("/login")
    assert c.post("/login", data={"username": "vera", "password": PASSWORD, "csrf": "forged"}).status_code == 403
    for _ in range(5):
        assert _sign_in(c, "otto", "wrong password!!").status_code == 401
    r = _sign_in(c, "otto", PASSWORD)  # even the right password waits once the limit is reached
    assert r.status_code == 429 and r.json()["error"] == "too_many_attempts"
    assert PASSWORD not in r.text


def test_cross_origin_requests_get_no_cors_grant(served):
    r = served["client"].get("/api/signals", headers={**bearer(served, "vera"), "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in {k.lower() for k in r.headers}
    pre = served["client"].options("/api/actions/run", headers={"Origin": "https://evil.example",
                                                                "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in {k.lower() for k in pre.headers}


LEAKS = ("Traceback", 'File "', "BEGIN RSA", "BEGIN PRIVATE", "$argon2", PASSWORD)


def test_every_hostile_token_is_refused_over_http_as_bearer_and_as_cookie_without_leaks(served):
    from tests.api.test_auth import _hostile

    cases = _hostile(served["issuer"])
    assert len(cases) >= 20
    c = TestClient(served["app"], follow_redirects=False)
    for name, (token, code) in cases.items():
        if not token:
            continue  # an empty bearer is "no token"
        r = c.get("/api/signals", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and r.json()["error"] == code, name
        c.cookies.set(SESSION_COOKIE, token)
        page = c.get("/runs")  # a page sends a browser with a bad session back to the sign-in form
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/runs", name
        c.cookies.clear()
        for answer in (r, page):
            assert not any(leak in answer.text for leak in LEAKS), name


def test_page_attacks_are_refused_and_lake_content_is_escaped(served, tmp_path):
    c = TestClient(served["app"], follow_redirects=False)
    token = served["issuer"].login("otto", PASSWORD)
    # A token in the query string is never read.
    assert c.get("/runs", params={"token": token}).status_code == 303
    c.cookies.set(SESSION_COOKIE, token)
    c.cookies.set(CSRF_COOKIE, "t0k3n")
    # Forms without the CSRF field, or with another value, are refused; so is a viewer who posts anyway.
    assert c.post("/actions/run").status_code == 403
    assert c.post("/actions/run", data={"csrf": "forged"}).status_code == 403
    assert c.post("/actions/retrain", data={"csrf": "t0k3n", "horizon": "../../x"}).status_code == 404
    c.cookies.set(SESSION_COOKIE, served["issuer"].login("vera", PASSWORD))
    r = c.post("/actions/run", data={"csrf": "t0k3n"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    # Hostile path parts answer 404 and are not reflected.
    for path in ("/coins/%3Cscript%3Ealert(1)%3C%2Fscript%3E", "/runs/..%2F..%2Fauth%2Fusers.json",
                 "/models/24h/..%2F..%2Fauth", "/coins/BTC?horizon=%3Cscript%3E"):
        r = c.get(path)
        assert r.status_code == 404 and "<script>" not in r.text, path
    assert c.get("/coin", params={"coin": "<script>"}).headers["location"] == "/ranges"
    # A browser is answered with a page it can read: what went wrong, its code, ways back; the API stays JSON.
    page = c.get("/coins/NOSUCHCOIN", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert 'id="error-code">unknown_coin<' in page.text and "no forecast for NOSUCHCOIN" in page.text
    assert c.get("/nowhere", headers={"Accept": "text/html"}).text.count("not_found") == 1
    api = c.get("/api/runs/nope", headers={"Accept": "text/html", **bearer(served, "vera")})
    assert api.headers["content-type"].startswith("application/json") and api.json()["error"]
    # Coin URLs ignore case: /coins/btc is BTC's page.
    r = c.get("/coins/btc?horizon=7d", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/coins/BTC?horizon=7d"
    # What the lake holds is shown as text, never as markup.
    lake = LocalLake(served["lake"])
    version = c.get("/api/models", headers=bearer(served, "vera")).json()["24h"]["current"]
    key = f"models/horizon=24h/version={version}/MODEL_CARD.md"
    original = lake.get(key)
    try:
        lake.put(key, original + b"\n<script>alert('card')</script>\n")
        page = c.get(f"/models/24h/{version}")
        assert page.status_code == 200 and "<script>alert" not in page.text
        assert "&lt;script&gt;alert(&#39;card&#39;)&lt;/script&gt;" in page.text
    finally:
        lake.put(key, original)
    # Pages carry the same security headers as the API, and no CORS grant.
    page = c.get("/", headers={"Origin": "https://evil.example"})
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert "access-control-allow-origin" not in {k.lower() for k in page.headers}


def test_a_runs_universe_is_in_its_answer_and_on_its_page(served, browser_app):
    """The coins a run's decision considered, with the rule that left out every other one: API and page."""
    c, h = served["client"], bearer(served, "vera")
    run_id = c.get("/api/runs", headers=h).json()["items"][0]["run_id"]
    universe = c.get(f"/api/runs/{run_id}", headers=h).json()["universes"]["1d"]
    assert universe["venue"] == "yahoo" and set(universe["members"]) >= {"BTC", "ETH"}
    _sign_in(browser_app, "vera", PASSWORD)
    page = browser_app.get(f"/runs/{run_id}").text
    assert f"1d universe at {ms_to_iso(universe['decision_ms'])} (yahoo): {len(universe['members'])} coins" in page


def test_the_board_shows_every_forecast_and_each_users_watchlist_first(served, browser_app):
    """Every coin and horizon of the newest decisions, as prices where the lake holds the close; a viewer's watched
    coins come first and can be shown alone; watchlists are per user and need the session's CSRF token."""
    c = browser_app
    _sign_in(c, "vera", PASSWORD)
    page = c.get("/board").text
    assert 'id="board"' in page and 'http-equiv="refresh" content="300"' in page
    rows = page.split("<tbody>")[1].split("</tbody>")[0].count("<tr")
    board = served["client"].get("/api/board", headers=bearer(served, "vera")).json()
    assert rows == len(board) > 0 and {r["horizon"] for r in board} <= {"1h", "24h", "7d", "30d"}
    # The close at each decision time comes from the lake; two runs in, no outcome has matured yet: the ranges are
    # those the models' held-out scores calibrate, centred on no move, each drawn as a price band.
    assert all(r["close"] > 0 for r in board)
    assert all(r["range_low"] < 0 < r["range_high"] and r["price_low"] < r["close"] < r["price_high"] for r in board)
    assert "not calibrated yet" not in page
    csrf = c.cookies.get(CSRF_COOKIE)
    assert c.post("/board/watch", data={"coin": "ETH", "csrf": "forged"}).status_code == 403
    assert c.post("/board/watch", data={"coin": "../x", "csrf": csrf}).status_code == 400
    assert c.post("/board/watch", data={"coin": "eth", "csrf": csrf}).status_code == 303
    first = c.get("/board").text.split("<tbody>")[1].split("</tr>")[0]
    assert "/coins/ETH?" in first and "★" in first
    only = c.get("/board?watched=true").text.split("<tbody>")[1].split("</tbody>")[0]
    assert only.count("<tr") == only.count("/coins/ETH?") > 0
    # Another user's board is theirs: nothing watched.
    other = TestClient(browser_app.app, base_url="https://testserver", follow_redirects=False)
    _sign_in(other, "otto", PASSWORD)
    assert "Watching: nothing yet" in other.get("/board").text
    assert c.post("/board/watch", data={"coin": "ETH", "action": "remove", "csrf": csrf}).status_code == 303
    assert "Watching: nothing yet" in c.get("/board").text


def test_an_operator_sends_a_test_alert_and_everyone_sees_the_last_alerts(served, browser_app):
    c = served["client"]
    assert c.post("/api/actions/test-alert", headers=bearer(served, "vera")).status_code == 403
    r = c.post("/api/actions/test-alert", headers=bearer(served, "otto"))
    assert r.status_code == 201 and r.json()["alert"]["event"] == "test" and r.json()["alert"]["deliveries"] == []
    listed = c.get("/api/alerts", headers=bearer(served, "vera")).json()
    assert listed[0]["key"] == r.json()["alert"]["key"] and len(listed) <= 50
    audit = [json.loads(p.read_text()) for p in sorted(Path(served["lake"]).glob("audit/date=*/*.json"))]
    assert any(a["action"] == "test_alert" and a["who"] == "otto" and a["result"] == "0/0 delivered" for a in audit)
    _sign_in(browser_app, "vera", PASSWORD)
    page = browser_app.get("/alerts").text
    assert 'id="alerts"' in page and "test alert" in page and 'id="test-alert"' not in page  # viewers: no button
