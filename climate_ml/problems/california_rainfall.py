"""California rainfall: statewide precipitation (mm), monthly totals at leads 1-7 and the
November-March wet-season total issued from inits in August to November, with tercile
probabilities (the machinery is ``seasonal_totals.SeasonalTotals``). Leads reach 7 so that an
August init covers the season to March. The ENSO state at the init (``enso``, from a Nino 3.4
predictor) is the phase that `stress` groups by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import norm

from climate_ml.errors import ClimateMLError
from climate_ml.problems.seasonal_totals import SeasonalTotals, season_scores, season_skill_interval
from climate_ml.regions import get_region
from climate_ml.schema import CATEGORY, INIT, LAT, TIME
from climate_ml.scores import brier_skill_upper_tercile

__all__ = ["CaliforniaRainfall", "enso_rain_correlation", "season_field_pcs", "season_table", "season_scores",
           "season_skill_interval", "tercile_skill_from"]


@dataclass
class CaliforniaRainfall(SeasonalTotals):
    name: str = "california_rainfall"
    description: str = ("California statewide precipitation (mm): monthly totals at leads 1-7 and the "
                        "Nov-Mar total from Aug-Nov inits, with tercile probabilities")
    leads: tuple[int, ...] = tuple(range(1, 8))
    references: tuple[str, ...] = ("climatology", "enso_regression")
    enso_phase = "enso"  # not a field: the ENSO phase variable in X (for `stress`)
    season_months: tuple[int, ...] = (11, 12, 1, 2, 3)
    season_inits: tuple[int, ...] = (8, 9, 10, 11)
    listing_order: ClassVar[int] = 2
    run_schedule: ClassVar[tuple] = (("1985-01", 12), ("2010-01", 60))
    default_dataset: ClassVar[str] = "toy-california-precip"  # the embedded data its commands use when none is named
    default_predictors: ClassVar[tuple[str, ...]] = ("toy-ocean",)


def _season_year(stamps: pd.DatetimeIndex) -> np.ndarray:
    """The wet season each month belongs to, by the year of its November: months before June
    count for the season that began the year before."""
    return np.asarray(stamps.year - (stamps.month < 6))


def season_table(prepared) -> pd.DataFrame:
    """One row per wet season, indexed by the year of its November: ``total``, the Nov-Mar total
    (mm), and for every predictor index in ``prepared`` (``pred_nino34`` -> ``nino34``; any
    ``pred_*`` series, e.g. the XRO climate modes) its Sep-Oct mean anomaly (``<index>_sep_oct``,
    known at an October init) and its Nov-Mar mean anomaly (``<index>_nov_mar``, observed during
    the season: what a perfect forecast of that index would know). The anomalies are departures
    from the whole record's calendar-month means; a constant offset per column, which a
    regression's intercept absorbs."""
    problem = CaliforniaRainfall()
    total = problem.season_totals(prepared["precip"]).to_series().dropna()
    columns = {"total": pd.Series(total.values, index=total.index.year)}
    for name in (v for v in prepared.data_vars if v.startswith("pred_") and prepared[v].ndim == 1):
        index = prepared[name].to_series()
        index = index - index.groupby(index.index.month).transform("mean")
        for label, months in (("sep_oct", (9, 10)), ("nov_mar", problem.season_months)):
            picked = index.index.month.isin(months)
            means = index[picked].groupby(_season_year(index.index[picked])).agg(["mean", "count"])
            columns[f"{name.removeprefix('pred_')}_{label}"] = means["mean"].where(means["count"] == len(months))
    return pd.DataFrame(columns).rename_axis("season")


