"""Metrics as small objects: ``name``, ``lower_is_better`` and ``compute(forecast, obs)``.

``forecast`` and ``obs`` are DataArrays with dims (init_time, lead [, member]); scores reduce
over ``init_time`` (and ``member`` for the ensemble mean) and return one value per lead.
Pairs where either side is missing are ignored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import xarray as xr

from climate_ml.schema import INIT, MEMBER


def _prepare(forecast: xr.DataArray, obs: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    if MEMBER in forecast.dims:
        forecast = forecast.mean(MEMBER)
    forecast, obs = xr.align(forecast, obs, join="inner")
    both = forecast.notnull() & obs.notnull()
    return forecast.where(both), obs.where(both)


@dataclass(frozen=True)
class Metric(ABC):
    name: str
    lower_is_better: bool
    description: str = ""

    def compute(self, forecast: xr.DataArray, obs: xr.DataArray) -> xr.DataArray:
        f, o = _prepare(forecast, obs)
        out = self._compute(f, o)
        out.name = self.name
        return out

    @abstractmethod
    def _compute(self, f: xr.DataArray, o: xr.DataArray) -> xr.DataArray:
        """The score per lead from aligned, jointly masked forecast and obs."""


class RMSE(Metric):
    def _compute(self, f, o):
        return np.sqrt(((f - o) ** 2).mean(INIT))


class MAE(Metric):
    def _compute(self, f, o):
        return abs(f - o).mean(INIT)


class ACC(Metric):
    """Anomaly correlation: Pearson correlation over inits (forecast and obs are anomalies)."""

    def _compute(self, f, o):
        fa = f - f.mean(INIT)
        oa = o - o.mean(INIT)
        cov = (fa * oa).mean(INIT)
        return cov / np.sqrt((fa**2).mean(INIT) * (oa**2).mean(INIT))


class Count(Metric):
    def _compute(self, f, o):
        return f.notnull().sum(INIT).astype(float)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        ACC("acc", lower_is_better=False, description="anomaly correlation coefficient"),
        RMSE("rmse", lower_is_better=True, description="root-mean-square error"),
        MAE("mae", lower_is_better=True, description="mean absolute error"),
    ]
}
N_VERIFIED = Count("n", lower_is_better=False, description="number of verified forecasts")


def skill_score(metric: Metric, forecast, obs, reference) -> xr.DataArray:
    """Skill against a reference forecast on the same pairs: 1 - score/score_ref for error
    metrics (1 perfect, 0 no better than the reference), score - score_ref for correlations."""
    f, r = xr.align(forecast, reference, join="inner")
    both = f.notnull() & r.notnull()
    s = metric.compute(f.where(both), obs)
    s_ref = metric.compute(r.where(both), obs)
    out = 1 - s / s_ref if metric.lower_is_better else s - s_ref
    out.name = f"{metric.name}_skill"
    return out
