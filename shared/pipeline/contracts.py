"""What the pipeline's steps exchange: the run's start request, the run reference every step receives, and each
step's output contract (stored under the run in the lake; the next steps' input and the mark that a step has run)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from shared.contracts import FetchFailure
from shared.records import Basket, DriftVerdict, Failure, Signal, Universe


class RunStart(BaseModel):
    """What a schedule (or an operator) sends to start a run: the source, and the as-of (the schedule's time)."""

    source: str = "live"
    as_of: str | None = Field(None, description="ISO time the run is judged at; absent = now")
    retrain: bool = Field(False, description="retrain every horizon this run (the weekly schedule), drift or not")
    retrain_only: list[str] = Field([], description="with retrain: only these horizons (an operator's retrain)")


class RunRef(BaseModel):
    """Every step's input: which run, judged at which time, from which source; `item` for a Map's element."""

    run_id: str
    as_of: str
    source: str
    horizons: list[str]
    batches: list[str] = Field([], description="a live run's symbol batches (the fetch Map's items); none for files")
    item: str | None = None
    retrain: bool = False  # every horizon is retrained by this run (a scheduled full retrain)
    retrain_only: list[str] = []  # with retrain: only these horizons (an operator asked for one)
    # Judge drift and cadence but retrain nothing: serve with the current models (`cst run --no-retrain`).
    no_retrain: bool = False
    # Failures of earlier steps (the local runner puts them here; the summary step reports them).
    failures: list[Failure] = []

    @model_validator(mode="before")
    @classmethod
    def _state_machine_failures(cls, data: Any) -> Any:
        """In the state machine a Catch leaves the failed step in `failed`, and a Map leaves one result per item in
        `items.<step>` (failed items carry `code`): gathered here so the summary reads them as the runner's."""
        if not isinstance(data, dict) or ("failed" not in data and "items" not in data):
            return data
        caught = [r for results in (data.get("items") or {}).values() for r in results or []
                  if isinstance(r, dict) and "code" in r]
        if isinstance(data.get("failed"), dict):
            caught.append(data["failed"])
        return {**data, "failures": list(data.get("failures") or []) + [_readable(f) for f in caught]}


def _readable(failure: dict) -> dict:
    """A Lambda error's cause arrives as a JSON document; the summary shows its message."""
    out = {"item": None, **failure}
    try:
        doc = json.loads(out.get("message") or "")
    except (TypeError, ValueError):
        return out
    if isinstance(doc, dict) and "errorMessage" in doc:
        # A CstError's message reads "[code] message": the summary keeps the code the runner would have kept.
        code, sep, message = str(doc["errorMessage"]).partition("] ")
        if sep and code.startswith("["):
            out["code"], out["message"] = code[1:], message
        else:
            out["message"] = doc["errorMessage"]
    return out


class StepOutput(BaseModel):
    run_id: str
    step: str = ""
    item: str | None = None
    seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        """What the step's Lambda reports as metrics (CloudWatch EMF): its duration and, per step, its counts."""
        return {"Seconds": self.seconds}


class IngestOutput(StepOutput):
    landed: int = 0
    already_present: int = 0
    failures: list[FetchFailure] = []
    files_ignored: dict[str, str] = {}
    staged: list[str] = Field([], description="lake keys of the run's parsed series (Parquet per layer and timeframe, "
                                               "content-addressed)")

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "Landed": self.landed, "FetchFailures": len(self.failures)}


class ValidateOutput(StepOutput):
    quality_key: str
    statuses: dict[str, int] = {}
    clean: list[str] = []

    def metrics(self) -> dict[str, float]:
        excluded = sum(n for status, n in self.statuses.items() if status != "ok")
        return {**super().metrics(), "Series": sum(self.statuses.values()), "SeriesExcluded": excluded}


class FrameSummary(BaseModel):
    rows: int
    coins: int
    features: int
    excluded: dict[str, int] = {}
    excluded_layers: list[str] = []
    universe: Universe | None = None


class FeaturesOutput(StepOutput):
    frames: dict[str, FrameSummary] = {}
    untrained: list[str] = Field([], description="horizons without a CURRENT model (the training step's work)")
    written: int = Field(0, description="feature and panel partitions written (unchanged ones are kept)")

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "Rows": sum(f.rows for f in self.frames.values()),
                "RowsExcluded": sum(sum(f.excluded.values()) for f in self.frames.values())}


class TrainOutput(StepOutput):
    trained: dict[str, str] = Field({}, description="horizon -> new version, or why it was not trained")
    results: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, str]] = Field({}, description="horizon -> code and message of a training that broke")
    deferred: dict[str, str] = Field({}, description="horizon -> why retraining is due, where the run was asked not "
                                                     "to retrain (--no-retrain)")

    @property
    def complete(self) -> bool:
        """A step output with failures is not final: running the run again retries what failed."""
        return not self.failed


class PredictOutput(StepOutput):
    horizon: str
    model_version: str | None = None
    decision_ts: int | None = None
    predictions: int = 0
    new: int = Field(0, description="predictions this run made; the rest were logged by an earlier run")
    predicted_by: str | None = Field(None, description="run that logged this decision time's predictions")
    log_key: str | None = None
    coins: list[str] = []
    excluded: dict[str, str] = {}
    uncertified: str | None = None
    beats_uncertified: str | None = None  # why the cross-sectional probabilities are not actionable
    no_model: str | None = None

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "Predictions": self.predictions, "ExcludedCoins": len(self.excluded)}


class RiskOutput(StepOutput):
    predictions: int = 0
    actionable: int = 0
    signals: list[Signal] = []
    tradable: int = 0
    # The cross-sectional probabilities under the same 80% rule and consensus: long (beats) and short (lags)
    # candidates; and the market-neutral basket by score (None, with the reason, when it cannot be built).
    cross_section: list[Signal] = []
    basket: Basket | None = None
    basket_note: str | None = None

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "Predictions": self.predictions, "Actionable": self.actionable,
                "Tradable": self.tradable}


class OutcomesOutput(StepOutput):
    recorded: dict[str, int] = {}
    keys: list[str] = []
    # horizon -> reason -> matured predictions without an outcome; their records under no_outcome_keys.
    no_outcome: dict[str, dict[str, int]] = {}
    no_outcome_keys: list[str] = []


class PerformanceOutput(StepOutput):
    coins: dict[str, int] = {}
    keys: list[str] = []


class DriftOutput(StepOutput):
    report: dict[str, DriftVerdict] = {}
    retrain: list[str] = []


class BookMove(BaseModel):
    """What one paper book did in a run's step."""

    closes: int = 0
    fills: int = 0
    equity: float | None = None
    note: str | None = None


class BooksOutput(StepOutput):
    books: dict[str, BookMove] = Field({}, description="signals, research -> what the step did to it")

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "Fills": sum(b.fills for b in self.books.values())}


class SummaryOutput(StepOutput):
    status: Literal["complete", "failed"] = "complete"
    summary_key: str = ""
    alerts: dict[str, int] = Field({}, description="event -> alerts this summary sent (services/alerts)")
    alerts_already_sent: int = 0
    alert_deliveries_failed: int = 0


CONTRACTS: dict[str, type[BaseModel]] = {c.__name__: c for c in (
    RunRef, StepOutput, IngestOutput, ValidateOutput, FeaturesOutput, TrainOutput, PredictOutput, RiskOutput,
    BooksOutput, OutcomesOutput, PerformanceOutput, DriftOutput, SummaryOutput)}

