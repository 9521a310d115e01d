"""The embedded default data set: an ERSST-like SST field from a toy ocean.

ENSO is a stochastically forced recharge oscillator (Jin 1997): eastern-Pacific temperature T
and western-Pacific thermocline depth h obey
    dT/dt = R(month) T + gamma h + noise,     dh/dt = -r h - alpha T + noise,
with a period of about four years. The growth rate R peaks in boreal late summer, which locks
events to boreal winter. T is projected on an eastern-Pacific cold-tongue pattern; the recharge
state h leaves a weak footprint on western-Pacific and off-equatorial SST, so a model that reads
those regions can predict beyond persistence (as warm-water volume does in the real ocean).
The field adds a seasonal cycle, a warming trend, spatially coherent weather noise and land.
The file mimics NOAA PSL's ``sst.mnmean.nc``: variable ``sst`` in degC, latitude descending,
``days since 1800-01-01``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr


def recharge_oscillator(
    n_months: int,
    seed: int = 42,
    alpha: float = 0.13,
    gamma: float = 0.13,
    r: float = 0.025,
    growth_mean: float = -0.05,
    growth_seasonal: float = 0.18,
    growth_peak_month: int = 8,
    noise_t: float = 0.22,
    noise_h: float = 0.08,
    substeps: int = 10,
    spinup: int = 120,
) -> tuple[np.ndarray, np.ndarray]:
    """Integrate the recharge oscillator (Euler-Maruyama, time in months).
    Returns monthly means of T (degC-like) and h (nondimensional), both of length n_months."""
    rng = np.random.default_rng(seed)
    total = n_months + spinup
    dt = 1.0 / substeps
    t_state, h_state = 0.0, 0.0
    t_out = np.empty(total)
    h_out = np.empty(total)
    # Red (AR1, ~2-month memory) weather forcing, like westerly wind bursts.
    forcing = 0.0
    for m in range(total):
        month = m % 12 + 1
        growth = growth_mean + growth_seasonal * np.cos(2 * np.pi * (month - growth_peak_month) / 12)
        t_acc = h_acc = 0.0
        for _ in range(substeps):
            forcing = forcing * np.exp(-dt / 2.0) + np.sqrt(dt) * rng.normal()
            dT = (growth * t_state + gamma * h_state) * dt + noise_t * forcing * dt
            dh = (-r * h_state - alpha * t_state) * dt + noise_h * np.sqrt(dt) * rng.normal()
            t_state += dT
            h_state += dh
            t_acc += t_state
            h_acc += h_state
        t_out[m] = t_acc / substeps
        h_out[m] = h_acc / substeps
    return t_out[spinup:], h_out[spinup:]


def toy_ocean(
    start: str = "1950-01",
    end: str = "2024-12",
    resolution: float = 2.0,
    seed: int = 42,
) -> xr.Dataset:
    """The toy-ocean SST dataset in the *source* layout (lat descending, like ERSST)."""
    time = pd.date_range(start, end, freq="MS")
    n = len(time)
    lat = np.arange(30.0, -30.0 - 1e-9, -resolution)
    lon = np.arange(120.0, 290.0 + 1e-9, resolution)
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    rng = np.random.default_rng(seed + 1)

    enso_t, enso_h = recharge_oscillator(n, seed=seed)
    scale = 0.9 / enso_t.std()
    enso_t *= scale
    enso_h = enso_h / enso_h.std()

    cold_tongue = np.exp(-((lat2 / 8.0) ** 2)) * np.exp(-(((lon2 - 245.0) / 35.0) ** 2))
    central = np.exp(-((lat2 / 6.0) ** 2)) * np.exp(-(((lon2 - 190.0) / 25.0) ** 2))
    enso_pattern = cold_tongue + 0.5 * central
    # Recharge footprint: warm western Pacific and off-equatorial central Pacific when h > 0.
    warm_pool = np.exp(-(((lat2 - 0.0) / 10.0) ** 2)) * np.exp(-(((lon2 - 145.0) / 20.0) ** 2))
    off_eq = (
        np.exp(-(((lat2 - 12.0) / 5.0) ** 2)) + np.exp(-(((lat2 + 12.0) / 5.0) ** 2))
    ) * np.exp(-(((lon2 - 200.0) / 40.0) ** 2))
    recharge_pattern = 0.35 * warm_pool + 0.25 * off_eq

    month = time.month.values
    climatology = 29.0 - 0.006 * lat2**2 - 3.0 * cold_tongue
    seasonal_amp = 0.4 + 1.2 * cold_tongue + 0.04 * np.abs(lat2)
    season = np.cos(2 * np.pi * (month - 3) / 12)
    # Seasonal phase shifts between hemispheres: north warm in Aug-Sep, south in Feb-Mar.
    hemis = np.where(lat2 >= 0, -1.0, 1.0)
    years = (np.arange(n) / 12.0)[:, None, None]
    trend = 0.012 * years * (1.0 - 0.3 * cold_tongue)

    # Weather noise: AR(1) in time (3-month memory), smoothed in space.
    noise = np.empty((n, len(lat), len(lon)))
    prev = np.zeros((len(lat), len(lon)))
    phi = np.exp(-1.0 / 3.0)
    kernel = np.exp(-0.5 * (np.arange(-4, 5) / 2.0) ** 2)
    kernel /= kernel.sum()
    for i in range(n):
        white = rng.normal(size=(len(lat), len(lon)))
        white = np.apply_along_axis(np.convolve, 1, white, kernel, mode="same")
        white = np.apply_along_axis(np.convolve, 0, white, kernel, mode="same")
        prev = phi * prev + np.sqrt(1 - phi**2) * white * 3.0
        noise[i] = prev
    noise *= 0.25

    sst = (
        climatology[None]
        + (seasonal_amp * hemis)[None] * season[:, None, None]
        + trend
        + enso_t[:, None, None] * enso_pattern[None]
        + enso_h[:, None, None] * recharge_pattern[None]
        + noise
    ).astype("float32")
    # Land: Central America and a piece of the Maritime Continent.
    land = ((lon2 > 276.0) & (lat2 > 8.0)) | ((lon2 < 126.0) & (lat2 < -2.0))
    sst[:, land] = np.nan

    ds = xr.Dataset(
        {
            "sst": (
                ("time", "lat", "lon"),
                sst,
                {
                    "long_name": "Monthly Means of Sea Surface Temperature",
                    "units": "degC",
                    "var_desc": "Sea Surface Temperature",
                    "dataset": "climate-ml toy ocean (ERSST v5-like)",
                    "standard_name": "sea_surface_temperature",
                },
            )
        },
        coords={
            "time": ("time", time, {"long_name": "Time", "standard_name": "time", "axis": "T"}),
            "lat": ("lat", lat.astype("float32"), {"units": "degrees_north", "standard_name": "latitude", "axis": "Y"}),
            "lon": ("lon", lon.astype("float32"), {"units": "degrees_east", "standard_name": "longitude", "axis": "X"}),
        },
        attrs={
            "title": "climate-ml toy ocean: ERSST-like SST with a recharge-oscillator ENSO",
            "Conventions": "CF-1.6",
            "source": "climate_ml.synthetic.toy_ocean (synthetic)",
            "license": "MIT",
            "seed": seed,
        },
    )
    return ds


def write_toy_ocean(path: str | Path, **kwargs) -> Path:
    """Write the toy ocean as an ERSST-like NetCDF4 file (atomically) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = toy_ocean(**kwargs)
    tmp = path.with_name(path.name + ".part")
    ds.to_netcdf(
        tmp,
        format="NETCDF4",
        encoding={
            "time": {"units": "days since 1800-01-01", "calendar": "proleptic_gregorian", "dtype": "float64"},
            "sst": {"_FillValue": np.float32(-9.96921e36), "zlib": True, "complevel": 1},
        },
    )
    tmp.replace(path)
    return path


