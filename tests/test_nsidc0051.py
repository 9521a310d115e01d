"""NSIDC-0051 concentration maps in NSIDC's own flat binary format: small folders written in
that format (grid files and monthly files of two sensors with different pole holes), bad files,
and the real 1978-2016 record of ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from climate_ml.errors import IngestError
from climate_ml.ingest import ingest_file
from climate_ml.ingest.nsidc0051 import NX, NY
from climate_ml.synthetic import polar_stereographic_grid
from conftest import expect_clean_error, tree_digest


def write_nsidc0051(folder: Path, months: dict[str, str], value: int = 200) -> Path:
    """Grid files and one file per month {"YYYYMM": sensor}: ocean at ``value``/250, a land
    block (254) with a coast ring (253), and the sensor's pole hole (251): n07 (SMMR) north of
    84.5N, f17 (SSMIS) north of 89.2N."""
    folder.mkdir(parents=True, exist_ok=True)
    _, _, lat, lon, area = polar_stereographic_grid(25_000.0)
    (np.round(lat * 1e5).astype("<i4")).tofile(folder / "psn25lats_v3.dat")
    (np.round(np.where(lon > 180, lon - 360, lon) * 1e5).astype("<i4")).tofile(folder / "psn25lons_v3.dat")
    (np.round(area / 1e3).astype("<i4")).tofile(folder / "psn25area_v3.dat")  # m^2 -> km^2 x 1000
    for yyyymm, sensor in months.items():
        codes = np.full((NY, NX), value, dtype=np.uint8)
        codes[:40, :40] = 254
        codes[40, :41] = codes[:41, 40] = 253
        codes[lat > (84.5 if sensor == "n07" else 89.2)] = 251
        header = f"{sensor} {yyyymm} NSIDC-0051 test file".encode().ljust(300, b" ")
        (folder / f"nt_{yyyymm}_{sensor}_v1.1_n.bin").write_bytes(header + codes.tobytes())
    return folder


MONTHS = {"198706": "n07", "198707": "n07", "198708": "f17", "198709": "f17"}


def test_values_grid_land_and_a_pole_hole_that_never_changes_with_the_sensor(store, tmp_path):
    folder = write_nsidc0051(tmp_path / "nsidc0051", MONTHS)
    ingest_file(folder, None, "ice", store)  # format, variable and units detected
    ds = xr.open_zarr(store / "obs" / "ice.zarr", consolidated=False).load()
    conc = ds["seaice_conc"]
    assert conc.sizes == {"time": 4, "y": NY, "x": NX} and conc.attrs["units"] == "1"
    assert str(conc.time.values[0])[:7] == "1987-06"
    _, _, lat, lon, area = polar_stereographic_grid(25_000.0)
    np.testing.assert_allclose(ds["lat"].values, lat, atol=1e-5)
    np.testing.assert_allclose(ds["lon"].values, lon, atol=1e-5)
    np.testing.assert_allclose(ds["cell_area"].values, area, rtol=1e-3)
    assert np.isnan(conc.values[:, :41, :41][:, :40, :40]).all() and np.isnan(conc.values[:, 40, 0]).all()  # land, coast
    big_hole = lat > 84.5
    assert (conc.values[:, big_hole] == 1.0).all()  # SMMR's hole is ice in the SSMIS months too
    ocean = ~big_hole & np.isfinite(conc.values[0])
    np.testing.assert_allclose(conc.values[:, ocean], 0.8)
    # a constant field stays constant across the sensor change: no step in any cell or in extent
    assert (np.nan_to_num(np.diff(conc.values, axis=0)) == 0).all()
    extent = ((conc >= 0.15) * ds["cell_area"]).sum(("y", "x")).values
    assert len(set(extent.tolist())) == 1


def test_bad_nsidc0051_folders_are_one_line_errors_and_change_nothing(store, tmp_path):
    good = write_nsidc0051(tmp_path / "good", {"201001": "f17"})
    ingest_file(good, None, "ice", store)
    digest = tree_digest(store)
    truncated = write_nsidc0051(tmp_path / "trunc", {"201001": "f17", "201002": "f17"})
    f = truncated / "nt_201002_f17_v1.1_n.bin"
    f.write_bytes(f.read_bytes()[:5000])
    expect_clean_error(store, digest, IngestError, r"nt_201002_f17_v1.1_n.bin: 5000 bytes, expected 136492",
                       lambda: ingest_file(truncated, None, "ice", store))
    nogrid = write_nsidc0051(tmp_path / "nogrid", {"201001": "f17"})
    (nogrid / "psn25area_v3.dat").unlink()
    expect_clean_error(store, digest, IngestError, r"grid file psn25area_v3.dat is missing",
                       lambda: ingest_file(nogrid, None, "ice", store))
    twice = write_nsidc0051(tmp_path / "twice", {"201001": "f17"})
    write_nsidc0051(twice, {"201001": "f13"})
    expect_clean_error(store, digest, IngestError, r"two files for 2010-01",
                       lambda: ingest_file(twice, None, "ice", store))


@pytest.mark.realdata
def test_real_nsidc0051_record(real_data, store):
    from climate_ml.catalog import get_entry
    from climate_ml.ingest import ingest_entry

    res = ingest_entry(get_entry("nsidc-0051-monthly-north-local"), store)
    assert res.n_time == 458
    ds = xr.open_zarr(store / "obs" / "nsidc-0051-monthly-north-local.zarr", consolidated=False)
    sep = ds["seaice_conc"].sel(time="2012-09-01").values
    area = ds["cell_area"].values
    folder = real_data / "sea_ice" / "nsidc0051_monthly_nh"
    smmr = np.frombuffer((folder / "nt_198001_n07_v1.1_n.bin").read_bytes()[300:], np.uint8).reshape(NY, NX) == 251
    assert smmr.sum() == 1799  # the cells without SMMR coverage are ice in every month, 2012 included
    assert (sep[smmr] == 1.0).all()
    # The data README: September 2012 extent from these cells (>= 15%, pole hole not counted) is
    # 3.81 million km2; with the hole as ice, the 44 cells of the 2012 hole are added.
    extent = float((area * (sep >= 0.15)).sum() / 1e12)
    assert 3.81 < extent < 3.81 + 0.05
