"""El Nino: forecast the Nino 3.4 3-month running-mean SST anomaly (ONI-style).

init_time t means observations up to and including month t are known. The target at lead L
is the mean anomaly of months t+L-1, t+L, t+L+1 (centred on valid_time = t+L), against a
calendar-month climatology fitted on the training window only.

Predictors at init t: predictor data sets (``--predictor-dataset``, e.g. heat content and
climate-mode indices) as departures from their training climatology at lags 0-3 (``pred_*``),
Nino 3.4 / 3 / 4 / 1+2 anomalies at lags 0..11 months, the latest
3-month mean of Nino 3.4 (``persistence``), 12-month mean, 3-month tendency, leading EOF
principal components of tropical-Pacific SST anomalies (fitted on the training window) at
several lags, the anomaly maps themselves (``field_anomaly``, lags 0-5, for spatial models such
as the ConvLSTM; ``to_table`` leaves them out), and the calendar month.
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
    centred_mean,
    coarsen_field,
    fit_climatology,
    fit_eofs,
    lagged,
    nino_indices,
    project_eofs,
    trailing_mean,
)
from climate_ml.probabilities import GaussianCategories, climatological_probabilities, valid_months
from climate_ml.problems.base import (
    FoldData,
    Problem,
    feature_dataset,
    field_anomaly_features,
    predictor_features,
)
from climate_ml.regions import REGIONS
from climate_ml.schema import INIT, LEAD, TIME, add_months, add_valid_time


@dataclass
class ElNino(GaussianCategories, Problem):
    name: str = "el_nino"
    description: str = "Nino 3.4 3-month running-mean SST anomaly (ONI-style), leads 1-18 months"
    leads: tuple[int, ...] = tuple(range(1, 19))
    target_units: str = "degC"
    plausible_range: tuple[float, float] = (-6.0, 6.0)  # a Nino 3.4 anomaly outside this is not an anomaly
    references: tuple[str, ...] = ("persistence", "climatology", "damped_persistence", "xro")
    target_is_anomaly: bool = True
    enso_phase = "persistence"  # not a field: the ENSO phase variable in X (for `stress`)
    index_lags: tuple[int, ...] = tuple(range(12))
    n_eofs: int = 8
    eof_lags: tuple[int, ...] = (0, 1, 2, 3, 6, 9, 12)
    eof_resolution: float = 5.0
    field_lags: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    predictor_lags: tuple[int, ...] = (0, 1, 2, 3)
    thresholds: tuple[float, float] = (-0.5, 0.5)  # La Nina < -0.5 <= neutral <= +0.5 < El Nino (degC)
    min_errors: int = 15  # out-of-sample errors per lead and target season before they set the spread
    target_variable: str | None = None
    listing_order: ClassVar[int] = 0
    plot_lines: ClassVar[tuple] = ((0.5, "El Nino threshold"), (-0.5, "La Nina threshold"), (0.0, ""))
    run_schedule: ClassVar[tuple] = (("1990-01", 24), ("2016-01", 60))
    default_dataset: ClassVar[str] = "toy-ocean"  # the embedded data its commands use when none is named
    default_predictors: ClassVar[tuple[str, ...]] = ("toy-heat-content",)
    target_aliases: ClassVar[tuple[str, ...]] = ("nino34",)

    def prepare_target(self, obs: xr.Dataset) -> xr.Dataset:
        """Nino box means and a coarse tropical-Pacific field from an SST dataset (a field with
        lat/lon), or the index itself from a 1-D dataset (e.g. an OISST Nino 3.4 series, or the
        Nino34 variable of an index data set)."""
        if len(obs.data_vars) != 1:
            raise ClimateMLError(f"expected one SST variable, found {sorted(obs.data_vars)}; give --target-variable")
        sst = obs[next(iter(obs.data_vars))]
        units = sst.attrs.get("units")
        if units is not None and units != "degC":  # the store keeps SST in degC (ingest converts kelvin)
            raise ClimateMLError(f"el_nino's target is a sea-surface temperature in degC; variable {sst.name!r} is "
                                 f"in {units!r} (give --target-variable, or an SST data set)")
        if sst.dims == (TIME,):
            return xr.Dataset({"nino34": sst.astype("float64")}).compute()
        if "lat" not in sst.dims or "lon" not in sst.dims:
            raise ClimateMLError(f"el_nino needs an SST field on a lat/lon grid or a Nino 3.4 series; variable "
                                 f"{sst.name!r} has dims ({', '.join(map(str, sst.dims))})")
        # One read of the tropical-Pacific rows and columns (every Nino box lies inside it; a
        # small part of a global field: 157 MB for 20 years of 0.25-degree monthly means), then
        # the box means and the coarse field from memory. Dask's graph of these reductions cost
        # twice the read itself; the values are the same, computed time step by time step.
        box = REGIONS["tropical_pacific"]
        inside = box.mask(sst["lat"], sst["lon"])
        sst = sst.isel(lat=np.flatnonzero(inside.any("lon").values), lon=np.flatnonzero(inside.any("lat").values))
        sst = sst.compute()
        out = nino_indices(sst).astype("float64")
        field = sst.where(box.mask(sst["lat"], sst["lon"]), drop=True)
        out["field"] = coarsen_field(field, self.eof_resolution).astype("float64")
        return out

    def target(self, prepared: xr.Dataset, fit_end) -> xr.DataArray:
        """Observed target (init_time, lead) with the climatology fitted up to ``fit_end``."""
        n34 = anomalies(prepared["nino34"], fit_climatology(prepared["nino34"], fit_end))
        return add_valid_time(self._target_from_anomaly(n34))

    def _target_from_anomaly(self, n34: xr.DataArray) -> xr.DataArray:
        oni = centred_mean(n34, 3)
        y = xr.concat(
            [oni.shift({TIME: -lead}) for lead in self.leads], dim=pd.Index(list(self.leads), name=LEAD)
        ).rename({TIME: INIT}).transpose(INIT, LEAD)
        y = y.drop_vars([c for c in y.coords if c not in y.dims])
        y.attrs = {"units": "degC", "long_name": "Nino 3.4 3-month mean SST anomaly centred on valid_time"}
        return y

    def fold_data(self, prepared: xr.Dataset, fit_end) -> FoldData:
        fit_end = pd.Timestamp(fit_end)
        feats: dict[str, xr.DataArray] = {}
        idx_anom = {}
        for region in ("nino34", "nino3", "nino4", "nino12"):
            if region in prepared:
                a = anomalies(prepared[region], fit_climatology(prepared[region], fit_end))
                idx_anom[region] = a
                feats[region] = lagged(a, self.index_lags)
        n34 = idx_anom["nino34"]
        feats["persistence"] = trailing_mean(n34, 3)
        feats["nino34_mean12"] = trailing_mean(n34, 12)
        feats["nino34_tendency"] = n34 - n34.shift({TIME: 3})
        if "field" in prepared:
            field = prepared["field"]
            anom = anomalies(field, fit_climatology(field, fit_end))
            pcs = project_eofs(anom, fit_eofs(anom, fit_end, self.n_eofs))
            feats["pc"] = lagged(pcs, self.eof_lags, dim="pc_lag")
            if self.field_lags:  # the anomaly maps themselves, for spatial models
                feats["field_anomaly"] = field_anomaly_features(field, fit_end, self.field_lags)
        feats.update(predictor_features(prepared, fit_end, self.predictor_lags))  # heat content, climate modes...
        X = feature_dataset(feats)

        y = self._target_from_anomaly(n34)
        times = pd.DatetimeIndex(n34[TIME].values)
        return FoldData(fit_end, X, add_valid_time(y), self.target_end(times))

    def target_end(self, inits) -> xr.DataArray:
        """The last month each (init, lead) target depends on: init + lead + 1 (centred 3-month mean)."""
        inits = pd.DatetimeIndex(inits)
        end = add_months(inits, np.asarray(self.leads) + 1)
        return xr.DataArray(end, dims=(INIT, LEAD), coords={INIT: inits, LEAD: list(self.leads)})


    # -- category probabilities (La Nina / neutral / El Nino) ---------------------------------

    categories = ("la_nina", "neutral", "el_nino")
    scored_categories = ("el_nino", "la_nina")

    def _oni(self, prepared: xr.Dataset, fit_end) -> xr.DataArray:
        """The observed target series: the 3-month mean Nino 3.4 anomaly centred on each month,
        against the climatology of data up to ``fit_end``."""
        n34 = anomalies(prepared["nino34"], fit_climatology(prepared["nino34"], fit_end))
        return centred_mean(n34, 3)

    def scoring_context(self, prepared: xr.Dataset, fit_end) -> dict[str, xr.DataArray]:
        """Per (init, lead): the climatological category probabilities and the standard deviation
        of the target for the target season, both from the training window (data up to
        ``fit_end``): the reference of the probability scores and the spread of a forecast that
        has no verified errors yet."""
        oni = self._oni(prepared, fit_end)
        times = pd.DatetimeIndex(oni[TIME].values)
        values = oni.values
        clim = climatological_probabilities(values, times, fit_end, times, self.leads, self.thresholds)
        train = (times <= pd.Timestamp(fit_end)) & np.isfinite(values)
        std = np.array([np.std(values[train & np.isin(times.month, [(m - 2) % 12 + 1, m, m % 12 + 1])])
                        for m in range(1, 13)])
        coords = {INIT: times, LEAD: list(self.leads)}
        return {
            "clim_probs": xr.DataArray(clim, dims=(INIT, LEAD, "category"), coords={**coords, "category": list(self.categories)}),
            "clim_std": xr.DataArray(std[valid_months(times, self.leads) - 1], dims=(INIT, LEAD), coords=coords),
        }

    def outlook(self, prepared: xr.Dataset, forecast: xr.DataArray, recent, name: str) -> dict:
        """P(La Nina / neutral / El Nino) for each lead (the 3-month season centred on the valid
        month) of a live forecast. The spread comes from ``recent``, a backtest of the same model
        on data up to the init (errors by lead and target season), else the climatological one."""
        init, fc, sigma, probs, _ = self.category_outlook(prepared, forecast, recent, name)
        names = "JFMAMJJASOND"
        out = {"init_time": f"{init:%Y-%m}", "thresholds": list(self.thresholds), "categories": {}, "spread": {},
               "valid_season": {}}
        for lead in fc[LEAD].values:
            v = init + pd.DateOffset(months=int(lead))
            out["valid_season"][str(int(lead))] = "".join(names[(v.month - 2 + k) % 12] for k in range(3)) + f" {v.year}"
            out["spread"][str(int(lead))] = round(float(sigma.sel({LEAD: lead}).values[0]), 3)
            out["categories"][str(int(lead))] = {c: round(float(probs.sel({LEAD: lead, "category": c}).values[0]), 3)
                                                 for c in self.categories}
        return out
