"""Arctic sea ice: forecast monthly Northern Hemisphere sea-ice extent (10^6 km^2), leads 1-6.

init_time t means the extent of month t is known. The target at lead L is the extent of month
t+L. The baseline is a linear trend per calendar month fitted on the training window (the
baseline IceNet reports against); ACC is computed on anomalies from it.

Predictors at init t: extent at lags 0-11, extent anomalies from the trend at lags 0-11, the
latest extent (``persistence``), ``baseline(init_time, lead)`` = the trend at the valid month,
``trend_persistence(init_time, lead)`` = baseline + latest anomaly, and the calendar month. From a
concentration field also the extent of four 90-degree longitude sectors (departures from their
training climatology, lags 0-1); with predictor datasets (e.g. SST) their indices at lags 0-3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.errors import ClimateMLError
from climate_ml.features import (
    anomalies,
    fit_climatology,
    fit_monthly_trend,
    lagged,
    monthly_trend_at,
    sea_ice_extent,
)
from climate_ml.probabilities import GaussianCategories, gaussian_category_probabilities
from climate_ml.problems.base import (
    FoldData,
    Problem,
    feature_dataset,
    lead_stack,
    predictor_features,
)
from climate_ml.schema import INIT, LEAD, TIME, add_months, add_valid_time

SECTORS = (0, 90, 180, 270)  # western longitude edges of four 90-degree sectors (degrees east)


def _sector(lon: xr.DataArray, west: float) -> xr.DataArray:
    return ((lon % 360) >= west) & ((lon % 360) < west + 90)


@dataclass
class ArcticSeaIce(GaussianCategories, Problem):
    name: str = "arctic_sea_ice"
    description: str = "Northern Hemisphere monthly sea-ice extent (10^6 km^2), leads 1-6 months"
    leads: tuple[int, ...] = tuple(range(1, 7))
    target_units: str = "1e6 km2"
    plausible_range: tuple[float, float] = (0.0, 25.0)
    references: tuple[str, ...] = ("climatology", "linear_trend", "trend_persistence")
    lags: tuple[int, ...] = tuple(range(12))
    target_variable: str | None = None
    listing_order: ClassVar[int] = 1
    panels: ClassVar[tuple[str, ...]] = ("seasonal_cycle",)
    # the concentration-map references every field backtest includes (models/fields/<name>.py)
    field_references: ClassVar[tuple[str, ...]] = ("climatology", "linear_trend", "trend_persistence",
                                                   "damped_anomaly_persistence")
    run_schedule: ClassVar[tuple] = (("2005-01", 12), ("2018-01", 36))
    default_dataset: ClassVar[str] = "toy-sea-ice"  # the embedded data its commands use when none is named
    default_predictors: ClassVar[tuple[str, ...]] = ()
    min_errors: int = 15  # out-of-sample errors per lead and target season before they set the spread
    # the valid month's extent against the two thresholds known at the init: its record low so far
    # and its value one year before (a new record low < below last year < at or above last year)
    categories = ("new_record_low", "below_last_year", "above_last_year")
    scored_categories = ("new_record_low", "above_last_year")

    def prepare_target(self, obs: xr.Dataset) -> xr.Dataset:
        """An extent series as it is, or a concentration field (fraction, with a ``cell_area``
        coordinate in m^2) reduced to extent: the area of cells at or above 15%."""
        if "extent" in obs.data_vars:
            return xr.Dataset({"extent": obs["extent"].astype("float64")}).compute()
        fields = [v for v in obs.data_vars if obs[v].attrs.get("standard_name") == "sea_ice_area_fraction"
                  or obs[v].attrs.get("units") == "1"]
        if not fields or "cell_area" not in obs.coords:
            raise ClimateMLError(
                "arctic_sea_ice needs a sea-ice 'extent' series or a concentration field with a 'cell_area' "
                f"coordinate; the dataset has {sorted(obs.data_vars)}")
        conc = obs[fields[0]]
        extent = sea_ice_extent(conc, obs["cell_area"])
        sectors = xr.concat([sea_ice_extent(conc.where(_sector(obs["lon"], lo)), obs["cell_area"]) for lo in SECTORS],
                            dim=pd.Index(list(SECTORS), name="sector"))
        return xr.Dataset({"extent": extent.astype("float64"), "sector_extent": sectors.astype("float64")}).compute()

    def _trend(self, prepared: xr.Dataset, fit_end) -> np.ndarray:
        return fit_monthly_trend(prepared["extent"], pd.Timestamp(fit_end))

    def target(self, prepared: xr.Dataset, fit_end) -> xr.DataArray:
        return add_valid_time(lead_stack(prepared["extent"], self.leads, "sea-ice extent at valid_time", self.target_units))

    def baseline(self, prepared: xr.Dataset, fit_end) -> xr.DataArray:
        times = pd.DatetimeIndex(prepared[TIME].values)
        valid = add_months(times, self.leads)
        values = monthly_trend_at(valid, self._trend(prepared, fit_end))
        return xr.DataArray(values, dims=(INIT, LEAD), coords={INIT: times, LEAD: list(self.leads)},
                            attrs={"units": self.target_units, "long_name": "linear trend per calendar month at valid_time"})

    def target_end(self, inits) -> xr.DataArray:
        inits = pd.DatetimeIndex(inits)
        return xr.DataArray(add_months(inits, self.leads), dims=(INIT, LEAD), coords={INIT: inits, LEAD: list(self.leads)})

    def fold_data(self, prepared: xr.Dataset, fit_end) -> FoldData:
        fit_end = pd.Timestamp(fit_end)
        ext = prepared["extent"]
        coef = self._trend(prepared, fit_end)
        anomaly = ext - monthly_trend_at(ext[TIME].values, coef)
        baseline = self.baseline(prepared, fit_end)
        feats = {"extent": lagged(ext, self.lags), "anomaly": lagged(anomaly, self.lags), "persistence": ext}
        if "sector_extent" in prepared:  # from a concentration field: where the ice is, by sector
            sec = prepared["sector_extent"]
            feats["sector_anomaly"] = lagged(anomalies(sec, fit_climatology(sec, fit_end)), (0, 1), dim="sector_lag")
        feats.update(predictor_features(prepared, fit_end))  # --predictor-dataset, e.g. SST
        X = feature_dataset(feats)
        X["baseline"] = baseline
        X["trend_persistence"] = baseline + X["anomaly"].sel(lag=0, drop=True)
        times = pd.DatetimeIndex(prepared[TIME].values)
        return FoldData(fit_end, X, self.target(prepared, fit_end), self.target_end(times))

    # -- probabilities: a new record low, below last year ---------------------------------------

    def _bounds(self, prepared: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
        """(init, lead): the record low of the valid month's calendar month and its extent one
        year before the valid month, both from months up to the init (leads are at most 12)."""
        ext = prepared["extent"]
        times = pd.DatetimeIndex(ext[TIME].values)
        values = np.asarray(ext.values, dtype=float)
        record = np.full(len(times), np.nan)  # the lowest value of each calendar month up to then
        for m in range(1, 13):
            rows = np.flatnonzero(times.month == m)
            record[rows] = np.fmin.accumulate(values[rows])
        year_before = add_months(times, np.asarray(self.leads) - 12)  # (init, lead), never after the init
        pos = times.get_indexer(year_before.ravel()).reshape(year_before.shape)
        found = pos >= 0
        coords = {INIT: times, LEAD: list(self.leads)}
        last = np.where(found, values[np.where(found, pos, 0)], np.nan)
        low = np.where(found, record[np.where(found, pos, 0)], np.nan)
        return (xr.DataArray(low, dims=(INIT, LEAD), coords=coords),
                xr.DataArray(last, dims=(INIT, LEAD), coords=coords))

    def category_bounds(self, context: dict) -> tuple:
        return context["record_low"], context["last_year"]

    def scoring_context(self, prepared: xr.Dataset, fit_end) -> dict[str, xr.DataArray]:
        """Per (init, lead): the thresholds, and the reference: the linear trend of the valid
        calendar month (fitted up to ``fit_end``) with the spread of the training years about it,
        as a normal distribution (the trend climatology IceNet compares against)."""
        low, last = self._bounds(prepared)
        times = pd.DatetimeIndex(prepared[TIME].values)
        ext = prepared["extent"]
        coef = self._trend(prepared, fit_end)
        resid = (ext - monthly_trend_at(ext[TIME].values, coef)).sel({TIME: slice(None, pd.Timestamp(fit_end))})
        months = pd.DatetimeIndex(resid[TIME].values).month
        std = np.array([np.nanstd(resid.values[months == m], ddof=1) for m in range(1, 13)])
        valid = add_months(times, self.leads)
        clim_std = xr.DataArray(std[pd.DatetimeIndex(valid.ravel()).month.values.reshape(valid.shape) - 1],
                                dims=(INIT, LEAD), coords={INIT: times, LEAD: list(self.leads)})
        trend = self.baseline(prepared, fit_end)
        clim = gaussian_category_probabilities(trend, clim_std, (low, last), self.categories)
        return {"record_low": low, "last_year": last, "clim_std": clim_std,
                "clim_probs": clim.transpose(INIT, LEAD, "category")}

    def outlook(self, prepared: xr.Dataset, forecast: xr.DataArray, recent, name: str) -> dict:
        """P(a new record low / below last year / at or above last year) of the valid month's
        extent for each lead of a live forecast, with the thresholds it was judged against."""
        init, fc, sigma, probs, ctx = self.category_outlook(prepared, forecast, recent, name)
        out = {"init_time": f"{init:%Y-%m}", "categories": {}, "spread": {}, "thresholds": {}}
        for lead in fc[LEAD].values:
            key = str(int(lead))
            out["spread"][key] = round(float(sigma.sel({LEAD: lead}).values[0]), 3)
            out["categories"][key] = {c: round(float(probs.sel({LEAD: lead, "category": c}).values[0]), 3)
                                      for c in self.categories}
            out["thresholds"][key] = {k: round(float(ctx[k].sel({LEAD: lead}).values[0]), 3)
                                      for k in ("record_low", "last_year")}
        return out
