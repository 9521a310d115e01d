"""Metrics as small objects, one contract for the backtest and the leaderboard.

A metric has ``name``, ``lower_is_better`` and ``description``, and two steps (as weatherbench2
splits them): ``sample_stats(f, o)``, additive statistics of each (init, lead) pair (e.g. the
squared error), and ``reduce(sums)``, the score from their sums (e.g. the root of the mean). The
backtest sums over every init; the leaderboard's block bootstrap sums over resampled years, so
any metric written this way gets intervals without more code. Register one with
``register_metric``; ``compute(forecast, obs)`` gives its value per lead.

``forecast`` and ``obs`` are DataArrays with dims (init_time, lead [, member]); scores reduce
over ``init_time`` (and ``member`` for the ensemble mean) and return one value per lead.
Pairs where either side is missing are ignored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import norm

from climate_ml.errors import ClimateMLError
from climate_ml.schema import CATEGORY, INIT, MEMBER


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

    @abstractmethod
    def stats(self, f: np.ndarray, o: np.ndarray) -> list[np.ndarray]:
        """Additive per-pair statistics from paired values (both finite)."""

    @abstractmethod
    def reduce(self, sums: np.ndarray) -> np.ndarray:
        """The score from statistics summed over pairs: ``sums[..., k]`` -> ``score[...]``."""

    def sample_stats(self, f: np.ndarray, o: np.ndarray) -> np.ndarray:
        """``stats`` of every pair as ``[..., k]``, zero where either side is missing, so that
        sums over any set of pairs (all inits, or a bootstrap's years) reduce to the score."""
        f, o = np.broadcast_arrays(np.asarray(f, dtype=float), np.asarray(o, dtype=float))
        ok = np.isfinite(f) & np.isfinite(o)
        parts = self.stats(np.where(ok, f, 0.0), np.where(ok, o, 0.0))
        return np.stack([ok.astype(float), *[np.where(ok, x, 0.0) for x in parts]], axis=-1)

    def compute(self, forecast: xr.DataArray, obs: xr.DataArray) -> xr.DataArray:
        f, o = _prepare(forecast, obs)
        f, o = xr.broadcast(f, o)
        axis = f.dims.index(INIT)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = self.reduce(self.sample_stats(f.values, o.values).sum(axis=axis))
        rest = [d for d in f.dims if d != INIT]
        return xr.DataArray(values, dims=rest, coords={d: f[d].values for d in rest if d in f.indexes}, name=self.name)


def _n(sums):
    return sums[..., 0]


class RMSE(Metric):
    def stats(self, f, o):
        return [(f - o) ** 2]

    def reduce(self, sums):
        return np.sqrt(sums[..., 1] / _n(sums))


class MAE(Metric):
    def stats(self, f, o):
        return [np.abs(f - o)]

    def reduce(self, sums):
        return sums[..., 1] / _n(sums)


class ACC(Metric):
    """Anomaly correlation: Pearson correlation over inits (forecast and obs are anomalies)."""

    def stats(self, f, o):
        return [f, o, f * f, o * o, f * o]

    def reduce(self, sums):
        n = _n(sums)
        sf, so, sff, soo, sfo = (sums[..., k] / n for k in range(1, 6))
        return (sfo - sf * so) / np.sqrt((sff - sf**2) * (soo - so**2))


class Count(Metric):
    def stats(self, f, o):
        return []

    def reduce(self, sums):
        return _n(sums)


@dataclass(frozen=True)
class MapMetric(Metric):
    """A score of map forecasts from one per-sample score of a field backtest (a variable of
    ``sea_ice_fields.FIELD_SCORES``, e.g. the IIEE of each map): its mean over (init, lead)
    pairs, or with ``rms`` its root mean square. ``stats`` takes the per-sample scores as ``f``
    (``o`` is unused), so the leaderboard's bootstrap treats it like any other metric."""

    variable: str = ""
    rms: bool = False

    def stats(self, f, o):
        return [f * f if self.rms else f]

    def reduce(self, sums):
        mean = sums[..., 1] / _n(sums)
        return np.sqrt(mean) if self.rms else mean


METRICS: dict[str, Metric] = {}  # index forecasts: scored from (forecast, observation) pairs
MAP_METRICS: dict[str, MapMetric] = {}  # map forecasts: scored from per-sample map scores


def register_metric(metric: Metric) -> Metric:
    """Add a metric to every backtest summary and to the leaderboard (CLI, HTTP, page); a
    ``MapMetric`` goes to the leaderboard of field backtests."""
    if not metric.name.isidentifier() or metric.name in METRICS or metric.name in MAP_METRICS:
        raise ClimateMLError(f"metric name {metric.name!r} is taken or not an identifier")
    (MAP_METRICS if isinstance(metric, MapMetric) else METRICS)[metric.name] = metric
    return metric


for _m in (ACC("acc", lower_is_better=False, description="anomaly correlation coefficient"),
           RMSE("rmse", lower_is_better=True, description="root-mean-square error"),
           MAE("mae", lower_is_better=True, description="mean absolute error")):
    register_metric(_m)
N_VERIFIED = Count("n", lower_is_better=False, description="number of verified forecasts")
for _m in (MapMetric("iiee", True, "integrated ice-edge error (10^6 km^2)", "iiee"),
           MapMetric("sie_rmse", True, "extent RMSE of the map forecast (10^6 km^2)", "sie_error", rms=True),
           MapMetric("binary_accuracy", False, "binary accuracy of ice / no ice", "binary_accuracy"),
           MapMetric("ice_brier", True, "Brier score of the probability of ice", "ice_brier"),
           MapMetric("conc_crps", True, "CRPS of concentration (the members; absolute error for one map)", "crps")):
    register_metric(_m)


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


# --- ensemble scores (members) ------------------------------------------------------------


def ensemble_scores(members: xr.DataArray, obs: xr.DataArray) -> dict[str, xr.DataArray]:
    """Scores of an ensemble (init_time, lead, member) per lead, by xskillscore: ``crps`` (in
    the target's units; the mean absolute error of the ensemble mean for one member) and
    ``spread_skill``, the ratio of the ensemble spread, sqrt((m+1)/m * mean member variance),
    to the RMSE of the ensemble mean (1 for a calibrated ensemble, below 1 over-confident;
    Fortin et al. 2014). Pairs where the observation is missing are left out."""
    import xskillscore as xs

    members, obs = xr.align(members.drop_vars("valid_time", errors="ignore"),
                            obs.drop_vars("valid_time", errors="ignore"), join="inner")
    ok = obs.notnull() & members.notnull().all(MEMBER)
    o, f = obs.where(ok), members.where(ok)
    m = members.sizes[MEMBER]
    crps = xs.crps_ensemble(o.fillna(0), f.fillna(0), member_dim=MEMBER, dim=[], keep_attrs=False).where(ok).mean(INIT)
    var = f.var(MEMBER, ddof=1).mean(INIT) if m > 1 else xr.full_like(crps, np.nan)
    rmse = np.sqrt(((f.mean(MEMBER) - o) ** 2).mean(INIT))
    return {"crps": crps, "spread_skill": np.sqrt((m + 1) / m * var) / rmse}


def rank_histogram(members: xr.DataArray, obs: xr.DataArray) -> list[int]:
    """Counts of the observation's rank among the members, pooled over inits and leads, by
    xskillscore (flat for a calibrated ensemble; U-shaped for an over-confident one). Ties are
    broken at random, the same way every time."""
    import xskillscore as xs

    members, obs = xr.align(members.drop_vars("valid_time", errors="ignore"),
                            obs.drop_vars("valid_time", errors="ignore"), join="inner")
    stacked_f = members.stack(case=[INIT, "lead"])
    stacked_o = obs.stack(case=[INIT, "lead"])
    ok = (stacked_o.notnull() & stacked_f.notnull().all(MEMBER)).values
    if not ok.any():
        return [0] * (members.sizes[MEMBER] + 1)
    # xskillscore ranks an observation tied with members (e.g. dry months at 0 mm) at random
    # among the tied ranks (Hamill 2001), from NumPy's global generator: seed it for this call,
    # so the same forecasts give the same histogram, and put the caller's state back
    state = np.random.get_state()
    np.random.seed(0)
    try:
        hist = xs.rank_histogram(stacked_o.isel(case=ok).drop_vars(["case", INIT, "lead"]),
                                 stacked_f.isel(case=ok).drop_vars(["case", INIT, "lead"]), dim="case", member_dim=MEMBER)
    finally:
        np.random.set_state(state)
    return [int(v) for v in hist.values]


# --- tercile (probabilistic) scores ------------------------------------------------------

CATEGORIES = ("below", "near", "above")


def tercile_edges(samples: xr.DataArray, dim: str = "sample") -> xr.DataArray:
    """Lower and upper tercile edges (dim ``edge``) of climatological samples."""
    q = samples.quantile([1 / 3, 2 / 3], dim=dim, skipna=True).rename(quantile="edge")
    return q.assign_coords(edge=["lower", "upper"])


def shifted_climatology_probabilities(forecast: xr.DataArray, samples: xr.DataArray, spread_ratio: xr.DataArray,
                                      dim: str = "sample") -> xr.DataArray:
    """Tercile probabilities (dim ``category``) from the climatological samples moved to the
    forecast and scaled: the predictive members are ``forecast + r (x_i - mean(x))``. A forecast
    of the climatological mean with r = 1 gives the climatological 1/3 each (up to ties), and
    skewed variables such as rainfall keep their skew."""
    edges = tercile_edges(samples, dim)
    members = forecast + spread_ratio * (samples - samples.mean(dim, skipna=True))
    valid = samples.notnull()
    n = valid.sum(dim)
    lo, hi = edges.isel(edge=0, drop=True), edges.isel(edge=1, drop=True)
    p_below = ((members < lo) & valid).sum(dim) / n
    p_above = ((members > hi) & valid).sum(dim) / n
    probs = xr.concat([p_below, 1 - p_below - p_above, p_above], dim=pd.Index(list(CATEGORIES), name=CATEGORY))
    return probs.where(forecast.notnull() & (n > 0))


def observed_category(obs: xr.DataArray, edges: xr.DataArray) -> xr.DataArray:
    """One-hot observed category (dim ``category``) against edges (dim ``edge``); NaN where obs is."""
    lo = edges.isel(edge=0, drop=True)
    hi = edges.isel(edge=1, drop=True)
    cats = [obs < lo, (obs >= lo) & (obs <= hi), obs > hi]
    onehot = xr.concat([c.astype(float) for c in cats], dim=pd.Index(list(CATEGORIES), name=CATEGORY))
    return onehot.where(obs.notnull())


def brier_score_upper_tercile(probs: xr.DataArray, onehot: xr.DataArray, dim=INIT) -> xr.DataArray:
    """Brier score of P(upper tercile): mean squared probability error (0 perfect; 2/9 for
    climatological 1/3 on average)."""
    p, o = probs.sel({CATEGORY: "above"}), onehot.sel({CATEGORY: "above"})
    return ((p - o) ** 2).where(p.notnull() & o.notnull()).mean(dim)


def brier_skill_upper_tercile(probs: xr.DataArray, onehot: xr.DataArray, dim=INIT) -> xr.DataArray:
    """Brier skill score of P(upper tercile) against the climatological 1/3 (1 perfect, 0 no
    better than climatology)."""
    p, o = probs.sel({CATEGORY: "above"}), onehot.sel({CATEGORY: "above"})
    ok = p.notnull() & o.notnull()
    bs = ((p - o) ** 2).where(ok).mean(dim)
    bs_ref = ((1 / 3 - o) ** 2).where(ok).mean(dim)
    return 1 - bs / bs_ref


def expected_upper_tercile_bss(r: float, nodes: int = 200) -> float:
    """The Brier skill score of P(upper tercile) that a perfectly calibrated forecast with
    correlation ``r`` to the outcome earns on average, when forecast and outcome are jointly
    Gaussian (or any monotone transform of that: terciles depend on ranks only). The forecast is
    P(Y > q) with Y | x ~ N(r x, 1 - r^2), q the upper tercile of N(0, 1); its expected Brier score
    is E[p (1 - p)], climatology's 2/9. Gauss-Hermite quadrature over x. It tells what skill an
    aim in BSS asks of a correlation, e.g. about 0.054 at r = 0.3."""
    if not -1 < r < 1:
        raise ValueError(f"the correlation must lie strictly between -1 and 1, got {r}")
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    p = norm.sf((norm.ppf(2 / 3) - r * x) / np.sqrt(1 - r * r))
    return float(1 - (w * p * (1 - p)).sum() / w.sum() / (2 / 9))


def ranked_probability_skill(probs: xr.DataArray, onehot: xr.DataArray, dim=INIT) -> xr.DataArray:
    """Ranked probability skill score for terciles against climatological (1/3, 1/3, 1/3)."""
    cf = probs.cumsum(CATEGORY).isel({CATEGORY: slice(0, 2)})
    co = onehot.cumsum(CATEGORY).isel({CATEGORY: slice(0, 2)})
    clim = xr.DataArray([1 / 3, 2 / 3], dims=CATEGORY, coords={CATEGORY: list(CATEGORIES[:2])})
    ok = cf.notnull().all(CATEGORY) & co.notnull().all(CATEGORY)
    rps = ((cf - co) ** 2).sum(CATEGORY).where(ok).mean(dim)
    rps_ref = ((clim - co) ** 2).sum(CATEGORY).where(ok).mean(dim)
    return 1 - rps / rps_ref
