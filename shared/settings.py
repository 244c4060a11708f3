"""One settings tree for every knob; secrets are SecretStr and resolved from Secrets Manager or the environment."""

from __future__ import annotations

import json
from datetime import timedelta
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import CstError

# Timeframe strings are ccxt's; their length in milliseconds is derived once here.
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def timeframe_ms(timeframe: str) -> int:
    """Length of a ccxt-style timeframe ('1h', '1d', '15m') in milliseconds."""
    try:
        return int(timeframe[:-1]) * _UNIT_MS[timeframe[-1]]
    except (KeyError, ValueError) as exc:
        raise CstError("bad_timeframe", f"unknown timeframe {timeframe!r}; use e.g. 1h, 4h, 1d") from exc


class LakeSettings(BaseModel):
    # A folder path (default) or s3://bucket[/prefix].
    uri: str = "./lake"


class ExchangeSettings(BaseModel):
    id: str = "kraken"
    quote: str = "USD"
    # A perpetual swap's settlement currency (ccxt's BTC/USDT:USDT); None: spot pairs (BTC/USD).
    settle: str | None = None
    # The exchange's rate limit counts request weight (Binance: klines by `limit`, depth by levels, aggTrades 20),
    # not requests: the pacing charges each request ccxt's cost for its endpoint, which for Binance's USDT-M API
    # is the published weight. `http.rate_per_s["exchange"]` is then weight per second.
    weighted: bool = False
    # The published request-weight budget per minute (Binance USDT-M: 2400 per IP); a configured rate above it is
    # warned about.
    published_weight_per_min: float | None = None
    # The longest span one trades request may ask for from its `since` (Binance's aggTrades: one hour); None: the
    # exchange pages from `since` onwards without an end.
    trades_span: timedelta | None = None
    # The coins whose trades (the whale layer) are fetched; None: every coin. One page of Binance's aggTrades
    # weighs 20 and a liquid coin trades thousands of times an hour, so at hundreds of coins the whale layer is
    # kept to a few.
    trades_coins: list[str] | None = None
    # With `universe.coins = "listed"`: at most this many symbols are fetched (the live run's batches are planned
    # before the markets are read); more listed than this is reported.
    max_symbols: int = Field(800, ge=1)
    # Moves every REST endpoint of the exchange to this host, each keeping its path (a proxy, or the loopback
    # fake in tests).
    base_url: str | None = None
    # The market lists load_markets asks for (ccxt's fetchMarkets types, e.g. ["spot"] for Binance); None: the
    # exchange's default.
    market_types: list[str] | None = None
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    ohlcv_page_limit: int = 720
    # A run's span per timeframe: how far back a live run's paginated OHLCV starts, and the history every run (live
    # or file import) judges and builds features over, so a run's cost stays flat as the lake's history grows.
    # A series of any other timeframe (order-book snapshots) is read over the longest span. Training reads all.
    history: dict[str, timedelta] = {"1h": timedelta(days=30), "1d": timedelta(days=720)}
    # Symbols one fetch task (one Lambda) takes: a live run's fetch is a Map over batches of this many, run one
    # after another (the exchange's rate limit is per client: batches side by side would only queue for it). At
    # Kraken's 0.8 requests/s and 4 requests a symbol (1h and 1d candles, book, trades), 100 symbols take ~500 s,
    # inside Lambda's 900 s with room for retries.
    batch_symbols: int = Field(100, ge=1)
    orderbook_levels: int = 25
    # A book observed at most this long after the run's as-of is the book as of the run: a live run's as-of is
    # the latest closed hourly candle, and its fetches land within that hour; later than that it is after the
    # as-of and not read.
    orderbook_window_s: float = 3600.0
    trades_limit: int = 1000
    # Pages of trades one run may fetch to catch up from where the collected trades end.
    trades_max_pages: int = 50
    # A trade is a whale trade when its notional (price * amount, in quote currency) is at least this.
    whale_notional: float = 100_000.0
    whale_timeframe: str = "1h"


