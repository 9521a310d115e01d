"""LightGBM on lagged features: one gradient-boosted regressor per lead on every predictor the
problem provides (lagged indices, EOF principal components, calendar month). When the problem
provides a ``baseline`` (init_time, lead), e.g. a trend, the trees learn the departure from it:
trees cannot extrapolate a trend, but they can correct one."""

import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import numpy as np
import xarray as xr

from climate_ml.model_api import to_table


class LightGBMLagged:
    def __init__(self, n_estimators=300, learning_rate=0.03, num_leaves=8, min_child_samples=20,
                 subsample=0.8, colsample_bytree=0.5, reg_lambda=1.0, random_state=0, max_bin=255):
        self.params = dict(
            n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
            min_child_samples=min_child_samples, subsample=subsample, subsample_freq=1,
            colsample_bytree=colsample_bytree, reg_lambda=reg_lambda, random_state=random_state,
            n_jobs=1, verbose=-1, deterministic=True, force_row_wise=True, max_bin=max_bin,
        )

    def fit(self, X: xr.Dataset, y: xr.DataArray) -> "LightGBMLagged":
        table, self.feature_names_ = to_table(X)
        self.leads_ = y["lead"].values
        base = self._baseline(X, y)

        def fit_lead(j):
            target = y.values[:, j] - base[:, j]
            ok = np.isfinite(target)
            return lgb.LGBMRegressor(**self.params).fit(table[ok], target[ok])

        # the leads' boosters are independent and LightGBM releases the GIL: fit them on threads
        # (the same numbers as one by one), unless this process is already one of a backtest's
        # parallel workers
        with ThreadPoolExecutor(_threads()) as pool:
            self.boosters_ = list(pool.map(fit_lead, range(len(self.leads_))))
        return self

    def _baseline(self, X: xr.Dataset, y=None) -> np.ndarray:
        if "baseline" not in X:
            return np.zeros((X.sizes["init_time"], len(self.leads_)))
        return X["baseline"].sel(lead=self.leads_).transpose("init_time", "lead").values

    def predict(self, X: xr.Dataset) -> xr.DataArray:
        table, _ = to_table(X)
        out = np.column_stack([b.predict(table) for b in self.boosters_]) + self._baseline(X)
        return xr.DataArray(out, dims=("init_time", "lead"),
                            coords={"init_time": X["init_time"].values, "lead": self.leads_})


def _threads() -> int:
    if multiprocessing.parent_process() is not None:
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def make_model():
    return LightGBMLagged()
