"""Per-cell damped anomaly persistence of sea-ice concentration with a calibrated ice edge: the
map reference of ``models/fields/damped_anomaly_persistence.py``, whose concentrations are then
moved (monotonically; 0 and 1 stay) so that its 15% contour falls where, per lead and valid
calendar month, the fit's own forecasts of its last ten training years drew the ice edge with
the least integrated ice-edge error (``sea_ice_fields.EdgeCalibration``). Not one of the
references every field backtest includes: the bar that an edge-calibrated model such as
``convlstm_sea_ice`` must clear, backtested by name."""

from climate_ml.sea_ice_fields import PerCellReference

TARGET = "sea_ice_concentration"
PROBLEMS = ("arctic_sea_ice",)


def make_model():
    return PerCellReference("damped_anomaly_persistence", calibrate_edge=True)
