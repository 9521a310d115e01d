"""The sea-ice ConvLSTM of ``models/convlstm_sea_ice.py`` with its ice edge drawn where the
15% contour of its mean map encloses the mean of two extents: the extent forecast (damped
anomaly persistence of the ice-covered fraction, fitted on the training months) and the
networks' own (``match_extent="mean"``). The equal weights were fixed before the combination was
measured; it was measured on the archived maps of 2005-2016 and then of 1997-2004 (README,
"The sea-ice ConvLSTM on the real maps"). Not one of the references."""

from pathlib import Path

from climate_ml.model_api import load_model_factory

TARGET = "sea_ice_concentration"
PROBLEMS = ("arctic_sea_ice",)

_convlstm = load_model_factory(Path(__file__).with_name("convlstm_sea_ice.py"))


def make_model(**options):
    """The backtest calls this with no options; a benchmark may pass others of
    ``SeaIceConvLSTM`` (e.g. ``coarsen=4``)."""
    return _convlstm(match_extent="mean", **options)
