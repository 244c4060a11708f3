"""Training on the real files (a small budget): registry, required sequence member, ONNX parity, SHAP, SageMaker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.predict.model import HorizonModel, current_version, model_prefix
from services.training.ensemble import native_meta_logit, native_p_up
from services.training.members import MEMBERS
from shared.contracts import iso_to_ms
from shared.errors import CstError
from shared.settings import Budget, Settings
from shared.storage import LocalLake
from tests.conftest import daily_source

pytest.importorskip("torch")
pytest.importorskip("lightgbm")

UNTIL = "2024-07-01"
COINS = ("BTC", "ETH", "XRP", "LTC", "ADA")


def tiny_settings() -> Settings:
    cfg = Settings(_env_file=None)
    # One trial per member, two folds, one epoch: exercises every stage in seconds; says nothing of skill.
    cfg.training.budgets["tiny"] = Budget(folds=2, trials={"lr": 1, "gbt": 1, "gru": 1}, timeout_s=120,
                                          epochs=1, gbt_max_estimators=50)
    cfg.training.calibration_grid = 64
    return cfg


def small_source(shared_data: Path, dest: Path) -> Path:
    return daily_source(shared_data, dest, COINS)


def import_files(cfg, lake, src) -> str:
    """The files into the lake as a run's staged series (training reads the lake, never files); its run id."""
    from services.orchestrator import runner
    from shared import runs
    from shared.contracts import iso_to_ms
    from shared.pipeline.context import StepContext

    ref = runs.new_ref(cfg, str(src), iso_to_ms(UNTIL))
    runner.run_step(StepContext(cfg, lake), "ingest", ref)
    return ref.run_id


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    from services.training.train import train

    root = tmp_path_factory.mktemp("train")
    src = small_source(shared_data, root / "data")
    lake = LocalLake(root / "lake")
    cfg = tiny_settings()
    kept = {}
    run_id = import_files(cfg, lake, src)
    # Keep the in-memory Trained object too, for native-vs-ONNX parity.
    results = train(cfg, lake, run_id, until=UNTIL, horizons=["24h"], budget="tiny",
                    on_trained=lambda t: kept.__setitem__(t.horizon, t))
    return {"lake": lake, "results": results, "t": kept["24h"], "src": src, "cfg": cfg, "run_id": run_id}


def test_registry_layout_metadata_and_card(trained):
    lake, meta = trained["lake"], trained["results"]["24h"]
    version = current_version(lake, "24h")
    assert version == meta.version
    prefix = model_prefix("24h", version)
    keys = set(lake.list(prefix))
    for f in ("lr.onnx", "gbt.onnx", "gru.onnx", "meta.onnx", "calibrator.onnx", "q10.onnx", "q50.onnx", "q90.onnx",
              "background.npz", "metadata.json", "MODEL_CARD.md"):
        assert prefix + f in keys, f
    stored = lake.get_json(prefix + "metadata.json")
    for field in ("features", "feature_hash", "declared_layers", "excluded_layers", "training_window",
                  "data_fingerprint", "metrics", "libraries", "code_revision", "settings", "settings_hash", "calibration"):
        assert stored[field], field
    # Nothing at or after the cut-off was used: the last decision time's label ends before it.
    assert stored["training_window"]["last"] < "2024-06-30"
    assert set(stored["training_window"]["coins"]) == set(COINS)
    m = stored["metrics"]
    assert 0.0 < m["cv_brier"] < 0.5 and 0.0 <= m["ece"] <= 1.0
    card = lake.get(prefix + "MODEL_CARD.md").decode()
    assert "Venn-Abers" in card and "Brier" in card and stored["calibration"]["method"] in card
    assert f"{stored['training_window']['rows']:,} rows of {len(COINS)} coins" in card


def test_sequence_member_is_required(trained, tmp_path):
    lake = trained["lake"]
    version = current_version(lake, "24h")
    assert HorizonModel.load(lake, "24h").version == version
    copy = LocalLake(tmp_path / "lake")
    for key in lake.list("models/"):
        copy.put(key, lake.get(key))
    (copy.root / model_prefix("24h", version) / "gru.onnx").unlink()
    with pytest.raises(CstError) as info:
        HorizonModel.load(copy, "24h")
    assert info.value.code == "model_incomplete" and "gru.onnx" in info.value.message


