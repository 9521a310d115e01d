"""LightGBM with members: the lightgbm_lagged forecast as the ensemble mean, and a spread per
init and lead from two quantile boosters (25% and 75%), as 10 members at the normal quantiles of
N(mean, sigma^2) with sigma = interquartile range / 1.349 (``climate_ml.boosting``). Deterministic
scores equal lightgbm_lagged's; CRPS, the spread/skill ratio and the rank histogram judge the
spread."""

from climate_ml.boosting import LightGBMMembers

PROBLEMS = ("el_nino",)


def make_model():
    return LightGBMMembers()
