"""Feature building: pure functions on xarray objects, lazy when given Dask-backed input.

Every transform that learns something (climatology, EOFs) takes ``fit_end`` and learns only
from months up to and including it; every time-series transform (lags, rolling means) looks
only backwards. So features at month t depend on data at or before t, plus statistics from
the training window: the no-lookahead guard in backtest.py checks this mechanically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.errors import ClimateMLError
from climate_ml.regions import box_mean
from climate_ml.schema import TIME

NINO_REGIONS = ("nino34", "nino3", "nino4", "nino12")


def _upto(da: xr.DataArray, fit_end) -> xr.DataArray:
    return da.sel({TIME: slice(None, pd.Timestamp(fit_end))})


def fit_climatology(da: xr.DataArray, fit_end, min_years: int = 3) -> xr.DataArray:
    """Mean by calendar month (dim ``month``) over months up to ``fit_end``."""
    train = _upto(da, fit_end)
    if train.sizes[TIME] < 12 * min_years:
        raise ClimateMLError(
            f"climatology needs at least {min_years} years of data up to {pd.Timestamp(fit_end):%Y-%m}; "
            f"found {train.sizes[TIME]} months"
        )
    return train.groupby(f"{TIME}.month").mean(TIME)


def anomalies(da: xr.DataArray, climatology: xr.DataArray) -> xr.DataArray:
    """Departure from a calendar-month climatology (lazy for Dask input).

    The climatology is indexed by each month and chunked like ``da`` instead of using a
    groupby-subtract, which builds tens of thousands of Dask tasks on long records."""
    month = xr.DataArray(da[TIME].dt.month.values, dims=TIME, coords={TIME: da[TIME].values})
    clim = climatology.chunk() if da.chunks is not None else climatology
    clim_t = clim.sel(month=month).drop_vars("month")
    if da.chunks is not None:
        clim_t = clim_t.chunk({TIME: da.chunksizes[TIME]})
    out = da - clim_t
    out.attrs = {**da.attrs, "anomaly": "departure from the training-window monthly climatology"}
    return out


def trailing_mean(da: xr.DataArray, window: int) -> xr.DataArray:
    """Mean of the ``window`` months ending at each month (never looks ahead)."""
    return da.rolling({TIME: window}, min_periods=window).mean()


def centred_mean(da: xr.DataArray, window: int = 3) -> xr.DataArray:
    """Centred running mean (used only for *targets*, never for predictors)."""
    return da.rolling({TIME: window}, center=True, min_periods=window).mean()


def lagged(da: xr.DataArray, lags, dim: str = "lag") -> xr.DataArray:
    """Stack ``da`` shifted by each lag (months, >= 0) along a new dimension ``dim``."""
    lags = [int(k) for k in lags]
    if min(lags) < 0:
        raise ClimateMLError("lags must be >= 0 (a negative lag would read the future)")
    if not isinstance(da.data, np.ndarray):  # Dask: lazily, shift by shift
        return xr.concat([da.shift({TIME: k}) for k in lags], dim=pd.Index(lags, name=dim))
    # in memory: one array filled by slices, the values of the concatenated shifts (NaN before
    # the first month of each lag) without their copies
    values = np.moveaxis(da.values, da.get_axis_num(TIME), 0)
    dtype = values.dtype if values.dtype.kind in "fc" else np.float64
    out = np.empty((len(lags), *values.shape), dtype=dtype)
    n = values.shape[0]
    for i, k in enumerate(lags):
        out[i, :k] = np.nan
        if k < n:
            out[i, k:] = values[:n - k]
    out = np.moveaxis(out, 1, 1 + da.get_axis_num(TIME))
    coords = {**{c: da.coords[c] for c in da.coords}, dim: lags}
    return xr.DataArray(out, dims=(dim, *da.dims), coords=coords, name=da.name, attrs=da.attrs)


def nino_indices(sst: xr.DataArray, regions=NINO_REGIONS) -> xr.Dataset:
    """Area-weighted box means of an SST (or SST anomaly) field, one variable per region."""
    out = {}
    for r in regions:
        try:
            out[r] = box_mean(sst, r)
        except ClimateMLError:
            continue  # the grid does not reach this box (e.g. Nino 1+2 on a coarse grid)
    if "nino34" not in out:
        raise ClimateMLError("the SST field does not cover the Nino 3.4 box (5S-5N, 170W-120W)")
    return xr.Dataset(out)


@dataclass(frozen=True)
class EOFs:
    """Leading EOFs of an anomaly field, fitted on a training window."""

    patterns: np.ndarray  # (mode, space)
    scale: np.ndarray  # singular values / sqrt(n), to give PCs unit-ish variance
    weights: np.ndarray  # sqrt(cos lat) per space point
    ocean: np.ndarray  # bool per space point: points used
    explained: np.ndarray  # fraction of variance per mode


def fit_eofs(anom: xr.DataArray, fit_end, n_modes: int = 6) -> EOFs:
    """EOFs of ``anom`` (time, lat, lon) from months up to ``fit_end`` (cos-lat weighted)."""
    train = _upto(anom, fit_end).transpose(TIME, "lat", "lon").values
    n_t = train.shape[0]
    flat = train.reshape(n_t, -1)
    ocean = np.isfinite(flat).mean(axis=0) > 0.9
    w = np.sqrt(np.clip(np.cos(np.deg2rad(anom["lat"].values)), 0, None))
    weights = np.broadcast_to(w[:, None], anom.shape[1:]).reshape(-1)[ocean]
    x = np.nan_to_num(flat[:, ocean]) * weights
    _, s, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    k = min(n_modes, vt.shape[0])
    return EOFs(vt[:k], s[:k] / np.sqrt(n_t), weights, ocean, (s**2 / (s**2).sum())[:k])


def project_eofs(anom: xr.DataArray, eofs: EOFs) -> xr.DataArray:
    """Principal components (time, mode) of ``anom`` on fitted EOFs, scaled to unit variance
    over the training window."""
    values = anom.transpose(TIME, "lat", "lon").values.reshape(anom.sizes[TIME], -1)[:, eofs.ocean]
    pcs = (np.nan_to_num(values) * eofs.weights) @ eofs.patterns.T / eofs.scale
    return xr.DataArray(
        pcs.astype("float64"),
        dims=(TIME, "mode"),
        coords={TIME: anom[TIME].values, "mode": np.arange(1, pcs.shape[1] + 1)},
    )


def coarsen_field(da: xr.DataArray, target_deg: float = 5.0) -> xr.DataArray:
    """Block-average a lat/lon field to about ``target_deg`` resolution (lazy for Dask)."""
    dlat = float(abs(np.diff(da["lat"].values[:2])[0])) if da.sizes["lat"] > 1 else target_deg
    factor = max(1, int(round(target_deg / dlat)))
    if factor == 1:
        return da
    return da.coarsen(lat=factor, lon=factor, boundary="trim").mean()


def fit_monthly_trend(series: xr.DataArray, fit_end, min_years: int = 5) -> np.ndarray:
    """Least-squares linear trend for each calendar month over months up to ``fit_end``:
    coefficients (12, 2) of value = a + b * (year - 2000). Missing months are skipped."""
    train = _upto(series, fit_end)
    t = pd.DatetimeIndex(train[TIME].values)
    v = np.asarray(train.values, dtype=float)
    coef = np.full((12, 2), np.nan)
    for m in range(1, 13):
        ok = (t.month == m) & np.isfinite(v)
        if ok.sum() < min_years:
            raise ClimateMLError(
                f"a trend for calendar month {m} needs {min_years} years up to {pd.Timestamp(fit_end):%Y-%m}; found {ok.sum()}"
            )
        coef[m - 1] = np.polyfit(t.year[ok] - 2000.0, v[ok], 1)[::-1]
    return coef


def monthly_trend_at(times, coef: np.ndarray) -> np.ndarray:
    """Evaluate per-calendar-month trends (from fit_monthly_trend) at any datetimes (any shape)."""
    idx = pd.DatetimeIndex(np.asarray(times).ravel())
    out = coef[idx.month - 1, 0] + coef[idx.month - 1, 1] * (idx.year - 2000.0)
    return np.asarray(out).reshape(np.shape(times))


def sea_ice_extent(concentration: xr.DataArray, cell_area: xr.DataArray, threshold: float = 0.15) -> xr.DataArray:
    """Sea-ice extent (10^6 km^2): total area (m^2) of cells with concentration >= threshold
    (a fraction, 0-1). Land (NaN) never counts. Lazy for Dask input."""
    spatial = [d for d in concentration.dims if d != TIME]
    covered = (concentration >= threshold) & concentration.notnull()
    out = (covered * cell_area).sum(spatial) / 1e12
    out.attrs = {"units": "1e6 km2", "standard_name": "sea_ice_extent",
                 "long_name": f"area of cells with concentration >= {threshold:.0%}"}
    return out