class HttpSettings(BaseModel):
    timeout_s: float = 10.0
    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    # Requests in flight across all sources.
    concurrency: int = 16
    # Requests per second per source (a source absent here uses default_rate_per_s). "exchange" is Kraken's public
    # REST limit, which is per IP and shared by every process behind it: about 1 request/s (Kraken's support
    # article, quoted by ccxt's kraken `rateLimit: 1000`), and ccxt spaces OHLC/Depth/Trades at 1.2 s because 1 s
    # trips "EGeneral:Too many requests"; 0.8/s stays under both. Another exchange id needs its own figure (ccxt's
    # `rateLimit` for it; a rate above that is warned about).
    rate_per_s: dict[str, float] = {"exchange": 0.8, "fear_greed": 2.0, "blockchain": 2.0, "coinmetrics": 1.5}
    default_rate_per_s: float = 5.0


class SourceSettings(BaseModel):
    fear_greed_url: str = "https://api.alternative.me/fng/"
    blockchain_url: str = "https://api.blockchain.info/charts"
    blockchain_metrics: list[str] = [
        "hash-rate",
        "difficulty",
        "n-transactions-total",
        "transaction-fees",
        "output-volume",
        "miners-revenue",
    ]
    blockchain_timespan: str = "1year"
    coinmetrics_url: str = "https://community-api.coinmetrics.io/v4"
    coinmetrics_api_key: SecretStr | None = None
    # Community metrics (free tier): active addresses, transaction count, hash rate where the chain has one.
    coinmetrics_metrics: list[str] = ["AdrActCnt", "TxCnt", "HashRate"]
    # Assets whose on-chain metrics come from Coin Metrics (BTC comes from blockchain.com).
    coinmetrics_assets: list[str] = ["ETH", "LTC", "DOGE", "ADA", "XRP", "BNB", "LINK", "SOL", "DOT"]
    coinmetrics_lookback: timedelta = timedelta(days=365)
    # A folder of files may hold prices of several venues (services/ingest/sources/layouts.py: `binance` spot and
    # `binance-perp` are two). A run reads one venue's prices, since a universe belongs to one venue and market
    # type: this one, or when unset the first of `venue_preference` the folder holds. `cst validate` reads all.
    venue: str | None = None
    venue_preference: list[str] = ["yahoo", "kraken", "binance", "binance-perp", "bybit", "bybit-perp"]


class UniverseSettings(BaseModel):
    """Which coins a decision considers, chosen at each decision time from what was known then
    (services/features/universe.py). Per timeframe where a count is in bars. `min_history` and `liquidity_window`
    stay within `features.settle_bars`, so a run's written rows see the same universe a whole-history build does."""

    # The live exchange's coins (a folder of files holds its own), or "listed": every active market the exchange
    # lists in `exchange.quote` (settled in `exchange.settle` for perpetuals), read from its market list each run.
    coins: list[str] | Literal["listed"] = ["BTC", "ETH", "XRP", "BNB", "DOGE", "ADA", "LTC", "LINK", "SOL", "DOT",
                                            "USDT", "USDC"]
    # Bars since a coin's first candle before it enters (a week of hours, two months of days).
    min_history: dict[str, int] = {"1h": 168, "1d": 60}
    # Median quote volume (USD or USDT) per bar over `liquidity_window` bars, at least `min_quote_volume`.
    liquidity_window: dict[str, int] = {"1h": 168, "1d": 30}
    # A floor against dust, not a selection: on Binance USDT-M at the end of 2025 about 95% of the contracts
    # clear it (medians: 116k USDT an hour, 8.3M a day; the 5% quantiles 24k and 1.6M).
    min_quote_volume: dict[str, float] = {"1h": 20_000.0, "1d": 1_000_000.0}
    # A stablecoin by price behaviour: every close of the liquidity window within this share of its median.
    stable_band: float = 0.01
    # At most this many coins, the most liquid.
    max_coins: int = 500


class QualitySettings(BaseModel):
    # Rules run in this order; each is a registered unit in services/features/quality/rules.py.
    rules: list[str] = [
        "duplicates",
        "non_monotonic",
        "non_positive_price",
        "out_of_range",
        "ohlc_inconsistent",
        "negative_volume",
        "volume_unavailable",
        "gap",
        "outlier_return",
        "stale",
    ]
    # A series is stale when its last point is older than this many timeframes at as-of.
    stale_timeframes: float = 2.0
    # |robust z| of a log return at or above this is flagged (never altered).
    outlier_z: float = 12.0
    # More zero-volume candles than this share means the source does not publish volume.
    zero_volume_max_share: float = 0.05
    # Relative tolerance for OHLC consistency (float32 exports round the last digits).
    ohlc_rel_tol: float = 1e-6
    # A value is visible at as-of only once published: candle open + timeframe for OHLCV,
    # after the day's close for on-chain daily values, after 00:00 UTC for the sentiment index.
    # Margins: alternative.me posts the day's index shortly after 00:00 UTC; blockchain.com's daily
    # values are final only after the day ends and are computed with some delay.
    publication_lag: dict[str, str] = {"ohlcv": "timeframe", "onchain": "25h", "sentiment": "1h", "trades": "timeframe", "orderbook": "0m"}
    # How many example rows each issue keeps in the report (counts are always complete).
    examples: int = 5


