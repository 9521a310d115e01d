"""Per-cell linear trend of sea-ice concentration: a trend per cell and calendar month fitted on
the training window, evaluated at the valid year.
Fitted per fold on the maps up to its cut-off and clipped to 0-1 (``sea_ice_fields.PerCellReference``)."""

from climate_ml.sea_ice_fields import PerCellReference

TARGET = "sea_ice_concentration"
PROBLEMS = ("arctic_sea_ice",)


def make_model():
    return PerCellReference("linear_trend")
