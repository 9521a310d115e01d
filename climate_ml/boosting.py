"""Gradient-boosted forecasters the model files share (as ``layers.py`` holds the PyTorch
blocks): ``LightGBMLagged``, one LightGBM regressor per lead on every predictor the problem
provides, and ``LightGBMMembers``, the same forecast with members.

``LightGBMLagged``: when the problem provides a ``baseline`` (init_time, lead), e.g. a trend,
the trees learn the departure from it (trees cannot extrapolate a trend, but they can correct
one). The leads' boosters are fitted on threads. Keyword arguments it does not name go to
LightGBM as they are (e.g. ``extra_trees=True``; ``benchmarks/lightgbm_settings.py``).
``lead_group=k`` fits one booster per run of k adjacent leads, on their rows stacked with the
lead as one more predictor (k times fewer boosters; measured faster and less skilful on Kaplan,
so not the default; ``lead_group=18`` is one booster over all leads).

``LightGBMMembers``: the ensemble mean is exactly the ``LightGBMLagged`` forecast; the spread
comes from two quantile boosters per lead (the 25% and 75% quantiles of the target given the
predictors, fitted on the same training rows), sigma = (q75 - q25) / 1.349, and the members sit
at the normal quantiles (k - 0.5) / M of N(mean, sigma^2). So deterministic scores are those of
``LightGBMLagged`` and CRPS, the spread/skill ratio and the rank histogram judge the spread.
"""


import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import numpy as np
import xarray as xr

from climate_ml.cluster import available_cpus
from climate_ml.model_api import to_table
from climate_ml.schema import INIT, LEAD, MEMBER


class LightGBMLagged:
    def __init__(self, n_estimators=300, learning_rate=0.03, num_leaves=8, min_child_samples=20,
                 subsample=0.8, colsample_bytree=0.5, reg_lambda=1.0, random_state=0, max_bin=255,
                 lead_group: int = 1, **lightgbm):
        if int(lead_group) < 1:
            raise ValueError(f"lead_group must be at least 1, got {lead_group}")
        self.lead_group = int(lead_group)
        self.params = dict(
            n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
            min_child_samples=min_child_samples, subsample=subsample, subsample_freq=1,
            colsample_bytree=colsample_bytree, reg_lambda=reg_lambda, random_state=random_state,
            n_jobs=1, verbose=-1, deterministic=True, force_col_wise=True, max_bin=max_bin,
        ) | lightgbm

    def fit(self, X: xr.Dataset, y: xr.DataArray) -> "LightGBMLagged":
        table, self.feature_names_ = to_table(X)
        self.leads_ = y["lead"].values
        base = self._baseline(X, y)

        def fit_group(leads):
            rows, targets = [], []
            for j in leads:
                target = y.values[:, j] - base[:, j]
                ok = np.isfinite(target)
                rows.append(self._rows(table[ok], j))
                targets.append(target[ok])
            return lgb.LGBMRegressor(**self.params).fit(np.concatenate(rows), np.concatenate(targets))

        # the boosters are independent and LightGBM releases the GIL: fit them on threads (the
        # same numbers as one by one), unless this process is already one of a backtest's
        # parallel workers
        with ThreadPoolExecutor(_threads()) as pool:
            self.boosters_ = list(pool.map(fit_group, self._groups()))
        return self

    def _groups(self) -> list[range]:
        """The lead indices each booster learns: one lead each by default, else runs of
        ``lead_group`` adjacent leads."""
        n, g = len(self.leads_), self.lead_group
        return [range(i, min(i + g, n)) for i in range(0, n, g)]

    def _rows(self, table: np.ndarray, j: int) -> np.ndarray:
        """The predictors of lead index ``j``'s booster: the table, with the lead as one more
        column when a booster learns several leads."""
        if self.lead_group == 1:
            return table
        return np.column_stack([table, np.full(len(table), float(self.leads_[j]))])

    def _baseline(self, X: xr.Dataset, y=None) -> np.ndarray:
        if "baseline" not in X:
            return np.zeros((X.sizes["init_time"], len(self.leads_)))
        return X["baseline"].sel(lead=self.leads_).transpose("init_time", "lead").values

    def predict(self, X: xr.Dataset) -> xr.DataArray:
        table, _ = to_table(X)
        out = np.column_stack([self.boosters_[j // self.lead_group].predict(self._rows(table, j))
                               for j in range(len(self.leads_))]) + self._baseline(X)
        return xr.DataArray(out, dims=("init_time", "lead"),
                            coords={"init_time": X["init_time"].values, "lead": self.leads_})


def _threads() -> int:
    """Threads for the leads' fits: one in a backtest's worker process, else the CPUs, or
    ``OMP_NUM_THREADS`` where the environment sets a budget (e.g. the test suite's parallel
    workers)."""
    if multiprocessing.parent_process() is not None:
        return 1
    budget = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, int(budget)) if budget.isdigit() else available_cpus()


class LightGBMMembers(LightGBMLagged):
    def __init__(self, members: int = 10, quantile_estimators: int = 150, quantile_learning_rate: float = 0.05,
                 quantile_leaves: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.n_members = members
        self.quantile_params = {**self.params, "objective": "quantile", "n_estimators": quantile_estimators,
                                "learning_rate": quantile_learning_rate, "num_leaves": quantile_leaves}

    def fit(self, X: xr.Dataset, y: xr.DataArray) -> "LightGBMMembers":
        super().fit(X, y)
        table, _ = to_table(X)
        base = self._baseline(X, y)

        def fit_quantiles(j):
            target = y.values[:, j] - base[:, j]
            ok = np.isfinite(target)
            return [lgb.LGBMRegressor(**self.quantile_params, alpha=q).fit(table[ok], target[ok]) for q in (0.25, 0.75)]

        with ThreadPoolExecutor(_threads()) as pool:
            self.quantiles_ = list(pool.map(fit_quantiles, range(len(self.leads_))))
        return self

    def predict(self, X: xr.Dataset) -> xr.DataArray:
        from scipy.stats import norm

        mean = super().predict(X)
        table, _ = to_table(X)
        iqr = np.column_stack([hi.predict(table) - lo.predict(table) for lo, hi in self.quantiles_])
        sigma = np.maximum(iqr, 0.0) / (2 * norm.ppf(0.75))  # crossing quantiles: no spread, never negative
        z = norm.ppf((np.arange(self.n_members) + 0.5) / self.n_members)
        z = z - z.mean()  # exactly symmetric: the ensemble mean is the mean forecast
        members = mean.values[:, :, None] + sigma[:, :, None] * z[None, None, :]
        return xr.DataArray(members, dims=(INIT, LEAD, MEMBER),
                            coords={INIT: mean[INIT].values, LEAD: mean[LEAD].values, MEMBER: np.arange(self.n_members)})