def test_onnx_matches_native_models_on_real_rows(trained):
    """Tolerance: members run in float32 under ONNX and float64 natively; on logits of order 1 that is
    ~1e-6 apart. The calibrator is a step lookup, so p_up may differ only where the two scores straddle
    a grid step; everywhere else it is identical."""
    t = trained["t"]
    ds = t.ds.take(np.arange(0, len(t.ds), 7))
    model = HorizonModel.load(trained["lake"], "24h")
    onnx_members = model.member_logits(ds.X, ds.S)
    native_members = np.column_stack([t.members[m].logit(ds) for m in MEMBERS])
    np.testing.assert_allclose(onnx_members, native_members, atol=2e-4, rtol=1e-4)
    onnx_meta = model.meta_logit(ds.X, ds.S)
    native_meta = native_meta_logit(t, ds)
    np.testing.assert_allclose(onnx_meta, native_meta, atol=2e-4)
    p_onnx = model.predict(ds.X, ds.S).p_up
    p_native = native_p_up(t, ds)
    differ = np.abs(p_onnx - p_native) > 1e-6
    grid = t.calibrator.grid
    near_step = np.min(np.abs(native_meta[:, None] - grid[None, :]), axis=1) < 1e-3
    assert not (differ & ~near_step).any()
    assert differ.mean() < 0.01


def test_the_cross_sectional_stack_is_served_from_onnx_like_the_direction_stack(trained):
    """Every version carries the second target: its own members, meta-learner, calibrator and SHAP arrays under
    beats/, served through ONNX with the same parity, an ordered interval and additive SHAP."""
    t, lake = trained["t"], trained["lake"]
    meta = trained["results"]["24h"]
    assert t.beats is not None and meta.beats is not None, meta.beats_note
    assert meta.beats.rows == len(t.beats.ds) and set(meta.beats.members) == set(MEMBERS)
    # Labels balanced by construction: about half the coins beat the median at each decision.
    assert 0.4 < meta.beats.metrics["base_rate_train"] < 0.6
    prefix = model_prefix("24h", meta.version)
    for f in ("lr.onnx", "gbt.onnx", "gru.onnx", "meta.onnx", "calibrator.onnx", "explain.npz"):
        assert lake.exists(prefix + "beats/" + f), f
    card = lake.get(prefix + "MODEL_CARD.md").decode()
    assert "## Cross-section: P(the coin beats the median coin" in card
    ds = t.beats.ds.take(np.arange(0, len(t.beats.ds), 7))
    model = HorizonModel.load(lake, "24h")
    # float32 features under ONNX: a row whose value lies within float32 rounding of a tree's threshold takes the
    # other branch (seen: 1 row of 1,286, 0.005 in logit); every other row agrees to float32 precision.
    gap = np.abs(model.beats_logit(ds.X, ds.S) - native_meta_logit(t.beats, ds))
    assert np.median(gap) < 1e-5 and (gap > 2e-4).mean() < 0.005, (np.median(gap), (gap > 2e-4).mean())
    pred = model.predict(ds.X, ds.S)
    differ = np.abs(pred.beats - native_p_up(t.beats, ds)) > 1e-6
    assert differ.mean() < 0.01
    assert ((pred.beats_low <= pred.beats + 1e-7) & (pred.beats <= pred.beats_high + 1e-7)).all()
    side = pred.beats >= 0.5
    np.testing.assert_allclose(pred.beats_confidence[side], pred.beats_low[side])
    X, S = ds.X[-3:], ds.S[-3:]
    phi, base = model.explain(X, S, permutations=2, stack="beats/")
    np.testing.assert_allclose(phi.sum(axis=1) + base, model.beats_logit(X, S), atol=1e-4)
    # A version whose metadata names a cross-sectional stack is incomplete without its files.
    copy = LocalLake(trained["lake"].root.parent / "no-beats")
    for k in lake.list(prefix):
        if "/beats/gru.onnx" not in k:
            copy.put(k, lake.get(k))
    copy.put("models/horizon=24h/CURRENT", lake.get("models/horizon=24h/CURRENT"))
    with pytest.raises(CstError) as info:
        HorizonModel.load(copy, "24h")
    assert info.value.code == "model_incomplete" and "beats/gru.onnx" in info.value.message