class FeatureSet(BaseModel):
    """What one timeframe's features are built from; a layer left out is named with its reason (model metadata shows it)."""

    layers: list[str]
    excluded_layers: dict[str, str] = {}
    # Lookbacks in bars.
    return_lookbacks: list[int]
    vol_windows: list[int]
    zscore_window: int
    beta_window: int
    # How long a market-wide value (sentiment, on-chain) stays the current one after publication;
    # older than this at a row's time -> the row is excluded, never carried forward.
    market_max_age: str = "1d"


class FeatureSettings(BaseModel):
    rsi_period: int = 14
    atr_period: int = 14
    parkinson_window: int = 14
    # HAR terms (Corsi 2009): log of the mean Parkinson variance per bar over the last 1, 7 and 30 bars
    # (features har_<w>); the volatility forecast's HAR member reads exactly these.
    har_windows: list[int] = [1, 7, 30]
    # The coin's long-run level beside them (features har_long_<w>): log of the mean Parkinson variance per bar over
    # up to the last 90 bars, fewer (down to the longest HAR window) for a coin younger than that. A coin's volatility
    # reverts to its own level, which three months say better than one; the volatility forecast's second linear
    # member reads the HAR terms and these, while HAR alone stays the standard baseline.
    har_long_windows: list[int] = [90]
    macd: tuple[int, int, int] = (12, 26, 9)
    stoch: tuple[int, int, int] = (14, 3, 3)
    bollinger: tuple[int, float] = (20, 2.0)
    # Coins that lead (their returns become inputs for every coin) and the market-aggregate exclusions.
    reference_coins: list[str] = ["BTC", "ETH"]
    stablecoins: list[str] = ["USDT", "USDC", "DAI", "BUSD", "TUSD", "FDUSD"]
    # Market aggregates need at least this many coins at a timestep.
    min_coins_for_market: int = 3
    # The price series used per coin: the first quote found in this order.
    quote_preference: list[str] = ["USD", "USDT", "USDC", "EUR"]
    fear_greed_extremes: tuple[float, float] = (25.0, 75.0)
    # Fear & Greed changes over these many days (features fg_chg_<k>): the day's move and the week's.
    fear_greed_changes: list[int] = [1, 7]
    # On-chain log growth over these many days (features oc_<metric>_g<k>): a week and a month of activity.
    onchain_growth: list[int] = [7, 30]
    # Network metrics used as market-wide features when the onchain layer is declared (series symbols).
    onchain_series: list[str] = ["BTC.hash-rate", "BTC.n-transactions-total", "BTC.transaction-fees", "BTC.output-volume"]
    # A run writes feature rows only this many bars after the start of its span: the recursive indicators (RSI,
    # ATR, MACD: exponential smoothing) forget their start by then to below float32 rounding ((25/27)^400 ~ 1e-13
    # for MACD's 26-bar EMA), so a run's rows equal a build over the whole history. Earlier rows of its span are
    # the ones earlier runs wrote.
    settle_bars: int = 400
    sets: dict[str, FeatureSet] = {
        "1d": FeatureSet(
            layers=["price", "volume", "sentiment", "cross"],
            excluded_layers={
                "onchain": "the recorded on-chain metrics span 2023-04-30..2024-04-27 (BTC only): as a required "
                "layer they would exclude every other daily row; enable when a longer history is ingested",
                "liquidity": "order books and trades are fetched live only, as recent snapshots: no history "
                "to train on; whale trades are bucketed hourly, so the daily set could use them only once "
                "daily buckets are collected",
            },
            return_lookbacks=[1, 3, 7, 14, 30],
            vol_windows=[7, 30],
            zscore_window=30,
            beta_window=30,
            market_max_age="1d",
        ),
        "1h": FeatureSet(
            layers=["price", "cross"],
            excluded_layers={
                "volume": "the hourly source publishes no volume (quality gate: volume_unavailable)",
                "sentiment": "the Fear & Greed history ends 2024-06-30, before the hourly span starts",
                "onchain": "no on-chain history overlaps the hourly span",
                "liquidity": "order-book and trade snapshots are live-only; no history to train on yet",
            },
            # Windows of at most a day (MACD's 35 bars is the longest): one missing candle then costs ~1.5
            # days of rows, not a week; the recorded hourly files have one gap (2025-01-02 14:00).
            return_lookbacks=[1, 4, 12, 24],
            vol_windows=[12, 24],
            zscore_window=24,
            beta_window=24,
            market_max_age="1d",
        ),
    }


