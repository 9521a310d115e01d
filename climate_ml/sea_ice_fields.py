"""Sea-ice concentration-field forecasts and their scores.

Scores of a concentration forecast against the observed field (both fractions 0-1 on the same
grid, land NaN), with ice meaning concentration >= 15%:

- ``iiee``: integrated ice-edge error (Goessling et al. 2016), the area where forecast and
  observation disagree on ice / no ice, 10^6 km^2 (overestimate + underestimate);
- ``sie_error``: forecast minus observed sea-ice extent, 10^6 km^2;
- ``binary_accuracy``: the area share of the active region classified correctly, where the
  active region is the ocean that had ice in that calendar month at least once in the training
  window, or has ice in the forecast or the observation (after IceNet, Andersson et al. 2021).

Field forecasts, fitted per grid cell and calendar month on the training window (data up to
``fit_end``) and clipped to 0-1:

- ``climatology``: the mean concentration of the valid calendar month;
- ``linear_trend``: a linear trend per calendar month, at the valid year;
- ``trend_persistence``: the trend at the valid month plus the departure from the trend at init;
- ``damped_anomaly_persistence``: as above with the departure scaled by a(m, L), one
  regression coefficient per init month and lead pooled over all cells.

``field_backtest`` runs them on a rolling origin like ``backtest.backtest`` (a block of inits
per refit, each forecast made from data up to its init) and scores every (init, lead).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.backtest import fold_starts, month_range
from climate_ml.errors import ClimateMLError
from climate_ml.schema import INIT, LEAD, TIME, add_months

THRESHOLD = 0.15
FIELD_METHODS = ("climatology", "linear_trend", "trend_persistence", "damped_anomaly_persistence")
FIELD_SCORES = ("iiee", "sie_error", "binary_accuracy")


def field_scores(forecast: np.ndarray, observed: np.ndarray, area: np.ndarray, active: np.ndarray | None = None,
                 threshold: float = THRESHOLD) -> dict[str, float]:
    """Scores of one forecast field against the observed one (arrays over the same cells)."""
    ocean = np.isfinite(observed) & np.isfinite(forecast)
    f_ice = (forecast >= threshold) & ocean
    o_ice = (observed >= threshold) & ocean
    a = np.where(ocean, area, 0.0) / 1e12
    over = float(a[f_ice & ~o_ice].sum())
    under = float(a[~f_ice & o_ice].sum())
    region = ocean & (f_ice | o_ice | (active if active is not None else False))
    region_area = float(a[region].sum())
    return {
        "iiee": over + under,
        "sie_error": float(a[f_ice].sum() - a[o_ice].sum()),
        "binary_accuracy": (1.0 - (over + under) / region_area) if region_area > 0 else np.nan,
    }


@dataclass
class FieldFit:
    """Per-cell statistics fitted on the training window: arrays (12, cells)."""

    fit_end: pd.Timestamp
    mean: np.ndarray
    slope: np.ndarray  # per year
    intercept: np.ndarray  # at year 0 (the calendar year number itself)
    ever_ice: np.ndarray  # bool: ice (>= 15%) at least once in that calendar month
    damping: np.ndarray  # (12 init months, n leads)

    def trend(self, times: pd.DatetimeIndex) -> np.ndarray:
        m = times.month.values - 1
        return self.intercept[m] + self.slope[m] * times.year.values[:, None]


def fit_fields(conc: np.ndarray, times: pd.DatetimeIndex, fit_end, leads) -> FieldFit:
    """Fit the per-cell climatology and trends on months up to ``fit_end``; ``conc`` is
    (time, cells) with NaN for land."""
    fit_end = pd.Timestamp(fit_end)
    train = times <= fit_end
    if train.sum() < 36:
        raise ClimateMLError(f"field forecasts need 3 years of training data before {fit_end:%Y-%m}")
    n_cells = conc.shape[1]
    mean = np.full((12, n_cells), np.nan)
    slope = np.zeros((12, n_cells))
    intercept = np.full((12, n_cells), np.nan)
    ever = np.zeros((12, n_cells), dtype=bool)
    for m in range(12):
        rows = train & (times.month.values == m + 1)
        v = conc[rows]
        years = times.year.values[rows].astype(float)
        with np.errstate(invalid="ignore"):
            mu = np.nanmean(v, axis=0) if len(v) else np.full(n_cells, np.nan)
        ybar = years.mean()
        var = ((years - ybar) ** 2).sum()
        b = ((years - ybar)[:, None] * (v - mu)).sum(0) / var if var > 0 else np.zeros(n_cells)
        mean[m], slope[m] = mu, b
        intercept[m] = mu - b * ybar
        ever[m] = (v >= THRESHOLD).any(0)
    fit = FieldFit(fit_end, mean, slope, intercept, ever, np.zeros((12, len(leads))))
    # damping of the departure from the trend, one coefficient per init month and lead
    anom = conc - fit.trend(times)
    for m in range(12):
        for j, lead in enumerate(leads):
            init_rows = np.flatnonzero(train & (times.month.values == m + 1))
            later = init_rows + lead
            ok = later < len(times)
            init_rows, later = init_rows[ok], later[ok]
            later_ok = times[later] <= fit_end
            a0, a1 = anom[init_rows[later_ok]], anom[later[later_ok]]
            num, den = np.nansum(a0 * a1), np.nansum(a0 * a0)
            fit.damping[m, j] = np.clip(num / den, 0.0, 1.0) if den > 0 else 0.0
    return fit


def forecast_fields(fit: FieldFit, conc: np.ndarray, times: pd.DatetimeIndex, init, leads, method: str) -> np.ndarray:
    """(lead, cells) forecast from ``init`` with data at or before it."""
    if method not in FIELD_METHODS:
        raise ClimateMLError(f"unknown field method {method!r} (known: {', '.join(FIELD_METHODS)})")
    init = pd.Timestamp(init)
    i = times.get_loc(init)
    valid = pd.DatetimeIndex(add_months(pd.DatetimeIndex([init]), leads)[0])
    if method == "climatology":
        out = fit.mean[valid.month.values - 1]
    else:
        out = fit.trend(valid)
        if method != "linear_trend":
            anom0 = conc[i] - fit.trend(pd.DatetimeIndex([init]))[0]
            damp = np.ones(len(leads)) if method == "trend_persistence" else fit.damping[init.month - 1]
            out = out + damp[:, None] * anom0[None, :]
    return np.clip(out, 0.0, 1.0)


def field_backtest(concentration: xr.DataArray, cell_area: xr.DataArray, leads, test_start, test_end,
                   refit_every: int = 12, methods=FIELD_METHODS,
                   progress: Callable[[str], None] | None = None) -> xr.Dataset:
    """Rolling-origin backtest of the field forecasts; returns scores (method, init_time, lead)."""
    spatial = [d for d in concentration.dims if d != TIME]
    times = pd.DatetimeIndex(concentration[TIME].values)
    conc = np.asarray(concentration.transpose(TIME, *spatial).values, dtype="float64").reshape(len(times), -1)
    ocean = np.isfinite(conc).any(0)  # land cells are NaN throughout: leave them out
    conc = conc[:, ocean]
    area = np.asarray(cell_area.transpose(*spatial).values, dtype="float64").ravel()[ocean]
    leads = [int(k) for k in leads]
    test_end = min(pd.Timestamp(test_end), times[-1])
    if pd.Timestamp(test_start) <= times[0]:
        raise ClimateMLError(f"test start {pd.Timestamp(test_start):%Y-%m} leaves no training data")
    starts = fold_starts(test_start, test_end, refit_every)
    inits = month_range(starts[0], test_end)
    out = np.full((len(methods), len(inits), len(leads), len(FIELD_SCORES)), np.nan)
    k = 0
    for n, t0 in enumerate(starts):
        fit = fit_fields(conc, times, t0, leads)
        block = month_range(t0, min(t0 + pd.DateOffset(months=refit_every - 1), test_end))
        for init in block:
            valid = pd.DatetimeIndex(add_months(pd.DatetimeIndex([init]), leads)[0])
            for i_m, method in enumerate(methods):
                fc = forecast_fields(fit, conc, times, init, leads, method)
                for j, v in enumerate(valid):
                    if v not in times:
                        continue
                    s = field_scores(fc[j], conc[times.get_loc(v)], area, fit.ever_ice[v.month - 1])
                    out[i_m, k, j] = [s[name] for name in FIELD_SCORES]
            k += 1
        if progress:
            progress(f"fold {n + 1}/{len(starts)} (fit up to {t0:%Y-%m})")
    coords = {"method": list(methods), INIT: inits, LEAD: leads}
    return xr.Dataset({name: (("method", INIT, LEAD), out[..., s]) for s, name in enumerate(FIELD_SCORES)},
                      coords=coords, attrs={"units_iiee": "1e6 km2", "units_sie_error": "1e6 km2"})


def summarise_field_scores(scores: xr.Dataset) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per method and lead: mean IIEE, RMSE of the extent error and mean binary accuracy."""
    table = {
        "iiee": scores["iiee"].mean(INIT),
        "sie_rmse": np.sqrt((scores["sie_error"] ** 2).mean(INIT)),
        "binary_accuracy": scores["binary_accuracy"].mean(INIT),
    }
    out: dict = {}
    for method in scores["method"].values:
        out[str(method)] = {
            name: {str(int(lead)): (None if not np.isfinite(v) else round(float(v), 4))
                   for lead, v in zip(scores[LEAD].values, da.sel({"method": method}).values, strict=True)}
            for name, da in table.items()
        }
    return out