def test_the_volatility_forecast_is_served_from_onnx_with_its_held_out_figures(trained):
    """Every version carries the volatility forecast: HAR, HAR with the long-run level and LightGBM members and their
    linear stack under vol/, the same forecast through ONNX as natively, figures against HAR alone and the rolling
    mean on rows it never fitted on, and a model card section."""
    t, lake = trained["t"], trained["lake"]
    meta = trained["results"]["24h"]
    assert t.vol is not None and meta.vol is not None, meta.vol_note
    held = meta.vol.metrics["held_out"]
    assert set(held) == {"stack", "HAR", "HAR with the long-run level", "rolling 30-bar mean"}
    assert all(np.isfinite(r["qlike"]) and r["qlike"] >= 0 for r in held.values())
    # HAR stays the standard baseline (1, 7, 30 bars); the second linear member adds the 90-bar level.
    assert meta.vol.members["har"]["windows"] == ["har_1", "har_7", "har_30"]
    assert meta.vol.members["long"]["windows"] == ["har_1", "har_7", "har_30", "har_long_90"]
    assert set(meta.vol.metrics["meta_weights"]) == {"har", "long", "gbt", "intercept", "out_of_fold_intercept"}
    prefix = model_prefix("24h", meta.version)
    for f in ("har.onnx", "long.onnx", "gbt.onnx", "meta.onnx"):
        assert lake.exists(prefix + "vol/" + f), f
    card = lake.get(prefix + "MODEL_CARD.md").decode()
    assert "## Volatility: realized variance over the horizon" in card and "QLIKE" in card
    assert "HAR with the long-run level (har_1, har_7, har_30, har_long_90)" in card and "x HAR-long" in card
    assert "the fold models' shift" in card
    model = HorizonModel.load(lake, "24h")
    X = t.ds.X[::5]
    np.testing.assert_allclose(model.vol_log_variance(X), t.vol.log_forecast(X), atol=2e-4)
    pred = model.predict(X, t.ds.S[::5])
    np.testing.assert_allclose(pred.vol, t.vol.sigma(X), rtol=1e-3)  # the served forecast, whichever it is
    np.testing.assert_allclose(model.stack_sigma(X) ** 2, t.vol.variance(X), rtol=1e-3)
    level = meta.vol.levels["long"]
    np.testing.assert_allclose(model.member_sigma(X, "long") ** 2, np.exp(t.vol.long.predict(X) + level), rtol=1e-3)
    assert (pred.vol > 0).all() and np.median(pred.vol) < 0.2  # a daily sd of log return, not a percentage


def test_the_served_range_starts_from_held_out_scores_of_the_volatility_model(trained):
    """The version carries |r| / sigma on rows no model that forecast them saw (the last range window of them, at
    most 32 per decision time): on the calibration rows with sigma as the ONNX model serves it, and before them on
    the walk-forward folds' test rows: where a new range starts."""
    t, lake, cfg = trained["t"], trained["lake"], trained["cfg"]
    meta = trained["results"]["24h"]
    seed = meta.vol.range_seed
    assert seed is not None and len(seed.ts) == len(seed.sigma) == len(seed.score) > 0
    times, per_time = np.unique(seed.ts, return_counts=True)
    assert times.size <= cfg.run.range_window * cfg.training.horizons["24h"].bars and per_time.max() <= 32
    assert times.max() <= iso_to_ms(meta.training_window.last)
    assert all(s > 0 for s in seed.sigma) and all(x >= 0 for x in seed.score)
    # The calibration rows' sigmas are the served forecast's (matched on the rows the direction data set also holds).
    model = HorizonModel.load(lake, "24h")
    times = times[times > t.window["members_fitted_until"]]
    rows = np.flatnonzero(np.isin(t.ds.ts, times))
    served = model.vol_sigma(t.ds.X[rows])
    seed_sig = np.asarray(seed.sigma)
    matched = [np.min(np.abs(seed_sig - s) / s) < 1e-3 for s in served]
    assert np.mean(matched) > 0.5
    # A 24h |r| / sigma of real coins: mostly under 1.3 sds (80% of a normal's |z| is 1.28).
    assert 0.6 < np.mean(np.asarray(seed.score) <= 1.3) < 0.95