class HorizonSpec(BaseModel):
    timeframe: str
    bars: int
    # The sequence network sees this many consecutive feature rows.
    sequence_length: int

    @property
    def length_ms(self) -> int:
        """How long the horizon is: `bars` candles of `timeframe`, in milliseconds."""
        return self.bars * timeframe_ms(self.timeframe)


class Budget(BaseModel):
    """How much search and training one retrain may spend (per horizon).

    The trial counts decide what is trained: the same data and settings give the same models on any machine.
    `timeout_s` is only a safety net per member's search; when it trips, the model card, the metadata and the
    evaluation say "search stopped by time after K of N trials".
    """

    folds: int
    trials: dict[str, int]
    timeout_s: float
    epochs: int
    gbt_max_estimators: int


class TrainingSettings(BaseModel):
    horizons: dict[str, HorizonSpec] = {
        "1h": HorizonSpec(timeframe="1h", bars=1, sequence_length=16),
        "24h": HorizonSpec(timeframe="1d", bars=1, sequence_length=16),
        "7d": HorizonSpec(timeframe="1d", bars=7, sequence_length=16),
        "30d": HorizonSpec(timeframe="1d", bars=30, sequence_length=16),
    }
    # |forward log return| at or below this is a move too small to trade after costs: such rows
    # do not teach direction (they are left out of training labels, never relabelled).
    dead_zone: float = 0.0025
    # What each horizon forecasts: the direction of the coin's price, and whether the coin beats the median coin
    # of its decision's universe (the cross-section). Both are stacked, calibrated and served with every prediction.
    targets: list[Literal["direction", "beats"]] = ["direction", "beats"]
    # A decision time with fewer observed coins in its universe has no cross-section to beat: no beats label.
    beats_min_coins: int = 5
    quantiles: tuple[float, float, float] = (0.1, 0.5, 0.9)
    budgets: dict[str, Budget] = {
        "quick": Budget(folds=3, trials={"lr": 4, "gbt": 3, "gru": 1}, timeout_s=1800, epochs=6, gbt_max_estimators=150),
        "full": Budget(folds=5, trials={"lr": 12, "gbt": 16, "gru": 4}, timeout_s=7200, epochs=20, gbt_max_estimators=400),
    }
    # A horizon trains only with at least this many labeled rows with full sequence windows: fewer cannot
    # fill the walk-forward folds of the member rows and the time blocks of the calibration rows.
    min_training_rows: int = 500
    # The first Optuna trial of a member that has no earlier study (later windows start from earlier windows'
    # best parameters instead): moderate, regularized settings that train within the quick budget on every horizon.
    first_trial: dict[str, dict[str, int | float]] = {
        "lr": {"C": 0.1},
        "gbt": {"n_estimators": 150, "num_leaves": 15, "learning_rate": 0.05, "min_child_samples": 100,
                "colsample_bytree": 0.7, "reg_lambda": 1.0},
        "gru": {"hidden": 32, "dropout": 0.1, "lr": 2e-3, "weight_decay": 1e-4},
    }
    # A retrain's search starts with the best parameters of this many earlier data windows, re-scored on the
    # new window (what earlier searches learned, without their scores pruning the new trials).
    warm_starts: int = 2
    # The latest share of distinct decision times calibrates the models that serve (they never fit on it).
    calibration_share: float = 0.3
    # Skill must be earned: the calibration block is cross-fitted in this many time blocks; skill counts as
    # demonstrated when the held-out Brier gain over the base rate per horizon window exceeds zero by `skill_z`
    # standard errors over at least `skill_min_windows` independent windows. Otherwise the base rate is served.
    skill_blocks: int = 5
    skill_z: float = 1.645
    skill_min_windows: int = 10
    # Venn-Abers and the other calibrators are tabulated on this many score points for export.
    calibration_grid: int = 512
    # Tables that are only scored, never exported (choosing the calibration method, the held-out probe), use at
    # most this many points: enough to rank the methods, at a quarter of the export grid's cost.
    calibration_probe_grid: int = 128
    # Return-quantile models (q10/q50/q90 size orders; they are not tuned): LightGBM quantile regression with
    # the gbt member's starting shape and at most this many trees (the budget's gbt_max_estimators caps it too).
    quantile_max_estimators: int = 150
    quantile_num_leaves: int = 15
    quantile_learning_rate: float = 0.05
    quantile_min_child_samples: int = 100
    # The volatility forecast (log of the realized Parkinson variance over the horizon): the HAR member has no
    # parameters to tune; the pooled gradient-boosting member on log variance uses these (the budget's
    # gbt_max_estimators caps the trees).
    vol_gbt: dict[str, int | float] = {"n_estimators": 300, "num_leaves": 15, "learning_rate": 0.05,
                                       "min_child_samples": 100, "colsample_bytree": 0.7, "reg_lambda": 1.0}
    # A new model replaces CURRENT only if its CV Brier is not worse than the current one's by more than this.
    gate_brier_tolerance: float = 0.002
    # The gate compares both models on validation rows the current one never saw when at least this many exist
    # (fewer make the Brier difference noise); otherwise it compares their CV figures.
    gate_min_unseen_rows: int = 100
    shap_top_k: int = 5
    shap_background: int = 16
    shap_permutations: int = 2
    # Every learner, every sampler and every search is seeded from this one number.
    seed: int = 7
    # Threads of every learner (LightGBM, torch), fixed so that results never depend on the machine's load.
    threads: int = 2


