"""Alerts from a run's summary, once per decision: derive the events, skip every key already sent, deliver the rest
to the channels and record each with its deliveries. On one machine the summary step calls it directly; in the cloud
the summary step publishes the run to the alerts topic and the alerts function (subscribed) calls it."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime

from pydantic import BaseModel

from services.alerts import store
from services.alerts.deliver import deliver
from services.alerts.events import events
from shared import runs
from shared.records import Alert
from shared.settings import Settings
from shared.storage import Lake

log = logging.getLogger(__name__)


class AlertsReport(BaseModel):
    run_id: str
    sent: dict[str, int] = {}  # event -> alerts recorded by this call
    already_sent: int = 0  # alerts of this decision that an earlier call had sent
    failed_deliveries: int = 0
    published: str | None = None  # the alerts topic's message id (cloud)


def on_summary(settings: Settings, lake: Lake, run_id: str, now: datetime | None = None) -> AlertsReport:
    """Every new alert of the run, delivered and recorded; an alert already recorded is never sent again."""
    report = AlertsReport(run_id=run_id)
    summary = runs.load_summary(lake, run_id)
    if summary is None:
        return report
    cfg = settings.alerts
    counts: Counter[str] = Counter()
    for alert in events(summary, runs.previous_summary(lake, run_id), max_excluded_share=cfg.max_excluded_share,
                        dashboard_url=cfg.dashboard_url):
        if store.sent(lake, alert) is not None:
            report.already_sent += 1
            continue
        alert.deliveries = deliver(lake, alert, cfg.urls, cfg.per_channel_per_hour, cfg.timeout_s, now)
        store.record(lake, alert)
        counts[alert.event] += 1
        report.failed_deliveries += sum(1 for d in alert.deliveries if not d.ok)
    report.sent = dict(counts)
    return report


def send_test_alert(settings: Settings, lake: Lake, who: str, now: datetime | None = None) -> Alert:
    """An operator's test: one alert to every channel, recorded with its deliveries like any other."""
    now = now or datetime.now(UTC)
    at = now.isoformat(timespec="seconds")
    alert = Alert(key=f"test|{who}|{at}", event="test", subject=who, as_of=at, run_id="", title="cst: test alert",
                  body=f"A test alert sent by {who}: this channel receives cst's alerts.",
                  link=settings.alerts.dashboard_url.rstrip("/") + "/alerts")
    cfg = settings.alerts
    alert.deliveries = deliver(lake, alert, cfg.urls, cfg.per_channel_per_hour, cfg.timeout_s, now)
    store.record(lake, alert)
    return alert


def publish(settings: Settings, message: dict, subject: str, client=None) -> str:
    """One message to the alerts topic (the cloud): the alerts function subscribed to it delivers."""
    if client is None:
        import boto3

        client = boto3.client("sns", region_name=settings.aws_region)
    return client.publish(TopicArn=settings.alerts.topic_arn, Subject=subject[:100],
                          Message=json.dumps(message))["MessageId"]


def dispatch_test(settings: Settings, lake: Lake, who: str, client=None) -> Alert | str:
    """An operator's test alert: sent here (the alert, with its deliveries), or in the cloud published to the topic
    for the alerts function (the message id)."""
    if settings.alerts.topic_arn:
        return publish(settings, {"test_by": who}, f"cst test alert by {who}", client)
    return send_test_alert(settings, lake, who)


def on_message(settings: Settings, lake: Lake, message: dict) -> AlertsReport | Alert:
    """What the alerts function does with one message of the topic: a run's alerts, or an operator's test."""
    if "test_by" in message:
        return send_test_alert(settings, lake, str(message["test_by"]))
    return on_summary(settings, lake, str(message["run_id"]))


def dispatch(settings: Settings, lake: Lake, run_id: str, client=None) -> AlertsReport:
    """From the summary step: publish the run to the alerts topic when there is one (the cloud), else alert here.
    Nothing here fails the run: what goes wrong is logged and reported."""
    try:
        if settings.alerts.topic_arn:
            return AlertsReport(run_id=run_id,
                                published=publish(settings, {"run_id": run_id}, f"cst run {run_id}", client))
        return on_summary(settings, lake, run_id)
    except Exception as exc:  # noqa: BLE001 - alerts never fail the run they report on
        log.warning("alerts for run %s not sent: %s: %s", run_id, type(exc).__name__, exc)
        return AlertsReport(run_id=run_id, failed_deliveries=-1)
