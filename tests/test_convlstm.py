"""The ConvLSTM forecaster (PyTorch) on SST anomaly maps: it learns, it is reproducible, and it
fails clearly without maps."""

import pandas as pd
import pytest
import xarray as xr

from climate_ml.backtest import backtest
from climate_ml.ingest import standardise
from climate_ml.problems.el_nino import ElNino
from climate_ml.synthetic import toy_ocean
from climate_ml.workflows import MODELS_DIR

PROBLEM = ElNino(leads=(1, 3, 6, 9))
FILES = {n: MODELS_DIR / f"{n}.py" for n in ("persistence", "damped_persistence", "convlstm")}


@pytest.fixture(scope="module")
def prepared():
    return PROBLEM.prepare(standardise(toy_ocean(start="1950-01", end="1999-12"), "sst"))


def test_convlstm_beats_damped_persistence_beyond_a_season(prepared):
    """On the toy ocean the recharge state is visible in off-equatorial and western SST maps only:
    a model that reads the maps predicts beyond what the Nino 3.4 history gives."""
    res = backtest(PROBLEM, FILES, prepared, "1985-01", "1998-12", refit_every=84)
    assert res.failures == {}
    acc = {n: res.scores(n)["acc"] for n in res.forecasts}
    assert acc["convlstm"]["6"] > acc["damped_persistence"]["6"] + 0.05
    assert acc["convlstm"]["9"] > acc["damped_persistence"]["9"]
    again = backtest(PROBLEM, {"convlstm": FILES["convlstm"]}, prepared, "1985-01", "1998-12", refit_every=84)
    xr.testing.assert_equal(again.forecasts["convlstm"], res.forecasts["convlstm"])  # seeded, one thread


def test_convlstm_without_maps_is_a_failed_row(prepared):
    index_only = prepared[["nino34"]]  # e.g. a 1-D index data set: no field_anomaly in X
    res = backtest(PROBLEM, FILES, index_only, "1990-01", "1992-12", refit_every=36)
    assert set(res.forecasts) == {"persistence", "damped_persistence"}
    assert "needs X['field_anomaly']" in res.failures["convlstm"]
    assert pd.Timestamp(res.obs["init_time"].values[0]) == pd.Timestamp("1990-01-01")
