"""The pipeline as data: the one list of steps that the local runner, the Lambda handlers and the state machine read.

Each step names its input and output contracts, where it runs and how it is retried; the orchestrator binds the
name to the step's function (`services/orchestrator/entries.py`). Steps hand off through the lake: a step reads what
earlier steps stored under the run and writes its own output contract there (`shared.runs`), which also makes
re-running a finished step a no-op.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from shared.pipeline.contracts import CONTRACTS, StepOutput

Runtime = Literal["process", "lambda", "map", "sagemaker"]


class Retry(BaseModel):
    """Retried error codes (transient ones: a later attempt can succeed), attempts and backoff."""

    codes: list[str] = ["transient", "unreachable", "rate_limited", "server_error", "timeout"]
    max_attempts: int = 3
    interval_s: float = 2.0
    backoff: float = 2.0


class Step(BaseModel):
    name: str
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
    Step(name="fetch", output="IngestOutput", runtime="map", map_over="batches", max_concurrency=1, secrets=True,
         doc="a live run's sources, one batch of symbols per task (the market-wide sources with the first), one "
             "batch after another: land raw responses, stage the parsed series"),
    Step(name="ingest", output="IngestOutput",
         doc="the run's staged series: the fetch batches' joined (live), or the files read, landed and staged"),
    Step(name="validate", output="ValidateOutput", doc="quality gate at the run's as-of: report, quarantine, clean series"),
    Step(name="features", output="FeaturesOutput", doc="point-in-time features and price panels per timeframe"),
    Step(name="train", output="TrainOutput", runtime="sagemaker", when="features.untrained",
         retry=Retry(max_attempts=1), doc="horizons without a CURRENT model are trained first (quick budget)"),
    Step(name="predict", output="PredictOutput", runtime="map", map_over="horizons",
         doc="one horizon's decision time: ONNX, SHAP, the confidence filter, the log"),
    Step(name="risk", output="RiskOutput", doc="consensus over horizons and the risk gate on each signal"),
    Step(name="books", output="BooksOutput",
         doc="the paper books at the run's daily close: the signals book through the risk gate, the research book at "
             "the basket's weights"),
    Step(name="outcomes", output="OutcomesOutput",
         doc="outcomes of predictions that matured since the last run, once each"),
    Step(name="performance", output="PerformanceOutput", doc="rolling hit rate, Brier and ECE per coin and horizon"),
    Step(name="drift", output="DriftOutput", doc="feature PSI, calibration drift and decay per horizon"),
    Step(name="retrain", output="TrainOutput", runtime="sagemaker", when="drift.retrain",
         retry=Retry(max_attempts=1), doc="drifting horizons retrained through the gate"),
    Step(name="summary", output="SummaryOutput", rerun=True,
         doc="the run's summary: what ran, what was excluded and why, signals, failures"),
)

STEPS: dict[str, Step] = {s.name: s for s in PIPELINE}

