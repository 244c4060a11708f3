"""The domain's records as types: a prediction, its outcome, a signal and its risk decision, a failure, a run's
summary. Each is produced by one service, stored by one store (Parquet schemas are derived from the types) and read
by the others, the CLI and the API as the same type; the API's response models are these.
"""

from __future__ import annotations

import json
import types
from collections import Counter
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Horizon = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,3}[hdw]$")]
"""A forecast horizon by its length: 1h, 24h, 7d, 30d (the settings' `training.horizons` name the served ones)."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _none(value: Any) -> bool:
    return value is None


def absent(description: str | None = None) -> Any:
    """A fact a record holds only when it was judged: stored and answered without the key when it was not."""
    return Field(None, description=description, exclude_if=_none)


class TopFeature(Record):
    feature: str
    contribution: float = Field(description="SHAP value in the meta-learner's logit")


class Prediction(Record):
    """One forecast: (horizon, coin, decision time, model version) is its identity; the run that logged it, too."""

    run_id: str
    coin: str
    horizon: Horizon
    as_of: str
    decision_ts: int = Field(description="the decision time: the close of the candle the features end with (epoch ms)")
    p_up: float = Field(description="calibrated probability that the forward log return is positive")
    p_low: float = Field(description="Venn-Abers interval of p_up, lower end")
    p_high: float
    direction: int = Field(description="1 up, -1 down")
    confidence: float = Field(description="the interval's lower bound for the predicted direction")
    q10: float = Field(description="the model's return quantiles (forward log return)")
    q50: float
    q90: float
    model_version: str
    actionable: bool = Field(description="certified horizon and confidence at or above the threshold")
    shap_base: float
    top_features: str = Field(description="JSON list of the largest SHAP contributions: [{feature, contribution}]")
    range_low: float | None = Field(None, description="the served 80% range of the forward log return: q50 +- the "
                                                      "conformal multiple of vol_forecast; null until outcomes exist")
    range_high: float | None = None
    vol_forecast: float | None = Field(None, description="the volatility forecast: standard deviation of the forward "
                                                         "log return over the horizon; null when the model has none")
    skill: str | None = Field(None, description="the model's verdict on its own skill out of sample")
    p_beats: float | None = Field(None, description="calibrated probability that the coin's forward log return "
                                                    "beats the median coin of the decision's universe")
    p_beats_low: float | None = Field(None, description="Venn-Abers interval of p_beats, lower end")
    p_beats_high: float | None = None
    beats_score: float | None = Field(None, description="the cross-sectional stack's logit: ranks the coins")
    beats_confidence: float | None = Field(None, description="the interval's lower bound for the predicted side "
                                                             "(beats or lags the universe)")
    beats_actionable: bool = Field(False, description="certified cross-sectional stack and beats_confidence at or "
                                                      "above the threshold")
    beats_skill: str | None = Field(None, description="the cross-sectional stack's verdict on its own skill")
    beats_top_features: str | None = Field(None, description="JSON list of the largest SHAP contributions to "
                                                             "beats_score")

    def tops(self) -> list[TopFeature]:
        return [TopFeature.model_validate(t) for t in json.loads(self.top_features)]


class Outcome(Record):
    """A matured prediction with what happened: recorded once per prediction identity."""

    run_id: str
    coin: str
    horizon: Horizon
    decision_ts: int
    matured_ts: int
    recorded_as_of: str
    recorded_by: str
    realized_return: float
    direction: int
    hit: bool
    p_up: float
    confidence: float
    actionable: bool
    model_version: str
    q10: float
    q90: float
    range_low: float | None = None
    range_high: float | None = None
    in_range: bool | None = None
    q50: float | None = None
    vol_forecast: float | None = None


class NoOutcome(Record):
    """A matured prediction that has no outcome, and why; reported once, never dropped silently."""

    run_id: str
    coin: str
    horizon: Horizon
    decision_ts: int
    matured_ts: int
    recorded_by: str
    reason: Literal["stopped_trading", "price_missing"] = Field(
        description="stopped_trading: the coin has no price from before the horizon's end on (it left the venue, "
                    "or its prices stopped arriving); price_missing: a price at the decision or the horizon's end "
                    "is missing while the coin traded on")
    last_price_ts: int | None = Field(None, description="open time of the coin's last candle read, epoch ms")


class CoinPerformance(Record):
    """A coin's rolling record on a horizon, over its last `window` outcomes."""

    horizon: Horizon
    coin: str
    run_id: str
    window: int
    hit_rate: float
    brier: float
    ece: float
    actionable_hit_rate: float | None = None
    actionable_outcomes: int | None = absent("how many of the window's outcomes were actionable")


