"""Named regions (boxes in canonical lat / lon [0, 360)) and their area-weighted means."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from climate_ml.errors import QueryError


@dataclass(frozen=True)
class Box:
    name: str
    lat: tuple[float, float]
    lon: tuple[float, float]  # degrees east in [0, 360); lon[0] > lon[1] wraps through 0
    description: str = ""

    def mask(self, lat: xr.DataArray, lon: xr.DataArray) -> xr.DataArray:
        in_lat = (lat >= self.lat[0]) & (lat <= self.lat[1])
        if self.lon[0] <= self.lon[1]:
            in_lon = (lon >= self.lon[0]) & (lon <= self.lon[1])
        else:
            in_lon = (lon >= self.lon[0]) | (lon <= self.lon[1])
        return in_lat & in_lon


REGIONS: dict[str, Box] = {
    b.name: b
    for b in [
        Box("nino34", (-5.0, 5.0), (190.0, 240.0), "Nino 3.4: 5S-5N, 170W-120W"),
        Box("nino3", (-5.0, 5.0), (210.0, 270.0), "Nino 3: 5S-5N, 150W-90W"),
        Box("nino4", (-5.0, 5.0), (160.0, 210.0), "Nino 4: 5S-5N, 160E-150W"),
        Box("nino12", (-10.0, 0.0), (270.0, 280.0), "Nino 1+2: 10S-0, 90W-80W"),
        Box("california", (32.0, 42.0), (235.0, 246.0), "California: 32N-42N, 125W-114W"),
        Box("arctic", (60.0, 90.0), (0.0, 359.999), "Arctic: north of 60N"),
        Box("tropical_pacific", (-30.0, 30.0), (120.0, 290.0), "Tropical Pacific: 30S-30N, 120E-70W"),
        Box("pacific", (-30.0, 60.0), (120.0, 290.0), "Pacific: 30S-60N, 120E-70W"),
    ]
}


def get_region(name: str) -> Box:
    if name not in REGIONS:
        raise QueryError(f"unknown region {name!r} (known: {', '.join(REGIONS)})")
    return REGIONS[name]


def box_mean(da: xr.DataArray, region: str | Box) -> xr.DataArray:
    """Area-weighted (cos latitude) mean over a box, ignoring NaN (land). Lazy for Dask input.
    A region with no grid cell inside is an error, not a silent NaN series."""
    box = get_region(region) if isinstance(region, str) else region
    m = box.mask(da["lat"], da["lon"])
    if not bool(m.any()):
        raise QueryError(f"region {box.name!r} contains no grid cell of this dataset")
    lat_idx = np.flatnonzero(m.any("lon").values)
    lon_idx = np.flatnonzero(m.any("lat").values)
    sub = da.isel(lat=lat_idx, lon=lon_idx)
    weights = np.cos(np.deg2rad(sub["lat"])).broadcast_like(sub.isel(time=0, drop=True))
    weights = weights.where(m.isel(lat=lat_idx, lon=lon_idx))
    valid = sub.notnull()
    num = (sub.fillna(0) * weights.fillna(0)).sum(["lat", "lon"])
    den = (valid * weights.fillna(0)).sum(["lat", "lon"])
    out = num / den
    out.attrs = {"units": da.attrs.get("units", ""), "long_name": f"{box.name} area mean", "region": box.name}
    return out


def region_mean(da: xr.DataArray, region: str | Box) -> xr.DataArray:
    """The region's area mean of a gridded field, on a lat/lon grid (``box_mean``) or on a
    projected grid with 2-D ``lat``/``lon`` (the NSIDC polar grid: weighted by ``cell_area``
    where the data set has it, else by cos latitude). A series without a grid is an error."""
    box = get_region(region) if isinstance(region, str) else region
    if "lat" in da.dims:
        return box_mean(da, box)
    if "lat" not in da.coords or da["lat"].ndim != 2:
        raise QueryError(f"variable {da.name!r} has no lat/lon grid (dims: {', '.join(map(str, da.dims))}): "
                         "an area mean needs a gridded field")
    grid = list(da["lat"].dims)
    inside = box.mask(da["lat"], da["lon"]).compute()
    if not bool(inside.any()):
        raise QueryError(f"region {box.name!r} contains no grid cell of this dataset")
    area = da["cell_area"] if "cell_area" in da.coords else np.cos(np.deg2rad(da["lat"]))
    weights = area.where(inside, 0.0)
    valid = da.notnull()
    out = (da.fillna(0) * weights).sum(grid) / (valid * weights).sum(grid)
    out.attrs = {"units": da.attrs.get("units", ""), "long_name": f"{box.name} area mean", "region": box.name}
    return out


def parse_box(text: str, what: str = "box") -> Box:
    """A region for map queries: a name from ``REGIONS`` or ``lat_min,lat_max,lon_min,lon_max`` in
    degrees (longitudes east, -180..360; lon_min > lon_max wraps through 0). One-line QueryError
    otherwise, naming the parameter as ``what``."""
    text = str(text).strip()
    if text in REGIONS:
        return REGIONS[text]
    parts = text.split(",")
    try:
        lat0, lat1, lon0, lon1 = (float(p) for p in parts)
    except ValueError:
        raise QueryError(f"bad {what} {text[:60]!r}: give lat_min,lat_max,lon_min,lon_max in degrees "
                         f"(e.g. 70,90,0,360) or a region ({', '.join(REGIONS)})") from None
    if not (-90 <= lat0 < lat1 <= 90):
        raise QueryError(f"bad {what} {text!r}: latitudes must satisfy -90 <= lat_min < lat_max <= 90")
    if not all(np.isfinite(v) and -180 <= v <= 360 for v in (lon0, lon1)):
        raise QueryError(f"bad {what} {text!r}: longitudes must lie in -180..360 degrees east")
    if lon1 - lon0 >= 360:
        lon = (0.0, 360.0)
    else:
        lon = (lon0 % 360, lon1 % 360 if lon1 % 360 or lon1 == 0 else 360.0)
    return Box(f"{lat0:g},{lat1:g},{lon0:g},{lon1:g}", (lat0, lat1), lon)
