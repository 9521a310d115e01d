"""Per-cell trend persistence of sea-ice concentration: the trend at the valid month plus the
cell's whole departure from its trend at the init.
Fitted per fold on the maps up to its cut-off and clipped to 0-1 (``sea_ice_fields.PerCellReference``)."""

from climate_ml.sea_ice_fields import PerCellReference

TARGET = "sea_ice_concentration"
PROBLEMS = ("arctic_sea_ice",)


def make_model():
    return PerCellReference("trend_persistence")