def test_the_range_seed_of_a_long_horizon_reaches_back_over_out_of_fold_forecasts():
    """A 30-day range window (60 outcomes) is longer than the calibration block: the seed goes on with the fit rows
    the walk-forward folds scored, each with the forecast of a fold model that never saw it (not the final one)."""
    from services.training.cv import walk_forward
    from services.training.ensemble import calibration_split
    from services.training.volatility import GbtVolMember, HarMember, fit_vol

    rng = np.random.default_rng(5)
    day, bars = 86_400_000, 30
    ts = np.repeat(np.arange(900) * day, 4)
    level = np.repeat(np.cumsum(rng.normal(0, 0.05, 900)), 4) + rng.normal(0, 0.3, ts.size) - 6
    X = np.column_stack([level + rng.normal(0, 0.2, ts.size) for _ in range(3)] + [rng.normal(size=ts.size)])
    names = ["har_1", "har_7", "har_30", "other"]
    rv = np.exp(np.log(bars) + 0.8 * level + rng.normal(0, 0.3, ts.size))
    fit_rows, cal_rows = calibration_split(ts, bars * day, 0.2)
    params = {"n_estimators": 20, "num_leaves": 4, "learning_rate": 0.1}
    vol = fit_vol(X, rv, ts, names, bars, bars * day, fit_rows, cal_rows, 3, params, 0, 1)
    folds = walk_forward(ts[fit_rows], bars * day, 3)
    assert np.array_equal(vol.oof_rows, np.concatenate([f.test for f in folds]))
    assert (vol.oof_sigma > 0).all() and ts[fit_rows][vol.oof_rows].min() < ts[cal_rows].min() - 60 * day
    # Out of fold: the first fold's rows carry its own model's forecast, not the final model's.
    first = folds[0]
    Xt, Xs, yt = X[fit_rows][first.test], X[fit_rows][first.train], np.log(rv[fit_rows][first.train])
    har = HarMember([0, 1, 2]).fit(Xs, yt).predict(Xt)
    if vol.served == "HAR":
        log_fold = har + vol.levels["har"]
    else:
        gbt = GbtVolMember(params, 0, 1).fit(Xs, yt).predict(Xt)
        log_fold = vol.meta.predict(np.column_stack([har, gbt])) + vol.levels["stack"]
    on_first = vol.oof_sigma[:first.test.size]
    np.testing.assert_allclose(on_first, np.sqrt(np.exp(log_fold)), rtol=1e-9)
    assert not np.allclose(on_first, vol.sigma(Xt), rtol=1e-6)


def test_the_linear_member_with_the_long_run_level_is_served_where_it_forecasts_the_held_out_rows_best():
    """Coins whose variance sits at their own long-run level, which the 1, 7 and 30-bar terms see only through
    noise: HAR with the long-run level forecasts the held-out rows best and is served alone, HAR stays the
    baseline, and the range seed carries that member's out-of-fold forecasts."""
    from services.training.ensemble import calibration_split
    from services.training.volatility import fit_vol

    rng = np.random.default_rng(8)
    day, bars, coins = 86_400_000, 7, 40
    ts = np.repeat(np.arange(500) * day, coins)
    level = np.tile(rng.normal(-6, 1.0, coins), 500)  # each coin's own level, for good
    X = np.column_stack([level + rng.normal(0, 1.5, ts.size) for _ in range(3)]
                        + [level + rng.normal(0, 0.05, ts.size), rng.normal(size=ts.size)])
    names = ["har_1", "har_7", "har_30", "har_long_90", "other"]
    rv = np.exp(np.log(bars) + level + rng.normal(0, 0.3, ts.size))
    fit_rows, cal_rows = calibration_split(ts, bars * day, 0.2)
    params = {"n_estimators": 5, "num_leaves": 2, "learning_rate": 0.05}
    vol = fit_vol(X, rv, ts, names, bars, bars * day, fit_rows, cal_rows, 3, params, 0, 1)
    held = vol.metrics["held_out"]
    assert vol.served == "long", held
    assert held["HAR with the long-run level"]["qlike"] < min(held["HAR"]["qlike"], held["stack"]["qlike"])
    assert vol.har.cols == [0, 1, 2] and vol.long.cols == [0, 1, 2, 3]
    np.testing.assert_allclose(vol.sigma(X[:50]), np.sqrt(np.exp(vol.long.predict(X[:50]) + vol.levels["long"])))
    assert held["HAR with the long-run level"]["r2_log"] > held["HAR"]["r2_log"] + 0.2


