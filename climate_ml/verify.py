"""Verification of archived forecasts against observations that have since arrived."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.archive import query, write_observed
from climate_ml.errors import QueryError
from climate_ml.problems.base import Problem
from climate_ml.schema import INIT, LEAD, MODEL
from climate_ml.scores import METRICS, N_VERIFIED
from climate_ml.store import StoreLike


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


def record_outcomes(store: StoreLike, problem: Problem, prepared: xr.Dataset, dataset: str | None = None) -> int:
    """Write the outcomes observed since into the archive beside the forecasts they verify (each
    in the convention of :func:`observed_for`); returns how many values were filled."""
    try:
        fc = query(store, problem.name, dataset=dataset, kind="index")
    except QueryError:
        return 0
    inits = pd.DatetimeIndex(fc[INIT].values)
    obs = observed_for(problem, prepared, inits).reindex({LEAD: fc[LEAD].values})
    return write_observed(store, problem.name, obs, dataset)


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


def verify_archive(store: StoreLike, problem: Problem, prepared: xr.Dataset, dataset: str | None = None,
                   kinds: tuple[str, ...] | None = None) -> xr.Dataset:
    """Scores per model and lead (dims model, lead) for every forecast archived on ``dataset``
    (the observations in ``prepared``) whose target has been observed; ``n`` counts them.
    ``kinds``: only inits of these provenance kinds (e.g. ``("forecast",)``: issued live)."""
    fc = query(store, problem.name, dataset=dataset, kind="index")
    if kinds is not None:
        fc["forecast"] = fc["forecast"].where(fc["prov_kind"].isin(list(kinds)))
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


def record_field_outcomes(store: StoreLike, problem: Problem, concentration: xr.DataArray, dataset: str) -> int:
    """Write the observed maps that have arrived beside the archived map forecasts they verify."""
    return write_observed(store, problem.name, None, dataset, maps=concentration)


def row_name(score: str) -> str:
    """The name a field score (``sea_ice_fields.FIELD_SCORES``) has in a verification row: the
    extent error is summarised as an RMSE (``sie_rmse``), the others as means under their name."""
    return "sie_rmse" if score == "sie_error" else score


def field_score_samples(store: StoreLike, problem: Problem, concentration: xr.DataArray, cell_area: xr.DataArray,
                        dataset: str, kinds: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Every archived map forecast on ``dataset`` (of ``kinds``, default all) whose valid month is
    now observed, scored as the field backtest scores them (``sea_ice_fields.field_scores``: the
    member mean for IIEE, extent error and binary accuracy, the members for the Brier score of
    P(ice); the active region from the maps up to the init). Per model: its ``leads`` and the
    ``samples``, one (kind, lead, scores) per verified (init, lead)."""
    from climate_ml.archive import list_models
    from climate_ml.sea_ice_fields import FieldTruth, field_scores

    truth = FieldTruth(concentration, cell_area)  # the observed maps, read a block of months at a time
    grid, ocean = truth.rows.grid, truth.ocean
    out = {}
    for model in list_models(store, problem.name, dataset, kind="maps"):
        ds = query(store, problem.name, model, dataset=dataset).isel({MODEL: 0})
        if kinds is not None:
            ds = ds.isel({INIT: np.isin(ds["prov_kind"].values.astype(str), list(kinds))})
        fc = ds["forecast"].transpose(INIT, LEAD, "member", *grid)
        leads = [int(k) for k in ds[LEAD].values]
        samples = []
        for i, init in enumerate(pd.DatetimeIndex(ds[INIT].values)):
            active = truth.active(init)
            kind = str(ds["prov_kind"].values[i])
            for j, lead in enumerate(leads):
                valid = init + pd.DateOffset(months=lead)
                if valid not in truth.times:
                    continue
                members = fc.isel({INIT: i, LEAD: j}).values.reshape(fc.sizes["member"], -1)[:, ocean]
                if not np.isfinite(members).any():
                    continue
                seen = truth.observed(pd.DatetimeIndex([valid]))[0]
                samples.append((kind, lead, field_scores(members.mean(0), seen, truth.area, active[valid.month - 1],
                                                         members=members if members.shape[0] > 1 else None)))
        out[model] = {"leads": leads, "samples": samples}
    return out


def field_verification_rows(scored: dict[str, dict], kinds: tuple[str, ...] | None = None) -> list[dict]:
    """Per model and lead of ``field_score_samples`` (only its samples of ``kinds``, default all):
    n and the mean of each field score (the extent error as an RMSE, ``sie_rmse``)."""
    from climate_ml.sea_ice_fields import FIELD_SCORES

    rows = []
    for model, found in scored.items():
        for lead in found["leads"]:
            scores = [sc for kind, k, sc in found["samples"] if k == lead and (kinds is None or kind in kinds)]
            row = {"model": model, "lead": lead, "n": len(scores)}
            for name in FIELD_SCORES:
                vals = np.array([sc[name] for sc in scores], dtype=float)
                vals = vals[np.isfinite(vals)]
                value = (np.sqrt(np.mean(vals**2)) if name == "sie_error" else np.mean(vals)) if vals.size else np.nan
                row[row_name(name)] = None if not np.isfinite(value) else round(float(value), 4)
            rows.append(row)
    return rows


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


