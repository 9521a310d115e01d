"""The data commands: the catalog, the problems, ingest and the index series."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from climate_ml.commands.common import (
    DatasetOpt,
    SchedulerOpt,
    StoreOpt,
    app,
    catalog_app,
    err,
    parse_units,
)
from climate_ml.errors import QueryError
from climate_ml.store import Store


@catalog_app.command("list")
def catalog_list():
    """List catalog entries."""
    from climate_ml.catalog import load_catalog

    entries = load_catalog()
    width = max(len(n) for n in entries) + 1
    for name, e in entries.items():
        kind = "generated" if e.source.generator else ("local" if e.source.path else "download")
        typer.echo(f"{name:{width}s} {e.format:17s} {kind:9s} {e.description[:70]}")


@catalog_app.command("show")
def catalog_show(name: str):
    """Show one catalog entry (as YAML) and where its data resolves to."""
    import yaml

    from climate_ml.catalog import expand_path, get_entry

    e = get_entry(name)
    typer.echo(yaml.safe_dump(e.model_dump(exclude_none=True), sort_keys=False).rstrip())
    if e.source.path:
        p = expand_path(e.source.path)
        typer.echo(f"# resolves to {p} ({'present' if p.exists() else 'MISSING'})")


@app.command("problems")
def problems_cmd(as_json: Annotated[bool, typer.Option("--json")] = False):
    """List the forecasting problems (built in, and those of the folders in $CLIMATE_ML_PROBLEMS)
    with their leads, units, default data and references."""
    from climate_ml.problems import get_problem, problem_names

    rows = []
    for name in problem_names():
        p = get_problem(name)
        rows.append({"name": name, "description": p.description, "leads": list(p.leads), "units": p.target_units,
                     "default_dataset": p.default_dataset, "default_predictors": list(p.default_predictors),
                     "references": list(p.references)})
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    width = max(len(r["name"]) for r in rows) + 1
    for r in rows:
        typer.echo(f"{r['name']:{width}s} leads {r['leads'][0]}-{r['leads'][-1]}, {r['units']}, data "
                   f"{r['default_dataset']}, references {', '.join(r['references'])}: {r['description']}")


@app.command()
def ingest(
    entry: Annotated[str | None, typer.Argument(help="Catalog entry name.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Ad hoc: a file you already have.")] = None,
    variable: Annotated[list[str] | None, typer.Option("--variable", help="Variable inside --file (repeatable; '*' for all).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Dataset name in the store.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="cf-netcdf, monthly-csv, noaa-psl-index, nsidc-monthly-csv, nsidc-daily-csv, nclimdiv-text or nsidc-0051-binary (auto-detected).")] = None,
    units: Annotated[list[str] | None, typer.Option("--units", help="Units, when the file does not say: U for every variable, or VAR=U (repeatable).")] = None,
    anomaly: Annotated[bool, typer.Option("--anomaly", help="The values are already anomalies (recorded with the data).")] = False,
    region: Annotated[str | None, typer.Option("--region", help="Series to select from a multi-series file (nClimDiv: california).")] = None,
    scheduler: SchedulerOpt = None,
    store: StoreOpt = None,
):
    """Ingest a catalog entry, or a file with --file/--name, into the Zarr store. PATH may be a
    NetCDF file, a NOAA PSL index, the folder of the twelve NSIDC monthly CSVs, the NSIDC
    daily CSV, or an nClimDiv file (with --region)."""
    from climate_ml.catalog import get_entry
    from climate_ml.cluster import dask_client, scheduler_address
    from climate_ml.ingest import ingest_entry, ingest_file
    from climate_ml.store import check_name

    store = Store.at(store)
    if name is not None:
        check_name(name)
    if file is not None:
        if entry is not None:
            raise QueryError("give either a catalog entry or --file, not both")
        if not name:
            raise QueryError("--file needs --name (the dataset name in the store)")
        with dask_client(scheduler_address(scheduler)):
            res = ingest_file(file, variable, name, store, fmt=fmt, units=parse_units(units), region=region, anomaly=anomaly)
    else:
        if entry is None:
            raise QueryError("give a catalog entry name or --file PATH")
        with dask_client(scheduler_address(scheduler)):
            res = ingest_entry(get_entry(entry), store, name=name)
    extra = (f" (+{res.n_new} months)" if res.n_new and res.action != "created" else "") + \
        (f" ({res.n_revised} stored months revised)" if res.n_revised else "")
    typer.echo(f"{res.action}: {res.path} ({res.n_time} months){extra}")


@app.command()
def index(
    region: Annotated[str, typer.Argument(help="nino34, nino3, nino4, nino12, ...")],
    dataset: DatasetOpt = None,
    anomaly: Annotated[bool, typer.Option("--anomaly", help="Departures from the full-record monthly climatology.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
    store: StoreOpt = None,
):
    """Print a monthly area-mean index (columns time,value) of a gridded data set's first
    variable: on a lat/lon grid, or on a polar grid with 2-D lat/lon (weighted by cell area)."""
    from climate_ml.features import anomalies, fit_climatology
    from climate_ml.regions import get_region, region_mean
    from climate_ml.workflows import ensure_dataset

    if fmt not in ("csv", "json"):
        raise QueryError(f"bad --format {fmt!r} (csv or json)")
    get_region(region)
    name = dataset or "toy-ocean"
    obs = ensure_dataset(Store.at(store), name, log=err.print)
    da = obs[next(iter(obs.data_vars))]
    try:
        series = region_mean(da, region)
    except QueryError as exc:
        raise QueryError(f"dataset {name!r}: {exc}") from None
    series = series.compute()
    if anomaly:
        series = anomalies(series, fit_climatology(series, series["time"].values[-1]))
    df = pd.DataFrame({"time": pd.DatetimeIndex(series["time"].values).strftime("%Y-%m"), "value": series.values.round(4)})
    typer.echo(df.to_csv(index=False).rstrip() if fmt == "csv" else df.to_json(orient="records"))
