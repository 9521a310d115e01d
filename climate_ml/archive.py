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
from climate_ml.schema import INIT, LEAD, MEMBER, MODEL, VALID, add_valid_time, validate_forecast
from climate_ml.store import (
    NETCDF_LOCK,
    check_name,
    discard,
    locked,
    recover,
    swap_in,
    sweep_temporaries,
    temp_beside,
)

MIN_YEAR, MAX_YEAR = 1678, 2261  # what datetime64[ns] can hold, whole years


def archive_path(root: Path, problem: str) -> Path:
    return root / "archive" / f"{check_name(problem, 'problem')}.zarr"


def default_dataset(problem: str) -> str:
    """The data set a problem's commands use when none is named (its embedded default)."""
    from climate_ml.problems import get_problem

    return get_problem(problem).default_dataset


def _model_dir(root: Path, problem: str, model: str, dataset: str | None = None) -> Path:
    """``archive/<problem>.zarr/<dataset>/<model>``: forecasts made on different data sets (the
    toy default and a real record, say) never share a group."""
    try:
        return (archive_path(root, problem) / check_name(dataset or default_dataset(problem))
                / check_name(model, "model"))
    except StoreError as exc:
        raise QueryError(str(exc)) from exc


def _lock_key(problem: str, model: str, dataset: str | None) -> str:
    return f"archive-{problem}-{dataset or default_dataset(problem)}-{model}"


def write_forecast(
    root: Path, problem: str, model: str, forecast: xr.DataArray, attrs: dict, replace: bool = False,
    dataset: str | None = None,
) -> str:
    """Merge ``forecast(init_time, lead)`` into the archive under its data set (``dataset``,
    else ``attrs['dataset']``, else the problem's default). Returns "created", "updated" or
    "unchanged"."""
    validate_forecast(forecast)
    dataset = dataset or attrs.get("dataset") or default_dataset(problem)
    target = _model_dir(root, problem, model, dataset)
    with locked(root, _lock_key(problem, model, dataset)):
        recover(target)
        sweep_temporaries(target)
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


def _groups(path: Path) -> list[str]:
    if not path.exists():
        return []
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and not p.name.endswith(".old"))


def list_datasets(root: Path, problem: str) -> list[str]:
    """The data sets a problem has archived forecasts for."""
    return _groups(archive_path(root, problem))


def list_models(root: Path, problem: str, dataset: str | None = None) -> list[str]:
    return _groups(archive_path(root, problem) / check_name(dataset or default_dataset(problem)))


def parse_init_range(text: str | None) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """``YYYY-MM``, ``YYYY`` (the whole year), ``A:B`` with A and B either form, ``:B`` or ``A:``."""
    if not text:
        return None, None
    parts = text.split(":")
    if len(parts) > 2:
        raise QueryError(f"bad init {text!r}: expected YYYY-MM, YYYY or a range A:B of them")
    if len(parts) == 1:
        parts = [parts[0], parts[0]]
    out = []
    for k, p in enumerate(parts):
        if p == "":
            out.append(None)
            continue
        if not re.fullmatch(r"\d{4}(-\d{2})?", p) or (len(p) == 7 and not 1 <= int(p[5:]) <= 12):
            raise QueryError(f"bad init {text!r}: {p!r} is not YYYY-MM or YYYY")
        if not MIN_YEAR <= int(p[:4]) <= MAX_YEAR:
            raise QueryError(f"bad init {text!r}: year {p[:4]} is outside {MIN_YEAR}..{MAX_YEAR}")
        if len(p) == 4:  # a year: from its January, or up to its December
            p = f"{p}-01" if k == 0 else f"{p}-12"
        out.append(pd.Timestamp(p + "-01"))
    if out[0] is not None and out[1] is not None and out[1] < out[0]:
        raise QueryError(f"bad init {text!r}: end before start")
    return out[0], out[1]


