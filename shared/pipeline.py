"""The pipeline as data: the one list of steps that the local runner, the Lambda handlers and the state machine read.

Each step names its entry as a dotted path (resolved only when it runs, so this module never imports
`services/`), its input and output contracts, where it runs and how it is retried. Steps hand off through
the lake: a step reads what earlier steps stored under the run and writes its own output contract to
`runs/run_id=<id>/steps/<name>[/<item>].json`, which also makes re-running a finished step a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from shared.contracts import FetchFailure
from shared.errors import LakeKeyNotFound
from shared.settings import Settings
from shared.storage import Lake

Runtime = Literal["process", "lambda", "map", "sagemaker"]


class Retry(BaseModel):
    """Retried error codes (transient ones: a later attempt can succeed), attempts and backoff."""

    codes: list[str] = ["transient", "unreachable", "rate_limited", "server_error", "timeout"]
    max_attempts: int = 3
    interval_s: float = 2.0
    backoff: float = 2.0


# --- contracts ------------------------------------------------------------------------------------------------


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
    # Failures of earlier steps (the local runner puts them here; the summary step reports them).
    failures: list[dict[str, Any]] = []

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
    no_model: str | None = None

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "Predictions": self.predictions, "ExcludedCoins": len(self.excluded)}


class RiskOutput(StepOutput):
    predictions: int = 0
    actionable: int = 0
    signals: list[dict[str, Any]] = []
    tradable: int = 0

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "Predictions": self.predictions, "Actionable": self.actionable,
                "Tradable": self.tradable}


class OutcomesOutput(StepOutput):
    recorded: dict[str, int] = {}
    keys: list[str] = []


class PerformanceOutput(StepOutput):
    coins: dict[str, int] = {}
    keys: list[str] = []


class DriftOutput(StepOutput):
    report: dict[str, dict[str, Any]] = {}
    retrain: list[str] = []


class SummaryOutput(StepOutput):
    status: Literal["complete", "failed"] = "complete"
    summary_key: str = ""


CONTRACTS: dict[str, type[BaseModel]] = {c.__name__: c for c in (
    RunRef, StepOutput, IngestOutput, ValidateOutput, FeaturesOutput, TrainOutput, PredictOutput, RiskOutput,
    OutcomesOutput, PerformanceOutput, DriftOutput, SummaryOutput)}


# --- the definition -------------------------------------------------------------------------------------------


class Step(BaseModel):
    name: str
    entry: str = Field(description="module:function, resolved when the step runs")
    input: str = "RunRef"
    output: str
    runtime: Runtime = "lambda"
    map_over: Literal["horizons", "batches"] | None = Field(None, description="run once per element of the run's list")
    max_concurrency: int = Field(0, description="a Map's items at once (0: no limit)")
    secrets: bool = Field(False, description="reads the source credentials (Secrets Manager): only the steps that "
                                             "call exchanges and data vendors")
    when: str | None = Field(None, description="'<step>.<field>': run only when that earlier output is non-empty")
    retry: Retry = Retry()
    # A step that only reads and reports runs again whenever its run is run (a crash may have lost its key).
    rerun: bool = False
    doc: str = ""

    @property
    def item_noun(self) -> str | None:
        """What one element of a Map step is: "horizon", "batch"."""
        return {"horizons": "horizon", "batches": "batch"}[self.map_over] if self.map_over else None

    def output_model(self) -> type[StepOutput]:
        return CONTRACTS[self.output]  # type: ignore[return-value]


PIPELINE: tuple[Step, ...] = (
    Step(name="fetch", entry="services.ingest.steps:fetch", output="IngestOutput", runtime="map", map_over="batches",
         max_concurrency=1, secrets=True, doc="a live run's sources, one batch of symbols per task (the market-wide sources with the "
                                "first), one batch after another: land raw responses, stage the parsed series"),
    Step(name="ingest", entry="services.ingest.steps:ingest", output="IngestOutput",
         doc="the run's staged series: the fetch batches' joined (live), or the files read, landed and staged"),
    Step(name="validate", entry="services.features.steps:validate", output="ValidateOutput",
         doc="quality gate at the run's as-of: report, quarantine, clean series"),
    Step(name="features", entry="services.features.steps:features", output="FeaturesOutput",
         doc="point-in-time features and price panels per timeframe"),
    Step(name="train", entry="services.training.steps:train_missing", output="TrainOutput", runtime="sagemaker",
         when="features.untrained", retry=Retry(max_attempts=1),
         doc="horizons without a CURRENT model are trained first (quick budget)"),
    Step(name="predict", entry="services.predict.steps:predict", output="PredictOutput", runtime="map",
         map_over="horizons", doc="one horizon's decision time: ONNX, SHAP, the confidence filter, the log"),
    Step(name="risk", entry="services.predict.steps:risk", output="RiskOutput",
         doc="consensus over horizons and the risk gate on each signal"),
    Step(name="outcomes", entry="services.predict.steps:outcomes", output="OutcomesOutput",
         doc="outcomes of predictions that matured since the last run, once each"),
    Step(name="performance", entry="services.predict.steps:performance", output="PerformanceOutput",
         doc="rolling hit rate, Brier and ECE per coin and horizon"),
    Step(name="drift", entry="services.predict.steps:drift", output="DriftOutput",
         doc="feature PSI, calibration drift and decay per horizon"),
    Step(name="retrain", entry="services.training.steps:retrain", output="TrainOutput", runtime="sagemaker",
         when="drift.retrain", retry=Retry(max_attempts=1), doc="drifting horizons retrained through the gate"),
    Step(name="summary", entry="services.predict.steps:summary", output="SummaryOutput", rerun=True,
         doc="runs/run_id=<id>/summary.json: what ran, what was excluded and why, signals, failures"),
)

STEPS: dict[str, Step] = {s.name: s for s in PIPELINE}


def step_output_key(run_id: str, step: str, item: str | None = None) -> str:
    return f"runs/run_id={run_id}/steps/{step}" + (f"/{item}" if item else "") + ".json"


def summary_key(run_id: str) -> str:
    return f"runs/run_id={run_id}/summary.json"


# Parsed series as fetched, content-addressed (the ingest step's hand-off to validation and training; a run's
# ingest output lists its parts, so identical imports are stored once).
STAGING = "staging/"


def clean_prefix(run_id: str) -> str:
    """The run's series after the quality gate (validation's hand-off to features)."""
    return f"clean/run_id={run_id}/"


# The staged parts backfills landed (lake-wide history that every run's training reads with the run's own fetch):
# one small marker per part under this prefix, so recording a page costs one write whatever the history's size.
HISTORY_PARTS = "state/history/parts/"


def quality_key(run_id: str) -> str:
    return f"quality/run_id={run_id}/report.json"


@dataclass
class StepContext:
    """What every step's logic gets besides its input: settings, the lake, and a progress callback."""

    settings: Settings
    lake: Lake
    tick: Callable[[str], None] = field(default=lambda _msg: None)
    # (on_start(n_tasks), on_done(task)) for fetching, drawn as a progress bar by the CLI.
    fetch_progress: tuple[Callable, Callable] | None = None

    def output(self, run_id: str, step: str, item: str | None = None) -> StepOutput | None:
        """An earlier step's stored output for this run, or None when that step has not run."""
        try:
            doc = self.lake.get_json(step_output_key(run_id, step, item))
        except LakeKeyNotFound:
            return None
        return STEPS[step].output_model().model_validate(doc)


