"""Openers: one function per source format, each returning the raw variable as an xarray
Dataset in the source's own layout (names, units, calendar untouched apart from decoding)."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dask.array
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
    """A CF NetCDF file, or a folder of them (one per year, as NOAA serves OISST), opened lazily
    (Dask); times decoded with cftime so that 360_day and other calendars work. Daily data
    become monthly means, one Dask task per month (or part of one) (``monthly_means``)."""
    path = Path(path)
    files = netcdf_files(path)
    parts = [_open_netcdf(f, variable, time_chunk) for f in files]
    for f, part in zip(files[1:], parts[1:], strict=True):
        for c in part.dims:
            if c != "time" and (c not in parts[0].dims or part.sizes[c] != parts[0].sizes[c]
                                or not np.array_equal(part[c].values, parts[0][c].values)):
                raise IngestError(f"{f}: its {c!r} grid differs from that of {files[0].name}")
    ds = parts[0] if len(parts) == 1 else xr.concat(parts, "time", data_vars="minimal", coords="minimal",
                                                    compat="override", join="override", combine_attrs="override")
    if "time" in ds.dims and _daily(ds["time"].values):
        return monthly_means(ds, str(path))
    return ds


def netcdf_files(path: Path) -> list[Path]:
    """The file itself, or a folder's ``*.nc`` / ``*.nc4`` files in name order (one per year)."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix in (".nc", ".nc4") and p.is_file())
    if not files:
        raise IngestError(f"{path}: a folder without NetCDF files (*.nc)")
    return files