def toy_heat_content(start: str = "1950-01", end: str = "2024-12", seed: int = 42) -> xr.Dataset:
    """The toy ocean's recharge state as an index file in the layout of the XRO indices file
    (``xro_indices_oras5``): ``WWV``, a thermocline-depth anomaly in m (the recharge oscillator's
    h, 12 m per standard deviation, plus 2 m of measurement noise), with the real file's quirks:
    a non-dimension ``month`` coordinate and a ``standard_name`` that is not a CF name. The same
    seed and period as ``toy_ocean`` give the same h that drives the toy ENSO."""
    time = pd.date_range(start, end, freq="MS")
    _, h = recharge_oscillator(len(time), seed=seed)
    rng = np.random.default_rng(seed + 7)
    wwv = (12.0 * h / h.std() + rng.normal(0, 2.0, len(time))).astype("float32")
    attrs = {"standard_name": "Depth of 20C isotherm", "long_name": "toy recharge state: 20C isotherm depth anomaly",
             "units": "m"}
    return xr.Dataset({"WWV": ("time", wwv, attrs)},
                      coords={"time": ("time", time), "month": ("time", time.month.values.astype("int32"))},
                      attrs={"title": "climate-ml toy heat content (XRO-indices-like)", "source": "climate_ml.synthetic"})


