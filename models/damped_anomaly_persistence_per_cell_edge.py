"""Damped anomaly persistence of sea-ice concentration with one damping per cell and a calibrated
ice edge: the maps of ``models/damped_anomaly_persistence_per_cell.py``, moved (monotonically; 0
and 1 stay) so that their 15% contour falls where, per lead and valid calendar month, the fit's
own forecasts of its last ten training years drew the ice edge with the least integrated
ice-edge error (``sea_ice_fields.EdgeCalibration``). The best statistical map here (README,
"A stronger statistical reference"); not one of the references every field backtest includes."""

from climate_ml.sea_ice_fields import PerCellReference

TARGET = "sea_ice_concentration"
PROBLEMS = ("arctic_sea_ice",)


def make_model():
    return PerCellReference("damped_anomaly_persistence", per_cell_damping=True, calibrate_edge=True)