# --- the state machine, generated from the definition -----------------------------------------------------------

TRANSIENT_ERROR = "TransientStepError"  # the error type a handler raises for a retryable code
SAGEMAKER_SYNC = "arn:aws:states:::sagemaker:createTrainingJob.sync"


def _task(step: Step, resources: dict[str, Any], next_state: str | None) -> dict:
    if step.runtime == "sagemaker":
        # The training job runs the same entry point as `cst train`, on the run's stored history in the lake.
        params = {**resources.get(step.name, {}),
                  "HyperParameters": {"run_id.$": "$.run_id", "until.$": "$.as_of", "step": step.name}}
        state: dict[str, Any] = {"Type": "Task", "Resource": SAGEMAKER_SYNC, "Parameters": params}
    else:
        state = {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                 "Parameters": {"FunctionName": resources.get(step.name, f"${{{step.name}}}"), "Payload.$": "$"},
                 "ResultSelector": {"output.$": "$.Payload"}}
    state["Retry"] = [{"ErrorEquals": [TRANSIENT_ERROR, "Lambda.ServiceException", "Lambda.TooManyRequestsException"],
                       "IntervalSeconds": int(step.retry.interval_s), "BackoffRate": step.retry.backoff,
                       "MaxAttempts": max(0, step.retry.max_attempts - 1)}] if step.retry.max_attempts > 1 else []
    if next_state is None:
        state["End"] = True
    else:
        state["Next"] = next_state
    return state


START = "start"  # the prologue state: turns the schedule's event into the run's RunRef (not a pipeline step)