class RunSettings(BaseModel):
    """The main job: drift thresholds, outcome tracking, the process pool."""

    # Population stability index above this on a feature counts as feature drift.
    psi_threshold: float = 0.25
    # Share of features drifting that triggers a retrain of the horizon.
    psi_feature_share: float = 0.3
    # ECE on the most recent outcomes above this counts as calibration drift.
    ece_threshold: float = 0.10
    # Recent Brier worse than the model's CV Brier by more than this counts as performance decay.
    brier_decay: float = 0.02
    # Outcomes needed (per horizon) before calibration drift or decay is judged at all.
    min_outcomes: int = 100
    # The most recent outcomes judged: this many, widened to whole decision times and to at least
    # `min_outcome_times` of them (the outcomes of one decision time move together across coins).
    recent_outcomes: int = 300
    min_outcome_times: int = 10
    # Production retrain cadence: a model whose training data ends longer ago than this (per timeframe, a
    # duration such as "7d") is retrained even without drift. `cst evaluate --retrain-every` replays the same.
    retrain_every: dict[str, str] = {"1h": "7d", "1d": "30d"}
    # Rows per coin (decision times) compared with the training distribution for PSI.
    drift_window: dict[str, int] = {"1h": 72, "1d": 60}
    # Feature drift (PSI over deciles) is judged only on at least this many recent rows: fewer leave most
    # deciles nearly empty and the index noise.
    psi_min_rows: int = 30
    # Rolling window of outcomes for the per coin / horizon performance figures.
    performance_window: int = 50
    retrain_budget: str = "quick"
    process_workers: int = 2
    # Horizons predicted side by side (threads; onnxruntime releases the GIL), one ONNX thread each.
    horizon_workers: int = 2
    # A horizon's predictions may be actionable only if its held-out confident bucket (confidence >=
    # the threshold) held at least this many rows and hit at least the threshold: 80% must mean 80%.
    certify_min_n: int = 30
    # Rows (coins x one horizon) from which SHAP runs in the process pool. Below it SHAP stays in the
    # horizon's thread: horizons already run side by side on the cores, and spawning workers that load
    # every model costs about a second (see BENCHMARKS.md, bench_predict: 128 rows of ONE horizon take
    # 2.5 s in process and 1.5 s in a 2-worker pool, start-up included).
    pool_min_rows: int = 512
    # The served return range: nominal miscoverage (0.2 = an 80% range); the adaptive conformal step per decision
    # time (Gibbs & Candes 2021: alpha_t+1 = alpha_t + gamma / bars * (alpha - miss share_t)); the scores of how
    # many recent horizons it ranks (window x bars decision times: independent outcomes, not overlapping ones; 240
    # pin the window's 80% quantile down to about +-0.026 in coverage, one binomial sd, where 60 left +-0.052, wider
    # than a range's tolerance; a long horizon's window holds all the history there is either way); how many
    # volatility bins keep their own scores and alpha (terciles).
    range_alpha: float = 0.2
    range_gamma: float = 0.01
    range_window: int = 240
    range_bins: int = 3
    # The naive range evaluation shows beside the served one: +-z sd of this many one-bar returns per timeframe.
    range_naive_window: dict[str, int] = {"1h": 168, "1d": 30}


