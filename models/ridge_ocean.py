"""Seasonal ridge regression on the ocean state: for each lead and calendar month of the init,
a ridge regression (inits of that month and its two neighbours pooled) of the target on the
Nino 3.4 anomaly at lags 0-3, its 12-month mean, and every predictor series (heat content,
climate modes, winds: ``pred_*`` at lags 0-3), standardised on the training window. A direct
statistical forecast per lead, the kind of model operational centres ran before dynamical
ensembles, and a structurally different partner for XRO."""

import numpy as np
import xarray as xr
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from climate_ml.model_api import to_table

PROBLEMS = ("el_nino",)


class RidgeOcean:
    def __init__(self, alpha: float = 30.0, window: int = 1):
        self.alpha = alpha
        self.window = window

    def _table(self, X: xr.Dataset) -> np.ndarray:
        names = ["nino34_mean12", "persistence"] + sorted(v for v in X.data_vars if v.startswith("pred_"))
        table, _ = to_table(X[names])
        lags = X["nino34"].sel(lag=[0, 1, 2, 3]).transpose("init_time", "lag").values
        return np.column_stack([lags, table])

    def fit(self, X: xr.Dataset, y: xr.DataArray) -> "RidgeOcean":
        self.leads_ = y["lead"].values
        table = self._table(X)
        month = X["init_time"].dt.month.values
        self.models_ = {}
        for m in range(1, 13):
            near = np.isin(month, [(m - 1 + d) % 12 + 1 for d in range(-self.window, self.window + 1)])
            for j in range(len(self.leads_)):
                ok = near & np.isfinite(y.values[:, j])
                self.models_[m, j] = make_pipeline(StandardScaler(), Ridge(alpha=self.alpha)).fit(table[ok], y.values[ok, j])
        return self

    def predict(self, X: xr.Dataset) -> xr.DataArray:
        table = self._table(X)
        month = X["init_time"].dt.month.values
        out = np.empty((len(month), len(self.leads_)))
        for i, m in enumerate(month):
            for j in range(len(self.leads_)):
                out[i, j] = self.models_[m, j].predict(table[i:i + 1])[0]
        return xr.DataArray(out, dims=("init_time", "lead"),
                            coords={"init_time": X["init_time"].values, "lead": self.leads_})


def make_model():
    return RidgeOcean()