def _failure_state(step: str, next_state: str | None, item: bool = False) -> dict:
    """A caught error as the runner records it: the step, the item, the error name as code, its cause."""
    params = {"step": step, "code.$": "$.caught.Error", "message.$": "$.caught.Cause"}
    if item:
        params["item.$"] = "$.item"
    state: dict[str, Any] = {"Type": "Pass", "Parameters": params}
    if item:
        state["End"] = True
    else:
        state.update(ResultPath="$.failed", Next=next_state)
    return state


def item_state(step: Step) -> str:
    """The task inside a Map step's item processor: "fetch batch", "predict horizon". State names are unique across
    the whole machine, nested ones included (Step Functions refuses a definition that repeats one)."""
    return f"{step.name} {step.item_noun}" if step.map_over else step.name


def state_machine(resources: dict[str, Any] | None = None) -> dict:
    """Amazon States Language for the pipeline: a prologue that makes the run's reference from the schedule's event,
    then one state per step in the definition's order, a Map over the run's horizons for Map steps, a Choice before
    conditional steps, retries on transient errors, and a Catch on every task that goes to the summary with the
    failed step named. `resources`: step name (or "start") -> Lambda ARN, or the SageMaker job parameters for
    training steps."""
    resources = resources or {}
    names = [s.name for s in PIPELINE]
    final = PIPELINE[-1].name
    states: dict[str, Any] = {START: {
        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": resources.get(START, f"${{{START}}}"), "Payload.$": "$"},
        "ResultSelector": {"ref.$": "$.Payload"}, "OutputPath": "$.ref", "Next": names[0],
        "Retry": [{"ErrorEquals": [TRANSIENT_ERROR, "Lambda.ServiceException", "Lambda.TooManyRequestsException"],
                   "IntervalSeconds": 2, "BackoffRate": 2.0, "MaxAttempts": 2}]}}
    for i, step in enumerate(PIPELINE):
        nxt = names[i + 1] if i + 1 < len(names) else None
        catch = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.caught", "Next": f"{step.name} failed"}]
        if step.map_over:
            inner = _task(step, resources, None)
            # A finished item's result is its item only; the lake holds its output.
            inner["ResultSelector"] = {"item.$": "$.Payload.item"}
            state: dict[str, Any] = {
                "Type": "Map", "ItemsPath": f"$.{step.map_over}",
                "ItemSelector": {"run_id.$": "$.run_id", "as_of.$": "$.as_of", "source.$": "$.source",
                                 "horizons.$": "$.horizons", "item.$": "$$.Map.Item.Value"},
                # One item failing must not lose the others: the item's error is its result, and the summary reads
                # the failed items from `items.<step>`.
                **({"MaxConcurrency": step.max_concurrency} if step.max_concurrency else {}),
                "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": item_state(step),
                                  "States": {item_state(step): {**inner, "Catch": [{"ErrorEquals": ["States.ALL"],
                                                                                    "ResultPath": "$.caught",
                                                                                    "Next": f"{item_state(step)} failed"}]},
                                             f"{item_state(step)} failed": _failure_state(step.name, None, item=True)}},
                "ResultPath": f"$.items.{step.name}", "Next": nxt}
        else:
            # Outputs a later Choice reads stay in the execution's state; the rest live in the lake only.
            kept = any(s.when and s.when.partition(".")[0] == step.name for s in PIPELINE)
            state = {**_task(step, resources, nxt), "ResultPath": f"$.run.{step.name}" if kept else None}
        if step.name != final:
            state["Catch"] = catch
            states[f"{step.name} failed"] = _failure_state(step.name, final)
        if step.when:
            source, _, attr = step.when.partition(".")
            states[f"{step.name}?"] = {
                "Type": "Choice",
                "Choices": [{"Variable": f"$.run.{source}.output.{attr}[0]", "IsPresent": True, "Next": step.name}],
                "Default": nxt}
        states[step.name] = state
    # Conditional steps are entered through their Choice.
    for i, step in enumerate(PIPELINE):
        if step.when and i > 0:
            prev = states[names[i - 1]]
            prev["Next"] = f"{step.name}?"
    return {"Comment": "cst pipeline, generated from shared.pipeline.PIPELINE", "StartAt": START, "States": states}


def state_order(definition: dict) -> list[str]:
    """The step states in the order an execution without failures visits them (Choices followed to their step)."""
    states, order, name = definition["States"], [], definition["StartAt"]
    while name is not None:
        state = states[name]
        if state["Type"] == "Choice":
            name = state["Choices"][0]["Next"]
            continue
        if name != START:
            order.append(name)
        name = None if state.get("End") else state.get("Next")
    return order
