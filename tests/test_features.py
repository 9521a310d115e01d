import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from climate_ml.errors import ClimateMLError, QueryError
from climate_ml.features import (
    anomalies,
    fit_climatology,
    fit_eofs,
    lagged,
    project_eofs,
    trailing_mean,
)
from climate_ml.regions import Box, box_mean
from climate_ml.schema import mock_sst


def test_box_mean_is_cos_lat_weighted():
    lat = np.array([-60.0, 0.0, 60.0])
    da = xr.DataArray(np.array([[[1.0], [2.0], [4.0]]]), dims=("time", "lat", "lon"),
                      coords={"time": pd.date_range("2000-01", periods=1, freq="MS"), "lat": lat, "lon": [200.0]})
    box = Box("test", (-90, 90), (0, 359))
    w = np.cos(np.deg2rad(lat))
    assert float(box_mean(da, box).squeeze()) == pytest.approx(float((w * [1, 2, 4]).sum() / w.sum()))


def test_box_mean_ignores_land_nan():
    ds = mock_sst()
    sst = ds.sst.copy()
    sst[:, 2, 2] = np.nan
    assert np.isfinite(box_mean(sst, "nino34").values).all()


def test_region_mean_on_a_polar_grid_weights_by_cell_area_and_refuses_a_series():
    """`climate-ml index arctic --dataset toy-sea-ice` used to fail inside pandas (a 3-D array
    printed as a column), and an index data set came back unchanged whatever the region."""
    from climate_ml.regions import region_mean
    from climate_ml.synthetic import polar_stereographic_grid

    x, y, lat, lon, area = polar_stereographic_grid(200_000.0)
    coords = {"time": pd.date_range("2000-01", periods=2, freq="MS"), "y": y, "x": x,
              "lat": (("y", "x"), lat), "lon": (("y", "x"), lon), "cell_area": (("y", "x"), area)}
    north = lat >= 75
    values = np.stack([np.where(north, 1.0, 0.0), np.where(np.isfinite(lat), 0.5, np.nan)])
    values[1, 0, 0] = np.nan  # a missing cell (land) is left out, not counted as zero
    field = xr.DataArray(values, dims=("time", "y", "x"), coords=coords, name="conc")
    box = Box("test", (60.0, 90.0), (0.0, 359.999))
    inside = lat >= 60
    mean = region_mean(field, box).values
    assert mean[0] == pytest.approx(area[north].sum() / area[inside].sum())  # the area share north of 75N
    assert mean[1] == pytest.approx(0.5)
    with pytest.raises(QueryError, match="contains no grid cell"):
        region_mean(field, "nino34")
    with pytest.raises(QueryError, match=r"variable 'WWV' has no lat/lon grid \(dims: time\)"):
        region_mean(xr.DataArray(np.zeros(3), dims=("time",), name="WWV"), "nino34")


def test_box_outside_grid_is_an_error():
    with pytest.raises(QueryError, match="contains no grid cell"):
        box_mean(mock_sst().sst, "arctic")


def test_climatology_uses_only_training_window():
    ds = mock_sst(n_months=72)
    clim = fit_climatology(ds.sst, "2002-12")
    later = ds.sst.copy()
    later.loc[{"time": slice("2003-01", None)}] += 100.0
    xr.testing.assert_allclose(clim, fit_climatology(later, "2002-12"))
    anom = anomalies(ds.sst.sel(time=slice(None, "2002-12")), clim)
    assert abs(float(anom.mean())) < 1e-5


def test_climatology_needs_enough_years():
    with pytest.raises(ClimateMLError, match="at least 3 years"):
        fit_climatology(mock_sst(n_months=24).sst, "2001-12")


def test_negative_lag_rejected():
    with pytest.raises(ClimateMLError, match="negative lag"):
        lagged(mock_sst().sst, [-1, 0])