def concentration_field(obs: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    """The concentration variable (fraction) and the cell area of a stored sea-ice dataset."""
    fields = [v for v in obs.data_vars if obs[v].attrs.get("standard_name") == "sea_ice_area_fraction"
              or obs[v].attrs.get("units") == "1"]
    if not fields or "cell_area" not in obs.coords:
        raise ClimateMLError("field forecasts need a sea-ice concentration field (fraction) with a 'cell_area' "
                             f"coordinate; the dataset has {sorted(obs.data_vars)}")
    return obs[fields[0]], obs["cell_area"]


def field_forecast_maps(concentration: xr.DataArray, init, lead: int, methods=FIELD_METHODS) -> dict[str, xr.DataArray]:
    """Each method's forecast field (y, x) from ``init`` at ``lead``, fitted on data up to init."""
    spatial = [d for d in concentration.dims if d != TIME]
    times = pd.DatetimeIndex(concentration[TIME].values)
    shape = [concentration.sizes[d] for d in spatial]
    full = np.asarray(concentration.transpose(TIME, *spatial).values, dtype="float64").reshape(len(times), -1)
    ocean = np.isfinite(full[times <= pd.Timestamp(init)]).any(0)  # the land mask as known at init
    conc = full[:, ocean]
    fit = fit_fields(conc, times, init, [lead])
    out = {}
    for method in methods:
        fc = np.full(full.shape[1], np.nan)  # land stays NaN
        fc[ocean] = forecast_fields(fit, conc, times, init, [lead], method)[0]
        out[method] = xr.DataArray(fc.reshape(shape), dims=spatial)
    return out
