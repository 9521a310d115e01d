"""Canonical names, units and validators for observations and forecasts.

Observations: dims ``time`` (first day of the month, datetime64), ``lat`` (ascending, degrees
north), ``lon`` (ascending, [0, 360) degrees east); SST in degC.
Forecasts: dims ``init_time`` (datetime64, the last month whose observations were used),
``lead`` (int months, attribute ``units: months``), optional ``member``; coordinate
``valid_time(init_time, lead) = init_time + lead months``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.errors import SchemaError

TIME, LAT, LON = "time", "lat", "lon"
INIT, LEAD, VALID, MEMBER, MODEL = "init_time", "lead", "valid_time", "member", "model"
CATEGORY = "category"  # of category probabilities: below / near / above normal, La Nina / neutral / El Nino, ...

Y, X = "y", "x"  # projected grids (e.g. NSIDC polar stereographic), with 2-D lat/lon coordinates

# Unit spellings found in real files, mapped to (canonical unit, scale, offset).
_UNIT_ALIASES: dict[str, tuple[str, float, float]] = {
    # name: (canonical, scale, offset) -> canonical = value * scale + offset
    "degc": ("degC", 1.0, 0.0),
    "degree_c": ("degC", 1.0, 0.0),
    "degrees_c": ("degC", 1.0, 0.0),
    "degreec": ("degC", 1.0, 0.0),
    "deg c": ("degC", 1.0, 0.0),
    "deg_c": ("degC", 1.0, 0.0),
    "celsius": ("degC", 1.0, 0.0),
    "celsius_scale": ("degC", 1.0, 0.0),
    "degrees celsius": ("degC", 1.0, 0.0),
    "c": ("degC", 1.0, 0.0),
    "k": ("degC", 1.0, -273.15),
    "kelvin": ("degC", 1.0, -273.15),
    "degk": ("degC", 1.0, -273.15),
    "degrees_k": ("degC", 1.0, -273.15),
    "mm": ("mm", 1.0, 0.0),
    "millimeters": ("mm", 1.0, 0.0),
    "kg m-2": ("mm", 1.0, 0.0),
    "in": ("mm", 25.4, 0.0),
    "inch": ("mm", 25.4, 0.0),
    "inches": ("mm", 25.4, 0.0),
    "1e6 km2": ("1e6 km2", 1.0, 0.0),
    "1": ("1", 1.0, 0.0),
    "fraction": ("1", 1.0, 0.0),
    "percent": ("1", 0.01, 0.0),
    "%": ("1", 0.01, 0.0),
    "10^6 sq km": ("1e6 km2", 1.0, 0.0),
    "10^6 km^2": ("1e6 km2", 1.0, 0.0),
    "million km2": ("1e6 km2", 1.0, 0.0),
    "m": ("m", 1.0, 0.0),
    "meters": ("m", 1.0, 0.0),
    "metres": ("m", 1.0, 0.0),
    "m3": ("m3", 1.0, 0.0),
    "m^3": ("m3", 1.0, 0.0),
    "m**3": ("m3", 1.0, 0.0),
    "m s-1": ("m s-1", 1.0, 0.0),
    "m/s": ("m s-1", 1.0, 0.0),
    "w m-2": ("W m-2", 1.0, 0.0),
    "w/m2": ("W m-2", 1.0, 0.0),
    "w/m^2": ("W m-2", 1.0, 0.0),
}


# Values outside these ranges (canonical units) are not physical for any variable the pipeline
# ingests: they betray wrong units (Kelvin labelled degC, percent labelled as a fraction) or
# garbage. Wide on purpose: anomalies and absolute values of one unit share a range.
PLAUSIBLE_RANGE: dict[str, tuple[float, float]] = {
    "degC": (-20.0, 45.0),  # SST and its anomalies (Kelvin read as degC is ~270-305)
    "mm": (0.0, 5000.0),  # a monthly precipitation total
    "1e6 km2": (0.0, 30.0),  # sea-ice extent (the Arctic ocean is ~15 at most)
    "1": (0.0, 1.0),  # a fraction such as sea-ice concentration (percent read as a fraction is up to 100)
    "m": (-1000.0, 6000.0),  # thermocline depths and their anomalies
    "m3": (-1e17, 1e17),  # warm water volume (~1e15)
    "m s-1": (-80.0, 80.0),  # winds
    "W m-2": (-600.0, 600.0),  # radiative fluxes and their anomalies
}


def check_plausible(values: np.ndarray, units: str, where: str) -> np.ndarray:
    """Raise SchemaError when any finite value lies outside ``PLAUSIBLE_RANGE[units]``; return
    the values unchanged (used block by block on Dask arrays, so nothing is read twice)."""
    lo, hi = PLAUSIBLE_RANGE.get(units, (-np.inf, np.inf))
    v = np.asarray(values)
    finite = v[np.isfinite(v)]
    if finite.size and (finite.min() < lo or finite.max() > hi):
        bad = finite.min() if finite.min() < lo else finite.max()
        raise SchemaError(f"{where}has values such as {bad:.6g} {units}, outside the plausible range {lo:g}..{hi:g} "
                          f"{units} (wrong units declared?)")
    return values


def unit_conversion(units: str) -> tuple[str, float, float]:
    """Return (canonical unit, scale, offset) for a unit string, or raise SchemaError."""
    key = " ".join(str(units).strip().lower().split())
    if key not in _UNIT_ALIASES:
        raise SchemaError(f"unknown units {units!r}")
    return _UNIT_ALIASES[key]


def month_start(times) -> pd.DatetimeIndex:
    """Map any monthly time axis (numpy datetimes or cftime objects of any calendar) to the first
    day of each month. Raises SchemaError if the axis is not strictly monthly."""
    values = np.asarray(times)
    if values.size == 0:
        raise SchemaError("time axis is empty")
    if np.issubdtype(values.dtype, np.datetime64):
        idx = pd.DatetimeIndex(values)
        ym = list(zip(idx.year, idx.month, strict=True))
    else:  # cftime objects (360_day, noleap, julian ...): only year and month matter
        try:
            ym = [(int(t.year), int(t.month)) for t in values]
        except AttributeError as exc:
            raise SchemaError(f"time values are not dates ({values.dtype})") from exc
    out = pd.DatetimeIndex([pd.Timestamp(year=y, month=m, day=1) for y, m in ym])
    check_monthly(out)
    return out


def check_monthly(index: pd.DatetimeIndex) -> None:
    """Raise SchemaError unless consecutive entries are exactly one month apart."""
    if len(index) < 2:
        return
    months = index.year * 12 + index.month
    steps = np.diff(np.asarray(months))
    if (steps == 0).any():
        dup = index[1:][steps == 0][0]
        raise SchemaError(f"time axis is not monthly: {dup:%Y-%m} appears twice")
    if (steps < 0).any():
        bad = index[1:][steps < 0][0]
        raise SchemaError(f"time axis is not monthly: {bad:%Y-%m} is out of order")
    if (steps != 1).any():
        i = int(np.argmax(steps != 1))
        raise SchemaError(
            f"time axis is not monthly: gap of {steps[i]} months after {index[i]:%Y-%m}"
        )


def validate_obs(ds: xr.Dataset) -> xr.Dataset:
    """Check an observation dataset is canonical; return it unchanged."""
    if TIME not in ds.dims:
        raise SchemaError("observations have no 'time' dimension")
    idx = pd.DatetimeIndex(ds[TIME].values)
    if not (idx == idx.to_period("M").to_timestamp()).all():
        raise SchemaError("observation times must be the first day of the month")
    check_monthly(idx)
    if LAT in ds.dims:
        lat = ds[LAT].values
        if lat.size > 1 and not (np.diff(lat) > 0).all():
            raise SchemaError("'lat' must be strictly ascending")
        if np.nanmin(lat) < -90 or np.nanmax(lat) > 90:
            raise SchemaError("'lat' outside [-90, 90]")
    if LON in ds.dims:
        lon = ds[LON].values
        if lon.size > 1 and not (np.diff(lon) > 0).all():
            raise SchemaError("'lon' must be strictly ascending")
        if np.nanmin(lon) < 0 or np.nanmax(lon) >= 360:
            raise SchemaError("'lon' must lie in [0, 360)")
    for name, var in ds.data_vars.items():
        if "units" not in var.attrs:
            raise SchemaError(f"variable {name!r} has no 'units' attribute")
    return ds


def add_months(times, months) -> np.ndarray:
    """``times[:, None] + months[None, :]`` calendar months, as datetime64[ns] (vectorised)."""
    t = np.asarray(times).astype("datetime64[M]")
    m = np.asarray(months, dtype="int64").astype("timedelta64[M]")
    return (t[:, None] + m[None, :]).astype("datetime64[ns]")


def add_valid_time(ds: xr.Dataset | xr.DataArray):
    """Attach ``valid_time(init_time, lead) = init_time + lead months``."""
    vt = add_months(ds[INIT].values, ds[LEAD].values)
    return ds.assign_coords({VALID: ((INIT, LEAD), vt)})


def validate_forecast(ds: xr.Dataset | xr.DataArray):
    """Check a forecast is canonical (init_time, lead [, member], ...) with valid_time."""
    for dim in (INIT, LEAD):
        if dim not in ds.dims:
            raise SchemaError(f"forecast has no {dim!r} dimension (dims: {list(ds.dims)})")
    if not np.issubdtype(ds[INIT].dtype, np.datetime64):
        raise SchemaError("forecast 'init_time' must be datetime64")
    if not np.issubdtype(ds[LEAD].dtype, np.integer):
        raise SchemaError("forecast 'lead' must be integer months")
    if VALID not in ds.coords:
        raise SchemaError("forecast has no 'valid_time' coordinate")
    return ds


def mock_sst(
    n_months: int = 60,
    start: str = "2000-01",
    lat=(-10.0, -5.0, 0.0, 5.0, 10.0),
    lon=(150.0, 170.0, 190.0, 210.0, 230.0, 250.0, 270.0),
    seed: int = 0,
) -> xr.Dataset:
    """A tiny canonical SST dataset (degC) with a seasonal cycle and noise, for tests."""
    rng = np.random.default_rng(seed)
    time = pd.date_range(start, periods=n_months, freq="MS")
    season = 1.0 * np.cos(2 * np.pi * (time.month.values - 3) / 12)
    data = (
        27.0
        + season[:, None, None]
        + rng.normal(0, 0.5, (n_months, len(lat), len(lon)))
    ).astype("float32")
    ds = xr.Dataset(
        {"sst": ((TIME, LAT, LON), data, {"units": "degC", "standard_name": "sea_surface_temperature"})},
        coords={TIME: time, LAT: np.asarray(lat, float), LON: np.asarray(lon, float)},
    )
    ds[LAT].attrs.update(units="degrees_north", standard_name="latitude")
    ds[LON].attrs.update(units="degrees_east", standard_name="longitude")
    return ds