class AlertSettings(BaseModel):
    """Who is told what, and how often. `urls` are Apprise URLs (tgram://, discord://, slack://, mailto://, json://
    and other webhooks): secrets, from Secrets Manager (key `alert_urls`, a JSON list) or CST_ALERTS__URLS."""

    urls: list[SecretStr] = []
    # A run that leaves out more than this share of its universe's coins is an event.
    max_excluded_share: float = Field(0.2, ge=0.0, le=1.0)
    # Deliveries per channel per hour, at most; more are recorded as held back, not sent.
    per_channel_per_hour: int = Field(20, ge=1)
    # The dashboard's address, for the link in every alert.
    dashboard_url: str = "http://127.0.0.1:8080"
    # Per-attempt timeout of one delivery (seconds).
    timeout_s: float = 10.0
    # In the cloud the summary step publishes each run here and the alerts function delivers (the CDK app sets it).
    topic_arn: str = ""


class ApiSettings(BaseModel):
    """Who the API trusts and what it starts: in the cloud the Cognito user pool's issuer URL, the dashboard client,
    the pool's sign-in domain, the site's own URL and the pipeline's state machine (the CDK app sets them all); locally
    the development issuer and the runner stand in and these stay empty."""

    issuer: str = ""
    client_id: str = ""
    # The user pool's managed sign-in pages (https://<prefix>.auth.<region>.amazoncognito.com): browsers sign in there.
    login_domain: str = ""
    # The site as browsers reach it (the HTTP API's endpoint): Cognito sends them back to <public_url>/auth/callback.
    public_url: str = ""
    # Operators' runs and retrains start executions of this state machine.
    state_machine_arn: str = ""
    # Where an operator's run reads its data: "live" (the exchanges and feeds), or locally a folder of recorded files.
    run_source: str = "live"
    # Runs and retrains one operator may start in an hour (every start, and every refusal, is audited).
    actions_per_user_per_hour: int = Field(6, ge=1)
    # The Board page reloads itself this often (seconds; 0: never), so a screen left open follows the runs.
    board_refresh_seconds: int = 300


class BasketSettings(BaseModel):
    """The market-neutral basket (long the top decile of the cross-sectional score, short the bottom) and what a
    long-short book of Binance USDT-M perpetuals pays; the risk step and the evaluation's book read the same values."""

    horizon: str = "7d"  # whose cross-sectional score ranks the coins
    quantile: float = 0.1  # each leg: this share of the ranked coins
    gross: float = 1.0  # both legs together, as a share of equity (half long, half short)
    taker_fee_bps: float = 5.0  # Binance USDT-M taker fee, 0.05% a side (the published base tier)
    half_spread_bps: float = 5.0
    impact_k: float = 1.0  # the risk service's square-root impact model
    # Perpetual funding where the lake holds no recorded rates: an assumption printed with every result. Binance's
    # rate when the premium is zero is its interest component, 0.01% per 8 hours: 3 bps a day, paid by longs and
    # received by shorts.
    funding_long_bps_per_day: float = 3.0
    funding_short_bps_per_day: float = 3.0
    capital_per_leg: float = 100_000.0  # the evaluation's book, in quote currency
    max_impact_bps: float = 50.0  # a name whose impact at its weight would cost more is left out (liquidity)


