"""Climatology: the training-window mean target for each (calendar month of valid time, lead).
Targets are anomalies, so this is close to zero; it is the no-skill reference."""

import numpy as np
import xarray as xr


class Climatology:
    def fit(self, X: xr.Dataset, y: xr.DataArray) -> "Climatology":
        self.leads_ = y["lead"].values
        valid_month = (X["init_time"].dt.month.values[:, None] - 1 + self.leads_[None, :]) % 12
        self.table_ = np.zeros((12, len(self.leads_)))
        for j in range(len(self.leads_)):
            for m in range(12):
                vals = y.values[valid_month[:, j] == m, j]
                vals = vals[np.isfinite(vals)]
                self.table_[m, j] = vals.mean() if vals.size else 0.0
        return self

    def predict(self, X: xr.Dataset) -> xr.DataArray:
        valid_month = (X["init_time"].dt.month.values[:, None] - 1 + self.leads_[None, :]) % 12
        out = self.table_[valid_month, np.arange(len(self.leads_))[None, :]]
        return xr.DataArray(out, dims=("init_time", "lead"),
                            coords={"init_time": X["init_time"].values, "lead": self.leads_})


def make_model():
    return Climatology()
