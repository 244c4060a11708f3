"""The dashboard in a real browser: Debian's Chromium driven by Selenium through /usr/bin/chromedriver, against
`cst serve` on loopback over a lake written by real runs. A viewer reads every page; an operator starts a run and a
retrain with the buttons; a viewer sees no buttons and is refused when posting anyway. Screenshots of every page are
written to build/screenshots/ (or $CST_SCREENSHOTS) for people to look at."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("torch")
selenium = pytest.importorskip("selenium")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.conftest import daily_source  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]
COINS = ("BTC", "ETH", "XRP", "LTC", "ADA")
TINY = {"folds": 2, "trials": {"lr": 1, "gbt": 1, "gru": 1}, "timeout_s": 120, "epochs": 1, "gbt_max_estimators": 50}
PASSWORD = "correct horse battery staple"
AS_OFS = ("2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z", "2024-05-03T00:00:00Z", "2024-05-10T00:00:00Z")
PAGES = {"/": "Signals", "/board": "Board", "/ranges": "Ranges", "/coins/BTC": "BTC", "/performance": "Performance", "/runs": "Runs",
         "/track-record": "Track record", "/quality": "Data quality", "/models": "Models", "/alerts": "Alerts"}
CHARTED = {"/ranges", "/coins/BTC", "/performance", "/runs", "/track-record"}

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip("Chromium and its driver are not installed: `apt-get install chromium chromium-driver` "
                "(make test does it when it can)", allow_module_level=True)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CST_")}
    env.update(CST_HORIZONS='["24h","7d"]', CST_TRAINING__BUDGETS=json.dumps({"quick": TINY}),
               CST_TRAINING__CALIBRATION_GRID="64")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(shared_data, tmp_path_factory):
    """Four daily runs on five real coins, a viewer and an operator, and `cst serve` over that lake."""
    src = daily_source(shared_data, tmp_path_factory.mktemp("src") / "data", COINS)
    lake = tmp_path_factory.mktemp("lake")
    cst = [sys.executable, "-m", "services.cli"]
    env = _env()
    for as_of in AS_OFS:
        done = subprocess.run([*cst, "run", "--source", str(src), "--lake", str(lake), "--as-of", as_of], env=env,
                              capture_output=True, text=True, cwd=ROOT, check=False)
        assert done.returncode == 0, f"cst run {as_of} exited {done.returncode}: {done.stderr[-3000:]}"
    done = subprocess.run([*cst, "reconcile", "--lake", str(lake)], env=env, capture_output=True, text=True, cwd=ROOT,
                          check=False)
    assert done.returncode == 0, f"cst reconcile exited {done.returncode}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    for name, group in (("vera", "viewer"), ("otto", "operator")):
        subprocess.run([*cst, "users", "add", name, "--group", group, "--password-stdin", "--lake", str(lake)],
                       input=PASSWORD + "\n", text=True, env=env, check=True, capture_output=True, cwd=ROOT)
    port = _free_port()
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("w")
    server = subprocess.Popen([*cst, "serve", "--lake", str(lake), "--port", str(port)], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, env={**env, "CST_API__RUN_SOURCE": str(src)})
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.1)
    else:
        server.kill()
        pytest.fail("cst serve did not answer /health")
    yield {"base": base, "lake": lake, "src": src}
    server.terminate()
    server.wait(10)
    log.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    out = Path(os.environ.get("CST_SCREENSHOTS", ROOT / "build" / "screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1400"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def sign_in(driver, site, user: str, page: str = "/") -> None:
    driver.get(site["base"] + page)
    assert "/login" in driver.current_url  # no session: sent to the sign-in form
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "who")))
    assert driver.current_url == site["base"] + page  # back where the browser was going


def charts_drawn(driver) -> int:
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.body.dataset.charts") is not None)
    return int(driver.execute_script("return document.body.dataset.charts"))


def errors_in_console(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]


def post_from_page(driver, path: str) -> int:
    """A form POST made by this page's own script, with the page's CSRF cookie: what a hand-made request would do."""
    return driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const csrf = document.cookie.split('; ').find(c => c.startsWith('cst_csrf=')).split('=')[1];
        fetch(arguments[0], {method: 'POST', body: new URLSearchParams({csrf: csrf, horizon: '24h'}),
                             redirect: 'manual'}).then(r => done(r.status));""", path)


def audit_entries(lake: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(lake.glob("audit/date=*/*.json"))]


