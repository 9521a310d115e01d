"""Persistence: the latest observed value of the target (``X['persistence']``) at every lead:
for El Nino the latest 3-month mean anomaly. Not for sea ice, where the latest monthly extent
carried across the seasonal cycle is no forecast (its reference is ``trend_persistence``, the
latest departure from the trend)."""

import xarray as xr

PROBLEMS = ("el_nino",)


class Persistence:
    def fit(self, X: xr.Dataset, y: xr.DataArray) -> "Persistence":
        self.leads_ = y["lead"].values
        return self

    def predict(self, X: xr.Dataset) -> xr.DataArray:
        p = X["persistence"]
        return p.expand_dims(lead=self.leads_).transpose("init_time", "lead")


def make_model():
    return Persistence()
