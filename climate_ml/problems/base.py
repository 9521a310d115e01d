"""What every forecasting problem defines: target, predictors, leads, metrics, CV policy."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.errors import ClimateMLError
from climate_ml.features import anomalies, fit_climatology, lagged, nino_indices
from climate_ml.schema import INIT, LEAD, TIME


@dataclass(frozen=True)
class FoldData:
    """Features and targets for one training cut-off ``fit_end``.

    X: Dataset over ``init_time`` (every month of the record), built only from data at or
       before each init plus statistics fitted on months up to ``fit_end``.
    y: observed target (init_time, lead), in the same anomaly convention, NaN where unobserved.
    target_end: (init_time, lead) the last month that the target for that pair depends on.
    """

    fit_end: pd.Timestamp
    X: xr.Dataset
    y: xr.DataArray
    target_end: xr.DataArray

    def training_set(self) -> tuple[xr.Dataset, xr.DataArray]:
        """Training pairs: targets fully observed by ``fit_end`` (so the gap between the last
        training target and the first test init is at least the lead), complete predictors."""
        known = self.target_end <= np.datetime64(self.fit_end)
        y = self.y.where(known)
        complete = np.ones(self.X.sizes[INIT], dtype=bool)
        for v in self.X.data_vars:
            da = self.X[v]
            other = [d for d in da.dims if d != INIT]
            complete &= np.asarray(da.notnull().all(other).values if other else da.notnull().values)
        has_target = np.asarray(y.notnull().any(LEAD).values)
        rows = complete & has_target
        return self.X.isel({INIT: rows}), y.isel({INIT: rows})

    def test_set(self, inits) -> xr.Dataset:
        return self.X.sel({INIT: pd.DatetimeIndex(inits)})


class Problem(ABC):
    name: str
    description: str
    leads: tuple[int, ...]
    target_units: str
    references: tuple[str, ...]  # reference model files (models/<name>.py) every backtest includes
    target_is_anomaly: bool = False  # True when targets are departures from a climatology
    enso_phase: str | None = None  # the X variable with the latest 3-month Nino 3.4 anomaly, if any
    target_variable: str | None = None  # which variable of a multi-variable data set is the target
    target_aliases: tuple[str, ...] = ()  # names (lower case, letters and digits) taken as the target
    default_dataset: str  # the embedded data set its commands use when none is named
    default_predictors: tuple[str, ...] = ()  # predictor data sets used with the default data set
    plot_lines: tuple[tuple[float, str], ...] = ()  # (value, label) lines drawn across forecast plots
    # a field target: the per-cell map references (models/fields/<name>.py) every field backtest
    # includes; empty for a problem whose models forecast an index only
    field_references: tuple[str, ...] = ()
    panels: tuple[str, ...] = ()  # the page's problem-specific panels: "seasonal_cycle" (extent), "season" (totals)
    listing_order: int = 100  # where menus and `run` list the problem (lowest first, then by name)
    # the `run` flow's backtest: (first test init, months between refits) for the full run and for --quick
    run_schedule: tuple[tuple[str, int], tuple[str, int]] = (("1990-01", 24), ("2010-01", 60))

    def __reduce__(self):
        # pickled by name through the registry, so that a problem loaded from a user's file
        # (CLIMATE_ML_PROBLEMS) reaches spawned and Dask worker processes too
        return (_rebuild_problem, (self.name, dict(vars(self))))

    def split_target(self, obs: xr.Dataset) -> tuple[xr.Dataset, xr.Dataset | None]:
        """The target variable of a data set and its other variables (which become predictors).
        Only a data set with several variables is split: by ``target_variable`` when given, else
        by the one variable whose name matches ``target_aliases`` (e.g. ``Nino34``, ``nino3.4``)."""
        names = [str(v) for v in obs.data_vars]
        choice = self.target_variable
        if choice is None:
            if len(names) == 1 or not self.target_aliases:
                return obs, None
            matches = [v for v in names if re.sub(r"[^a-z0-9]", "", v.lower()) in self.target_aliases]
            if len(matches) != 1:
                raise ClimateMLError(f"{self.name}: cannot tell the target among {', '.join(sorted(names))}; "
                                     "give --target-variable")
            choice = matches[0]
        if choice not in names:
            raise ClimateMLError(f"{self.name}: target variable {choice!r} is not in the data set "
                                 f"(variables: {', '.join(sorted(names))})")
        rest = [v for v in names if v != choice]
        return obs[[choice]], (obs[rest] if rest else None)

    def baseline(self, prepared: xr.Dataset, fit_end) -> xr.DataArray | None:
        """A known-at-init expectation (init_time, lead) that anomaly scores (ACC) are taken
        against, e.g. a trend; None when targets are already anomalies."""
        return None

    def prepare(self, obs: xr.Dataset, predictors: dict[str, xr.Dataset] | None = None) -> xr.Dataset:
        """Reduce stored observations (and any predictor datasets) to what the problem needs,
        independent of any training window; lazy Dask work is computed here. Predictor series
        are named ``pred_<variable>`` (``pred_nino34``... for an SST field) and put on the
        target's time axis (NaN before a series starts or after it ends; a gap inside a series
        is an error, never filled). The other variables of a multi-variable target data set are
        predictors too."""
        obs, rest = self.split_target(obs)
        prepared = self.prepare_target(obs)
        predictors = {**({"the target data set": rest} if rest is not None else {}), **(predictors or {})}
        if predictors:
            extra = predictor_series(predictors)
            clash = sorted(set(extra.data_vars) & set(prepared.data_vars))
            if clash:
                raise ClimateMLError(f"predictor variables {clash} clash with the problem's own inputs")
            target_times = pd.DatetimeIndex(prepared[TIME].values)
            for v in extra.data_vars:
                t = pd.DatetimeIndex(extra[v][TIME].values[np.isfinite(extra[v].values)])
                if len(t) == 0 or t[-1] < target_times[0] or t[0] > target_times[-1]:
                    raise ClimateMLError(
                        f"predictor {extra[v].attrs['dataset']!r} (variable {extra[v].attrs['variable']!r}) does not "
                        f"overlap the target period {target_times[0]:%Y-%m}..{target_times[-1]:%Y-%m}")
            prepared = prepared.merge(extra.reindex({TIME: prepared[TIME].values}))
        return prepared

    @abstractmethod
    def prepare_target(self, obs: xr.Dataset) -> xr.Dataset:
        """The problem's own inputs from its target dataset (computed, over ``time``)."""

    def last_init(self, prepared: xr.Dataset) -> pd.Timestamp:
        """The last month at which every input is known (predictor records may end earlier)."""
        times = pd.DatetimeIndex(prepared[TIME].values)
        known = np.ones(len(times), dtype=bool)
        for v in prepared.data_vars:
            da = prepared[v]
            other = [d for d in da.dims if d != TIME]
            known &= np.asarray((da.notnull().any(other) if other else da.notnull()).values)
        if not known.any():
            raise ClimateMLError(f"{self.name}: no month has every input ({', '.join(sorted(prepared.data_vars))})")
        return times[np.flatnonzero(known)[-1]]

    def scoring_context(self, prepared: xr.Dataset, fit_end) -> dict[str, xr.DataArray]:
        """Per-init data (dim ``init_time``) that the problem's extra scores need for a fold
        fitted up to ``fit_end``, e.g. tercile edges from the training window."""
        return {}

    def extra_scores(self, result, name: str) -> tuple[dict[str, dict[str, float]], dict]:
        """Problem-specific scores of one model in a ``BacktestResult``: per-lead scores merged
        into ``scores()`` and extra blocks for the JSON summary."""
        return {}, {}

    @abstractmethod
    def target(self, prepared: xr.Dataset, fit_end) -> xr.DataArray:
        """Observed target (init_time, lead) in the anomaly convention of a fit up to fit_end."""

    @abstractmethod
    def target_end(self, inits) -> xr.DataArray:
        """(init_time, lead): the last month the target of each pair depends on."""

    @abstractmethod
    def fold_data(self, prepared: xr.Dataset, fit_end) -> FoldData:
        """Features and targets with every learned statistic fitted up to ``fit_end``."""


