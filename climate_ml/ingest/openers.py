"""Openers: one function per source format, each returning the raw variable as an xarray
Dataset in the source's own layout (names, units, calendar untouched apart from decoding)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.catalog import ALL_VARIABLES
from climate_ml.errors import IngestError
from climate_ml.ingest.nsidc0051 import is_nsidc0051_folder, open_nsidc0051
from climate_ml.ingest.tabular import (
    open_monthly_csv,
    open_nclimdiv,
    open_nsidc_daily,
    open_nsidc_monthly,
    read_lines,
)


def open_cf_netcdf(path: Path, variable, time_chunk: int = 120) -> xr.Dataset:
    """A CF NetCDF file, opened lazily (Dask, chunked by time); times decoded with cftime so
    that 360_day and other calendars work."""
    try:
        with warnings.catch_warnings():
            # our time chunks rarely align with a file's internal chunking; harmless here
            warnings.filterwarnings("ignore", message="The specified chunks separate the stored chunks")
            ds = xr.open_dataset(
                path,
                engine="netcdf4",
                decode_times=xr.coders.CFDatetimeCoder(use_cftime=True),
                mask_and_scale=True,
                chunks={"time": time_chunk},
            )
    except FileNotFoundError as exc:
        raise IngestError(f"{path}: file not found") from exc
    except Exception as exc:  # netCDF4/HDF5 raise OSError, RuntimeError, ValueError...
        raise IngestError(_one_line(f"{path}: not a readable NetCDF file ({type(exc).__name__}: {exc})")) from exc
    names = _names(variable, ds)
    for v in names:
        if v not in ds.data_vars:
            have = ", ".join(sorted(map(str, ds.data_vars))) or "none"
            ds.close()
            raise IngestError(f"{path}: variable {v!r} not found (variables: {have})")
    return ds[names]


def _names(variable, ds: xr.Dataset) -> list[str]:
    """A variable name, a list of names, or "*" (every data variable) as a list."""
    if variable == ALL_VARIABLES:
        return [str(v) for v in ds.data_vars]
    return [variable] if isinstance(variable, str) else list(variable)


def _single(opener):
    """Formats that hold one series per file take one variable name."""

    def call(path, variable, region=None):
        if not isinstance(variable, str) or variable == ALL_VARIABLES:
            names = [variable] if isinstance(variable, str) else list(variable)
            if len(names) != 1 or names[0] == ALL_VARIABLES:
                raise IngestError(f"{path}: this format holds one series; give one variable, not {variable!r}")
            variable = names[0]
        return opener(path, variable, region)

    return call


def _one_line(text: str) -> str:
    return text.splitlines()[0] if text else text


def open_noaa_psl_index(path: Path, variable: str) -> xr.Dataset:
    """NOAA PSL monthly index text format:
    line 1 ``first_year last_year``; then one line per year ``YYYY v1 ... v12``; then one line
    with the missing-value code; then free-text notes."""
    lines = read_lines(path)
    head = lines[0].split() if lines else []
    if len(head) != 2 or not all(h.isdigit() for h in head):
        raise IngestError(f"{path}: line 1 must be 'first_year last_year' (NOAA PSL index format)")
    first, last = int(head[0]), int(head[1])
    n_years = last - first + 1
    rows = lines[1 : 1 + n_years]
    if len(rows) < n_years:
        raise IngestError(f"{path}: truncated: expected {n_years} year rows, found {len(rows)}")
    values = []
    for k, row in enumerate(rows):
        parts = row.split()
        if len(parts) != 13 or not re.fullmatch(r"\d{4}", parts[0]) or int(parts[0]) != first + k:
            raise IngestError(f"{path}: line {k + 2}: expected year {first + k} and 12 values")
        try:
            values.append([float(v) for v in parts[1:]])
        except ValueError as exc:
            raise IngestError(f"{path}: line {k + 2}: non-numeric value") from exc
    try:
        missing = float(lines[1 + n_years].split()[0])
    except (IndexError, ValueError) as exc:
        raise IngestError(f"{path}: line {n_years + 2}: expected the missing-value code") from exc
    data = np.asarray(values).ravel()
    data[np.isclose(data, missing)] = np.nan
    time = pd.date_range(f"{first}-01", periods=data.size, freq="MS")
    # trailing missing months of the current year are not data
    last_valid = np.flatnonzero(~np.isnan(data))
    if last_valid.size == 0:
        raise IngestError(f"{path}: no valid values")
    data, time = data[: last_valid[-1] + 1], time[: last_valid[-1] + 1]
    return xr.Dataset({variable: ("time", data)}, coords={"time": time})


# Every opener is called as opener(path, variable, region=...); only nClimDiv uses the region.
OPENERS: dict[str, Callable[..., xr.Dataset]] = {
    "cf-netcdf": lambda path, variable, region=None: open_cf_netcdf(path, variable),
    "monthly-csv": lambda path, variable, region=None: open_monthly_csv(path, variable),
    "noaa-psl-index": _single(lambda path, variable, region: open_noaa_psl_index(path, variable)),
    "nsidc-monthly-csv": _single(lambda path, variable, region: open_nsidc_monthly(path, variable)),
    "nsidc-daily-csv": _single(lambda path, variable, region: open_nsidc_daily(path, variable)),
    "nclimdiv-text": _single(lambda path, variable, region: open_nclimdiv(path, variable, region=region)),
    "nsidc-0051-binary": _single(lambda path, variable, region: open_nsidc0051(path, variable)),
}

# Per format: (default variable, units the source uses, CF standard name)
FORMAT_DEFAULTS: dict[str, tuple[str | None, str | None, str | None]] = {
    "cf-netcdf": (None, None, None),
    "monthly-csv": (None, None, None),
    "noaa-psl-index": (None, None, None),
    "nsidc-monthly-csv": ("extent", "10^6 sq km", "sea_ice_extent"),
    "nsidc-daily-csv": ("extent", "10^6 sq km", "sea_ice_extent"),
    "nclimdiv-text": ("precip", "inches", "precipitation_amount"),
    "nsidc-0051-binary": ("seaice_conc", "1", "sea_ice_area_fraction"),
}


def detect_format(path: Path) -> str:
    """Guess the format of a file (or a folder of NSIDC monthly CSVs) from its content."""
    path = Path(path)
    if path.is_dir():
        if list(path.glob("[NS]_[0-1][0-9]_extent_v*.csv")):
            return "nsidc-monthly-csv"
        if is_nsidc0051_folder(path):
            return "nsidc-0051-binary"
        raise IngestError(f"{path}: a folder, but neither NSIDC monthly CSVs (N_MM_extent_v4.0.csv) nor NSIDC-0051 "
                          "files (nt_YYYYMM_<sensor>_v1.1_n.bin)")
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:3] == b"CDF" or head[:8] == b"\x89HDF\r\n\x1a\n":
        return "cf-netcdf"
    if path.suffix in (".nc", ".nc4", ".netcdf"):
        return "cf-netcdf"  # let the opener report the corruption
    text = head.decode("latin-1").replace(" ", "").lower()
    if text.startswith("year,month,day,extent"):
        return "nsidc-daily-csv"
    if text.startswith("year,mo,"):
        return "nsidc-monthly-csv"
    first = head.decode("latin-1").split("\n")[0]
    if first.count(",") >= 1 and not re.fullmatch(r"\d{10}", head[:10].decode("latin-1")):
        return "monthly-csv"  # a header row of column names, the first one (the month) possibly empty
    if re.fullmatch(r"\d{10}", head[:10].decode("latin-1")):
        return "nclimdiv-text"
    return "noaa-psl-index"


def open_source(path: Path, variable, fmt: str | None = None, region: str | None = None) -> xr.Dataset:
    fmt = fmt or detect_format(path)
    if fmt not in OPENERS:
        raise IngestError(f"{path}: unknown format {fmt!r} (known: {', '.join(OPENERS)})")
    return OPENERS[fmt](path, variable, region=region)