def monitor_skill(store: StoreLike, problem: Problem, prepared: xr.Dataset, dataset: str, score: str = "rmse",
                  min_cases: int = 12, n_boot: int = 500) -> xr.Dataset:
    """Running skill of the forecasts issued live (kind "forecast") by model and lead, against
    the model's skill in its recorded backtest with a block-bootstrap interval: ``status`` is
    "drift" where the live score lies outside the interval with at least ``min_cases`` verified
    cases, "ok" inside it, "too few cases" or "no backtest" otherwise."""
    from climate_ml.leaderboard import assemble, default_reference, score_board

    live = verify_archive(store, problem, prepared, dataset, kinds=("forecast",))
    try:
        board = assemble(store, problem.name, dataset=dataset)
        table = score_board(board, score, default_reference(problem, board), n_boot=n_boot)
        backtest = {r["model"]: r["leads"] for r in table["rows"]}
    except QueryError:
        backtest = {}
    return running_skill([str(m) for m in live[MODEL].values], [int(v) for v in live[LEAD].values],
                         live[score].values, live["n"].values, backtest, score, min_cases,
                         {"problem": problem.name, "dataset": dataset, "verified_through": live.attrs["verified_through"]})


def monitor_field_skill(store: StoreLike, problem: Problem, live: list[dict], dataset: str, verified_through: str,
                        score: str = "iiee", min_cases: int = 12, n_boot: int = 500) -> xr.Dataset:
    """The same for concentration maps: ``live`` holds the field scores of the maps issued live
    (``field_verification_rows`` with kinds ("forecast",)), and the backtest is the model's in the newest
    recorded field backtest on ``dataset`` (``score``: a map metric of the leaderboard, e.g. IIEE)."""
    from climate_ml.leaderboard import FIELD_REFERENCE, assemble_fields, score_field_board
    from climate_ml.scores import MAP_METRICS

    column = row_name(MAP_METRICS[score].variable)
    try:
        table = score_field_board(assemble_fields(store, problem.name, dataset=dataset), score, FIELD_REFERENCE,
                                  n_boot=n_boot)
        backtest = {r["model"]: r["leads"] for r in table["rows"]}
    except QueryError:
        backtest = {}
    models = sorted({r["model"] for r in live})
    leads = sorted({r["lead"] for r in live})
    value, n = np.full((len(models), len(leads)), np.nan), np.zeros((len(models), len(leads)), dtype=int)
    for r in live:
        i, j = models.index(r["model"]), leads.index(r["lead"])
        value[i, j], n[i, j] = np.nan if r.get(column) is None else r[column], r["n"]
    return running_skill(models, leads, value, n, backtest, score, min_cases,
                         {"problem": problem.name, "dataset": dataset, "verified_through": verified_through})


def running_skill(models: list[str], leads: list[int], value: np.ndarray, n: np.ndarray, backtest: dict, score: str,
                  min_cases: int, attrs: dict) -> xr.Dataset:
    """(model, lead) live scores and case counts beside each model's backtest score and interval
    (``backtest``: model -> lead -> {"score", "ci"}, as a leaderboard row), with the status of
    ``monitor_skill``."""
    shape = (len(models), len(leads))
    bt, lo, hi = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    for i, m in enumerate(models):
        for j, lead in enumerate(leads):
            cell = backtest.get(m, {}).get(str(lead))
            if cell and cell["score"] is not None:
                bt[i, j], (lo[i, j], hi[i, j]) = cell["score"], [np.nan if v is None else v for v in cell["ci"]]
    status = np.where(np.isnan(bt), "no backtest",
                      np.where(n < min_cases, "too few cases",
                               np.where((value < lo) | (value > hi), "drift", "ok")))
    dims = (MODEL, LEAD)
    out = xr.Dataset(
        {"live": (dims, value, {"long_name": f"{score} of the forecasts issued live, verified so far"}),
         "n": (dims, n, {"long_name": "verified live forecasts"}),
         "backtest": (dims, bt, {"long_name": f"{score} in the model's recorded backtest"}),
         "backtest_lo": (dims, lo, {"long_name": "lower end of the backtest score's bootstrap interval"}),
         "backtest_hi": (dims, hi, {"long_name": "upper end of the backtest score's bootstrap interval"}),
         "status": (dims, status.astype(object), {"long_name": "drift, ok, too few cases or no backtest"})},
        coords={MODEL: models, LEAD: leads})
    out.attrs = {**attrs, "score": score, "min_cases": min_cases}
    return out


def drift_records(ds: xr.Dataset) -> list[dict]:
    """One row per (model, lead) of :func:`monitor_skill`, for JSON and the page."""
    rows = []
    for i, m in enumerate(ds[MODEL].values):
        for j, lead in enumerate(ds[LEAD].values):
            def num(v, i=i, j=j):
                x = float(ds[v].values[i, j])
                return None if np.isnan(x) else round(x, 4)
            rows.append({"model": str(m), "lead": int(lead), "score": ds.attrs.get("score"), "live": num("live"),
                         "n": int(ds["n"].values[i, j]),
                         "backtest": num("backtest"), "backtest_ci": [num("backtest_lo"), num("backtest_hi")],
                         "status": str(ds["status"].values[i, j])})
    return rows