def query(
    root: Path,
    problem: str,
    model: str | None = None,
    init: str | None = None,
    lead: int | None = None,
    dataset: str | None = None,
) -> xr.Dataset:
    """Archived forecasts on one data set (default: the problem's) as a Dataset with dims
    (model, init_time, lead)."""
    try:
        dataset = check_name(dataset or default_dataset(problem))
    except StoreError as exc:
        raise QueryError(str(exc)) from exc
    models = list_models(root, problem, dataset)
    if not models:
        others = list_datasets(root, problem)
        raise QueryError(f"no forecasts archived for problem {problem!r} on dataset {dataset!r}"
                         + (f" (archived data sets: {', '.join(others)}; give --dataset)" if others else ""))
    if model is not None:
        if model not in models:
            raise QueryError(f"no forecasts from model {model!r} for {problem!r} (archived: {', '.join(models)})")
        models = [model]
    start, end = parse_init_range(init)
    parts = []
    for m in models:
        with locked(root, _lock_key(problem, m, dataset)):  # a reader never sees a write half swapped in
            ds = xr.open_zarr(_model_dir(root, problem, m, dataset), consolidated=False).load()
        ds = ds.sel({INIT: slice(start, end)})
        if lead is not None:
            if lead not in ds[LEAD].values:
                raise QueryError(f"lead {lead} not archived (leads: {ds[LEAD].values.min()}..{ds[LEAD].values.max()})")
            ds = ds.sel({LEAD: [lead]})
        parts.append(ds.drop_vars(VALID).expand_dims({MODEL: [m]}))
    out = add_valid_time(xr.concat(parts, dim=MODEL, join="outer", combine_attrs="drop", coords="minimal"))
    from climate_ml.problems import get_problem

    out["forecast"].attrs.update(units=get_problem(problem).target_units, long_name=f"{problem} forecast")
    out.attrs = {"problem": problem}
    return out


def to_records(ds: xr.Dataset) -> pd.DataFrame:
    df = ds["forecast"].to_dataframe().reset_index()
    df = df.dropna(subset=["forecast"])
    df[INIT] = pd.to_datetime(df[INIT]).dt.strftime("%Y-%m")
    df[VALID] = pd.to_datetime(df[VALID]).dt.strftime("%Y-%m")
    keys = [MODEL, INIT, LEAD] + ([MEMBER] if MEMBER in df.columns else [])
    return df[keys[:3] + [VALID] + keys[3:] + ["forecast"]].sort_values(keys).reset_index(drop=True)


def export(ds: xr.Dataset, fmt: str) -> bytes:
    """Serialise a query result as csv, json or netcdf."""
    if fmt == "csv":
        return to_records(ds).to_csv(index=False, float_format="%.4f").encode()
    if fmt == "json":
        records = to_records(ds).round(4).astype(object)
        records = records.where(records.notna(), None)  # NaN is not JSON: null
        return json.dumps(records.to_dict(orient="records"), allow_nan=False).encode()
    if fmt == "netcdf":
        out = ds.copy()
        out.attrs = {k: v if isinstance(v, str) else json.dumps(v) for k, v in out.attrs.items()}
        with tempfile.TemporaryDirectory() as tmp, NETCDF_LOCK:
            path = Path(tmp) / "query.nc"
            out.to_netcdf(path, format="NETCDF4")
            return path.read_bytes()
    raise QueryError(f"unknown format {fmt!r} (csv, json, netcdf)")