def write_toy_heat_content(path: str | Path, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    toy_heat_content(**kwargs).to_netcdf(tmp, format="NETCDF4", encoding={
        "time": {"units": "days since 1979-01-01", "calendar": "proleptic_gregorian", "dtype": "float32"}})
    tmp.replace(path)
    return path


GENERATORS = {"toy-ocean": write_toy_ocean, "toy-heat-content": write_toy_heat_content}


# --- embedded sea-ice default ------------------------------------------------------------

EARTH_RADIUS_M = 6_371_000.0
TRUE_LAT = 70.0  # NSIDC polar stereographic north: true scale at 70N, central meridian 45W
CENTRAL_LON = -45.0


def polar_stereographic_grid(resolution_m: float = 25_000.0):
    """The NSIDC north polar stereographic grid (x -3850..3750 km, y 5850..-5350 km; 304 x 448
    cells at the NSIDC standard 25 km) at a given resolution, on a sphere: returns x, y (m), 2-D lat, lon (degrees east, [0, 360)) and
    cell area (m^2, the projected cell area divided by the squared scale factor)."""
    x = np.arange(-3_850_000.0 + resolution_m / 2, 3_750_000.0, resolution_m)
    y = np.arange(5_850_000.0 - resolution_m / 2, -5_350_000.0, -resolution_m)
    xx, yy = np.meshgrid(x, y)
    rho = np.hypot(xx, yy)
    k0 = 1 + np.sin(np.deg2rad(TRUE_LAT))
    lat = 90.0 - 2 * np.rad2deg(np.arctan(rho / (EARTH_RADIUS_M * k0)))
    lon = (CENTRAL_LON + np.rad2deg(np.arctan2(xx, -yy))) % 360.0
    scale = k0 / (1 + np.sin(np.deg2rad(lat)))
    area = resolution_m**2 / scale**2
    return x, y, lat, lon, area


def _arctic_land(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """A crude land mask: Greenland, the Canadian Archipelago, North America and Eurasia south
    of their coasts (Hudson Bay, the Barents, Bering and Okhotsk seas stay ocean)."""
    greenland = (lat > 60) & (lat < 83.5) & (lon > 300) & (lon < 340)
    archipelago = (lat > 69) & (lat < 82) & (lon > 240) & (lon < 295)
    america = (lat < 69) & (lon > 195) & (lon < 300) & ~((lat > 52) & (lat < 64) & (lon > 265) & (lon < 290))
    eurasia = (lat < 71) & (lon > 25) & (lon < 180) & ~((lat > 52) & (lat < 62) & (lon > 140) & (lon < 160))
    return greenland | archipelago | america | eurasia


def toy_sea_ice(start: str = "1979-01", end: str = "2024-12", resolution_m: float = 25_000.0,
                seed: int = 7) -> xr.Dataset:
    """Sea-ice concentration (fraction 0-1) on the NSIDC polar stereographic grid: the ice edge
    migrates between about 62N in March and 78N in September, retreats northwards (faster in
    summer), and carries persistent anomalies (AR1, about 5-month memory) that are coherent
    around the pole. Land is NaN. Mimics NSIDC CDR files: variable ``cdr_seaice_conc``,
    dims (time, y, x), 2-D lat/lon and cell area coordinates."""
    time = pd.date_range(start, end, freq="MS")
    x, y, lat, lon, area = polar_stereographic_grid(resolution_m)
    rng = np.random.default_rng(seed)
    month = time.month.values
    years = time.year.values - 1979 + (month - 1) / 12
    season = -np.cos(2 * np.pi * (month - 3) / 12)  # -1 in March, +1 in September
    mean_edge = 70.0 + 8.0 * season
    trend = (0.03 + 0.05 * (season + 1) / 2) * years  # degrees north per year, faster in summer
    phi = np.exp(-1 / 5)
    modes = np.zeros((len(time), 3))
    for i in range(1, len(time)):
        modes[i] = phi * modes[i - 1] + np.sqrt(1 - phi**2) * rng.normal(0, [0.9, 0.7, 0.7])
    lon_r = np.deg2rad(lon)
    inflow, cos_lon, sin_lon = 5.0 * np.cos(np.deg2rad(lon - 20.0)), np.cos(lon_r), np.sin(lon_r)
    land = _arctic_land(lat, lon)
    conc = np.empty((len(time), *lat.shape), dtype="float32")
    for i in range(len(time)):  # month by month: the same arithmetic and draws, in cache-sized pieces
        atlantic = inflow * (1 - 0.4 * season[i])  # warm Atlantic inflow
        edge = (mean_edge[i] + trend[i]) + atlantic + (modes[i, 0] + modes[i, 1] * cos_lon + modes[i, 2] * sin_lon)
        month_conc = 0.98 / (1 + np.exp(-(lat - edge) / 1.2))
        conc[i] = np.clip(month_conc + rng.normal(0, 0.02, lat.shape), 0, 1)
        conc[i][land] = np.nan
    ds = xr.Dataset(
        {"cdr_seaice_conc": (("time", "y", "x"), conc, {
            "long_name": "NOAA/NSIDC Climate Data Record of Passive Microwave Sea Ice Concentration (toy)",
            "standard_name": "sea_ice_area_fraction", "units": "1"})},
        coords={
            "time": time,
            "y": ("y", y, {"units": "m", "standard_name": "projection_y_coordinate"}),
            "x": ("x", x, {"units": "m", "standard_name": "projection_x_coordinate"}),
            "lat": (("y", "x"), lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": (("y", "x"), lon, {"units": "degrees_east", "standard_name": "longitude"}),
            "cell_area": (("y", "x"), area, {"units": "m2", "long_name": "grid cell area on the sphere"}),
        },
        attrs={"title": "climate-ml toy sea ice on the NSIDC polar stereographic grid",
               "grid": f"NSIDC north polar stereographic (true at {TRUE_LAT}N, central meridian 45W), "
                       f"{resolution_m / 1000:.0f} km, spherical earth",
               "source": "climate_ml.synthetic.toy_sea_ice (synthetic)", "license": "MIT", "seed": seed},
    )
    return ds


def write_toy_sea_ice(path: str | Path, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    toy_sea_ice(**kwargs).to_netcdf(tmp, format="NETCDF4", encoding={
        "time": {"units": "days since 1978-01-01", "dtype": "float64"},
        "cdr_seaice_conc": {"zlib": True, "complevel": 1, "_FillValue": np.float32(np.nan)}})
    tmp.replace(path)
    return path


GENERATORS["toy-sea-ice"] = write_toy_sea_ice


# --- embedded precipitation default --------------------------------------------------------

# Statewide monthly mean precipitation (mm, Jan..Dec), roughly like the 1950-2024 nClimDiv
# means, and the ENSO response of the wet season (per standard deviation of Nino 3.4): wetter
# in the south-west in El Nino winters, drier in the Pacific Northwest.
_WEST_CLIMATE = {
    "002": ((25, 24, 24, 10, 5, 5, 50, 55, 30, 22, 18, 26), 0.22),  # Arizona
    "004": ((105, 95, 80, 35, 15, 5, 3, 4, 10, 30, 62, 98), 0.20),  # California
    "026": ((25, 24, 24, 16, 16, 9, 10, 10, 10, 14, 19, 23), 0.12),  # Nevada
    "035": ((155, 120, 115, 75, 55, 40, 15, 17, 35, 80, 160, 165), -0.10),  # Oregon
    "045": ((160, 120, 120, 80, 60, 45, 20, 25, 45, 100, 170, 170), -0.12),  # Washington
}
_ENSO_SEASON = np.array([1.0, 1.0, 0.8, 0.4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.7, 1.0])  # Jan..Dec


def toy_precip(start: str = "1950-01", end: str = "2024-12", seed: int = 42, shape: float = 1.6) -> xr.Dataset:
    """Monthly statewide precipitation (mm) for five western states, driven by the toy ocean's
    ENSO (the same recharge-oscillator run as ``toy_ocean`` with the same seed and start):
    gamma-distributed totals around a wet-season climatology, scaled by exp(b * w(month) *
    Nino3.4 / sd), plus a persistent (AR1, 2-month memory) regional anomaly common to all states.
    With the default shape the Nov-Mar California total correlates with Sep-Oct Nino 3.4 at about
    0.3, i.e. a weak teleconnection like the observed one."""
    time = pd.date_range(start, end, freq="MS")
    n = len(time)
    enso, _ = recharge_oscillator(n, seed=seed)
    enso = enso / enso.std()
    rng = np.random.default_rng(seed + 2)
    month = time.month.values - 1
    regional = np.zeros(n)
    for i in range(1, n):
        regional[i] = np.exp(-1 / 2) * regional[i - 1] + np.sqrt(1 - np.exp(-1)) * rng.normal(0, 0.25)
    data = {}
    for state, (clim, response) in _WEST_CLIMATE.items():
        mean = np.asarray(clim, dtype=float)[month] * np.exp(response * _ENSO_SEASON[month] * enso + regional)
        data[state] = rng.gamma(shape, mean / shape)
    ds = xr.Dataset({f"precip_{s}": ("time", v, {"units": "mm"}) for s, v in data.items()}, coords={"time": time})
    ds.attrs = {"source": "climate_ml.synthetic.toy_precip (synthetic)", "seed": seed}
    return ds


def write_toy_precip(path: str | Path, **kwargs) -> Path:
    """Write the toy precipitation as an nClimDiv statewide text file (inches, 2 decimals, the
    10-character id of state, division 0, element 01 and year; -9.99 pads the last year)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = toy_precip(**kwargs)
    time = pd.DatetimeIndex(ds["time"].values)
    lines = []
    for state in sorted(_WEST_CLIMATE):
        inches = ds[f"precip_{state}"].values / 25.4
        for year in range(time[0].year, time[-1].year + 1):
            row = np.full(12, -9.99)
            sel = time.year == year
            row[time.month[sel] - 1] = inches[sel]
            lines.append(f"{state}001{year}" + "".join(f"{v:7.2f}" for v in row) + "   ")
    tmp = path.with_name(path.name + ".part")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


GENERATORS["toy-california-precip"] = write_toy_precip


# --- OISST-like daily global field (the scale benchmark) --------------------------------------

OISST_FILL = np.float32(-9.96921e36)


def write_oisst_like(folder: str | Path, years, resolution: float = 0.25, seed: int = 0) -> list[Path]:
    """A daily global SST field in the layout NOAA PSL serves OISST v2.1 in: one NetCDF4 file per
    year, ``sst.day.mean.YYYY.nc``, variable ``sst`` (float32, degC, land as -9.96921e36), ``lat``
    ascending from -89.875, ``lon`` 0.125..359.875, ``time`` in days since 1800-01-01, HDF5 chunks
    of one day. Unlike PSL's files these are not deflated, so their size on disk is the size of the
    data (0.25 degree: 1.51 GB a year). The field is a zonal climatology with a seasonal cycle, a
    daily-interpolated recharge-oscillator ENSO on an eastern-Pacific pattern, weather noise and
    crude continents. Written day block by day block: memory stays near one month of data."""
    import netCDF4

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    years = list(years)
    lat = np.arange(-90 + resolution / 2, 90, resolution)
    lon = np.arange(resolution / 2, 360, resolution)
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    days = pd.date_range(f"{years[0]}-01-01", f"{years[-1]}-12-31", freq="D")
    months = pd.date_range(days[0], days[-1], freq="MS")
    enso, _ = recharge_oscillator(len(months) + 1, seed=seed)
    enso = 0.9 * enso / enso.std()
    # the monthly index at mid-month, interpolated to days
    mid = (months + pd.Timedelta(days=14)).append(pd.DatetimeIndex([months[-1] + pd.DateOffset(months=1, days=14)]))
    enso_daily = np.interp(days.asi8, mid.asi8, enso).astype("float32")
    pattern = (np.exp(-((lat2 / 8.0) ** 2)) * np.exp(-(((lon2 - 245.0) / 35.0) ** 2))).astype("float32")
    climatology = (28.0 - 30.0 * (np.abs(lat2) / 90.0) ** 1.5 - 2.0 * pattern).astype("float32")
    amplitude = (0.3 + 0.06 * np.abs(lat2)).astype("float32") * np.where(lat2 >= 0, -1.0, 1.0).astype("float32")
    land = (((lon2 > 250) & (lon2 < 300) & (lat2 > 15) & (lat2 < 70)) | ((lon2 > 280) & (lon2 < 320) & (lat2 < 5)
            & (lat2 > -50)) | ((lon2 > 10) & (lon2 < 140) & (lat2 > 10) & (lat2 < 70)) | ((lon2 > 10) & (lon2 < 45)
            & (lat2 < 10) & (lat2 > -35)) | ((lon2 > 115) & (lon2 < 150) & (lat2 < -15) & (lat2 > -38)) | (lat2 < -70))
    rng = np.random.default_rng(seed + 1)
    noise_bank = rng.normal(0.0, 0.3, (8, *lat2.shape)).astype("float32")  # cycled: cheap to write
    paths = []
    for year in years:
        path = folder / f"sst.day.mean.{year}.nc"
        tmp = path.with_name(path.name + ".part")
        in_year = np.flatnonzero(days.year == year)
        with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
            nc.title = "NOAA/NCEI 1/4 Degree Daily Optimum Interpolation Sea Surface Temperature (OISST) Analysis, " \
                       "Version 2.1 layout (synthetic, climate-ml scale benchmark)"
            nc.Conventions = "CF-1.5"
            nc.createDimension("time", None)
            nc.createDimension("lat", len(lat))
            nc.createDimension("lon", len(lon))
            for name, values, units in (("lat", lat, "degrees_north"), ("lon", lon, "degrees_east")):
                v = nc.createVariable(name, "f4", (name,))
                v[:] = values
                v.units = units
            t = nc.createVariable("time", "f8", ("time",))
            t.units, t.calendar, t.standard_name = "days since 1800-01-01 00:00:00", "standard", "time"
            t[:] = (days[in_year] - pd.Timestamp("1800-01-01")).days.values.astype("float64")
            sst = nc.createVariable("sst", "f4", ("time", "lat", "lon"), chunksizes=(1, len(lat), len(lon)),
                                    fill_value=OISST_FILL)
            sst.units, sst.long_name = "degC", "Daily Sea Surface Temperature"
            sst.missing_value = OISST_FILL
            for start in range(0, len(in_year), 31):
                idx = in_year[start:start + 31]
                doy = days[idx].day_of_year.values.astype("float32")[:, None, None]
                block = (climatology[None] + amplitude[None] * np.cos(2 * np.pi * (doy - 60) / 365.25)
                         + enso_daily[idx][:, None, None] * pattern[None] + noise_bank[idx % len(noise_bank)])
                block[:, land] = OISST_FILL
                sst[start:start + len(idx)] = block
        tmp.replace(path)
        paths.append(path)
    return paths