def test_features_are_lazy_on_dask():
    sst = mock_sst(n_months=60).sst.chunk({"time": 12})
    out = trailing_mean(box_mean(anomalies(sst, fit_climatology(sst, "2003-12")), "nino34"), 3)
    assert out.chunks is not None  # still a Dask graph
    assert np.isfinite(out.compute().values[2:]).all()


@settings(max_examples=25, deadline=None)
@given(cut=st.integers(40, 70), lag=st.integers(0, 6), window=st.integers(1, 6))
def test_time_features_never_look_ahead(cut, lag, window):
    """Perturbing data after month `cut` leaves every feature at or before `cut` unchanged."""
    ds = mock_sst(n_months=80)
    fit_end = ds.time.values[36]
    def feats(sst):
        anom = anomalies(sst, fit_climatology(sst, fit_end))
        idx = box_mean(anom, "nino34")
        pcs = project_eofs(anom, fit_eofs(anom, fit_end, 3))
        return xr.Dataset({"lag": lagged(idx, [lag]), "roll": trailing_mean(idx, window), "pc": pcs})
    base = feats(ds.sst)
    changed = ds.sst.copy()
    changed[cut + 1:] = 99.0
    probe = feats(changed)
    xr.testing.assert_allclose(base.isel(time=slice(0, cut + 1)), probe.isel(time=slice(0, cut + 1)))
    assert not np.allclose(base["roll"].values[cut + 1:], probe["roll"].values[cut + 1:])


def test_eofs_explain_a_planted_pattern():
    rng = np.random.default_rng(0)
    ds = mock_sst(n_months=120)
    pattern = np.outer(np.hanning(5), np.hanning(9)[1:-1])
    signal = rng.normal(0, 3, 120)
    sst = ds.sst + signal[:, None, None] * pattern
    anom = anomalies(sst, fit_climatology(sst, ds.time.values[-1]))
    eofs = fit_eofs(anom, ds.time.values[-1], 2)
    pc1 = project_eofs(anom, eofs).sel(mode=1).values
    # anomalies remove each calendar month's mean, from the planted signal too
    months = np.arange(120) % 12
    deseasonal = signal - np.array([signal[months == m].mean() for m in range(12)])[months]
    assert abs(np.corrcoef(pc1, deseasonal)[0, 1]) > 0.95
    assert eofs.explained[0] > 0.5


@settings(max_examples=60, deadline=None)
@given(n_time=st.integers(1, 40), lags=st.lists(st.integers(0, 45), min_size=1, max_size=6, unique=True),
       time_axis=st.integers(0, 2), dtype=st.sampled_from(["float64", "float32", "int64"]), dask=st.booleans())
def test_lagged_equals_the_concatenated_shifts(n_time, lags, time_axis, dtype, dask):
    """``lagged`` fills one array by slices for data in memory: the same values, dtype,
    coordinates and attributes as concatenating ``shift`` of each lag (month k of lag L holds
    month k - L, NaN before the first), for any place of the time axis and lags past the end."""
    rng = np.random.default_rng(n_time)
    dims = ["lat", "lon"]
    dims.insert(time_axis, "time")
    shape = {"time": n_time, "lat": 2, "lon": 3}
    times = pd.date_range("2000-01", periods=n_time, freq="MS")
    da = xr.DataArray((rng.normal(size=[shape[d] for d in dims]) * 10).astype(dtype), dims=dims,
                      coords={"time": times, "lat": [0.0, 5.0], "lon": [0.0, 5.0, 10.0],
                              "month": ("time", times.month)}, name="sst", attrs={"units": "degC"})
    if dask:  # (Dask's own shift fails for a shift past a chunk's end: lags within the series)
        da, lags = da.chunk(), [k for k in lags if k < n_time] or [0]
    expected = xr.concat([da.shift({"time": k}) for k in lags], dim=pd.Index(lags, name="lag"))
    got = lagged(da, lags)
    xr.testing.assert_identical(got.compute(), expected.compute())
    assert got.dtype == expected.dtype
