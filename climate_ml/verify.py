"""Verification of archived forecasts against observations that have since arrived."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.archive import query
from climate_ml.problems.base import Problem
from climate_ml.schema import INIT, LEAD, MODEL
from climate_ml.scores import METRICS, N_VERIFIED


def observed_for(problem: Problem, prepared: xr.Dataset, inits) -> xr.DataArray:
    """The observed target for each init, in the anomaly convention of that init's forecast
    (climatology fitted on data up to the init). NaN where not yet observed."""
    rows = []
    inits = pd.DatetimeIndex(inits)
    last = pd.Timestamp(prepared["time"].values[-1])
    # The climatology changes by at most one month per init; group inits by year to keep
    # verification fast on long archives (climatology fitted up to the first init of the year,
    # which is never after any init in the group).
    for _, group in pd.Series(inits, index=inits).groupby(inits.year):
        fit_end = min(group.iloc[0], last)
        y = problem.target(prepared, fit_end)
        base = problem.baseline(prepared, fit_end)
        if base is not None:  # anomaly scores: forecast and obs both minus the baseline
            y = y - base.reindex({INIT: y[INIT].values})
        rows.append(y.reindex({INIT: group.index}))
    return xr.concat(rows, dim=INIT)


def _baseline_for(problem: Problem, prepared: xr.Dataset, inits) -> xr.DataArray | None:
    inits = pd.DatetimeIndex(inits)
    last = pd.Timestamp(prepared["time"].values[-1])
    parts = []
    for _, group in pd.Series(inits, index=inits).groupby(inits.year):
        base = problem.baseline(prepared, min(group.iloc[0], last))
        if base is None:
            return None
        parts.append(base.drop_vars("valid_time", errors="ignore").reindex({INIT: group.index}))
    return xr.concat(parts, dim=INIT)


def verify_archive(root: Path, problem: Problem, prepared: xr.Dataset, dataset: str | None = None) -> xr.Dataset:
    """Scores per model and lead (dims model, lead) for every forecast archived on ``dataset``
    (the observations in ``prepared``) whose target has been observed; ``n`` counts them."""
    fc = query(root, problem.name, dataset=dataset)
    inits = pd.DatetimeIndex(fc[INIT].values)
    obs = observed_for(problem, prepared, inits).reindex({LEAD: fc[LEAD].values})
    base = _baseline_for(problem, prepared, inits)
    if base is not None:
        fc["forecast"] = fc["forecast"] - base.reindex({LEAD: fc[LEAD].values})
    out = {}
    for name, metric in {**METRICS, "n": N_VERIFIED}.items():
        out[name] = xr.concat(
            [metric.compute(fc["forecast"].sel({MODEL: m}).drop_vars(MODEL), obs) for m in fc[MODEL].values],
            dim=pd.Index(fc[MODEL].values, name=MODEL),
        )
    ds = xr.Dataset(out)
    n = ds["n"].fillna(0).astype(int)
    for name in METRICS:
        ds[name] = ds[name].where(n > 0)
    ds["n"] = n
    ds.attrs = {"problem": problem.name, "verified_through": f"{pd.Timestamp(prepared['time'].values[-1]):%Y-%m}"}
    return ds


def verification_records(ds: xr.Dataset) -> list[dict]:
    recs = []
    for m in ds[MODEL].values:
        for lead in ds[LEAD].values:
            row = {"model": str(m), "lead": int(lead)}
            for v in ds.data_vars:
                val = float(ds[v].sel({MODEL: m, LEAD: lead}))
                row[v] = int(val) if v == "n" else (None if np.isnan(val) else round(val, 4))
            recs.append(row)
    return recs
