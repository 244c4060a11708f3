"""The audit store: operators' actions (who started which run or retrain, when, and what came of it) and users'
feedback on predictions, each one immutable file; the only module that spells their keys (the API writes them, the
cloud grants the API exactly these prefixes)."""

from __future__ import annotations

import uuid
from datetime import datetime

AUDIT = "audit/"
FEEDBACK = "feedback/"


def _unique(at: datetime, stamp: str) -> str:
    return f"{at.strftime(stamp)}-{uuid.uuid4().hex[:8]}.json"


def audit_key(at: datetime) -> str:
    return f"{AUDIT}date={at.date().isoformat()}/" + _unique(at, "%H%M%S%f")


def feedback_key(horizon: str, coin: str, run_id: str, at: datetime) -> str:
    return f"{FEEDBACK}horizon={horizon}/coin={coin}/run_id={run_id}/" + _unique(at, "%Y%m%dT%H%M%S%f")
