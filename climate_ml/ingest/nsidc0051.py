"""NSIDC-0051 (NASA Team sea-ice concentration) monthly files in NSIDC's own flat binary format.

A folder of ``nt_YYYYMM_<sensor>_v1.1_n.bin`` files (one per month; the sensor, e.g. n07, f08,
f11, f13, f17, is part of the name) with NSIDC's grid files ``psn25lats_v3.dat``,
``psn25lons_v3.dat`` and ``psn25area_v3.dat``. Each month is a 300-byte ASCII header and then
448 rows x 304 columns of uint8, top row first: 0-250 concentration x 250, 251 the pole hole
(no satellite coverage near the pole), 252 unused, 253 coast, 254 land, 255 missing. The grid
files are little-endian int32: latitude and longitude in degrees x 1e5, cell area in km^2 x 1000.

The pole hole shrinks with each sensor (1799 cells with SMMR to 1987-08, 468 with SSM/I, 44 with
SSMIS from 2008). Left as it is, a shrinking hole would look like a change in the ice. Every
cell that is pole hole in any month read is therefore ice (concentration 1) in every month, as
NSIDC counts the hole as ice for extent: the same cells are filled whatever the sensor. Land
and coast are NaN; missing values too.
"""

from __future__ import annotations

import re
from pathlib import Path

import dask.array as dsa
import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.errors import IngestError

NY, NX, HEADER = 448, 304, 300
POLE_HOLE, UNUSED, COAST, LAND, MISSING = 251, 252, 253, 254, 255
FILE = re.compile(r"nt_(\d{4})(\d{2})_([a-z]\d{2})_v1\.1_n\.bin")
GRID_FILES = {"lat": "psn25lats_v3.dat", "lon": "psn25lons_v3.dat", "cell_area": "psn25area_v3.dat"}


def is_nsidc0051_folder(path: Path) -> bool:
    return path.is_dir() and any(FILE.fullmatch(p.name) for p in path.iterdir())


def _grid(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for name, file in GRID_FILES.items():
        path = folder / file
        if not path.is_file():
            raise IngestError(f"{folder}: grid file {file} is missing (NSIDC-0051 needs psn25lats_v3.dat, "
                              "psn25lons_v3.dat and psn25area_v3.dat beside the monthly files)")
        raw = np.fromfile(path, dtype="<i4")
        if raw.size != NY * NX:
            raise IngestError(f"{path}: {raw.size} values, expected {NY} x {NX} little-endian int32")
        out[name] = raw.reshape(NY, NX).astype("float64")
    out["lat"] /= 1e5
    out["lon"] = (out["lon"] / 1e5) % 360.0
    out["cell_area"] *= 1e3  # km^2 x 1000 -> m^2
    return out


def _months(folder: Path) -> tuple[pd.DatetimeIndex, list[Path], list[str]]:
    found: dict[pd.Timestamp, tuple[Path, str]] = {}
    for p in sorted(folder.iterdir()):
        m = FILE.fullmatch(p.name)
        if not m:
            continue
        t = pd.Timestamp(f"{m[1]}-{m[2]}-01")
        if t in found:
            raise IngestError(f"{folder}: two files for {t:%Y-%m} ({found[t][0].name}, {p.name})")
        found[t] = (p, m[3])
    if not found:
        raise IngestError(f"{folder}: no NSIDC-0051 monthly files (nt_YYYYMM_<sensor>_v1.1_n.bin)")
    times = pd.DatetimeIndex(sorted(found))
    return times, [found[t][0] for t in times], [found[t][1] for t in times]


def _read(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if len(raw) != HEADER + NY * NX:
        raise IngestError(f"{path}: {len(raw)} bytes, expected {HEADER + NY * NX} (a 300-byte header and "
                          f"{NY} x {NX} bytes): truncated or not an NSIDC-0051 file")
    return np.frombuffer(raw, dtype=np.uint8, offset=HEADER).reshape(NY, NX)


def _decode(codes: np.ndarray, hole: np.ndarray) -> np.ndarray:
    conc = codes.astype("float32") / 250.0
    conc[codes > 250] = np.nan  # unused, coast, land, missing
    conc[:, hole] = 1.0  # the largest pole hole of the record is ice in every month
    return conc


def open_nsidc0051(folder: Path, variable: str = "seaice_conc") -> xr.Dataset:
    """The folder's months as ``variable(time, y, x)`` (fraction 0-1) on the 25 km polar
    stereographic grid, with 2-D lat/lon and cell area (m^2), lazily decoded by Dask."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestError(f"{folder}: NSIDC-0051 data are a folder of monthly .bin files with the grid files")
    grid = _grid(folder)
    times, files, sensors = _months(folder)
    codes = np.stack([_read(p) for p in files])  # uint8: 136 kB a month
    hole = (codes == POLE_HOLE).any(axis=0)
    conc = dsa.from_array(codes, chunks=(120, NY, NX)).map_blocks(_decode, hole, dtype="float32")
    changes = [k for k in range(len(sensors)) if k == 0 or sensors[k] != sensors[k - 1]]
    spans = [f"{sensors[k]} {times[k]:%Y-%m}..{times[(changes + [len(times)])[i + 1] - 1]:%Y-%m}"
             for i, k in enumerate(changes)]
    x = -3_850_000.0 + 12_500.0 + 25_000.0 * np.arange(NX)
    y = 5_850_000.0 - 12_500.0 - 25_000.0 * np.arange(NY)
    return xr.Dataset(
        {variable: (("time", "y", "x"), conc, {
            "long_name": "sea-ice concentration, NASA Team algorithm (NSIDC-0051)", "units": "1",
            "standard_name": "sea_ice_area_fraction",
            "pole_hole": f"{int(hole.sum())} cells (the largest pole hole of these months) set to 1 (ice) in every month"})},
        coords={
            "time": times,
            "y": ("y", y, {"units": "m", "standard_name": "projection_y_coordinate"}),
            "x": ("x", x, {"units": "m", "standard_name": "projection_x_coordinate"}),
            "lat": (("y", "x"), grid["lat"], {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": (("y", "x"), grid["lon"], {"units": "degrees_east", "standard_name": "longitude"}),
            "cell_area": (("y", "x"), grid["cell_area"], {"units": "m2", "long_name": "grid cell area (NSIDC psn25area)"}),
        },
        attrs={"title": "NSIDC-0051 sea-ice concentration, Northern Hemisphere monthly means",
               "sensors": "; ".join(spans),
               "grid": "NSIDC polar stereographic north, 25 km, 304 x 448 (true at 70N, central meridian 45W)"},
    )