def _rebuild_problem(name: str, state: dict) -> Problem:
    from climate_ml.problems import problem_classes

    obj = object.__new__(problem_classes()[name])
    obj.__dict__.update(state)
    return obj


PREDICTOR_PREFIX = "pred_"


def predictor_series(predictors: dict[str, xr.Dataset]) -> xr.Dataset:
    """Predictor datasets as index series named ``pred_<name>``: an SST field (lat/lon) becomes
    its Nino box means (``pred_nino34``...), every 1-D variable stays itself
    (``pred_<variable>``). A missing month inside a series is an error naming the data set and
    the variable: predictors are never filled silently."""
    out: dict[str, xr.DataArray] = {}
    for dataset, ds in predictors.items():
        if not ds.data_vars:
            raise ClimateMLError(f"predictor dataset {dataset!r} has no variables")
        for var in ds.data_vars:
            da = ds[var]
            if "lat" in da.dims and "lon" in da.dims:
                idx = nino_indices(da).compute()
                series = {f"{PREDICTOR_PREFIX}{region}": (idx[region], region) for region in idx.data_vars}
            elif da.dims == (TIME,):
                series = {f"{PREDICTOR_PREFIX}{var}": (da.compute(), str(var))}
            else:
                raise ClimateMLError(f"predictor dataset {dataset!r}: variable {var!r} is neither a (time, lat, lon) "
                                     f"field nor a time series (dims {da.dims})")
            for name, (values, label) in series.items():
                if name in out:
                    raise ClimateMLError(f"predictor {name!r} comes from two data sets ({out[name].attrs['dataset']!r} "
                                         f"and {dataset!r})")
                _check_no_gaps(values, dataset, label)
                values = values.astype("float64")
                values.attrs = {**da.attrs, "dataset": dataset, "variable": label}
                out[name] = values
    ds = xr.Dataset(out)
    return ds.drop_vars([c for c in ds.coords if c not in ds.dims])