class RiskSettings(BaseModel):
    """Sizing, costs and guards: the main job's risk gate and the backtest read the same values."""

    initial_equity: float = 100_000.0
    fee_bps: float = 10.0  # per side, on traded notional
    allow_short: bool = False  # spot: shorts are turned away (and counted) unless enabled
    kelly_fraction: float = 0.25
    max_position: float = 0.10  # share of equity
    target_daily_vol: float = 0.02
    # Daily log returns in the volatility (sample std); all must exist.
    vol_window: int = 30
    # Daily log returns handed to the correlation guard and the mean-variance covariance.
    corr_window: int = 60
    # Days of quote volume in the average daily volume; all must exist.
    adv_window: int = 30
    guards: bool = True  # apply the guards of services/risk/guards.py
    guard_names: tuple[str, ...] = ("liquidity", "correlation", "drawdown", "cost")
    # Per-guard parameters, e.g. {"drawdown": {"max_drawdown": 0.15}, "liquidity": {"min_adv_quote": 5e6}}.
    guard_params: dict[str, dict] = {}
    # Gross exposure the book may reach, as a share of equity (1.0 = no leverage): spot cannot spend more than it has.
    max_gross_exposure: float = 1.0
    # Exit when a position has lost this fraction since entry, judged at closes only (no intraday data); None = off.
    stop_loss: float | None = None
    # "kelly": fractional Kelly x volatility targeting per order; "mean_variance": the day's long orders
    # together, inv(Sigma) mu with a Ledoit-Wolf covariance, scaled to target_daily_vol, capped per position.
    allocation: Literal["kelly", "mean_variance"] = "kelly"
    # Annualisation of daily figures (CAGR, Sharpe, turnover): crypto trades every day of the year.
    periods_per_year: float = 365.0
    # Perpetual funding a position pays (long) or receives (short) per day held, in bps of its entry notional; 0 on
    # spot. A book of perpetuals takes the basket's assumed rates (services/books: `book_risk`).
    funding_long_bps_per_day: float = 0.0
    funding_short_bps_per_day: float = 0.0
    basket: BasketSettings = BasketSettings()


# What an exchange needs beyond the defaults above (Kraken spot); a value set explicitly wins over its profile.
EXCHANGE_PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # Binance USDT-M perpetuals: 2400 request weight a minute per IP (exchangeInfo's REQUEST_WEIGHT); the pacing
    # uses 80% of it (32 weight/s), leaving room for a second client behind the same address. Depth answers only
    # 5, 10, 20, 50, 100, 500 or 1000 levels (20 weighs 2); klines weigh 5 up to 1000 candles a page.
    "binanceusdm": {
        "exchange": {"quote": "USDT", "settle": "USDT", "weighted": True, "published_weight_per_min": 2400,
                     "orderbook_levels": 20, "ohlcv_page_limit": 1000, "trades_span": "PT1H",
                     "trades_coins": ["BTC", "ETH"]},
        "http": {"rate_per_s": {**HttpSettings().rate_per_s, "exchange": 32.0}},
    },
}