def read_external_forecasts(path: Path, problem, column: str | None = None,
                            model: str | None = None) -> tuple[xr.DataArray, list[int]]:
    """Forecasts issued by another system: a CSV with columns ``init`` (or ``init_time``,
    YYYY-MM or a date), ``lead`` (months), optionally ``member``, and a value column (``column``,
    else the model name, else ``forecast``); or a NetCDF with such a variable over
    (init_time|init, lead[, member]). Checked against the problem's target definition.
    Returns the forecasts on the problem's leads and the leads dropped (beyond the problem's)."""
    path = Path(path)
    if not path.is_file():
        raise QueryError(f"{path}: file not found")
    if path.suffix.lower() in (".nc", ".nc4", ".netcdf"):
        try:
            with NETCDF_LOCK:
                ds = xr.load_dataset(path)
        except Exception as exc:
            raise QueryError(f"{path}: not a readable NetCDF file ({type(exc).__name__})") from exc
        ds = ds.rename({"init": INIT}) if "init" in ds.dims else ds
        name = column or (model if model in ds.data_vars else "forecast")
        if name not in ds.data_vars:
            raise QueryError(f"{path}: variable {name!r} not found (variables: {', '.join(map(str, ds.data_vars))})")
        da = ds[name]
        for dim in (INIT, LEAD):
            if dim not in da.dims:
                raise QueryError(f"{path}: variable {name!r} has no {dim!r} dimension")
        inits = pd.DatetimeIndex(da[INIT].values)
    else:
        try:
            df = pd.read_csv(path)
        except Exception as exc:
            raise QueryError(f"{path}: not a readable CSV file ({type(exc).__name__}: {exc})".splitlines()[0]) from exc
        init_col = "init" if "init" in df.columns else INIT
        for needed, label in ((init_col, "'init' (or 'init_time')"), (LEAD, "'lead'")):
            if needed not in df.columns:
                raise QueryError(f"{path}: missing column {label} (columns: {', '.join(df.columns)})")
        name = column or (model if model in df.columns else "forecast")
        if name not in df.columns:
            raise QueryError(f"{path}: no forecast column {name!r} (columns: {', '.join(df.columns)}); use --column")
        try:
            df[INIT] = pd.to_datetime(df[init_col].astype(str).str.slice(0, 7) + "-01", format="%Y-%m-%d")
        except ValueError as exc:
            raise QueryError(f"{path}: column {init_col!r} has values that are not YYYY-MM dates") from exc
        if not pd.api.types.is_integer_dtype(df[LEAD]):
            raise QueryError(f"{path}: column 'lead' must hold whole months")
        keys = [INIT, LEAD] + (["member"] if "member" in df.columns else [])
        dup = df.duplicated(keys)
        if dup.any():
            row = df[dup].iloc[0]
            raise QueryError(f"{path}: duplicate forecast for init {row[INIT]:%Y-%m} lead {row[LEAD]}")
        da = df.set_index(keys)[name].astype(float).to_xarray()
        inits = pd.DatetimeIndex(da[INIT].values)
    if not (inits == inits.to_period("M").to_timestamp()).all():
        raise QueryError(f"{path}: init times must be months")
    leads = [int(v) for v in da[LEAD].values]
    if min(leads) < 1:
        raise QueryError(f"{path}: lead {min(leads)} is not a positive number of months")
    dropped = sorted(set(leads) - set(problem.leads))
    if len(dropped) == len(set(leads)):
        raise QueryError(f"{path}: none of the leads {leads[0]}..{leads[-1]} are leads of {problem.name}")
    da = da.sel({LEAD: [k for k in leads if k in problem.leads]})
    if np.isinf(da.values).any():
        raise QueryError(f"{path}: {name!r} holds infinite values (missing forecasts must be empty or NaN)")
    values = da.values[np.isfinite(da.values)]
    if values.size == 0:
        raise QueryError(f"{path}: no forecast values in {name!r}")
    lo, hi = getattr(problem, "plausible_range", (-np.inf, np.inf))
    if values.min() < lo or values.max() > hi:
        raise QueryError(
            f"{path}: values in {name!r} range {values.min():.2f}..{values.max():.2f} {problem.target_units}, outside "
            f"{lo}..{hi}: not the {problem.name} target ({problem.description})"
        )
    da = da.reindex({LEAD: list(problem.leads)}).transpose(INIT, LEAD, ...)
    return add_valid_time(da.rename("forecast").drop_vars([c for c in da.coords if c not in da.dims])), dropped


def import_forecasts(root: Path, problem, path: Path, model: str, column: str | None = None,
                     note: str = "", replace: bool = False, dataset: str | None = None) -> tuple[xr.DataArray, str, list[int]]:
    """Check and archive forecasts made elsewhere, with their provenance, under ``dataset`` (the
    observations their target is defined on; default: the problem's default data set)."""
    from climate_ml.catalog import sha256_file

    fc, dropped = read_external_forecasts(path, problem, column, model)
    attrs = {"dropped_leads": dropped,
        "problem": problem.name, "model": model, "kind": "imported", "source_file": str(Path(path).resolve()),
        "source_sha256": sha256_file(path), "source_column": column or (model if model else "forecast"),
        "target": problem.description, "units": problem.target_units, "note": note,
        "dataset": dataset or problem.default_dataset,
    }
    return fc, write_forecast(root, problem.name, model, fc, attrs, replace=replace), dropped


def imported_forecasts(root: Path, problem: str, dataset: str | None = None) -> dict[str, xr.DataArray]:
    """Archived forecasts whose provenance says they were imported (ensemble mean if members),
    of one data set, or of every data set when ``dataset`` is None."""
    out = {}
    groups = [(d, m) for d in ([dataset] if dataset else list_datasets(root, problem)) for m in list_models(root, problem, d)]
    for d, m in groups:
        ds = xr.open_zarr(_model_dir(root, problem, m, d), consolidated=False)
        if ds.attrs.get("kind") == "imported":
            fc = ds["forecast"].load()
            out[m] = (fc.mean(MEMBER) if MEMBER in fc.dims else fc).drop_vars(VALID, errors="ignore")
    return out