def season_field_pcs(prepared, last_fit_season: int, k: int = 3, months=(9, 10), region: str | None = None
                     ) -> pd.DataFrame:
    """The leading ``k`` principal components (``field_pc1``, ...) of each season's mean SST
    anomaly map (``prepared["field"]``, the coarse Pacific maps the rainfall ConvLSTM reads) over
    ``months`` (September-October by default; months before June count for the season that began
    the year before, so ``(11, 12, 1, 2, 3)`` is the wet season itself). The EOFs are fitted on
    the seasons up to ``last_fit_season`` only: maps centred on those seasons' mean, cells
    weighted by sqrt(cos(latitude)), ocean cells complete in every one of them (seasons before
    the maps begin, all missing, are not fitted on). Seasons with a month missing are left out.
    ``region`` (a name in ``regions.REGIONS``, e.g. ``tropical_pacific``) keeps only the cells
    inside that box."""
    field = prepared["field"].transpose(TIME, ...)
    if region is not None:
        field = field.where(get_region(region).mask(field[LAT], field["lon"]), drop=True)
    stamps = pd.DatetimeIndex(field[TIME].values)
    picked = np.isin(stamps.month, months)
    season = _season_year(stamps[picked])
    values = field.values[picked].reshape(int(picked.sum()), -1)
    maps, years = [], []
    for year in np.unique(season):
        rows = values[season == year]
        if len(rows) == len(months):
            maps.append(rows.mean(axis=0))
            years.append(int(year))
    maps, years = np.array(maps), np.array(years)
    fit = (years <= last_fit_season) & np.isfinite(maps).any(axis=1)  # not the seasons before the maps begin
    ok = np.isfinite(maps[fit]).all(axis=0)
    if fit.sum() <= k or not ok.any():
        raise ClimateMLError(f"too few complete seasons up to {last_fit_season} for {k} EOFs of the field")
    weight = np.sqrt(np.cos(np.deg2rad(field[LAT].values)))[:, None] * np.ones(field.shape[2:])
    weight = weight.reshape(-1)[ok]
    mean = maps[fit][:, ok].mean(axis=0)
    _, _, eofs = np.linalg.svd((maps[fit][:, ok] - mean) * weight, full_matrices=False)
    pcs = ((maps[:, ok] - mean) * weight) @ eofs[:k].T
    complete = np.isfinite(maps[:, ok]).all(axis=1)
    pcs[~complete] = np.nan
    return pd.DataFrame(pcs, index=pd.Index(years, name="season"), columns=[f"field_pc{i + 1}" for i in range(k)])


def enso_rain_correlation(prepared, first=1950, last=2014) -> float:
    """Correlation of the Sep-Oct mean Nino 3.4 anomaly with the following Nov-Mar total."""
    both = season_table(prepared)[["nino34_sep_oct", "total"]].loc[first:last].dropna()
    return float(both.corr().iloc[0, 1])


def tercile_skill_from(seasons: pd.DataFrame, predictors: list[str], first: int, last: int | None = None,
                       spread: str = "gaussian") -> dict:
    """How well columns of :func:`season_table` forecast the Nov-Mar total, rolling origin: before
    each season from ``first`` to ``last`` a linear regression on ``predictors`` is fitted on the
    earlier seasons only and gives P(total above the upper tercile of those seasons). With
    ``spread="gaussian"`` it regresses the totals' normal scores and the forecast is Gaussian;
    with ``spread="residuals"`` it regresses the totals (mm) and the forecast distribution is the
    mean plus each training residual, so a few very wet seasons keep their weight. Returns the
    upper tercile's Brier skill score against 1/3, the correlation of the regression's means
    with the totals, the number of seasons and the forecasts P(above) by season. With the
    Nov-Mar columns this is an oracle (a perfect forecast of the season's ENSO), a bound on what
    a linear use of them gives, not a forecast."""
    if spread not in ("gaussian", "residuals"):
        raise ValueError(f"spread must be 'gaussian' or 'residuals', got {spread!r}")
    data = seasons[predictors + ["total"]].dropna()
    test = [y for y in data.index if y >= first and (last is None or y <= last)]
    if not test or len(data.loc[:test[0] - 1]) < len(predictors) + 10:
        raise ClimateMLError(f"too few seasons before {first} to fit on {predictors} (need {len(predictors) + 10})")
    p_above, above, mean = [], [], []
    for year in test:
        train = data.loc[:year - 1]
        upper = train["total"].quantile(2 / 3)
        if spread == "gaussian":
            target = norm.ppf((train["total"].rank().values - 0.5) / len(train))
        else:
            target = train["total"].values
        design = np.column_stack([np.ones(len(train)), train[predictors].values])
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        residuals = target - design @ coef
        mu = float(np.concatenate([[1.0], data.loc[year, predictors].values]) @ coef)
        if spread == "gaussian":
            sd = np.sqrt((residuals ** 2).sum() / (len(train) - design.shape[1]))
            p_above.append(float(norm.sf((norm.ppf(2 / 3) - mu) / sd)))
        else:
            p_above.append(float(np.mean(mu + residuals > upper)))
        above.append(float(data.loc[year, "total"] > upper))
        mean.append(mu)
    probs = xr.DataArray(np.array(p_above)[:, None], dims=(INIT, CATEGORY), coords={CATEGORY: ["above"]})
    onehot = xr.DataArray(np.array(above)[:, None], dims=(INIT, CATEGORY), coords={CATEGORY: ["above"]})
    return {"bss_upper_tercile": float(brier_skill_upper_tercile(probs, onehot)),
            "correlation": float(np.corrcoef(mean, data.loc[test, "total"])[0, 1]),
            "seasons": len(test), "p_above": pd.Series(p_above, index=pd.Index(test, name="season"))}