def _open_netcdf(path: Path, variable, time_chunk: int) -> xr.Dataset:
    """One file, as Dask arrays chunked by ``time_chunk`` steps, or by month for daily data."""
    try:
        ds = xr.open_dataset(path, engine="netcdf4", decode_times=False, mask_and_scale=True,
                             chunks=None)  # lazy, not yet Dask: chunked by the caller
    except FileNotFoundError as exc:
        raise IngestError(f"{path}: file not found") from exc
    except Exception as exc:  # netCDF4/HDF5 raise OSError, RuntimeError, ValueError...
        raise IngestError(_one_line(f"{path}: not a readable NetCDF file ({type(exc).__name__}: {exc})")) from exc
    ds = _decode_times(ds, path)
    names = _names(variable, ds)
    for v in names:
        if v not in ds.data_vars:
            have = ", ".join(sorted(map(str, ds.data_vars))) or "none"
            ds.close()
            raise IngestError(f"{path}: variable {v!r} not found (variables: {have})")
    ds = ds[names]
    if "time" not in ds.dims:
        return ds.chunk({})
    if not _daily(ds["time"].values):
        return ds.chunk({"time": time_chunk})
    ym = _year_month(ds["time"].values)
    runs = [len(list(g)) for _, g in itertools.groupby(ym)]  # one chunk per month: never one per file
    chunks = {"time": tuple(runs)}
    space = [d for d in ds[names[0]].dims if d != "time"]
    month_bytes = max(runs) * max(int(np.prod([v.sizes[d] for d in v.dims if d != "time"])) * v.dtype.itemsize
                                  for v in ds.data_vars.values())
    if space and month_bytes > DAILY_BLOCK_BYTES:  # a month of a large grid: split along its first spatial dim
        pieces = min(ds.sizes[space[0]], -(-month_bytes // DAILY_BLOCK_BYTES))
        chunks[space[0]] = -(-ds.sizes[space[0]] // pieces)
    out = ds.chunk({d: chunks.get(d, -1) for d in ds.dims})  # coordinates; the data are read by _BlockReader
    for name, var in ds.data_vars.items():
        dtype = var.dtype if var.dtype.kind == "f" else np.dtype("float32")  # missing days and land are NaN
        reader = _BlockReader(str(path), str(name), tuple(var.shape), str(dtype))
        data = dask.array.from_array(reader, chunks=tuple(chunks.get(d, -1) for d in var.dims), lock=False,
                                     asarray=True, meta=np.empty((0,) * var.ndim, dtype=dtype),
                                     name=f"read-{name}-{hashlib.sha1(str(path).encode()).hexdigest()[:12]}")
        out[name] = out[name].copy(data=data)
    return out


CALENDAR_ALIASES = {"360": "360_day"}  # the IRI Data Library's files say calendar = "360"


def _decode_times(ds: xr.Dataset, path: Path) -> xr.Dataset:
    """CF times decoded with cftime (any calendar). The IRI Data Library's "months since" axes
    with calendar "360" are read as the 360_day calendar they mean; "months since" in a calendar
    whose months differ in length is refused by name (CF leaves such a month undefined)."""
    written = {n: dict(v.attrs) for n, v in ds.variables.items() if "since" in str(v.attrs.get("units", ""))}
    for name, attrs in written.items():
        calendar = str(attrs.get("calendar", "")).strip()
        if calendar in CALENDAR_ALIASES:
            ds[name].attrs["calendar"] = CALENDAR_ALIASES[calendar]
    try:
        return xr.decode_cf(ds, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True), mask_and_scale=False)
    except Exception as exc:  # cftime and xarray raise ValueError, OverflowError, OutOfBoundsDatetime...
        if not written:
            raise IngestError(_one_line(f"{path}: cannot read its times ({type(exc).__name__}: {exc})")) from exc
        name, attrs = next(iter(written.items()))  # as the file writes them
        units, calendar = str(attrs["units"]), str(attrs.get("calendar", "standard"))
        why = ("a 'months since' axis needs calendar 360_day (as in the IRI Data Library's files), where every "
               "month has the same length" if units.strip().startswith("months") else
               "not CF time units (e.g. 'days since 1800-01-01')")
        raise IngestError(f"{path}: cannot read the time axis {name!r}: units {units!r} with calendar "
                          f"{calendar!r}: {why}") from exc


class _BlockReader:
    """Reads one block of a variable straight from its file with netCDF4, decoded (fill and
    missing values as NaN, scale and offset applied) and with a small HDF5 chunk cache. Through
    xarray's file cache each of a worker's open files kept netCDF-C's default 64 MB cache: with
    20 yearly OISST files the workers grew to 1.2 GB each. Picklable, so Dask workers in other processes
    open the file themselves."""

    def __init__(self, path: str, variable: str, shape: tuple, dtype: str):
        self.path, self.variable, self.shape, self.dtype = path, variable, shape, np.dtype(dtype)
        self.ndim = len(shape)

    def __getitem__(self, key) -> np.ndarray:
        import netCDF4

        from climate_ml.store import NETCDF_LOCK

        with NETCDF_LOCK, netCDF4.Dataset(self.path) as nc:
            var = nc[self.variable]
            var.set_var_chunk_cache(size=2**20, nelems=61, preemption=1.0)
            block = var[key]
        return np.ma.filled(np.ma.asarray(block).astype(self.dtype), np.nan)


DAILY_BLOCK_BYTES = 32 * 2**20  # largest piece of a month of daily data one task reads (0.25 degree: a quarter)


def _year_month(times) -> list[tuple[int, int]]:
    """(year, month) of numpy datetimes or cftime objects (any calendar)."""
    if np.issubdtype(np.asarray(times).dtype, np.datetime64):
        idx = pd.DatetimeIndex(times)
        return list(zip(idx.year.tolist(), idx.month.tolist(), strict=True))
    return [(int(t.year), int(t.month)) for t in times]


def _daily(times) -> bool:
    """Daily steps: a month holds several of them and the usual step is one day."""
    ym = _year_month(times)
    if len(set(ym)) == len(ym):
        return False
    steps = np.diff(pd.DatetimeIndex(times).values if np.issubdtype(np.asarray(times).dtype, np.datetime64)
                    else np.asarray(times, dtype=object))
    days = np.array([pd.Timedelta(d).total_seconds() / 86400 for d in steps])
    return bool(np.median(days) == 1.0)


def _days_in_month(t) -> int:
    return int(t.daysinmonth) if hasattr(t, "daysinmonth") else int(pd.Timestamp(t).days_in_month)


def _block_mean(block: np.ndarray) -> np.ndarray:
    valid = ~np.isnan(block)
    n = valid.sum(axis=0, keepdims=True)
    total = np.where(valid, block, 0).sum(axis=0, keepdims=True, dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan).astype(block.dtype)


def monthly_means(ds: xr.Dataset, where: str = "") -> xr.Dataset:
    """Daily data -> monthly means (of each cell's valid days), lazily: the time axis is chunked
    on month boundaries and each month is one task, so memory stays near one month of the field.
    Days must be in order, once each; a month with days missing inside the record is an error
    naming the first missing day; a partial first or last month (a record that starts or stops
    mid-month) is left out, and is stored once complete."""
    where = f"{where}: " if where else ""
    times = ds["time"].values
    ym = _year_month(times)
    months = list(dict.fromkeys(ym))
    order = [months.index(k) for k in ym]
    if any(b < a for a, b in zip(order, order[1:], strict=False)):
        raise IngestError(f"{where}days are out of order")
    counts = np.bincount(order, minlength=len(months))
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    full = [counts[k] == _days_in_month(times[firsts[k]]) for k in range(len(months))]
    for k in range(len(months)):
        days = sorted(int(pd.Timestamp(t).day) if isinstance(t, np.datetime64) else int(t.day)
                      for t in times[firsts[k]:firsts[k] + counts[k]])
        if len(set(days)) != len(days):
            raise IngestError(f"{where}a day of {months[k][0]}-{months[k][1]:02d} appears twice")
        if not full[k] and 0 < k < len(months) - 1:
            missing = min(set(range(1, _days_in_month(times[firsts[k]]) + 1)) - set(days))
            raise IngestError(f"{where}day {months[k][0]}-{months[k][1]:02d}-{missing:02d} is missing "
                              "(daily data must cover every day of each month)")
    keep = [k for k in range(len(months)) if full[k]]
    if not keep:
        raise IngestError(f"{where}no complete month of daily data")
    lo, hi = firsts[keep[0]], firsts[keep[-1]] + counts[keep[-1]]
    ds = ds.isel(time=slice(int(lo), int(hi))).chunk({"time": tuple(int(counts[k]) for k in keep)})
    out = {}
    for name, da in ds.data_vars.items():
        data = da.data.map_blocks(_block_mean, chunks=((1,) * len(keep), *da.data.chunks[1:]), dtype=da.dtype)
        out[name] = xr.DataArray(data, dims=da.dims, attrs={**da.attrs, "cell_methods": "time: mean (monthly)"},
                                 coords={c: v for c, v in da.coords.items() if "time" not in v.dims})
    stamps = [times[firsts[k]] for k in keep]
    stamps = (pd.DatetimeIndex(stamps).to_period("M").to_timestamp() if isinstance(stamps[0], np.datetime64)
              else np.array(stamps, dtype=object))  # standardise maps cftime dates to month starts
    return xr.Dataset(out).assign_coords(time=("time", stamps))


def _names(variable, ds: xr.Dataset) -> list[str]:
    """A variable name, a list of names, or "*" (every data variable) as a list."""
    if variable == ALL_VARIABLES:
        return [str(v) for v in ds.data_vars]
    return [variable] if isinstance(variable, str) else list(variable)


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


@dataclass(frozen=True)
class Reader:
    """One source format: its name (a catalog entry's ``format``), how to recognise it, how to
    open it, and what its files hold when the user does not say (variable, units, CF standard
    name). ``recognise(path, head)`` gets a folder with ``head=None`` or a file with its first 64
    bytes. ``one_series``: a file holds one series, so it takes exactly one variable name.
    Adding a format is one ``Reader(...)`` line in ``READERS``."""

    name: str
    opener: Callable[..., xr.Dataset]  # opener(path, variable, region) -> Dataset in the source's layout
    recognise: Callable[[Path, bytes | None], bool]
    variable: str | None = None
    units: str | None = None
    standard_name: str | None = None
    one_series: bool = False

    def open(self, path: Path, variable, region: str | None = None) -> xr.Dataset:
        if self.one_series and (not isinstance(variable, str) or variable == ALL_VARIABLES):
            names = [variable] if isinstance(variable, str) else list(variable)
            if len(names) != 1 or names[0] == ALL_VARIABLES:
                raise IngestError(f"{path}: this format holds one series; give one variable, not {variable!r}")
            variable = names[0]
        return self.opener(path, variable, region)


def _text(head: bytes | None) -> str:
    return "" if head is None else head.decode("latin-1")


def _netcdf(path: Path, head: bytes | None) -> bool:
    if head is None:
        return bool(list(path.glob("*.nc")) or list(path.glob("*.nc4")))
    return head[:3] == b"CDF" or head[:8] == b"\x89HDF\r\n\x1a\n" or path.suffix in (".nc", ".nc4", ".netcdf")


def _ten_digits(head: bytes | None) -> bool:
    return head is not None and re.fullmatch(r"\d{10}", _text(head)[:10]) is not None


# In the order they are tried on a file or folder whose format is not given (the first that
# recognises it wins; the NOAA PSL index text format takes any file the others do not).
READERS: dict[str, Reader] = {r.name: r for r in (
    Reader("nsidc-monthly-csv", lambda path, variable, region: open_nsidc_monthly(path, variable),
           lambda path, head: bool(list(path.glob("[NS]_[0-1][0-9]_extent_v*.csv"))) if head is None
           else _text(head).replace(" ", "").lower().startswith("year,mo,"),
           "extent", "10^6 sq km", "sea_ice_extent", one_series=True),
    Reader("nsidc-0051-binary", lambda path, variable, region: open_nsidc0051(path, variable),
           lambda path, head: head is None and is_nsidc0051_folder(path),
           "seaice_conc", "1", "sea_ice_area_fraction", one_series=True),
    Reader("cf-netcdf", lambda path, variable, region: open_cf_netcdf(path, variable), _netcdf),
    Reader("nsidc-daily-csv", lambda path, variable, region: open_nsidc_daily(path, variable),
           lambda path, head: _text(head).replace(" ", "").lower().startswith("year,month,day,extent"),
           "extent", "10^6 sq km", "sea_ice_extent", one_series=True),
    Reader("nclimdiv-text", lambda path, variable, region: open_nclimdiv(path, variable, region=region),
           lambda path, head: _ten_digits(head), "precip", "inches", "precipitation_amount", one_series=True),
    Reader("monthly-csv", lambda path, variable, region: open_monthly_csv(path, variable),  # a header of column names
           lambda path, head: head is not None and _text(head).split("\n")[0].count(",") >= 1),
    Reader("noaa-psl-index", lambda path, variable, region: open_noaa_psl_index(path, variable),
           lambda path, head: head is not None, one_series=True),
)}


def reader(fmt: str, path: Path | None = None) -> Reader:
    if fmt not in READERS:
        raise IngestError(f"{path or 'source'}: unknown format {fmt!r} (known: {', '.join(READERS)})")
    return READERS[fmt]


def detect_format(path: Path) -> str:
    """Guess the format of a file (or a folder of NSIDC monthly CSVs, NSIDC-0051 files or yearly
    NetCDF files) from its content: the first reader in ``READERS`` that recognises it."""
    path = Path(path)
    head = None
    if not path.is_dir():
        with open(path, "rb") as f:
            head = f.read(64)
    for r in READERS.values():
        if r.recognise(path, head):
            return r.name
    raise IngestError(f"{path}: a folder, but neither NetCDF files (*.nc, e.g. one per year), NSIDC monthly CSVs "
                      "(N_MM_extent_v4.0.csv) nor NSIDC-0051 files (nt_YYYYMM_<sensor>_v1.1_n.bin)")


def open_source(path: Path, variable, fmt: str | None = None, region: str | None = None) -> xr.Dataset:
    return reader(fmt or detect_format(path), path).open(path, variable, region=region)
