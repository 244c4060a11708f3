"""The alerts store: every alert sent, with its deliveries, once per key, and each channel's recent sends (its rate
limit); the only module that spells their keys."""

from __future__ import annotations

import hashlib

from shared.errors import LakeKeyNotFound
from shared.records import Alert
from shared.storage import Lake

ALERTS = "alerts/"
CHANNELS = "state/alerts/"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def alert_key(alert: Alert) -> str:
    return f"{ALERTS}date={alert.as_of[:10]}/{_digest(alert.key)}.json"


def channel_key(channel: str) -> str:
    return f"{CHANNELS}channel={_digest(channel)}.json"


def sent(lake: Lake, alert: Alert) -> Alert | None:
    """The alert of this key as it was sent, or None when it never was."""
    try:
        return Alert.model_validate(lake.get_json(alert_key(alert)))
    except LakeKeyNotFound:
        return None


def record(lake: Lake, alert: Alert) -> str:
    key = alert_key(alert)
    lake.put_json(key, alert.model_dump(mode="json"))
    return key


def recent(lake: Lake, limit: int = 50) -> list[Alert]:
    """The newest alerts first (by as-of, then by when each was delivered)."""
    out: list[Alert] = []
    for day in sorted((f for f in lake.folders(ALERTS) if f.startswith("date=")), reverse=True):
        docs = [Alert.model_validate(lake.get_json(k)) for k in lake.list(f"{ALERTS}{day}/") if k.endswith(".json")]
        docs.sort(key=lambda a: (a.as_of, max((d.at for d in a.deliveries), default="")), reverse=True)
        out += docs
        if len(out) >= limit:
            break
    return out[:limit]


def channel_sends(lake: Lake, channel: str) -> list[str]:
    """When this channel was last sent to (ISO times, oldest first)."""
    try:
        return [str(t) for t in lake.get_json(channel_key(channel)).get("sent", [])]
    except LakeKeyNotFound:
        return []


def note_sends(lake: Lake, channel: str, times: list[str]) -> None:
    lake.put_json(channel_key(channel), {"sent": times})





def sent_by_event(lake: Lake, since_day: str) -> dict[str, int]:
    """How many alerts of each event were sent on or after `since_day` (YYYY-MM-DD)."""
    out: dict[str, int] = {}
    for day in sorted(f for f in lake.folders(ALERTS) if f.startswith("date=") and f[5:] >= since_day):
        for k in lake.list(f"{ALERTS}{day}/"):
            if k.endswith(".json"):
                event = Alert.model_validate(lake.get_json(k)).event
                out[event] = out.get(event, 0) + 1
    return dict(sorted(out.items()))
__all__ = ["alert_key", "channel_sends", "note_sends", "recent", "record", "sent", "sent_by_event"]
