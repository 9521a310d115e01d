"""The ConvLSTM forecaster (PyTorch) on SST anomaly maps: it learns, it is reproducible, and it
fails clearly without maps."""

import numpy as np
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


def test_convlstm_beats_damped_persistence_beyond_a_season(prepared, tmp_path):
    """On the toy ocean the recharge state is visible in off-equatorial and western SST maps only:
    a model that reads the maps predicts beyond what the Nino 3.4 history gives. Its members (each
    seed's forecast plus draws scaled by the hold-out error) spread like its errors, and their
    mean is the seeds' mean."""
    res = backtest(PROBLEM, FILES, prepared, "1985-01", "1998-12", refit_every=84)
    assert res.failures == {}
    acc = {n: res.scores(n)["acc"] for n in res.forecasts}
    assert acc["convlstm"]["6"] > acc["damped_persistence"]["6"] + 0.05
    assert acc["convlstm"]["9"] > acc["damped_persistence"]["9"]
    seeds_only = tmp_path / "seeds_only.py"
    seeds_only.write_text("from climate_ml.layers import ConvLSTMForecaster\n\n\n"
                          "def make_model():\n    return ConvLSTMForecaster(draws=1)\n")
    again = backtest(PROBLEM, {"seeds_only": seeds_only}, prepared, "1985-01", "1998-12", refit_every=84)
    # seeded, one thread: the same networks, so the same mean forecast
    np.testing.assert_allclose(again.forecasts["seeds_only"].values, res.forecasts["convlstm"].values, rtol=0, atol=1e-9)
    assert res.members["convlstm"].sizes["member"] == 10 and again.members["seeds_only"].sizes["member"] == 2
    members, seeds = res.scores("convlstm")["spread_skill"], again.scores("seeds_only")["spread_skill"]
    for lead in ("3", "6", "9"):
        assert 0.7 < members[lead] < 1.4, members
        assert seeds[lead] < 0.6 * members[lead], seeds


def test_the_hold_out_network_sees_no_target_valid_from_the_hold_out_on(prepared, monkeypatch):
    from climate_ml.layers import ConvLSTMForecaster
    from climate_ml.schema import INIT

    X, y = PROBLEM.fold_data(prepared, pd.Timestamp("1979-12-01")).training_set()
    calls = []
    train = ConvLSTMForecaster._train

    def spy(self, seq, month, t, known, seed):
        calls.append((seq.shape[0], known.numpy().copy()))
        return train(self, seq, month, t, known, seed)

    monkeypatch.setattr(ConvLSTMForecaster, "_train", spy)
    model = ConvLSTMForecaster(epochs=2, holdout=0.25).fit(X, y)
    assert len(calls) == 3  # two seeds on every init, then the hold-out network
    assert calls[0][0] == calls[1][0] == X.sizes[INIT]
    inits = pd.DatetimeIndex(X[INIT].values)
    first = inits[len(inits) - int(round(0.25 * len(inits)))]
    rows, seen = calls[2]
    assert rows < len(inits) and seen.any()
    valid = np.array([[init + pd.DateOffset(months=int(lead)) for lead in y["lead"].values] for init in inits[:rows]])
    assert (valid[seen] < first).all() and (valid[seen] == first - pd.DateOffset(months=1)).any()
    assert model.sigma_.shape == (y.sizes["lead"], 12) and (model.sigma_ > 0).all()


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
    assert res.members["convlstm_rain"].sizes["member"] == 9  # three seeds x three draws
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