def test_the_served_level_is_the_smearing_estimate_of_the_out_of_fold_residuals():
    """Log residuals that are not normal (here the log of an exponential: a noisy variance proxy, skewed to the
    left): the log-normal correction s2 / 2 misplaces the level (pi^2 / 12 = 0.82 where the right one is Euler's
    gamma = 0.58); the served level, log mean exp of the out-of-fold residuals less their mean, finds it and
    forecasts the held-out rows better. A bias of the fold models does not move it."""
    from services.training.ensemble import calibration_split
    from services.training.volatility import fit_vol, qlike, smear
    from shared.records import vol_forecast_key

    r = np.array([-1.0, 0.0, 0.5])
    c = r - r.mean()
    assert smear(r) == pytest.approx(np.log((np.exp(c[0]) + np.exp(c[1]) + np.exp(c[2])) / 3))  # by hand
    assert smear(r + 3.0) == pytest.approx(smear(r)) and smear(r) > 0
    rng = np.random.default_rng(5)
    day, bars, coins = 86_400_000, 7, 20
    ts = np.repeat(np.arange(400) * day, coins)
    level = rng.normal(-6, 0.7, ts.size)
    X = np.column_stack([level + rng.normal(0, 0.1, ts.size) for _ in range(3)] + [rng.normal(size=ts.size)])
    names = ["har_1", "har_7", "har_30", "other"]
    rv = np.exp(np.log(bars) + level) * rng.exponential(1.0, ts.size)
    fit_rows, cal_rows = calibration_split(ts, bars * day, 0.2)
    vol = fit_vol(X, rv, ts, names, bars, bars * day, fit_rows, cal_rows, 3,
                  {"n_estimators": 5, "num_leaves": 2, "learning_rate": 0.05}, 0, 1)
    key = vol_forecast_key(vol.served)
    s2 = vol.metrics["log_residual_variance" if key == "stack" else f"{key}_log_residual_variance"]
    assert vol.levels[key] == pytest.approx(np.euler_gamma, abs=0.08)
    assert s2 / 2 == pytest.approx(np.pi ** 2 / 12, abs=0.08)
    log_f = np.log(vol.sigma(X[cal_rows]) ** 2) - vol.levels[key]
    assert qlike(rv[cal_rows], np.exp(log_f + vol.levels[key])) < qlike(rv[cal_rows], np.exp(log_f + s2 / 2)) - 0.01
    assert np.mean(rv[cal_rows] / vol.sigma(X[cal_rows]) ** 2) == pytest.approx(1.0, abs=0.05)


def test_the_volatility_members_are_combined_with_non_negative_weights_that_sum_to_one():
    """Two nearly collinear members (HAR and HAR with the long-run level are): an unconstrained regression sets
    them against each other; the served combination keeps every weight >= 0, sums them to one, fits no worse than
    any point of a grid over the simplex, exports to ONNX as it predicts, and takes a member that is the truth
    whole."""
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    from services.training.members import OPSET
    from services.training.volatility import convex_combination

    rng = np.random.default_rng(11)
    n = 4000
    truth = rng.normal(size=n)
    a = truth + 0.3 * rng.normal(size=n)
    b = a + 0.3 * truth + 0.02 * rng.normal(size=n)  # a, nudged toward the truth: nearly collinear with it
    g = truth + 0.6 * rng.normal(size=n)
    Z, y = np.column_stack([a, b, g]), -5.0 + truth + 0.4 * rng.normal(size=n)
    assert (LinearRegression().fit(Z, y).coef_ < 0).any()  # the failure the constraint is for
    meta = convex_combination(Z, y)
    assert (meta.coef_ >= 0).all() and meta.coef_.sum() == pytest.approx(1.0)

    def sse(w):
        fit = Z @ w
        return float(np.sum((y - fit - (y - fit).mean()) ** 2))  # with its own best intercept

    grid = [np.array([i, j, 20 - i - j]) / 20 for i in range(21) for j in range(21 - i)]
    assert sse(meta.coef_) <= min(sse(w) for w in grid) + 1e-9
    assert np.mean(y - meta.predict(Z)) == pytest.approx(0.0, abs=1e-9)
    onnx = ort.InferenceSession(to_onnx(meta, Z[:1].astype(np.float32), target_opset=OPSET).SerializeToString())
    got = onnx.run(None, {onnx.get_inputs()[0].name: Z[:50].astype(np.float32)})[0].ravel()
    np.testing.assert_allclose(got, meta.predict(Z[:50]), atol=1e-4)
    exact = convex_combination(np.column_stack([a, truth, g]), 2.0 + truth)
    np.testing.assert_allclose(exact.coef_, [0.0, 1.0, 0.0], atol=1e-9)
    assert exact.intercept_ == pytest.approx(2.0)


