"""LightGBM on lagged features: one gradient-boosted regressor per lead on every predictor the
problem provides (lagged indices, EOF principal components, calendar month)."""

import lightgbm as lgb
import numpy as np
import xarray as xr

from climate_ml.model_api import to_table


class LightGBMLagged:
    def __init__(self, n_estimators=300, learning_rate=0.03, num_leaves=8, min_child_samples=20,
                 subsample=0.8, colsample_bytree=0.5, reg_lambda=1.0, random_state=0):
        self.params = dict(
            n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
            min_child_samples=min_child_samples, subsample=subsample, subsample_freq=1,
            colsample_bytree=colsample_bytree, reg_lambda=reg_lambda, random_state=random_state,
            n_jobs=1, verbose=-1, deterministic=True, force_row_wise=True,
        )

    def fit(self, X: xr.Dataset, y: xr.DataArray) -> "LightGBMLagged":
        table, self.feature_names_ = to_table(X)
        self.leads_ = y["lead"].values
        self.boosters_ = []
        for j in range(len(self.leads_)):
            target = y.values[:, j]
            ok = np.isfinite(target)
            model = lgb.LGBMRegressor(**self.params)
            model.fit(table[ok], target[ok])
            self.boosters_.append(model)
        return self

    def predict(self, X: xr.Dataset) -> xr.DataArray:
        table, _ = to_table(X)
        out = np.column_stack([b.predict(table) for b in self.boosters_])
        return xr.DataArray(out, dims=("init_time", "lead"),
                            coords={"init_time": X["init_time"].values, "lead": self.leads_})


def make_model():
    return LightGBMLagged()
