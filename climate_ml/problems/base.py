"""What every forecasting problem defines: target, predictors, leads, metrics, CV policy."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.schema import INIT, LEAD


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

    def baseline(self, prepared: xr.Dataset, fit_end) -> xr.DataArray | None:
        """A known-at-init expectation (init_time, lead) that anomaly scores (ACC) are taken
        against, e.g. a trend; None when targets are already anomalies."""
        return None

    @abstractmethod
    def prepare(self, obs: xr.Dataset) -> xr.Dataset:
        """Reduce stored observations to what the problem needs (lazy Dask work computed here),
        independent of any training window."""

    @abstractmethod
    def target(self, prepared: xr.Dataset, fit_end) -> xr.DataArray:
        """Observed target (init_time, lead) in the anomaly convention of a fit up to fit_end."""

    @abstractmethod
    def target_end(self, inits) -> xr.DataArray:
        """(init_time, lead): the last month the target of each pair depends on."""

    @abstractmethod
    def fold_data(self, prepared: xr.Dataset, fit_end) -> FoldData:
        """Features and targets with every learned statistic fitted up to ``fit_end``."""
