"""The forecast archive: ``archive/<problem>.zarr``, one Zarr group per model.

Each group holds ``forecast(init_time, lead)`` with ``valid_time(init_time, lead)`` and
provenance attributes. Writing the same forecast again changes nothing; a new init is merged
in; a different forecast for an init already archived replaces it only with ``replace=True``.
Every write builds the new group beside the old one and swaps it in under a lock.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.errors import QueryError, StoreError
from climate_ml.schema import INIT, LEAD, MODEL, VALID, add_valid_time, validate_forecast
from climate_ml.store import discard, locked, recover, swap_in, temp_beside

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def archive_path(root: Path, problem: str) -> Path:
    return root / "archive" / f"{problem}.zarr"


def _model_dir(root: Path, problem: str, model: str) -> Path:
    if not _NAME.match(model):
        raise QueryError(f"invalid model name {model!r}")
    return archive_path(root, problem) / model


def write_forecast(
    root: Path, problem: str, model: str, forecast: xr.DataArray, attrs: dict, replace: bool = False
) -> str:
    """Merge ``forecast(init_time, lead)`` into the archive. Returns "created", "updated" or
    "unchanged"."""
    validate_forecast(forecast)
    target = _model_dir(root, problem, model)
    with locked(root, f"archive-{problem}-{model}"):
        recover(target)
        new = forecast.rename("forecast").to_dataset()
        if target.exists():
            old = xr.open_zarr(target, consolidated=False).load()
            common = pd.DatetimeIndex(new[INIT].values).intersection(pd.DatetimeIndex(old[INIT].values))
            if len(common):
                a = old["forecast"].sel({INIT: common})
                b = new["forecast"].sel({INIT: common}).reindex_like(a)
                if not np.allclose(a.values, b.values, equal_nan=True, atol=1e-9):
                    if not replace:
                        raise StoreError(
                            f"{target}: a different {model} forecast for init {common[0]:%Y-%m} is archived; "
                            "pass replace=True (--replace) to overwrite it"
                        )
                elif len(common) == new.sizes[INIT]:
                    return "unchanged"
            keep = old.drop_sel({INIT: common}) if len(common) else old
            merged = xr.concat([keep[["forecast"]], new[["forecast"]]], dim=INIT).sortby(INIT)
            action = "updated"
        else:
            merged = new[["forecast"]]
            action = "created"
        merged = add_valid_time(merged.drop_vars(VALID, errors="ignore"))
        merged.attrs = {k: _attr(v) for k, v in attrs.items()}
        merged[LEAD].attrs["units"] = "months"
        tmp = temp_beside(target)
        try:
            merged.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
            swap_in(tmp, target)
        except BaseException:
            discard(tmp)
            raise
        return action


def _attr(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_attr(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _attr(x) for k, x in v.items()}
    return str(v)


def list_models(root: Path, problem: str) -> list[str]:
    path = archive_path(root, problem)
    if not path.exists():
        return []
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and not p.name.endswith(".old"))


def parse_init_range(text: str | None) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """``YYYY-MM``, ``YYYY-MM:YYYY-MM``, ``:YYYY-MM`` or ``YYYY-MM:``."""
    if not text:
        return None, None
    parts = text.split(":")
    if len(parts) > 2:
        raise QueryError(f"bad --init {text!r}: expected YYYY-MM or YYYY-MM:YYYY-MM")
    if len(parts) == 1:
        parts = [parts[0], parts[0]]
    out = []
    for p in parts:
        if p == "":
            out.append(None)
            continue
        if not re.fullmatch(r"\d{4}-\d{2}", p) or not 1 <= int(p[5:]) <= 12:
            raise QueryError(f"bad --init {text!r}: {p!r} is not YYYY-MM")
        out.append(pd.Timestamp(p + "-01"))
    if out[0] is not None and out[1] is not None and out[1] < out[0]:
        raise QueryError(f"bad --init {text!r}: end before start")
    return out[0], out[1]


def query(
    root: Path,
    problem: str,
    model: str | None = None,
    init: str | None = None,
    lead: int | None = None,
) -> xr.Dataset:
    """Archived forecasts as a Dataset with dims (model, init_time, lead)."""
    models = list_models(root, problem)
    if not models:
        raise QueryError(f"no forecasts archived for problem {problem!r} in {root}")
    if model is not None:
        if model not in models:
            raise QueryError(f"no forecasts from model {model!r} for {problem!r} (archived: {', '.join(models)})")
        models = [model]
    start, end = parse_init_range(init)
    parts = []
    for m in models:
        ds = xr.open_zarr(_model_dir(root, problem, m), consolidated=False).load()
        ds = ds.sel({INIT: slice(start, end)})
        if lead is not None:
            if lead not in ds[LEAD].values:
                raise QueryError(f"lead {lead} not archived (leads: {ds[LEAD].values.min()}..{ds[LEAD].values.max()})")
            ds = ds.sel({LEAD: [lead]})
        parts.append(ds.drop_vars(VALID).expand_dims({MODEL: [m]}))
    out = add_valid_time(xr.concat(parts, dim=MODEL, join="outer", combine_attrs="drop", coords="minimal"))
    out["forecast"].attrs.update(units="degC", long_name=f"{problem} forecast")
    out.attrs = {"problem": problem}
    return out


def to_records(ds: xr.Dataset) -> pd.DataFrame:
    df = ds["forecast"].to_dataframe().reset_index()
    df = df.dropna(subset=["forecast"])
    df[INIT] = pd.to_datetime(df[INIT]).dt.strftime("%Y-%m")
    df[VALID] = pd.to_datetime(df[VALID]).dt.strftime("%Y-%m")
    return df[[MODEL, INIT, LEAD, VALID, "forecast"]].sort_values([MODEL, INIT, LEAD]).reset_index(drop=True)


def export(ds: xr.Dataset, fmt: str) -> bytes:
    """Serialise a query result as csv, json or netcdf."""
    if fmt == "csv":
        return to_records(ds).to_csv(index=False, float_format="%.4f").encode()
    if fmt == "json":
        return json.dumps(to_records(ds).round(4).to_dict(orient="records")).encode()
    if fmt == "netcdf":
        out = ds.copy()
        out.attrs = {k: v if isinstance(v, str) else json.dumps(v) for k, v in out.attrs.items()}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "query.nc"
            out.to_netcdf(path, format="NETCDF4")
            return path.read_bytes()
    raise QueryError(f"unknown format {fmt!r} (csv, json, netcdf)")
