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


def north_pacific_rain(start="1950-01", end="1999-12", seed=5):
    """A planted teleconnection away from every Nino box: an SST anomaly blob at 40N, 160W that
    persists (AR(1), 0.9) scales the following months' rain. Only a model that reads the maps
    can see it (the Nino indices carry noise only)."""
    import numpy as np

    t = pd.date_range(start, end, freq="MS")
    lat, lon = np.arange(-27.5, 60, 5.0), np.arange(122.5, 290, 5.0)
    rng = np.random.default_rng(seed)
    blob = np.zeros(len(t))
    for i in range(1, len(t)):
        blob[i] = 0.9 * blob[i - 1] + np.sqrt(1 - 0.81) * rng.normal()
    shape = np.exp(-(((lat[:, None] - 40) / 10) ** 2) - (((lon[None, :] - 200) / 20) ** 2))
    season = 15 + 10 * np.cos(2 * np.pi * (t.month.values - 8) / 12)
    sst = season[:, None, None] + 1.5 * blob[:, None, None] * shape + 0.3 * rng.normal(size=(len(t), *shape.shape))
    clim = np.array([110, 95, 80, 35, 12, 4, 1, 2, 6, 30, 65, 100], dtype=float)
    rain = clim[t.month - 1] * np.exp(0.5 * np.concatenate([[0.0], blob[:-1]])) * rng.gamma(10, 0.1, len(t))
    sst_ds = xr.Dataset({"sst": (("time", "lat", "lon"), sst.astype("float32"), {"units": "degC"})},
                        coords={"time": t, "lat": lat, "lon": lon})
    rain_ds = xr.Dataset({"precip": ("time", rain, {"units": "mm"})}, coords={"time": t})
    return rain_ds, sst_ds


def test_rainfall_convlstm_reads_a_teleconnection_the_indices_miss():
    from climate_ml.problems.california_rainfall import CaliforniaRainfall

    problem = CaliforniaRainfall()
    rain, sst = north_pacific_rain()
    prepared = problem.prepare(rain, {"north-pacific-sst": sst})
    assert prepared["field"].dims == ("time", "lat", "lon") and float(prepared["field"].lat.max()) <= 60
    files = {n: MODELS_DIR / f"{n}.py" for n in ("climatology", "enso_regression", "convlstm_rain")}
    res = backtest(problem, files, prepared, "1985-01", "1998-12", refit_every=84)
    assert res.failures == {}
    acc = {n: res.scores(n)["acc"] for n in res.forecasts}
    for lead in ("1", "2"):
        assert acc["convlstm_rain"][lead] > max(acc["climatology"][lead], acc["enso_regression"][lead]) + 0.2, acc
    assert res.members["convlstm_rain"].sizes["member"] == 3
    season = res.extra("convlstm_rain")["season"]["correlation"]["all"]
    assert season > res.extra("enso_regression")["season"]["correlation"]["all"] + 0.2


def test_the_first_step_from_the_zero_state_is_the_full_cell_on_zeros():
    """``state=None`` skips the hidden channels' convolution: the same gates, cell and gradients
    as the full cell on an explicit zero state."""
    import torch

    from climate_ml.layers import ConvLSTMCell

    torch.manual_seed(0)
    cell = ConvLSTMCell(3, 8)
    x = torch.randn(5, 3, 7, 11)
    zeros = (torch.zeros(5, 8, 7, 11), torch.zeros(5, 8, 7, 11))
    grads = []
    for state in (None, zeros):
        cell.zero_grad()
        h, c = cell(x, state)
        (h.square().sum() + c.sum()).backward()
        grads.append((h.detach(), c.detach(), cell.gates.weight.grad.clone(), cell.gates.bias.grad.clone()))
    for fast, full in zip(*grads, strict=True):
        torch.testing.assert_close(fast, full, rtol=1e-6, atol=1e-6)
    assert float(grads[0][2][:, 3:].abs().max()) == 0.0  # the hidden channels' weights get no gradient
