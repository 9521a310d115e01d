"""Rolling-origin backtests with an expanding window, and the no-lookahead guard.

Folds: the test period is cut into blocks of ``refit_every`` months. For a block starting at
T0 every learned statistic (climatology, EOFs, scalers, the model itself) is fitted on data up
to T0, on training pairs whose target is fully observed by T0; the model then forecasts every
init in the block from predictors at that init. Each model in a run sees the same folds.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.errors import ClimateMLError, ModelError
from climate_ml.model_api import check_prediction
from climate_ml.problems.base import FoldData, Problem
from climate_ml.schema import INIT, LEAD, add_valid_time
from climate_ml.scores import METRICS, N_VERIFIED, skill_score

Factory = Callable[[], object]


def month_range(start, end, step: int = 1) -> pd.DatetimeIndex:
    return pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=f"{step}MS")


def fold_starts(test_start, test_end, refit_every: int) -> list[pd.Timestamp]:
    if refit_every < 1:
        raise ClimateMLError("refit_every must be at least 1 month")
    if pd.Timestamp(test_end) < pd.Timestamp(test_start):
        raise ClimateMLError(f"test end {test_end} is before test start {test_start}")
    return list(month_range(test_start, test_end, refit_every))


def fit_predict(factory: Factory, fold: FoldData, inits, leads, name: str = "model") -> xr.DataArray:
    """Fit a fresh model on the fold's training set and forecast the given inits."""
    X_train, y_train = fold.training_set()
    if X_train.sizes[INIT] < 24:
        raise ClimateMLError(
            f"only {X_train.sizes[INIT]} training inits before {fold.fit_end:%Y-%m}; "
            "start the test period later"
        )
    X_test = fold.test_set(inits)
    try:
        model = factory()
        model.fit(X_train, y_train)
        pred = model.predict(X_test)
    except ClimateMLError:
        raise
    except Exception as exc:
        raise ModelError(f"{name}: {type(exc).__name__} in fit/predict: {exc}") from exc
    return check_prediction(pred, X_test, leads, where=name)


@dataclass
class BacktestResult:
    """Out-of-sample forecasts per model (init_time, lead) and the matching observations."""

    problem: str
    forecasts: dict[str, xr.DataArray]
    obs: xr.DataArray
    failures: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def scores(self, name: str) -> dict[str, dict[str, float]]:
        fc = self.forecasts[name]
        out = {m: _per_lead(metric.compute(fc, self.obs)) for m, metric in METRICS.items()}
        out["n"] = _per_lead(N_VERIFIED.compute(fc, self.obs))
        return out

    def skill(self, name: str, reference: str, metric: str = "rmse") -> dict[str, float]:
        return _per_lead(
            skill_score(METRICS[metric], self.forecasts[name], self.obs, self.forecasts[reference])
        )


def _per_lead(da: xr.DataArray) -> dict[str, float]:
    return {str(int(k)): (None if np.isnan(v) else round(float(v), 4)) for k, v in zip(da[LEAD].values, da.values, strict=True)}


def backtest(
    problem: Problem,
    factories: dict[str, Factory],
    prepared: xr.Dataset,
    test_start,
    test_end,
    refit_every: int = 12,
    progress: Callable[[str], None] | None = None,
) -> BacktestResult:
    """Backtest several models on the same folds. A model that fails is recorded in
    ``failures`` with its reason; the others still run."""
    inits_all = pd.DatetimeIndex(prepared["time"].values)
    test_end = min(pd.Timestamp(test_end), inits_all[-1])
    test_start = pd.Timestamp(test_start)
    if test_start < inits_all[0]:
        raise ClimateMLError(f"test start {test_start:%Y-%m} is before the data starts ({inits_all[0]:%Y-%m})")
    starts = fold_starts(test_start, test_end, refit_every)
    pieces: dict[str, list[xr.DataArray]] = {n: [] for n in factories}
    obs_pieces = []
    failures: dict[str, str] = {}
    seconds = dict.fromkeys(factories, 0.0)
    for k, t0 in enumerate(starts):
        fold = problem.fold_data(prepared, fit_end=t0)
        block_end = min(t0 + pd.DateOffset(months=refit_every - 1), test_end)
        inits = month_range(t0, block_end)
        obs_pieces.append(fold.y.sel({INIT: inits}))
        for name, factory in factories.items():
            if name in failures:
                continue
            tic = _time.perf_counter()
            try:
                pieces[name].append(fit_predict(factory, fold, inits, problem.leads, name))
            except ModelError as exc:
                failures[name] = str(exc)
            seconds[name] += _time.perf_counter() - tic
        if progress:
            progress(f"fold {k + 1}/{len(starts)} (fit up to {t0:%Y-%m})")
    forecasts = {
        n: add_valid_time(xr.concat(p, dim=INIT)) for n, p in pieces.items() if n not in failures
    }
    obs = xr.concat(obs_pieces, dim=INIT)
    return BacktestResult(problem.name, forecasts, obs, failures, seconds)


def issue_forecast(problem: Problem, factory: Factory, prepared: xr.Dataset, init, name: str = "model") -> xr.DataArray:
    """Train on everything known at ``init`` and forecast that init at every lead."""
    init = pd.Timestamp(init)
    times = pd.DatetimeIndex(prepared["time"].values)
    if init not in times:
        raise ClimateMLError(
            f"no observations for init {init:%Y-%m} (data cover {times[0]:%Y-%m}..{times[-1]:%Y-%m})"
        )
    fold = problem.fold_data(prepared.sel(time=slice(None, init)), fit_end=init)
    return add_valid_time(fit_predict(factory, fold, [init], problem.leads, name))


def perturb_after(prepared: xr.Dataset, after, seed: int = 0, scale: float = 5.0) -> xr.Dataset:
    """Replace every value after ``after`` with large random noise (the lookahead probe)."""
    rng = np.random.default_rng(seed)
    out = prepared.copy(deep=True)
    later = out["time"] > np.datetime64(pd.Timestamp(after))
    for v in out.data_vars:
        da = out[v]
        noise = rng.normal(0, scale, da.shape)
        mask = np.broadcast_to(
            later.values.reshape([-1 if d == "time" else 1 for d in da.dims]), da.shape
        )
        out[v] = da.copy(data=np.where(mask, noise, da.values))
    return out


def lookahead_violations(
    problem: Problem,
    factory: Factory,
    prepared: xr.Dataset,
    inits: Iterable,
    fit_end,
    seed: int = 0,
) -> list[str]:
    """RAMP's check: for each init, perturb all data after it and assert the forecast for that
    init (fitted up to ``fit_end`` <= init) does not change. Returns the violations found."""
    fit_end = pd.Timestamp(fit_end)
    base = problem.fold_data(prepared, fit_end)
    bad = []
    for init in pd.DatetimeIndex(list(inits)):
        if init < fit_end:
            raise ClimateMLError("lookahead check needs inits at or after fit_end")
        ref = fit_predict(factory, base, [init], problem.leads)
        probe = problem.fold_data(perturb_after(prepared, init, seed=seed), fit_end)
        got = fit_predict(factory, probe, [init], problem.leads)
        if not np.allclose(ref.values, got.values, rtol=0, atol=1e-9):
            diff = float(np.max(np.abs(ref.values - got.values)))
            bad.append(f"init {init:%Y-%m}: forecast changed by up to {diff:.3g} when later data changed")
    return bad