def _under(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` with `defaults` filled in beneath it, key by key for nested mappings."""
    out = dict(defaults)
    for key, value in given.items():
        out[key] = _under(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class Settings(BaseSettings):
    """Every knob of cst. Environment: CST_<FIELD>, nested with '__' (CST_EXCHANGE__ID=binance)."""

    model_config = SettingsConfigDict(
        env_prefix="CST_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    lake: LakeSettings = LakeSettings()
    exchange: ExchangeSettings = ExchangeSettings()
    http: HttpSettings = HttpSettings()
    sources: SourceSettings = SourceSettings()
    quality: QualitySettings = QualitySettings()
    features: FeatureSettings = FeatureSettings()
    training: TrainingSettings = TrainingSettings()
    run: RunSettings = RunSettings()
    risk: RiskSettings = RiskSettings()
    api: ApiSettings = ApiSettings()
    alerts: AlertSettings = AlertSettings()
    universe: UniverseSettings = UniverseSettings()
    timeframes: list[str] = ["1h", "1d"]
    horizons: list[str] = ["1h", "24h", "7d", "30d"]
    confidence_threshold: float = Field(0.80, ge=0.5, le=1.0)
    consensus_min_horizons: int = Field(2, ge=1)
    # When set, secrets are read from this AWS Secrets Manager secret (a JSON object of secret fields).
    secrets_manager_id: str | None = None
    aws_region: str = "eu-west-1"
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _exchange_profile(cls, data: Any) -> Any:
        """The configured exchange's profile beneath what is set explicitly (EXCHANGE_PROFILES)."""
        if not isinstance(data, dict) or not isinstance(data.get("exchange"), dict):
            return data
        profile = EXCHANGE_PROFILES.get(str(data["exchange"].get("id", "")))
        if profile is None:
            return data
        given = {k: data.get(k) for k in profile if isinstance(data.get(k), dict)}
        return {**data, **{k: _under(v, given.get(k) or {}) for k, v in profile.items()}}

    @field_validator("universe", mode="before")
    @classmethod
    def _coin_list(cls, value):
        """A plain list (CST_UNIVERSE='["BTC","ETH"]') or "listed" is the live exchange's coins."""
        return {"coins": value} if isinstance(value, list) or value == "listed" else value

    @field_validator("timeframes")
    @classmethod
    def _known_timeframes(cls, value: list[str]) -> list[str]:
        for tf in value:
            timeframe_ms(tf)
        return value

    def run_span_ms(self, timeframe: str) -> int:
        """How far before its as-of a run reads a series of this timeframe (`exchange.history`)."""
        spans = self.exchange.history
        span = spans.get(timeframe) or max(spans.values(), default=timedelta(0))
        return int(span.total_seconds() * 1000)

    def settled_from_ms(self, timeframe: str, as_of_ms: int) -> int:
        """The first decision time whose features a run at as_of writes: `features.settle_bars` into its span."""
        step = timeframe_ms(timeframe)
        span = self.run_span_ms(timeframe)
        if span // step <= self.features.settle_bars:
            raise CstError("span_too_short", f"exchange.history[{timeframe!r}] is {span // step} bars: a run's span "
                                             f"must exceed features.settle_bars ({self.features.settle_bars}) or it "
                                             "writes no feature rows; lengthen the history or lower settle_bars")
        return as_of_ms - span + self.features.settle_bars * step

    def secret_values(self) -> list[str]:
        """Every configured secret's plain value: the redaction filter's list."""
        found = [
            s.get_secret_value()
            for s in (self.exchange.api_key, self.exchange.api_secret, self.sources.coinmetrics_api_key,
                      *self.alerts.urls)
            if s is not None and s.get_secret_value()
        ]
        return found


# Which secret field a key in the Secrets Manager JSON fills.
SECRET_FIELDS = {
    "exchange_api_key": ("exchange", "api_key"),
    "exchange_api_secret": ("exchange", "api_secret"),
    "coinmetrics_api_key": ("sources", "coinmetrics_api_key"),
}


def resolve_secrets(settings: Settings, client: Any | None = None) -> Settings:
    """Fill secret fields from Secrets Manager when an id is configured; the environment stays the fallback."""
    if not settings.secrets_manager_id:
        return settings
    if client is None:
        import boto3

        client = boto3.client("secretsmanager", region_name=settings.aws_region)
    try:
        payload = client.get_secret_value(SecretId=settings.secrets_manager_id)["SecretString"]
        values = json.loads(payload)
    except Exception as exc:  # noqa: BLE001 - boto raises many types; all mean the same to the user
        # The message names the secret id, never its content.
        raise CstError(
            "secret_unavailable",
            f"cannot read secret {settings.secrets_manager_id!r} from Secrets Manager: {type(exc).__name__}",
        ) from None
    if not isinstance(values, dict):
        raise CstError("secret_malformed", f"secret {settings.secrets_manager_id!r} must be a JSON object")
    updated = settings.model_copy(deep=True)
    for key, value in values.items():
        if key == "alert_urls" and value:
            urls = json.loads(value) if isinstance(value, str) else value
            updated.alerts.urls = [SecretStr(str(u)) for u in urls]
            continue
        if key not in SECRET_FIELDS or not value:
            continue
        section, field = SECRET_FIELDS[key]
        setattr(getattr(updated, section), field, SecretStr(str(value)))
    return updated


@lru_cache(maxsize=2)
def get_settings(secrets: bool = True) -> Settings:
    """The settings from the environment; with `secrets`, the source credentials from Secrets Manager too (only a step
    whose role may read the secret asks for them)."""
    return resolve_secrets(Settings()) if secrets else Settings()