def test_the_stack_shift_is_the_final_members_own_not_the_fold_models_bias():
    """A wild first quarter (new listings move more than their history says): the fold models trained on it
    over-forecast the rows after it, so the out-of-fold shift comes out well below zero. The served combination
    keeps the out-of-fold weights but takes its shift from the final members, which are the ones served: on their
    fit rows it is as unbiased as they are, on any row it lies between its members' forecasts, and the fold shift
    is only recorded."""
    from services.training.ensemble import calibration_split
    from services.training.volatility import fit_vol

    rng = np.random.default_rng(3)
    day, bars, coins, days = 86_400_000, 7, 20, 400
    ts = np.repeat(np.arange(days) * day, coins)
    level = rng.normal(-6, 0.7, ts.size)
    wild = np.repeat(np.arange(days) < 100, coins)
    X = np.column_stack([level + rng.normal(0, 0.3, ts.size) for _ in range(3)] + [rng.normal(size=ts.size)])
    names = ["har_1", "har_7", "har_30", "other"]
    rv = np.exp(np.log(bars) + level + 1.5 * wild + rng.normal(0, 0.3, ts.size))
    fit_rows, cal_rows = calibration_split(ts, bars * day, 0.2)
    vol = fit_vol(X, rv, ts, names, bars, bars * day, fit_rows, cal_rows, 3,
                  {"n_estimators": 20, "num_leaves": 4, "learning_rate": 0.1}, 0, 1)
    w = vol.metrics["meta_weights"]
    assert w["out_of_fold_intercept"] < -0.5, w  # the fold models' bias
    Xf = X[fit_rows]
    Z = np.column_stack([m.predict(Xf) for m in vol.members.values()])
    assert np.mean(np.log(rv[fit_rows]) - vol.log_forecast(Xf)) == pytest.approx(0.0, abs=1e-9)
    assert w["intercept"] == pytest.approx(np.mean(np.log(rv[fit_rows]) - Z @ vol.meta.coef_), abs=1e-12)
    assert abs(w["intercept"]) < 0.01  # each member is unbiased on its own fit rows, so is their combination
    Zc = np.column_stack([m.predict(X[cal_rows]) for m in vol.members.values()])
    f = vol.log_forecast(X[cal_rows])
    assert ((f >= Zc.min(axis=1) - 0.01) & (f <= Zc.max(axis=1) + 0.01)).all()


def test_realized_variance_sums_the_parkinson_variances_of_the_horizon_candles():
    from types import SimpleNamespace

    from services.training.volatility import forward_variance

    day = 86_400_000
    high = np.array([[1.1], [1.2], [1.05], [np.nan], [1.3]])
    low = np.array([[1.0], [1.0], [1.0], [np.nan], [1.0]])
    panel = SimpleNamespace(open_ts=np.arange(5) * day, coins=["A"], fields={"high": high, "low": low})
    pk = np.log(high / low)[:, 0] ** 2 / (4 * np.log(2))

    class Frame(SimpleNamespace):
        def __len__(self):
            return self.ts.size

    got = forward_variance(panel, Frame(ts=np.array([1, 2, 3]) * day, coin=np.array(["A", "A", "A"])), 2)
    # Decision at the close of candle 0 (ts = 1 day): the next two candles are 1 and 2.
    np.testing.assert_allclose(got[0], pk[1] + pk[2])
    assert np.isnan(got[1]) and np.isnan(got[2])  # candle 3 is missing: no variance is made up for it


