"""Alerts out to where traders are: each configured Apprise URL (Telegram, Discord, Slack, email, any webhook) is one
channel; a channel is named by its scheme and host only (its tokens are secrets), and a failing channel is reported,
never raised."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from pydantic import SecretStr

from services.alerts import store
from shared.records import Alert, Delivery
from shared.storage import Lake

log = logging.getLogger(__name__)
# Apprise and the HTTP pool name the URL they post to (a webhook path or bot token is the secret): the outcome of each
# delivery is recorded here instead, by channel name.
for _name in ("apprise", "urllib3"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


def channel_name(url: str) -> str:
    """What may be shown of a channel: its scheme and host (a bot token or webhook path never)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _now() -> datetime:
    return datetime.now(UTC)


def send(url: str, alert: Alert, timeout_s: float) -> tuple[bool, str]:
    """One delivery through Apprise: (delivered, what went wrong)."""
    import apprise

    asset = apprise.AppriseAsset(async_mode=False)
    box = apprise.Apprise(asset=asset)
    if not box.add(url):
        return False, "not a URL Apprise can send to"
    for server in box:
        server.socket_read_timeout = server.socket_connect_timeout = timeout_s
    body = f"{alert.body}\n{alert.link}"
    try:
        ok = bool(box.notify(title=alert.title, body=body))
    except Exception as exc:  # noqa: BLE001 - a channel's failure is reported, the run goes on
        return False, type(exc).__name__
    return ok, "" if ok else "the channel refused or did not answer"


def deliver(lake: Lake, alert: Alert, urls: list[SecretStr], per_hour: int, timeout_s: float,
            now: datetime | None = None) -> list[Delivery]:
    """The alert to every channel within its hourly limit; each attempt recorded with its outcome."""
    now = now or _now()
    out = []
    for secret in urls:
        url = secret.get_secret_value()
        name = channel_name(url)
        recent = [t for t in store.channel_sends(lake, url) if datetime.fromisoformat(t) > now - timedelta(hours=1)]
        at = now.isoformat(timespec="seconds")
        if len(recent) >= per_hour:
            out.append(Delivery(channel=name, ok=False, detail=f"held back: {per_hour} sent in the last hour", at=at))
            continue
        ok, detail = send(url, alert, timeout_s)
        if ok:
            store.note_sends(lake, url, [*recent, at])
        else:
            log.warning("alert %s not delivered to %s: %s", alert.event, name, detail)
        out.append(Delivery(channel=name, ok=ok, detail=detail, at=at))
    return out