class GuardDecision(Record):
    guard: str
    allow: bool
    scale: float
    reason: str


class BookDecision(GuardDecision):
    """A decision on one order of a book (the backtest's, the live gate's): a guard's, or the book's own refusal
    (guard "backtest") before any guard was asked."""

    ts: int = Field(description="the order's decision time (epoch ms)")
    coin: str
    direction: int
    horizon_days: int
    notional: float | None = Field(description="the notional the guards judged (none when turned away before them)")


class RiskDecision(Record):
    """What the risk gate decided for one signal: entered (size, notional, cost) or not, and every guard's reason."""

    coin: str
    allow: bool
    size_fraction: float
    notional: float
    cost_bps: float | None
    decisions: list[GuardDecision]

    @property
    def refusal(self) -> str | None:
        return None if self.allow else next((d.reason for d in self.decisions if not d.allow), "refused")


class Signal(Record):
    """A coin on which enough horizons agree at or above the threshold, and the risk gate's decision on it."""

    coin: str
    direction: Literal["up", "down", "beats", "lags"] = Field(
        description="up/down: the price's direction; beats/lags: against the median coin of the universe")
    target: Literal["direction", "cross_section"] = "direction"
    horizons: list[str]
    min_confidence: float
    p_up: dict[str, float] = Field(description="per agreeing horizon: P(up), or P(beats) for a cross-sectional signal")
    q: dict[str, list[float]] = {}
    vol: dict[str, float] = Field({}, description="per agreeing horizon with one: the volatility forecast (sd of the "
                                                  "forward log return over the horizon)")
    decision_ts: dict[str, int] = {}
    risk: RiskDecision | None = None
    tradable: bool = False


class Forecast(Record):
    """One line of the forecast board: a prediction as a trader reads it, with its range as prices and its verdict."""

    coin: str
    horizon: Horizon
    decision: str = Field(description="the decision time (ISO, UTC)")
    p_up: float
    p_up_low: float
    p_up_high: float
    p_beats: float | None = None
    vol_forecast: float | None = None
    range_low: float | None = Field(None, description="the 80% range's low end, as a log return")
    range_high: float | None = None
    close: float | None = Field(None, description="the close at the decision time, where the lake holds it")
    price_low: float | None = None
    price_high: float | None = None
    skill: str | None = Field(None, description="the model's verdict on its own skill out of sample")
    confidence: float
    actionable: bool
    why: str = Field(description="'actionable', or in words why not")
    horizon_certified: bool
    change: float | None = Field(None, description="P(up) minus the coin's previous forecast's, where there is one")


class BasketLeg(Record):
    """One name of the market-neutral basket."""

    coin: str
    side: Literal["long", "short"]
    score: float = Field(description="the cross-sectional stack's score (its logit of P(beats))")
    p_beats: float | None = None
    weight: float = Field(description="signed share of equity")
    notional: float
    impact_bps: float = Field(description="the square-root impact model's cost of entering it")


class Basket(Record):
    """Long the top of the cross-sectional ranking, short the bottom, within the guards; labelled with what the
    ranking showed on data it never fitted on. A research basket unless that skill is demonstrated."""

    horizon: str
    decision_ts: int
    model_version: str
    skill: str | None = Field(None, description="the cross-sectional stack's verdict on its own skill")
    held_out_ic: dict[str, Any] | None = Field(None, description="rank IC of the score on the calibration rows")
    long: list[BasketLeg] = []
    short: list[BasketLeg] = []
    ranked: int = 0
    left_out: dict[str, str] = {}
    guards: dict[str, str] = {}
    label: str = ""


class Failure(Record):
    """A step (or a Map item of it) that failed, with a code a user can act on."""

    step: str
    item: str | None = None
    code: str
    message: str