def _check_no_gaps(series: xr.DataArray, dataset: str, variable: str) -> None:
    ok = np.isfinite(np.asarray(series.values, dtype="float64"))
    if not ok.any():
        raise ClimateMLError(f"predictor dataset {dataset!r}: variable {variable!r} has no values")
    first, last = np.flatnonzero(ok)[[0, -1]]
    inside = ~ok[first: last + 1]
    if inside.any():
        at = pd.Timestamp(series[TIME].values[first + int(np.argmax(inside))])
        raise ClimateMLError(f"predictor dataset {dataset!r}: variable {variable!r} has {int(inside.sum())} missing "
                             f"months inside its record (first {at:%Y-%m}); predictors are never filled: "
                             "choose other variables or trim the data set")


PREDICTOR_LAGS = (0, 1, 2, 3)


def predictor_features(prepared: xr.Dataset, fit_end, lags=PREDICTOR_LAGS) -> dict[str, xr.DataArray]:
    """Features from predictor series (``pred_*``): departures from their climatology fitted up to
    ``fit_end``, at ``lags`` (dim ``predictor_lag``)."""
    out = {}
    for v in prepared.data_vars:
        if v.startswith(PREDICTOR_PREFIX):
            a = anomalies(prepared[v], fit_climatology(prepared[v], fit_end))
            out[v] = lagged(a, lags, dim="predictor_lag")
    return out


def field_anomaly_features(field: xr.DataArray, fit_end, lags) -> xr.DataArray:
    """Anomaly maps (time, field_lag, lat, lon) for spatial models: departures from the field's
    climatology fitted up to ``fit_end`` at ``lags``; land (NaN through the training window) is 0."""
    anom = anomalies(field, fit_climatology(field, fit_end))
    ocean = field.sel({TIME: slice(None, pd.Timestamp(fit_end))}).notnull().any(TIME)  # land as known at fit_end
    return lagged(anom.where(ocean, 0.0), lags, dim="field_lag")


def feature_dataset(feats: dict[str, xr.DataArray]) -> xr.Dataset:
    """X over ``init_time`` from features over ``time``, with the calendar month of the init
    added (``month``, ``month_sin``, ``month_cos``) and non-dimension coordinates dropped."""
    some = next(iter(feats.values()))
    month = some[TIME].dt.month
    feats = {**feats, "month": month.astype("float64"), "month_sin": np.sin(2 * np.pi * month / 12),
             "month_cos": np.cos(2 * np.pi * month / 12)}
    X = xr.Dataset(feats).rename({TIME: INIT})
    return X.drop_vars([c for c in X.coords if c not in X.dims])


def lead_stack(series: xr.DataArray, leads, long_name: str, units: str) -> xr.DataArray:
    """(init_time, lead) from a monthly series: the value of month init + lead (NaN past the end)."""
    y = xr.concat([series.shift({TIME: -lead}) for lead in leads], dim=pd.Index(list(leads), name=LEAD))
    y = y.rename({TIME: INIT}).transpose(INIT, LEAD)
    y = y.drop_vars([c for c in y.coords if c not in y.dims])
    y.attrs = {"units": units, "long_name": long_name}
    return y
