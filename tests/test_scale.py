"""Daily fields in NOAA's OISST layout (one NetCDF file per year) -> monthly means in the store,
and the small version of the larger-than-memory benchmark (benchmarks/bench_oisst_scale.py) on a
real LocalCluster whose worker processes have a memory limit."""

import json
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from climate_ml.errors import IngestError
from climate_ml.ingest import ingest_file
from climate_ml.ingest.openers import monthly_means
from climate_ml.store import open_obs
from climate_ml.synthetic import OISST_FILL, write_oisst_like
from conftest import expect_clean_error, tree_digest

REPO = Path(__file__).resolve().parents[1]


def _daily_by_numpy(paths) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Monthly means straight from the files with netCDF4 and numpy (no xarray, no Dask)."""
    days, values = [], []
    for p in paths:
        with netCDF4.Dataset(p) as nc:
            t = nc["time"]
            days.append(pd.DatetimeIndex(netCDF4.num2date(t[:], t.units, only_use_cftime_datetimes=False,
                                                          only_use_python_datetimes=True)))
            values.append(np.ma.filled(nc["sst"][:].astype("float64"), np.nan))
    days, values = days[0].append(days[1:]), np.concatenate(values)
    months = days.to_period("M")
    out = np.stack([np.nanmean(values[months == m], axis=0) for m in months.unique()])
    return months.unique().to_timestamp(), out


def test_yearly_daily_files_become_monthly_means(tmp_path, store):
    paths = write_oisst_like(tmp_path / "oisst", [1983, 1984], resolution=10.0)
    res = ingest_file(tmp_path / "oisst", "sst", "oisst", store)
    assert (res.action, res.n_time) == ("created", 24)
    ds = open_obs(store, "oisst").load()
    months, expect = _daily_by_numpy(paths)
    assert (pd.DatetimeIndex(ds.time.values) == months).all()
    np.testing.assert_allclose(ds.sst.values, expect, atol=1e-4, equal_nan=True)
    assert np.isnan(ds.sst.values).any() and not np.isnan(ds.sst.values).all()  # land is NaN, not -9.97e36
    assert ds.sst.attrs["units"] == "degC" and "mean" in ds.sst.attrs["cell_methods"]
    # idempotent, then a new year is appended and nothing before it changes
    assert ingest_file(tmp_path / "oisst", "sst", "oisst", store).action == "unchanged"
    write_oisst_like(tmp_path / "oisst", [1985], resolution=10.0)
    res = ingest_file(tmp_path / "oisst", "sst", "oisst", store)
    assert (res.action, res.n_time, res.n_new) == ("appended", 36, 12)
    np.testing.assert_array_equal(open_obs(store, "oisst").sst.isel(time=slice(0, 24)).values, ds.sst.values)


def _rewrite_days(path: Path, days) -> xr.Dataset:
    """Rewrite a yearly file with only the day positions ``days`` (in that order, repeats allowed);
    returns the file as it was."""
    ds = xr.open_dataset(path).load()
    ds.close()
    ds.isel(time=list(days)).to_netcdf(path, encoding={"sst": {"_FillValue": OISST_FILL}})
    return ds


def test_a_missing_day_inside_the_record_is_refused(tmp_path, store):
    write_oisst_like(tmp_path / "oisst", [1990, 1991], resolution=15.0)
    ingest_file(tmp_path / "oisst", "sst", "oisst", store)  # 1990-1991 stored
    write_oisst_like(tmp_path / "oisst", [1992], resolution=15.0)
    f = tmp_path / "oisst" / "sst.day.mean.1992.nc"
    days = pd.date_range("1992-01-01", "1992-12-31")
    _rewrite_days(f, np.flatnonzero(days != pd.Timestamp("1992-03-14")))
    before = tree_digest(store)
    expect_clean_error(store, before, IngestError, r"day 1992-03-14 is missing",
                       lambda: ingest_file(tmp_path / "oisst", "sst", "oisst", store))


def test_a_day_twice_and_a_grid_change_are_refused(tmp_path, store):
    write_oisst_like(tmp_path / "a", [1990], resolution=15.0)
    _rewrite_days(tmp_path / "a" / "sst.day.mean.1990.nc", [*range(40), 39, *range(40, 365)])  # 9 February twice
    expect_clean_error(store, "absent", IngestError, r"a day of 1990-02 appears twice",
                       lambda: ingest_file(tmp_path / "a", "sst", "a", store))
    write_oisst_like(tmp_path / "b", [1990], resolution=15.0)
    write_oisst_like(tmp_path / "b2", [1991], resolution=10.0)
    (tmp_path / "b2" / "sst.day.mean.1991.nc").rename(tmp_path / "b" / "sst.day.mean.1991.nc")
    expect_clean_error(store, "absent", IngestError, r"sst.day.mean.1991.nc: its 'lat' grid differs",
                       lambda: ingest_file(tmp_path / "b", "sst", "b", store))


def test_a_partial_last_month_waits_until_it_is_complete(tmp_path, store):
    write_oisst_like(tmp_path / "oisst", [2000], resolution=15.0)
    f = tmp_path / "oisst" / "sst.day.mean.2000.nc"
    days = pd.date_range("2000-01-01", "2000-12-31")
    full = _rewrite_days(f, np.flatnonzero(days <= pd.Timestamp("2000-06-17")))  # a year still being served
    res = ingest_file(tmp_path / "oisst", "sst", "oisst", store)
    assert res.n_time == 5  # January-May; June is not over
    full.to_netcdf(f, encoding={"sst": {"_FillValue": OISST_FILL}})
    res = ingest_file(tmp_path / "oisst", "sst", "oisst", store)
    assert (res.action, res.n_time, res.n_new) == ("appended", 12, 7)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.dates(min_value=pd.Timestamp("1990-01-01").date(), max_value=pd.Timestamp("1990-12-31").date()),
       n_days=st.integers(1, 120), nan_share=st.floats(0, 0.9), seed=st.integers(0, 10_000))
def test_monthly_means_equal_pandas_on_complete_months(start, n_days, nan_share, seed):
    days = pd.date_range(start, periods=n_days, freq="D")
    rng = np.random.default_rng(seed)
    values = rng.normal(20, 3, (n_days, 2, 3)).astype("float32")
    values[rng.random(values.shape) < nan_share] = np.nan
    ds = xr.Dataset({"sst": (("time", "lat", "lon"), values)}, coords={"time": days})
    complete = [m for m, g in pd.Series(days, index=days).groupby(days.to_period("M"))
                if len(g) == m.days_in_month]
    if not complete:
        with pytest.raises(IngestError, match="no complete month"):
            monthly_means(ds)
        return
    out = monthly_means(ds).compute()
    expect = ds.sst.resample(time="MS").mean().sel(time=[m.to_timestamp() for m in complete])
    np.testing.assert_allclose(out.sst.values, expect.values, rtol=1e-6, equal_nan=True)
    assert [pd.Timestamp(str(t)) for t in out.time.values] == [m.to_timestamp() for m in complete]


def test_the_scale_benchmark_small(tmp_path):
    """benchmarks/bench_oisst_scale.py itself on 4 years at 4 degrees: 2 worker processes with a
    500 MB memory limit each; every stage reports time and the memory of every process."""
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_oisst_scale.py"), "--years", "1982-1985",
                           "--resolution", "4", "--memory-limit", "500MB", "--workdir", str(tmp_path / "w"),
                           "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["files"] == 4 and r["months"] == 48
    assert r["source_mb"] == pytest.approx(1461 * 45 * 90 * 4 / 1e6, rel=0.05)
    assert {"nino34", "pc", "field_anomaly"} <= set(r["features"]["variables"])
    for stage in ("ingest", "read", "features"):
        procs = r["stages"][stage]["peak_per_process_mb"]
        assert sum(k.startswith("worker") for k in procs) == 2 and any(k.startswith("client") for k in procs)
        assert min(procs[k] for k in procs if k.startswith("worker")) > 50 and r["stages"][stage]["peak_total_mb"] > 100
    assert r["ingest_mb_per_s"] > 0 and r["features_over_read"] > 0
    assert "peak memory, all processes together" in proc.stdout
    assert not (tmp_path / "w").exists()  # cleaned up without --keep