class RunSummary(Record):
    """What a run did: what ran, what was excluded and why, the signals and every failure."""

    model_config = ConfigDict(extra="ignore")  # summaries of older runs may carry fields retired since

    run_id: str
    as_of: str
    source: str = ""
    status: Literal["complete", "failed"] = "complete"
    failures: list[Failure] = []
    coins_total: int = 0
    coins_predicted: int = 0
    excluded: dict[str, str] = Field({}, description="coin -> why it has no prediction at all")
    partially_excluded: dict[str, dict[str, str]] = Field({}, description="coin -> horizon -> why that one is missing")
    predictions: int = 0
    new_predictions: int = 0
    served_from_earlier_runs: dict[str, str] = Field({}, description="horizon -> the run that logged its decision")
    actionable: int = 0
    uncertified_horizons: dict[str, str] = {}
    signals: list[Signal] = []
    tradable_signals: int = 0
    # The cross-sectional probabilities under the same rule: long (beats) and short (lags) candidates; why a
    # horizon's cross-sectional stack is not certified; the market-neutral basket, or why there is none.
    cross_section_signals: list[Signal] = []
    cross_section_uncertified: dict[str, str] = {}
    basket: Basket | None = None
    basket_note: str | None = None
    outcomes_recorded: int = 0
    no_outcome: dict[str, dict[str, int]] = Field({}, description="horizon -> reason -> matured predictions that "
                                                                  "have no outcome (NoOutcome)")
    drift: dict[str, DriftVerdict] = {}
    universes: dict[str, Universe] = Field({}, description="timeframe -> the universe of this run's decision")
    trained: dict[str, str] = {}
    retrained: dict[str, dict[str, Any]] = {}
    retrain_deferred: dict[str, str] = Field({}, description="horizon -> why retraining is due, where the run served "
                                                             "with the current models (--no-retrain)")
    horizons_without_model: dict[str, str] = {}
    quality_key: str | None = None
    fetch_failures: int | None = None
    timings: dict[str, float] = {}


