"""California rainfall: statewide precipitation (mm), monthly totals at leads 1-7 and the
November-March wet-season total issued from inits in August to November, with tercile
probabilities (the machinery is ``seasonal_totals.SeasonalTotals``). Leads reach 7 so that an
August init covers the season to March. The ENSO state at the init (``enso``, from a Nino 3.4
predictor) is the phase that `stress` groups by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pandas as pd

from climate_ml.problems.seasonal_totals import SeasonalTotals, season_scores, season_skill_interval

__all__ = ["CaliforniaRainfall", "enso_rain_correlation", "season_scores", "season_skill_interval"]


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


def enso_rain_correlation(prepared, first=1950, last=2014) -> float:
    """Correlation of the Sep-Oct mean Nino 3.4 anomaly with the following Nov-Mar total."""
    n34 = prepared["pred_nino34"].to_series()
    n34 = n34 - n34.groupby(n34.index.month).transform("mean")
    so = n34[n34.index.month.isin([9, 10])]
    so = so.groupby(so.index.year).mean()
    total = prepared["precip"].to_series().rolling(5).sum().shift(-4)
    total = total[total.index.month == 11]
    total.index = total.index.year
    both = pd.concat([so, total], axis=1).loc[first:last].dropna()
    return float(both.corr().iloc[0, 1])
