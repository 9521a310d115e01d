"""Damped anomaly persistence of sea-ice concentration with one damping per cell: the trend at
the valid month plus the cell's departure from its trend at the init, scaled by that cell's own
regression of later departures on the init's (per init month and lead, clipped to 0-1; the
pooled coefficient of ``models/fields/damped_anomaly_persistence.py`` where a cell's departures
never varied). The usual form of the reference in the sea-ice literature, and stronger than the
pooled one where the anomaly at the init still matters (lead 1). Not one of the references every
field backtest includes, so earlier records stay comparable; backtest it by name."""

from climate_ml.sea_ice_fields import PerCellReference

TARGET = "sea_ice_concentration"
PROBLEMS = ("arctic_sea_ice",)


def make_model():
    return PerCellReference("damped_anomaly_persistence", per_cell_damping=True)
