"""Regime shift: train in one era, test in another ("the iid oracle is a fairy tale").

In regime: the usual rolling-origin backtest over the test period (refit on an expanding
window). Out of regime: each model is fitted once on data up to ``train_end`` and then frozen;
its inputs in the test period are built exactly as in the in-regime backtest (climatology up
to each fold start), so the comparison isolates a change in the dynamics the model learned
from a change in the mean state. Both are scored on the same pairs, overall, by season of the
target and by ENSO phase at the init.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.backtest import ModelSpec, RollingOrigin, backtest, fit_predict, resolve_model
from climate_ml.errors import ClimateMLError, ModelError
from climate_ml.model_api import new_model
from climate_ml.problems.base import Problem
from climate_ml.schema import INIT, LEAD
from climate_ml.scores import METRICS

SEASONS = {"DJF": (12, 1, 2), "MAM": (3, 4, 5), "JJA": (6, 7, 8), "SON": (9, 10, 11)}
PHASE_THRESHOLD = 0.5  # degC, on the latest 3-month mean Nino 3.4 anomaly at the init


def _acc_by(fc: xr.DataArray, obs: xr.DataArray, mask: np.ndarray) -> dict[str, float | None]:
    acc = METRICS["acc"].compute(fc.where(mask), obs.where(mask))
    return {str(int(k)): (None if not np.isfinite(v) else round(float(v), 4)) for k, v in zip(acc[LEAD].values, acc.values, strict=True)}


def stress_test(problem: Problem, models: dict[str, ModelSpec], prepared: xr.Dataset, train_end,
                test_start, test_end, refit_every: int = 12) -> dict:
    if problem.enso_phase is None:
        raise ClimateMLError(f"stress needs an ENSO phase at the init; {problem.name} has none")
    train_end, test_start = pd.Timestamp(train_end), pd.Timestamp(test_start)
    if train_end >= test_start:
        raise ClimateMLError(f"--train-end {train_end:%Y-%m} must be before --test-start {test_start:%Y-%m}")
    inside = backtest(problem, models, prepared, test_start, test_end, refit_every)
    folds = [(problem.fold_data(prepared, t0), inits) for t0, inits in RollingOrigin(test_start, test_end, refit_every).folds(problem, prepared)]
    X_train, y_train = problem.fold_data(prepared, train_end).training_set()
    outside: dict[str, xr.DataArray] = {}
    failures = dict(inside.failures)
    for name, spec in models.items():
        if name in failures:
            continue
        try:
            model = new_model(resolve_model(spec), name)
            model.fit(X_train, y_train)
            frozen = _Frozen(model)
            outside[name] = xr.concat(
                [fit_predict(lambda f=frozen: f, fold, inits, problem.leads, name) for fold, inits in folds], dim=INIT)
        except ModelError as exc:
            failures[name] = str(exc)
        except Exception as exc:
            failures[name] = f"{name}: {type(exc).__name__} in fit: {exc}"
    if problem.enso_phase not in folds[0][0].X:
        raise ClimateMLError(f"stress needs the ENSO phase {problem.enso_phase!r} in {problem.name}'s features "
                             "(for rainfall: give an SST data set with --predictor-dataset)")
    phase_var = xr.concat([fold.test_set(inits)[problem.enso_phase] for fold, inits in folds], dim=INIT)
    # scores on departures from the problem's baseline (e.g. the rainfall climatology), as in backtests
    base = 0.0 if inside.baseline is None else inside.baseline.drop_vars("valid_time", errors="ignore")
    obs = inside.obs.drop_vars("valid_time", errors="ignore") - base
    inits = pd.DatetimeIndex(obs[INIT].values)
    valid_month = ((inits.month.values[:, None] - 1 + np.asarray(problem.leads)[None, :]) % 12) + 1
    phases = {
        "el_nino": (phase_var.values > PHASE_THRESHOLD)[:, None],
        "la_nina": (phase_var.values < -PHASE_THRESHOLD)[:, None],
        "neutral": (np.abs(phase_var.values) <= PHASE_THRESHOLD)[:, None],
    }
    everything = np.ones((len(inits), 1), dtype=bool)
    result = {}
    for name in models:
        if name in failures or name not in outside:
            continue
        row = {}
        for label, fc in (("in_regime", inside.forecasts[name]), ("out_of_regime", outside[name])):
            fc = fc.drop_vars("valid_time", errors="ignore") - base
            row[label] = {
                "acc": _acc_by(fc, obs, everything),
                "rmse": {str(int(k)): round(float(v), 4) for k, v in zip(problem.leads, METRICS["rmse"].compute(fc, obs).values, strict=True)},
                "by_target_season": {s: _acc_by(fc, obs, np.isin(valid_month, months)) for s, months in SEASONS.items()},
                "by_enso_phase_at_init": {p: _acc_by(fc, obs, m) for p, m in phases.items()},
            }
        row["acc_lost"] = {k: (None if row["in_regime"]["acc"][k] is None or row["out_of_regime"]["acc"][k] is None
                               else round(row["in_regime"]["acc"][k] - row["out_of_regime"]["acc"][k], 4))
                           for k in row["in_regime"]["acc"]}
        result[name] = row
    return {
        "problem": problem.name, "train_end": f"{train_end:%Y-%m}",
        "test_period": [f"{inits[0]:%Y-%m}", f"{inits[-1]:%Y-%m}"], "refit_every_months": refit_every,
        "phase_rule": f"ENSO phase from the latest 3-month mean Nino 3.4 anomaly at the init (+/-{PHASE_THRESHOLD} degC)",
        "n_inits": {"all": len(inits), **{p: int(m.sum()) for p, m in phases.items()}},
        "models": result, "failures": failures,
    }


class _Frozen:
    """Wraps a fitted model so that fit() is a no-op: the out-of-regime model never refits."""

    def __init__(self, model):
        self.model = model

    def fit(self, X, y):
        return self

    def predict(self, X):
        return self.model.predict(X)


def format_stress(report: dict, lead: int = 6) -> str:
    k = str(lead)
    lines = [f"{report['problem']}: trained up to {report['train_end']} (frozen) vs refitted every "
             f"{report['refit_every_months']} months; test inits {report['test_period'][0]}..{report['test_period'][1]}",
             f"ACC at lead {lead}: in regime / out of regime (lost)"]
    cols = ["all", *SEASONS, "el_nino", "la_nina", "neutral"]
    width = max([len(m) for m in report["models"]] + [5]) + 2
    lines.append("model".ljust(width) + "".join(f"{c:>21}" for c in cols))

    def cell(a, b):
        if a is None or b is None:
            return f"{'-':>21}"
        return f"{a:.2f}/{b:.2f} ({a - b:+.2f})".rjust(21)
    for name, row in report["models"].items():
        i, o = row["in_regime"], row["out_of_regime"]
        cells = [cell(i["acc"][k], o["acc"][k])]
        cells += [cell(i["by_target_season"][s][k], o["by_target_season"][s][k]) for s in SEASONS]
        cells += [cell(i["by_enso_phase_at_init"][p][k], o["by_enso_phase_at_init"][p][k]) for p in ("el_nino", "la_nina", "neutral")]
        lines.append(name.ljust(width) + "".join(cells))
    lines.append("inits per ENSO phase: " + ", ".join(f"{p} {n}" for p, n in report["n_inits"].items()))
    for name, err in report["failures"].items():
        lines.append(f"FAILED {name}: {err}")
    return "\n".join(lines)