def test_predictions_are_well_formed(trained):
    t = trained["t"]
    pred = HorizonModel.load(trained["lake"], "24h").predict(t.ds.X[:200], t.ds.S[:200])
    assert ((pred.low <= pred.p_up + 1e-7) & (pred.p_up <= pred.high + 1e-7)).all()
    assert ((pred.confidence >= 0) & (pred.confidence <= 1)).all()
    assert (np.diff(pred.quantiles, axis=1) >= 0).all()
    up = pred.direction == 1
    np.testing.assert_allclose(pred.confidence[up], pred.low[up])
    np.testing.assert_allclose(pred.confidence[~up], 1 - pred.high[~up])
    # An empty batch (a window with no labeled rows yet) is an empty answer, not an onnxruntime abort.
    empty = HorizonModel.load(trained["lake"], "24h").predict(t.ds.X[:0], t.ds.S[:0])
    assert empty.p_up.shape == (0,) and empty.quantiles.shape == (0, 3)


def test_shap_contributions_add_up_to_the_model_output(trained):
    t = trained["t"]
    model = HorizonModel.load(trained["lake"], "24h")
    X, S = t.ds.X[-3:], t.ds.S[-3:]
    phi, base = model.explain(X, S, permutations=2)
    out = model.meta_logit(X, S)
    np.testing.assert_allclose(phi.sum(axis=1) + base, out, atol=1e-4)
    assert (np.abs(phi).sum(axis=1) > 0).all()


def test_permutation_shap_is_exact_for_a_linear_model():
    from services.predict.explain import permutation_shap

    rng = np.random.default_rng(3)
    w = np.array([0.5, -2.0, 0.0, 1.5])
    v = np.array([1.0, 0.0, -1.0, 0.5])  # weights on the window mean of each feature

    def f(X, S):
        return X @ w + S.mean(axis=1) @ v

    X, S = rng.normal(size=(2, 4)), rng.normal(size=(2, 3, 4))
    bgX, bgS = rng.normal(size=(5, 4)), rng.normal(size=(5, 3, 4))
    phi, base = permutation_shap(f, X, S, bgX, bgS, permutations=2)
    expect = w * (X - bgX.mean(0)) + v * (S.mean(axis=1) - bgS.mean(axis=(0, 1)))
    np.testing.assert_allclose(phi, expect, atol=1e-12)
    np.testing.assert_allclose(phi.sum(1) + base, f(X, S), atol=1e-12)


