"""The audit store: operators' actions (who started which run or retrain, when, and what came of it) and users'
feedback on predictions, each one immutable file, and each user's watchlist; the only module that spells their keys
(the API writes them, the cloud grants the API exactly these prefixes)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

AUDIT = "audit/"
FEEDBACK = "feedback/"
WATCHLISTS = "watchlists/"


def _unique(at: datetime, stamp: str) -> str:
    return f"{at.strftime(stamp)}-{uuid.uuid4().hex[:8]}.json"


def audit_key(at: datetime) -> str:
    return f"{AUDIT}date={at.date().isoformat()}/" + _unique(at, "%H%M%S%f")


def feedback_key(horizon: str, coin: str, run_id: str, at: datetime) -> str:
    return f"{FEEDBACK}horizon={horizon}/coin={coin}/run_id={run_id}/" + _unique(at, "%Y%m%dT%H%M%S%f")


def watchlist_key(username: str) -> str:
    """A user's watchlist; the name is hashed so no user name ever becomes a path."""
    return f"{WATCHLISTS}user={hashlib.sha256(username.encode()).hexdigest()[:24]}.json"


def load_watchlist(lake, username: str) -> list[str]:
    """A user's watched coins (none when the user never watched one)."""
    from shared.errors import LakeKeyNotFound

    try:
        return [str(c) for c in lake.get_json(watchlist_key(username)).get("coins", [])]
    except LakeKeyNotFound:
        return []


def save_watchlist(lake, username: str, coins: list[str]) -> None:
    lake.put_json(watchlist_key(username), {"coins": sorted(set(coins))[:200]})
