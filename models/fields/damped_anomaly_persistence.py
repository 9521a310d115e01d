"""Per-cell damped anomaly persistence of sea-ice concentration: the trend at the valid month
plus the cell's departure from its trend at the init, scaled by one regression coefficient per
init month and lead pooled over all cells (the default reference of the map leaderboard).
Fitted per fold on the maps up to its cut-off and clipped to 0-1 (``sea_ice_fields.PerCellReference``)."""

from climate_ml.sea_ice_fields import PerCellReference

TARGET = "sea_ice_concentration"
PROBLEMS = ("arctic_sea_ice",)


def make_model():
    return PerCellReference("damped_anomaly_persistence")
