"""Forecasting problems by name."""

from __future__ import annotations

from climate_ml.errors import QueryError
from climate_ml.problems.arctic_sea_ice import ArcticSeaIce
from climate_ml.problems.base import FoldData, Problem
from climate_ml.problems.california_rainfall import CaliforniaRainfall
from climate_ml.problems.el_nino import ElNino

PROBLEMS: dict[str, type[Problem]] = {
    "el_nino": ElNino, "arctic_sea_ice": ArcticSeaIce, "california_rainfall": CaliforniaRainfall}


def get_problem(name: str, **options) -> Problem:
    if name not in PROBLEMS:
        raise QueryError(f"unknown problem {name!r} (known: {', '.join(PROBLEMS)})")
    return PROBLEMS[name](**options)


__all__ = ["FoldData", "Problem", "PROBLEMS", "get_problem"]
