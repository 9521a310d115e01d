"""Template: copy this file, rename it, edit ``fit`` and ``predict``, then run

    climate-ml backtest el_nino models/my_model.py --dataset kaplan-local --json

The framework calls ``make_model()`` once per training fold, so every fold starts fresh.

X (``xr.Dataset``, one row per ``init_time``) holds only what was known at each init:
    nino34, nino3, nino4, nino12   (init_time, lag)      monthly SST anomalies, degC, lags 0-11
    persistence                    (init_time)           latest 3-month mean Nino 3.4 anomaly, degC
    nino34_mean12, nino34_tendency (init_time)           12-month mean; change over 3 months
    pc                             (init_time, mode, pc_lag)  EOF principal components (unitless)
    month, month_sin, month_cos    (init_time)           calendar month of the init
y (``xr.DataArray``, dims init_time x lead) is the target: the 3-month mean Nino 3.4 anomaly
centred on init_time + lead months, in degC. NaN marks a target not known at training time.
predict(X) must return a DataArray (init_time, lead) with X's inits, the leads of y, finite values.
"""

import numpy as np
import xarray as xr
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from climate_ml.model_api import to_table

PROBLEMS = ("el_nino",)  # the problems this model serves (omit the line for any problem)


class TemplateModel:
    def __init__(self, alpha: float = 10.0):
        self.alpha = alpha  # hyper-parameters only; nothing learned here

    def fit(self, X: xr.Dataset, y: xr.DataArray) -> "TemplateModel":
        table, self.feature_names_ = to_table(X[["persistence", "pc", "month_sin", "month_cos"]])
        self.leads_ = y["lead"].values
        self.models_ = []
        for j in range(len(self.leads_)):  # one regression per lead
            target = y.values[:, j]
            known = np.isfinite(target)
            model = make_pipeline(StandardScaler(), Ridge(alpha=self.alpha))
            self.models_.append(model.fit(table[known], target[known]))
        return self

    def predict(self, X: xr.Dataset) -> xr.DataArray:
        table, _ = to_table(X[["persistence", "pc", "month_sin", "month_cos"]])
        values = np.column_stack([m.predict(table) for m in self.models_])
        return xr.DataArray(values, dims=("init_time", "lead"),
                            coords={"init_time": X["init_time"].values, "lead": self.leads_})


def make_model():
    return TemplateModel()
