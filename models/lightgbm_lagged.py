"""LightGBM on lagged features: one gradient-boosted regressor per lead on every predictor the
problem provides (lagged indices, EOF principal components, calendar month). When the problem
provides a ``baseline`` (init_time, lead), e.g. a trend, the trees learn the departure from it:
trees cannot extrapolate a trend, but they can correct one."""

from climate_ml.boosting import LightGBMLagged


def make_model():
    return LightGBMLagged()
