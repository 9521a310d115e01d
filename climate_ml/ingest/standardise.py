"""Bring a freshly opened source into the canonical observation schema (see schema.py)."""

from __future__ import annotations

import re

import numpy as np
import xarray as xr

from climate_ml.errors import IngestError, SchemaError
from climate_ml.schema import (
    LAT,
    LON,
    TIME,
    X,
    Y,
    check_plausible,
    month_start,
    unit_conversion,
    validate_obs,
)

CF_NAME = re.compile(r"[a-z][a-z0-9_]*")  # the syntax of a CF standard name

_DIM_ALIASES = {
    "latitude": LAT, "nav_lat": LAT, "y_lat": LAT, "Y": LAT,
    "longitude": LON, "nav_lon": LON, "X": LON,
    "T": TIME, "month": TIME, "date": TIME,
}


def _plausible(values, units: str, where: str):
    try:
        return check_plausible(values, units, where)
    except SchemaError as exc:
        raise IngestError(str(exc)) from exc


def standardise(
    ds: xr.Dataset,
    variable: str,
    units: str | None = None,
    name: str | None = None,
    standard_name: str | None = None,
    land_value: float | None = None,
    source: str = "",
    anomaly: bool = False,
) -> xr.Dataset:
    """Canonical observations: dims (time[, lat, lon]); time = first of month; lat ascending;
    lon in [0, 360) ascending; values in canonical units (degC for SST); land/fill as NaN.

    ``units`` overrides the file's own units attribute (catalog entries declare them); the two
    must agree when both are given, so a wrongly labelled file is caught.
    """
    where = f"{source}: " if source else ""
    if variable not in ds:
        raise IngestError(f"{where}variable {variable!r} not found")
    da = ds[variable]
    da = da.rename({d: _DIM_ALIASES[d] for d in da.dims if d in _DIM_ALIASES})
    if TIME not in da.dims:
        raise IngestError(f"{where}variable {variable!r} has no time dimension (dims: {da.dims})")
    extra = [d for d in da.dims if d not in (TIME, LAT, LON, Y, X)]
    for d in extra:  # singleton level dims (e.g. lev=0) are dropped; others are an error
        if da.sizes[d] != 1:
            raise IngestError(f"{where}variable {variable!r} has unexpected dimension {d!r}")
        da = da.isel({d: 0}, drop=True)

    file_units = da.attrs.get("units")
    declared = units or file_units
    if declared is None:
        raise IngestError(f"{where}variable {variable!r} has no units (declare them with --units)")
    try:
        canonical, scale, offset = unit_conversion(declared)
        if units and file_units and unit_conversion(file_units) != (canonical, scale, offset):
            raise IngestError(
                f"{where}variable {variable!r} is in {file_units!r} but the catalog declares {units!r}"
            )
    except SchemaError as exc:
        raise IngestError(f"{where}variable {variable!r}: {exc}") from exc

    try:
        times = month_start(da[TIME].values)
    except SchemaError as exc:
        raise IngestError(f"{where}{exc}") from exc

    # Stays lazy for Dask-backed input: the file is streamed chunk by chunk into Zarr.
    out = da.astype("float32")
    if land_value is not None and LAT in out.dims:
        # A cell that holds the land code at every time step is land.
        is_land = (out == np.float32(land_value)).all(TIME)
        out = out.where(~is_land)
    if scale != 1.0 or offset != 0.0:
        out = out * np.float32(scale) + np.float32(offset)
    # plausibility, checked block by block as the data stream into the store (nothing is read twice)
    label = f"{where}variable {variable!r} "
    if out.chunks is not None:
        out = out.copy(data=out.data.map_blocks(_plausible, canonical, label, dtype=out.dtype))
    else:
        _plausible(out.values, canonical, label)
    # 2-D coordinates of projected grids (lat, lon, cell_area over y/x) travel with the data
    grid_coords = {c: da[c] for c in da.coords
                   if c not in da.dims and da[c].dims and set(da[c].dims) <= {Y, X} and Y in da.dims}
    out = out.drop_vars([c for c in out.coords if c not in out.dims])
    out = out.assign_coords({TIME: times, **{d: da[d].values for d in out.dims if d != TIME}})
    for c, v in grid_coords.items():
        values = v.values % 360.0 if c == LON else v.values
        out = out.assign_coords({c: (v.dims, values, dict(v.attrs))})
    if LON in out.dims:
        out = out.assign_coords({LON: (out[LON].values % 360.0).astype("float64")}).sortby(LON)
        if np.unique(out[LON].values).size != out.sizes[LON]:
            raise IngestError(f"{where}duplicate longitudes after wrapping to [0, 360)")
    if LAT in out.dims:
        out = out.assign_coords({LAT: out[LAT].values.astype("float64")}).sortby(LAT)
    out = out.transpose(TIME, *[d for d in (LAT, LON, Y, X) if d in out.dims])

    keep = {k: v for k, v in da.attrs.items() if k in ("long_name", "standard_name", "comment", "cell_methods")}
    if "standard_name" in keep and not CF_NAME.fullmatch(str(keep["standard_name"])):
        # e.g. "Sea Surface temperature": not a CF standard name; kept for the record only
        keep["source_standard_name"] = keep.pop("standard_name")
    keep["units"] = canonical
    if standard_name:
        keep["standard_name"] = standard_name
    if anomaly:
        keep["anomaly"] = "departure from the producer's climatology (declared by the catalog)"
    keep["source_variable"] = variable
    keep["source_units"] = str(declared)
    out.attrs = keep
    name = name or variable
    result = out.to_dataset(name=name)
    result[TIME].attrs.update(standard_name="time", long_name="first day of the month")
    if LAT in result.dims:
        result[LAT].attrs.update(units="degrees_north", standard_name="latitude")
    if LON in result.dims:
        result[LON].attrs.update(units="degrees_east", standard_name="longitude")
    try:
        return validate_obs(result)
    except SchemaError as exc:
        raise IngestError(f"{where}{exc}") from exc
