"""Alerts: the events of a run against the run before, delivered once per decision to a webhook receiver on
loopback (a re-run and a retried summary send nothing twice), a failing channel reported without failing anything,
the hourly limit per channel, channel secrets never shown, and the cloud path published to SNS under moto."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from pydantic import SecretStr

from services.alerts import store
from services.alerts.events import events
from services.alerts.notify import dispatch, on_summary, send_test_alert
from shared.records import Basket, BasketLeg, DriftVerdict, Failure, RunSummary, Signal
from shared.runs import put_summary, run_id_for
from shared.settings import Settings
from shared.storage import LocalLake

DAY = 86_400_000
T0 = 1_719_792_000_000  # 2024-07-01T00:00:00Z


class Receiver:
    """A webhook on 127.0.0.1 that keeps every JSON body posted to it."""

    def __init__(self):
        got = self.got = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server interface
                got.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_a):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _signal(coin: str, tradable: bool = True) -> Signal:
    return Signal(coin=coin, direction="up", horizons=["24h", "7d"], min_confidence=0.83,
                  p_up={"24h": 0.86, "7d": 0.84}, tradable=tradable)


def _basket(long: list[str], short: list[str]) -> Basket:
    leg = lambda c, side: BasketLeg(coin=c, side=side, score=0.0, weight=0.1 if side == "long" else -0.1,  # noqa: E731
                                    notional=1000.0, impact_bps=3.0)
    return Basket(horizon="7d", decision_ts=T0, model_version="v1", long=[leg(c, "long") for c in long],
                  short=[leg(c, "short") for c in short], label="Research (no demonstrated skill) basket")


def _summary(day: int, **kw) -> RunSummary:
    as_of = T0 + day * DAY
    iso = f"2024-07-{1 + day:02d}T00:00:00Z"
    return RunSummary(run_id=run_id_for("test", as_of), as_of=iso, source="test", coins_total=10, **kw)


def test_every_event_of_a_run_against_the_run_before():
    before = _summary(0, signals=[_signal("BTC"), _signal("ETH")], basket=_basket(["SOL"], ["ADA"]))
    now = _summary(1, signals=[_signal("BTC"), _signal("XRP"), _signal("LTC", tradable=False)],
                   basket=_basket(["SOL", "DOT"], ["ADA"]), status="failed",
                   failures=[Failure(step="predict", item="1h", code="no_model", message="no CURRENT model")],
                   excluded={c: "stale candles" for c in ("A", "B", "C")},
                   drift={"24h": DriftVerdict(retrain=True, reasons=["feature drift: 9/40 features PSI > 0.25"]),
                          "7d": DriftVerdict(retrain=True, reasons=["cadence: training data ended 31 days ago"])},
                   retrained={"24h": {"version": "v2", "promoted": False, "gate": "new model is worse"},
                              "7d": {"version": "v3", "promoted": True, "gate": "better on the same rows"}})
    got = events(now, before, max_excluded_share=0.2, dashboard_url="https://cst.example/")
    kinds = sorted((a.event, a.subject) for a in got)
    assert kinds == [("basket_changed", "7d"), ("drift_retrain", "24h"), ("model_promoted", "7d"),
                     ("model_refused", "24h"), ("run_failed", now.run_id), ("signal_entered", "XRP up"),
                     ("signal_left", "ETH up"), ("universe_excluded", now.run_id)]
    by = {a.event: a for a in got}
    assert by["signal_entered"].link == "https://cst.example/coins/XRP"
    assert "long +DOT" in by["basket_changed"].body and "30%" in by["universe_excluded"].body
    assert "no_model" in by["run_failed"].body and by["run_failed"].link.endswith(f"/runs/{now.run_id}")
    # The keys are the decision's, not the call's: the same run judged again makes the same keys.
    assert [a.key for a in events(now, before, max_excluded_share=0.2, dashboard_url="x")] == [a.key for a in got]
    # Below the share nothing is said; the first run's tradable signals are all new.
    assert not [a for a in events(now, before, max_excluded_share=0.5, dashboard_url="x")
                if a.event == "universe_excluded"]
    assert [a.subject for a in events(before, None, max_excluded_share=0.2, dashboard_url="x")] == ["BTC up", "ETH up"]
    # Coins the universe's rules left out are no failure: 3 failed of the 6 meant (50%), not 3 + 4 of 10.
    ruled = {c: "24h: outside the 1d universe at this decision: listing_age; 7d: outside the 1d universe at this "
                "decision: listing_age" for c in ("D", "E", "F", "G")}
    wide = now.model_copy(update={"excluded": {**now.excluded, **ruled}})
    (said,) = [a for a in events(wide, before, max_excluded_share=0.4, dashboard_url="x") if a.event == "universe_excluded"]
    assert "3 of the 6 coins it meant to predict (50%" in said.body
    assert not [a for a in events(wide.model_copy(update={"excluded": ruled}), before, max_excluded_share=0.2,
                                  dashboard_url="x") if a.event == "universe_excluded"]


def _settings(*urls: str, per_hour: int = 20) -> Settings:
    s = Settings(_env_file=None)
    s.alerts.urls = [SecretStr(u) for u in urls]
    s.alerts.per_channel_per_hour = per_hour
    s.alerts.timeout_s = 2.0
    return s


def test_each_alert_reaches_the_webhook_once_across_reruns_and_a_failing_channel_is_only_reported(
        tmp_path, receiver, caplog):
    lake = LocalLake(tmp_path)
    first = _summary(0, signals=[_signal("BTC")])
    second = _summary(1, signals=[_signal("ETH")], basket=None)
    put_summary(lake, first)
    put_summary(lake, second)
    # The webhook's path carries a token: a secret, never shown.
    dead = "json://127.0.0.1:9/never"  # the discard port: nothing listens
    settings = _settings(f"json://127.0.0.1:{receiver.port}/hook/s3cr3t-token", dead)
    with caplog.at_level(logging.DEBUG):
        r1 = on_summary(settings, lake, first.run_id)
        r2 = on_summary(settings, lake, second.run_id)
        again = on_summary(settings, lake, second.run_id)  # a re-run or a retried summary of the same decision
    assert r1.sent == {"signal_entered": 1} and r2.sent == {"signal_entered": 1, "signal_left": 1}
    assert again.sent == {} and again.already_sent == 2
    titles = sorted(body["title"] for path, body in receiver.got)
    assert titles == ["cst: BTC up signal", "cst: BTC up signal ended", "cst: ETH up signal"]
    assert all(path == "/hook/s3cr3t-token" for path, _ in receiver.got)
    assert "http://127.0.0.1:8080/coins/ETH" in next(b["message"] for _, b in receiver.got if "ETH" in b["title"])
    # The dead channel failed every time, was recorded as failed, and nothing raised.
    assert r1.failed_deliveries == 1 and r2.failed_deliveries == 2
    recorded = store.recent(lake)
    assert len(recorded) == 3
    for alert in recorded:
        assert {(d.channel, d.ok) for d in alert.deliveries} == {
            ("json://127.0.0.1:9", False), (f"json://127.0.0.1:{receiver.port}", True)}
    shown = caplog.text + json.dumps([a.model_dump() for a in recorded])
    assert "s3cr3t-token" not in shown


def test_a_channel_sends_at_most_its_hourly_limit(tmp_path, receiver):
    lake = LocalLake(tmp_path)
    run = _summary(0, signals=[_signal("BTC"), _signal("ETH"), _signal("XRP")])
    put_summary(lake, run)
    report = on_summary(_settings(f"json://127.0.0.1:{receiver.port}/hook", per_hour=2), lake, run.run_id)
    assert report.sent == {"signal_entered": 3} and len(receiver.got) == 2
    held = [d for a in store.recent(lake) for d in a.deliveries if not d.ok]
    assert len(held) == 1 and held[0].detail.startswith("held back: 2 sent in the last hour")


def test_an_operators_test_alert_is_delivered_and_recorded(tmp_path, receiver):
    lake = LocalLake(tmp_path)
    alert = send_test_alert(_settings(f"json://127.0.0.1:{receiver.port}/hook"), lake, "otto")
    assert alert.deliveries[0].ok and receiver.got[0][1]["title"] == "cst: test alert"
    assert store.recent(lake)[0].key == alert.key


def test_in_the_cloud_the_summary_step_publishes_the_run_to_the_alerts_topic(tmp_path):
    import boto3
    from moto import mock_aws

    lake = LocalLake(tmp_path)
    run = _summary(0, signals=[_signal("BTC")])
    put_summary(lake, run)
    with mock_aws():
        sns, sqs = boto3.client("sns", region_name="eu-west-1"), boto3.client("sqs", region_name="eu-west-1")
        topic = sns.create_topic(Name="cst-alerts")["TopicArn"]
        queue = sqs.create_queue(QueueName="probe")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
        settings = _settings()
        settings.alerts.topic_arn = topic
        report = dispatch(settings, lake, run.run_id, client=sns)
        (message,) = sqs.receive_message(QueueUrl=queue)["Messages"]
    assert report.published and json.loads(json.loads(message["Body"])["Message"]) == {"run_id": run.run_id}
    assert store.recent(lake) == []  # the alerts function delivers, not the summary step


def test_the_alerts_function_delivers_what_the_topic_brings_once(tmp_path, receiver, monkeypatch, lambda_context):
    from services.orchestrator import handlers
    from shared.settings import get_settings

    lake = LocalLake(tmp_path)
    run = _summary(0, signals=[_signal("BTC")])
    put_summary(lake, run)
    monkeypatch.setenv("CST_LAKE__URI", str(tmp_path))
    monkeypatch.setenv("CST_ALERTS__URLS", json.dumps([f"json://127.0.0.1:{receiver.port}/hook"]))
    get_settings.cache_clear()
    try:
        event = {"Records": [{"Sns": {"Message": json.dumps({"run_id": run.run_id})}}]}
        first = handlers.alerts(event, lambda_context)
        again = handlers.alerts(event, lambda_context)  # SNS delivers at least once: a second delivery sends nothing
        test = handlers.alerts({"Records": [{"Sns": {"Message": json.dumps({"test_by": "otto"})}}]}, lambda_context)
    finally:
        get_settings.cache_clear()
    assert first["handled"][0]["sent"] == {"signal_entered": 1} and again["handled"][0]["already_sent"] == 1
    assert test["handled"][0]["event"] == "test"
    assert [b["title"] for _, b in receiver.got] == ["cst: BTC up signal", "cst: test alert"]