def test_a_viewer_reads_every_page_with_its_charts_and_no_buttons(site, browser, shots):
    sign_in(browser, site, "vera")
    assert browser.find_element(By.ID, "who").text.startswith("vera") and "viewer" in browser.find_element(
        By.ID, "who").text
    for path, title in PAGES.items():
        browser.get(site["base"] + path)
        assert browser.find_element(By.TAG_NAME, "h1").text == title, path
        drawn = charts_drawn(browser)
        if path in CHARTED:
            assert drawn >= 1, path
            assert browser.execute_script(
                "return [...document.querySelectorAll('canvas[data-chart]')].every(c => c.dataset.drawn === '1')")
        assert not browser.find_elements(By.ID, "start-run") and not browser.find_elements(By.ID, "retrain")
        assert errors_in_console(browser) == [], path
        browser.save_screenshot(str(shots / f"viewer_{path.strip('/').replace('/', '_') or 'signals'}.png"))
    # What the pages say, from the lake the runs wrote.
    browser.get(site["base"] + "/")
    assert "No signals in this run" in browser.find_element(By.ID, "no-signals").text
    assert "24h:" in browser.find_element(By.ID, "no-signals").text
    # The market-neutral basket under its label, one long and one short name of the five ranked.
    assert "Research (no demonstrated skill) basket" in browser.find_element(By.CSS_SELECTOR, ".basket-label").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#basket-legs tbody tr")) == 2
    assert "No long or short candidates" in browser.find_element(By.ID, "no-cross-section").text
    browser.get(site["base"] + "/ranges")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#ranges-24h tbody tr")) == len(COINS)
    # Every coin's volatility forecast beside its range (a percentage, not a dash: the model carries one).
    vols = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#ranges-24h td.vol")]
    assert len(vols) == len(COINS) and all(v.endswith("%") for v in vols), vols
    browser.get(site["base"] + "/coins/BTC?horizon=24h")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#latest .card")) == 2
    card_vols = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#latest .card .vol")]
    assert len(card_vols) == 2 and all("forecast volatility" in v and v.endswith("%") for v in card_vols), card_vols
    assert browser.find_elements(By.ID, "price-chart") and browser.find_elements(By.ID, "shap-chart")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#outcomes tbody tr")) >= 1
    browser.get(site["base"] + "/runs")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")) >= len(AS_OFS)
    browser.find_element(By.CSS_SELECTOR, "#runs tbody tr a").click()
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Run ")
    browser.save_screenshot(str(shots / "viewer_run.png"))
    # The paper books: the research book follows the basket from the first run (05-01 to 05-10: ten closes) with
    # its equity against BTC and the equal-weight universe; the replayed backtest agrees to the cent.
    browser.get(site["base"] + "/track-record")
    assert "agree to the cent" in browser.find_element(By.ID, "reconciliation").text
    research = browser.find_element(By.ID, "book-research")
    assert "2024-05-01 to 2024-05-10" in research.text and "fills" in research.text
    assert len(research.find_elements(By.CSS_SELECTOR, "canvas[data-drawn='1']")) == 2
    assert "Nothing open" in browser.find_element(By.ID, "book-signals").text
    browser.get(site["base"] + "/models")
    browser.find_element(By.CSS_SELECTOR, "#models-24h tbody a").click()
    assert "Skill" in browser.find_element(By.ID, "model-card").text


def test_a_viewer_who_posts_an_action_anyway_is_refused(site, browser):
    sign_in(browser, site, "vera", "/runs")
    before = audit_entries(site["lake"])
    assert post_from_page(browser, "/actions/run") == 403
    assert post_from_page(browser, "/actions/retrain") == 403
    assert audit_entries(site["lake"]) == before


def test_an_operator_starts_a_run_and_a_retrain_from_the_runs_page(site, browser, shots):
    sign_in(browser, site, "otto", "/runs")
    runs_before = set(site["lake"].glob("runs/*/summary.json"))
    browser.find_element(By.ID, "start-run").click()
    flash = WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "flash"))).text
    assert flash.startswith("Started ")
    run_id = flash.removeprefix("Started ").rstrip(".")
    browser.save_screenshot(str(shots / "operator_runs.png"))
    # The local runner ran the whole cycle: its summary landed in the lake.
    deadline = time.time() + 600  # a wait, not a timing bar: a loaded machine runs the cycle slower
    while time.time() < deadline and not (site["lake"] / f"runs/run_id={run_id}/summary.json").exists():
        time.sleep(0.5)
    assert (site["lake"] / f"runs/run_id={run_id}/summary.json").exists()
    assert set(site["lake"].glob("runs/*/summary.json")) > runs_before
    browser.get(site["base"] + "/runs")
    assert not browser.find_elements(By.ID, "flash")
    browser.find_element(By.ID, "retrain-horizon").send_keys("7d")
    browser.find_element(By.ID, "retrain").click()
    assert WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "flash"))).text.startswith(
        "Started ")
    entries = audit_entries(site["lake"])
    assert [(e["who"], e["action"], e["detail"]) for e in entries[-2:]] == [
        ("otto", "start_run", {}), ("otto", "retrain", {"horizon": "7d"})]
    assert entries[-2]["result"] == run_id
    # A test alert from the Alerts page: sent (no channel here: recorded only) and listed.
    browser.get(site["base"] + "/alerts")
    browser.find_element(By.ID, "test-alert").click()
    assert WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "flash"))).text.startswith(
        "Test alert sent")
    assert "test alert" in browser.find_element(By.ID, "alerts").text
    browser.save_screenshot(str(shots / "operator_alerts.png"))
    # Signing out ends the session: pages send the browser back to the sign-in form.
    browser.find_element(By.ID, "logout").click()
    WebDriverWait(browser, 10).until(lambda d: "/login" in d.current_url)  # the sign-out answered
    browser.get(site["base"] + "/runs")
    assert "/login" in browser.current_url