def test_serving_imports_no_training_library():
    code = ("import sys, services.predict.model, services.predict.explain, services.features.frame; "
            "bad = [m for m in ('sklearn', 'torch', 'shap', 'lightgbm', 'optuna', 'skl2onnx') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_retrain_warm_starts_and_gates(trained):
    """A second retrain on the same window reopens its study (more trials in the journal, its best re-run first)
    and goes through the gate against CURRENT."""
    from services.training.train import train

    lake, cfg = trained["lake"], trained["cfg"]
    before = trained["results"]["24h"]
    again = train(cfg, lake, trained["run_id"], until=UNTIL, horizons=["24h"], budget="tiny")["24h"]
    for m in MEMBERS:
        assert again.tuning[m]["trials_in_journal"] > before.tuning[m]["trials_in_journal"]
    assert again.gate.previous == before.version
    assert again.gate.brier_previous is not None
    current = current_version(lake, "24h")
    assert current == (again.version if again.promoted else before.version)


def test_gate_refuses_a_worse_model(trained, monkeypatch):
    from services.training import registry

    t = trained["t"]
    lake = trained["lake"]
    prev = current_version(lake, "24h")
    # A model claiming a far worse Brier on CV figures (feature names differ, so only CV figures compare).
    monkeypatch.setattr(t, "names", [*t.names[:-1], "renamed"])
    monkeypatch.setitem(t.metrics, "cv_brier", 0.40)
    meta = registry.publish(t, {}, lake, trained["cfg"])
    assert meta.promoted is False and "worse" in meta.gate.reason
    assert current_version(lake, "24h") == prev
    assert lake.exists(model_prefix("24h", meta.version) + "MODEL_CARD.md")


def test_sagemaker_entrypoint_reads_the_lake_and_publishes_through_its_gate(shared_data, tmp_path, monkeypatch):
    """The training job gets the lake's URI and a run id; it trains on that run's stored series and its versions
    go through the gate of the real registry (a second job is compared with the first's CURRENT)."""
    from services.orchestrator import sagemaker as train_mod

    ml = tmp_path / "opt" / "ml"
    lake = LocalLake(tmp_path / "lake")
    cfg = tiny_settings()
    run_id = import_files(cfg, lake, small_source(shared_data, tmp_path / "data"))
    (ml / "input" / "config").mkdir(parents=True)
    (ml / "input" / "config" / "hyperparameters.json").write_text(json.dumps({
        "budget": "tiny", "horizons": "24h", "until": UNTIL, "run_id": run_id, "lake": str(lake.root)}))
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", str(ml / "output" / "data"))
    monkeypatch.setenv("SM_INPUT_CONFIG_DIR", str(ml / "input" / "config"))
    monkeypatch.setattr(train_mod, "Settings", tiny_settings)
    assert train_mod.main() == 0
    first = current_version(lake, "24h")
    assert first is not None
    metrics = json.loads((ml / "output" / "data" / "metrics.json").read_text())
    assert set(metrics) == {"24h"} and metrics["24h"]["cv_brier"] > 0
    assert train_mod.main() == 0
    versions = sorted(k.split("/")[2] for k in lake.list("models/horizon=24h/version=") if k.endswith("metadata.json"))
    assert len(versions) == 2
    second = lake.get_json(f"models/horizon=24h/{versions[-1]}/metadata.json")
    assert second["gate"]["previous"] == first


def test_sagemaker_entrypoint_without_a_run_says_what_it_needs(tmp_path, monkeypatch):
    from services.orchestrator import sagemaker as train_mod

    (tmp_path / "hyperparameters.json").write_text(json.dumps({"budget": "tiny"}))
    monkeypatch.setenv("SM_INPUT_CONFIG_DIR", str(tmp_path))
    with pytest.raises(CstError, match="run_id"):
        train_mod.main()


def test_purged_folds_never_overlap_labels():
    from hypothesis import given, settings as hs, strategies as st

    from services.training.cv import walk_forward

    @hs(max_examples=40, deadline=None)
    @given(st.integers(1, 40), st.integers(2, 5), st.integers(60, 400))
    def check(h_bars, folds, n_times):
        step = 86_400_000
        ts = np.repeat(np.arange(n_times, dtype=np.int64) * step, 3)
        horizon = h_bars * step
        for fold in walk_forward(ts, horizon, folds):
            train_end = ts[fold.train] + horizon  # label windows [t, t + h]
            # Every training label is realised, plus an embargo of one horizon, before the fold starts.
            assert (train_end + horizon <= fold.test_start).all()
            assert not np.intersect1d(fold.train, fold.test).size

    check()


def test_permutation_shap_agrees_with_shap_exact_on_a_nonlinear_model():
    """Cross-check against the shap library's exact interventional Shapley values (4 features)."""
    shap = pytest.importorskip("shap")
    from services.predict.explain import permutation_shap

    rng = np.random.default_rng(11)

    def f_tab(X):
        return np.tanh(X[:, 0] * X[:, 1]) + X[:, 2] ** 2 - 0.5 * X[:, 3]

    bg = rng.normal(size=(8, 4))
    x = rng.normal(size=(1, 4))
    exact = shap.explainers.Exact(f_tab, shap.maskers.Independent(bg, max_samples=8))(x).values[0]
    S, bgS = np.zeros((1, 1, 4)), np.zeros((8, 1, 4))  # no sequence input in this model
    ours, base = permutation_shap(lambda X, _S: f_tab(X), x, S, bg, bgS, permutations=400, seed=1)
    np.testing.assert_allclose(ours[0], exact, atol=0.05)
    np.testing.assert_allclose(ours[0].sum() + base[0], f_tab(x)[0], atol=1e-12)


def test_process_pool_explanations_equal_in_process_ones(trained):
    from services.predict.pool import explain_rows

    t = trained["t"]
    model = HorizonModel.load(trained["lake"], "24h")
    X, S = t.ds.X[:6], t.ds.S[:6]
    serial = model.explain(X, S, permutations=2, seed=3)
    pooled = explain_rows(model, trained["lake"].uri, X, S, permutations=2, seed=3, workers=2, min_rows=1)
    np.testing.assert_array_equal(pooled[0], serial[0])
    np.testing.assert_array_equal(pooled[1], serial[1])
