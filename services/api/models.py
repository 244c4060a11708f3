"""What the JSON API answers, as response models: the OpenAPI document describes every answer, errors included.

The domain's records (`shared.records`: a prediction, a signal, a run's summary, a coin's performance) are answered
as they are stored; the models here are the views the routes put together around them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from shared.contracts import QualityReport
from shared.records import (
    Basket,
    CoinPerformance,
    DriftVerdict,
    Failure,
    GateDecision,
    Prediction,
    Signal,
    TopFeature,
    TrainingWindow,
)


COIN = r"^[A-Z0-9]{1,15}$"
HORIZON = r"^[0-9]{1,3}[hdw]$"
RUN_ID = r"^[0-9A-Za-z.\-_]{1,80}$"
MAX_PAGE = 500
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: Any) -> Any:
    """A time as the schema's `date-time` says (RFC 3339: 2024-05-01T00:00:00Z), not a number or a bare date."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be a time such as 2024-05-01T00:00:00Z (RFC 3339, with its zone)")
    return value


def _json_integer(value: Any) -> Any:
    """A JSON integer: 6465 or 6465.0 (JSON Schema's integer), never a string or a boolean."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Time = Annotated[datetime, BeforeValidator(_rfc3339)]


# --- requests ----------------------------------------------------------------------------------------------------


class Feedback(BaseModel):
    """A viewer's word on one prediction. A flag is a boolean (not 0.0 or "yes"), a time a JSON integer; nothing the
    schema does not name."""

    model_config = ConfigDict(extra="forbid")

    horizon: str = Field(pattern=HORIZON)
    coin: str = Field(pattern=COIN)
    run_id: str = Field(pattern=RUN_ID)
    decision_ts: Annotated[int, BeforeValidator(_json_integer)] = Field(ge=0)
    useful: StrictBool | None = None
    traded: StrictBool | None = None
    note: str = Field("", max_length=2000)


class RetrainRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    horizon: str = Field(pattern=HORIZON)


# --- answers -----------------------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every error the API answers: a code a client can act on, and a message for people."""

    error: str = Field(examples=["unknown_horizon"])
    message: str


ERRORS = {400: {"model": ErrorBody, "description": "a request the service refuses (the code says why)"},
          401: {"model": ErrorBody, "description": "no valid token"},
          403: {"model": ErrorBody, "description": "the token's groups do not allow this"},
          422: {"model": ErrorBody, "description": "a parameter or body that cannot be read"}}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route: authentication, bad input, and the route's own (404: not found)."""
    described = {404: "not found", 409: "conflicts with what is already running",
                 429: "too many of these in the last hour (Retry-After says when to try again)", 503: "not available here"}
    out: dict[int | str, dict[str, Any]] = dict(ERRORS)
    out.update({c: {"model": ErrorBody, "description": described[c]} for c in codes})
    return out


class Me(BaseModel):
    username: str
    groups: list[str]
    operator: bool


class SignalsView(BaseModel):
    """The latest complete run's signals, or why there are none (per horizon, or "all")."""

    run_id: str | None
    as_of: str | None = None
    signals: list[Signal]
    why_none: dict[str, str]
    cross_section: list[Signal] = Field([], description="long (beats) and short (lags) candidates against the "
                                                        "universe's median coin, under the same 80% rule")
    cross_section_why_none: dict[str, str] = {}
    basket: Basket | None = Field(None, description="the market-neutral basket by cross-sectional score")
    basket_note: str | None = None


class PredictionPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[Prediction]


class HorizonForecast(BaseModel):
    p_up: float
    interval: list[float] = Field(description="Venn-Abers interval of p_up")
    direction: int
    confidence: float
    range_80: list[float | None] = Field(description="the served 80% range of the forward log return (null until "
                                                     "the horizon has outcomes)")
    top_features: list[TopFeature]
    skill: str | None
    decision_ts: int
    model_version: str
    certified: bool
    why_not_certified: str | None


class CoinForecast(BaseModel):
    coin: str
    horizons: dict[str, HorizonForecast]


class ReliabilityBin(BaseModel):
    bin: list[float]
    n: int
    mean_p: float
    up_rate: float


class HorizonPerformance(BaseModel):
    outcomes: int
    reliability: list[ReliabilityBin]
    coins: list[CoinPerformance]
    drift: DriftVerdict | None


class RunRow(BaseModel):
    run_id: str
    as_of: str
    status: str
    coins_predicted: int
    predictions: int
    actionable: int
    failures: list[Failure]


class RunPage(BaseModel):
    total: int
    items: list[RunRow]


class ModelVersion(BaseModel):
    version: str
    current: bool
    created: str | None
    training_window: TrainingWindow | None
    skill: dict[str, Any] | None
    brier_skill: float | None
    ece: float | None
    gate: GateDecision | None
    features: list[str] = Field([], description="the features the version reads, in order")


class HorizonModels(BaseModel):
    current: str | None
    versions: list[ModelVersion]


class ModelCard(BaseModel):
    horizon: str
    version: str
    card: str = Field(description="the model card, Markdown")


class QualityView(QualityReport):
    """The latest validated run's quality report: per series ok / excluded / quarantined and why."""

    run_id: str


class Stored(BaseModel):
    stored: str = Field(description="the lake key the feedback was stored under")


class Started(BaseModel):
    started: str = Field(description="the run id (on one machine) or the execution's ARN (in the cloud)")
