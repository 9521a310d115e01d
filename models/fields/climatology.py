"""Per-cell climatology of sea-ice concentration: the mean of the valid calendar month over the
training window, cell by cell (the no-skill map reference).
Fitted per fold on the maps up to its cut-off and clipped to 0-1 (``sea_ice_fields.PerCellReference``)."""

from climate_ml.sea_ice_fields import PerCellReference

TARGET = "sea_ice_concentration"
PROBLEMS = ("arctic_sea_ice",)


def make_model():
    return PerCellReference("climatology")