class Universe(Record):
    """The coins one decision considered, chosen from what was known at its time (services/features/universe.py),
    and the rule that left out each other coin that had traded by then."""

    timeframe: str
    venue: str = Field(description="the source and market type of its prices (binance-perp, yahoo, kraken)")
    decision_ms: int = Field(description="the decision time (close of the latest candle), epoch ms")
    members: list[str] = []
    excluded: dict[str, str] = Field({}, description="coin -> listing_age | illiquid | stablecoin | max_coins | "
                                                     "no candle at this time")

    def describe(self) -> str:
        """In one line: its size and venue, and the rule that left out each other coin (counted by rule when more
        than a dozen were left out; `excluded` lists every one)."""
        out = sorted(self.excluded.items())
        if len(out) <= 12:
            left = ", ".join(f"{c} ({why})" for c, why in out)
        else:
            left = ", ".join(f"{why} {n}" for why, n in sorted(Counter(self.excluded.values()).items()))
        when = datetime.fromtimestamp(self.decision_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (f"{self.timeframe} universe at {when} ({self.venue}): {len(self.members)} coins"
                + (f"; left out {len(out)}: {left}" if out else ""))


class DriftVerdict(Record):
    """One horizon's drift verdict at a run: what was compared, and whether it asks for a retrain and why."""

    model_config = ConfigDict(extra="allow")  # verdicts of older runs pass through as they were written

    retrain: bool = False
    reasons: list[str] = []
    note: str | None = absent("why nothing was compared (no rows at this as-of)")
    rows_compared: int | None = absent("decision times after the training window whose features were compared")
    outcomes: int | None = absent("the horizon's matured predictions on record")
    outcomes_of_this_model: int | None = absent("of them, the serving model's (calibration and decay judge these)")
    model_age_days: float | None = absent("days since the model's training data ended")
    psi_note: str | None = absent("why feature drift was not judged")
    psi_max: float | None = absent()
    psi_drifting: list[str] | None = absent("features whose PSI crossed the threshold")
    outcome_note: str | None = absent("why calibration and decay were not judged")
    ece_recent: float | None = absent()
    brier_recent: float | None = absent()


class GateDecision(Record):
    """The registry gate's decision on a new model version: promoted to CURRENT or kept out, and why."""

    model_config = ConfigDict(extra="allow")  # decisions of older versions pass through as they were written

    promote: bool
    reason: str
    previous: str | None = absent("the CURRENT version it was compared with")
    rows: int | None = absent("unseen validation rows both were scored on")
    brier_new: float | None = absent()
    brier_previous: float | None = absent()
    search_stopped_by_time: dict[str, list[str]] | None = absent("members whose tuning the time net stopped")


class TrainingWindow(Record):
    model_config = ConfigDict(extra="ignore")

    first: str
    last: str = Field(description="the last decision time trained on; drift and outcomes judge only later rows")
    rows: int
    coins: list[str]
    folds: int | None = None
    members_fitted_until: str | None = None
    calibration_from: str | None = None
    calibration_rows: int | None = None


class TargetModel(BaseModel):
    """A second target's stack inside a horizon version: P(the coin beats the median coin of its decision's
    universe), with its own search, calibration and out-of-sample skill verdict."""

    model_config = ConfigDict(extra="allow")

    target: Literal["beats"] = "beats"
    skill: dict[str, Any] | None = None
    metrics: dict[str, Any] = {}
    calibration: dict[str, Any] = {}
    members: dict[str, Any] = {}
    tuning: dict[str, Any] = {}
    rows: int = 0
    rows_excluded: dict[str, Any] = {}
    calibration_from: str = ""
    calibration_rows: int = 0


class RangeSeed(BaseModel):
    """Held-out normalized scores the served range starts from: |forward log return| / the volatility forecast on
    rows no model that forecast them saw (the calibration rows, with the served forecast; before them the
    walk-forward folds' test rows, with the fold models' forecast), for the last decision times a range window holds
    (at most 32 per decision time), so a new range begins calibrated, not from nothing."""

    ts: list[int] = Field(description="decision time of each score (epoch ms)")
    sigma: list[float] = Field(description="the out-of-sample volatility forecast of each score")
    score: list[float] = Field(description="|r| / sigma: the outcome's distance from no move, in forecast sds")


def vol_forecast_key(served: str) -> str:
    """The key of a served volatility forecast among the members and levels ("stack", "har", "long"): the label
    "HAR" names the har member."""
    return "har" if served == "HAR" else served


class VolModel(BaseModel):
    """The volatility forecast inside a horizon version: realized variance over the horizon from HAR and pooled
    gradient-boosting members, linearly stacked; its held-out QLIKE and R2 against HAR alone and the rolling mean."""

    model_config = ConfigDict(extra="allow")

    target: Literal["log_realized_variance"] = "log_realized_variance"
    log_residual_variance: float = Field(description="s2: the residual variance of the stack's out-of-fold log "
                                                     "forecasts (the level of versions without `levels`: s2 / 2)")
    levels: dict[str, float] | None = Field(
        None, description="per forecast (stack, har, long), the log mean correction: its variance is exp(log "
                          "forecast + level), level = log mean exp(out-of-fold residual less its mean) (smearing, "
                          "Duan 1983)")
    served: Literal["stack", "HAR", "long"] = Field(
        "stack", description="the forecast served: the stack, or the linear member that forecast the held-out rows "
                             "better alone (HAR, or long: HAR with the long-run level)")
    metrics: dict[str, Any] = {}
    members: dict[str, Any] = {}
    rows: int = 0
    rows_excluded: dict[str, Any] = {}
    range_seed: RangeSeed | None = Field(None, description="held-out scores a new served range starts from")


class ModelMetadata(BaseModel):
    """A model version as the registry stores it beside its ONNX files: what it was trained on and how, its
    out-of-sample metrics and skill verdict, the gate's decision, and what reproduces it (settings, libraries,
    code revision). Versions written before a field existed read with its default."""

    model_config = ConfigDict(extra="allow")  # fields of older or newer versions pass through unchanged

    horizon: Horizon
    version: str
    timeframe: str
    bars: int
    sequence_length: int = 1
    features: list[str]
    feature_hash: str = ""
    declared_layers: list[str] = []
    excluded_layers: dict[str, Any] = {}
    training_window: TrainingWindow
    skill: dict[str, Any] | None = Field(None, description="the out-of-sample skill test: demonstrated, verdict, ...")
    rows_excluded: dict[str, Any] = {}
    data_fingerprint: str = ""
    metrics: dict[str, Any] = {}
    calibration: dict[str, Any] = {}
    members: dict[str, Any] = {}
    tuning: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    settings_hash: str = ""
    code_revision: str | None = None
    libraries: dict[str, Any] = {}
    gate: GateDecision | None = Field(None, description="the registry gate's decision")
    drift_reference: dict[str, Any] = {}
    created: str = ""
    wall_seconds: float | None = Field(None, description="training's wall time (set by the training run)")
    beats: TargetModel | None = Field(None, description="the cross-sectional stack, P(beats the universe's median)")
    beats_note: str | None = Field(None, description="why this version has no cross-sectional stack")
    vol: VolModel | None = Field(None, description="the volatility forecast (realized variance over the horizon)")
    vol_note: str | None = Field(None, description="why this version has no volatility forecast")

    @field_validator("gate", mode="before")
    @classmethod
    def _no_decision(cls, value: Any) -> Any:
        return value or None  # versions written before the gate existed hold {}

    @property
    def promoted(self) -> bool:
        return self.gate is not None and self.gate.promote


class TrainingFailure(Record):
    """A horizon that was not trained: why, and whether training broke (a retry may succeed) or could not start."""

    error: str
    message: str
    failed: bool = False


TrainingResult = ModelMetadata | TrainingFailure


# --- Parquet schemas, derived from the records ---------------------------------------------------------------------

_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _arrow_type(annotation: Any) -> pa.DataType:
    if get_origin(annotation) is Annotated:
        return _arrow_type(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        (inner,) = [a for a in get_args(annotation) if a is not type(None)]
        return _arrow_type(inner)
    if get_origin(annotation) is Literal:
        (kind,) = {type(a) for a in get_args(annotation)}
        return _ARROW[kind]
    return _ARROW[annotation]


def arrow_fields(record: type[BaseModel]) -> dict[str, pa.DataType]:
    """The record's fields as Parquet columns, in the record's order."""
    return {name: _arrow_type(f.annotation) for name, f in record.model_fields.items()}


class Delivery(Record):
    """One alert's attempt on one channel."""

    channel: str = Field(description="the channel without its secret parts (scheme and host)")
    ok: bool
    detail: str = ""
    at: str


AlertEvent = Literal["signal_entered", "signal_left", "basket_changed", "run_failed", "universe_excluded",
                     "drift_retrain", "model_promoted", "model_refused", "test"]


class Alert(Record):
    """Something a trader is told once per decision: its event, what it concerns, the page it links to, and how each
    channel took it."""

    key: str = Field(description="event|subject|as-of: the same decision's same event is sent once")
    event: AlertEvent
    subject: str = Field(description="the coin, horizon or run it concerns")
    as_of: str
    run_id: str
    title: str
    body: str
    link: str
    deliveries: list[Delivery] = []


BookName = Literal["signals", "research"]


class Fill(Record):
    """One trade of a paper book at a daily close: a signal's entry or exit, or a rebalance of the research basket."""

    book: BookName
    ts: int = Field(description="the close it filled at (epoch ms): the decision candle's close, the next bar's open")
    coin: str
    action: Literal["entry", "exit", "rebalance"]
    side: int = Field(description="+1 bought, -1 sold")
    qty: float = Field(description="coins (contracts) traded, > 0")
    price: float
    notional: float
    fee: float
    impact: float = Field(description="the square-root impact model's cost, in quote currency")
    funding: float = Field(0.0, description="perpetual funding settled at this fill (a signal's exit: its days held)")
    pnl: float | None = Field(None, description="an exit: the position's profit after every cost")
    reason: str = Field(description="signal, horizon, delayed_exit, stop_loss, end_of_data, rebalance")
    decision_ts: int = Field(description="the decision the position follows (epoch ms)")
    run_id: str = Field(description="the run whose book step made the fill")


class BookPosition(Record):
    """An open position of the signals book: the order that opened it and what its entry cost, enough to mark, guard
    and close it exactly as the backtest does."""

    coin: str
    direction: int
    qty: float
    entry_ts: int
    exit_ts: int = Field(description="the close its horizon ends at")
    entry_price: float
    entry_notional: float
    entry_impact_bps: float
    entry_cost: float
    adv: float
    daily_vol: float
    edge_bps: float = Field(description="the expected edge the guards judged it by")
    decision_ts: int
    horizon_days: int
    p_up: float
    q10: float
    q50: float
    q90: float
    vol_forecast: float | None = None
    last_price: float = Field(description="its latest mark (held when the coin has no candle)")


class BookMark(Record):
    """A book marked at a daily close."""

    ts: int
    equity: float
    gross: float = Field(description="gross exposure in quote currency")


class BookState(Record):
    """A paper book as it stands after its last step: cash, positions, costs paid and the equity at every close."""

    book: BookName
    label: str
    venue: str | None = None
    start_ts: int = Field(description="its first close (epoch ms)")
    last_close_ts: int
    cash: float
    peak_equity: float
    halted: bool = False
    fees: float = 0.0
    impact: float = 0.0
    funding: float = 0.0
    traded_notional: float = 0.0
    positions: list[BookPosition] = Field([], description="the signals book's open positions")
    holdings: dict[str, float] = Field({}, description="the research book's signed units per coin")
    last_prices: dict[str, float] = Field({}, description="the research book's latest mark per held coin")
    marks: list[BookMark] = []
    runs: list[str] = Field([], description="the runs that stepped it, in order")


class BookStep(Record):
    """What one run's book step did: the closes it advanced through, its fills and the gate's decisions."""

    book: BookName
    run_id: str
    as_of: str
    closes: list[int]
    fills: list[Fill] = []
    decisions: list[BookDecision] = []
    orders: int = Field(0, description="orders (signals) or legs (basket) it was handed at its close")
    targets: dict[str, float] = Field({}, description="the research book: the basket's signed weights it traded to")
    model_version: str | None = None
    note: str | None = None


ReconcileCause = Literal["missed_run", "signal", "model_version", "universe", "gate", "fill_price", "cost",
                         "unexplained"]


class Difference(Record):
    """One way the replay of the backtest and a paper book part: what, where, by how much, and why."""

    book: BookName
    cause: ReconcileCause
    coin: str | None = None
    ts: int | None = None
    detail: str
    book_value: float | None = None
    replay_value: float | None = None


class Reconciliation(Record):
    """The backtest replayed from the logged predictions over the books' period, set against the books."""

    from_ts: int
    to_ts: int
    made_at: str
    books: dict[str, dict[str, Any]] = Field(description="per book: equity of book and replay, fills, P&L gap")
    differences: list[Difference] = []
    unexplained: int = 0
    verdict: str


class BookRecord(Record):
    """One paper book's track record: its equity against BTC and the equal-weight universe, its drawdown, hits and
    costs, and what it holds now."""

    book: BookName
    label: str
    venue: str | None = None
    start_ts: int
    last_close_ts: int
    ts: list[int] = Field(description="the daily closes of the curves")
    equity: list[float] = Field(description="the book's equity at each close")
    growth: list[float] = Field(description="equity / starting equity")
    btc: list[float | None] = Field(description="BTC bought at the book's first close, growth of 1 (None: no BTC)")
    equal_weight: list[float | None] = Field(description="the universe's coins equally weighted, rebalanced daily")
    drawdown: list[float] = Field(description="fraction below the running peak")
    total_return: float
    max_drawdown: float
    closed: int = Field(description="signals: positions closed; research: rebalance days")
    wins: int = Field(description="signals: closed with a profit; research: days the equity rose")
    fills: int
    fees: float
    impact: float
    funding: float
    positions: list[BookPosition] = []
    holdings: dict[str, float] = {}


class TrackRecord(Record):
    """The paper books as a trader checks them: each book's record, the last reconciliation with the backtest, and
    the alerts sent over the books' period by event."""

    books: list[BookRecord] = []
    reconciliation: Reconciliation | None = None
    alerts_sent: dict[str, int] = Field({}, description="event -> alerts sent since the books' first close")
    benchmark_note: str = ""