def test_the_charting_library_is_served_by_the_app_itself(site, browser):
    sign_in(browser, site, "vera", "/ranges")
    sources = browser.execute_script("return [...document.scripts].map(s => s.src)")
    assert sources and all(s.startswith(site["base"] + "/static/") for s in sources)
    assert browser.execute_script("return typeof Chart") == "function"


def test_the_board_sorts_by_a_column_and_keeps_a_watchlist(site, browser, shots):
    sign_in(browser, site, "vera", "/board")
    rows = browser.find_elements(By.CSS_SELECTOR, "#board tbody tr")
    assert len(rows) == 2 * len(COINS)  # every coin on 24h and 7d
    header = browser.find_elements(By.CSS_SELECTOR, "#board thead th")[2]  # P(up)
    header.click()
    ups = [float(td.get_attribute("data-sort")) for td in browser.find_elements(By.CSS_SELECTOR, "#board tbody tr td:nth-child(3)")]
    assert ups == sorted(ups) and header.get_attribute("aria-sort") == "ascending"
    header.click()
    ups = [float(td.get_attribute("data-sort")) for td in browser.find_elements(By.CSS_SELECTOR, "#board tbody tr td:nth-child(3)")]
    assert ups == sorted(ups, reverse=True)
    browser.find_element(By.ID, "watch-coin").send_keys("XRP")
    browser.find_element(By.ID, "watch-add").click()
    # The form's answer reloads the page: an element found on the old page may go stale before it is read.
    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)).until(
        lambda d: "XRP" in d.find_element(By.ID, "watchlist").text)
    first = browser.find_element(By.CSS_SELECTOR, "#board tbody tr td a").text
    assert first == "XRP"
    browser.save_screenshot(str(shots / "viewer_board.png"))
    assert errors_in_console(browser) == []


def test_every_page_reads_on_a_phone_without_sideways_scrolling(site, browser, shots):
    """390 px wide (a phone): the page itself never scrolls sideways; wide tables scroll inside their box."""
    sign_in(browser, site, "vera")
    browser.set_window_size(390, 844)
    for path in [*PAGES, "/models"]:
        browser.get(site["base"] + path)
        charts_drawn(browser)
        wide = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 1, (path, wide)
        browser.save_screenshot(str(shots / f"phone_{path.strip('/').replace('/', '_') or 'signals'}.png"))


def test_the_api_docs_render_from_the_app_itself(site, browser):
    browser.get(site["base"] + "/api/docs")
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock"))
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/api/board", "/api/signals", "/api/predictions"} <= paths, paths
    sources = browser.execute_script("return [...document.scripts].map(s => s.src)")
    assert all(s.startswith(site["base"] + "/static/") for s in sources), sources


def test_after_a_failed_run_every_page_says_so_and_nothing_unjudged_is_certified(site, browser, shots):
    """The latest run failed in its predict step (written as the runner writes a failed run's summary): every page
    carries the failed-run badge beside the stale one, and the Signals page calls no horizon certified."""
    from shared.records import Failure, RunSummary
    from shared.runs import put_summary
    from shared.storage import LocalLake

    from datetime import datetime, timedelta

    # The latest run of the lake: a day after every run already there (the operator's test started one now).
    last = max(json.loads(p.read_text())["as_of"] for p in site["lake"].glob("runs/*/summary.json"))
    when = datetime.fromisoformat(last.replace("Z", "+00:00")) + timedelta(days=1)
    put_summary(LocalLake(site["lake"]), RunSummary(
        run_id=when.strftime("%Y%m%dT%H%M%SZ") + "-failed00", as_of=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        source=str(site["src"]), status="failed",
        failures=[Failure(step="predict", item="24h", code="transient", message="the step broke off")],
        uncertified_horizons={}))
    sign_in(browser, site, "vera")
    for path, title in PAGES.items():
        browser.get(site["base"] + path)
        assert browser.find_element(By.TAG_NAME, "h1").text == title, path
        badge = browser.find_element(By.ID, "run-status-badge").text
        assert badge.startswith("latest run failed"), (path, badge)
        assert browser.find_elements(By.ID, "stale-badge"), path  # the newest forecasts are from 2024
        assert errors_in_console(browser) == [], path
    browser.get(site["base"] + "/")
    nothing = browser.find_element(By.ID, "no-signals").text
    assert "did not complete" in nothing and "Every horizon is certified" not in nothing
    browser.save_screenshot(str(shots / "viewer_after_failed_run.png"))
