"""The forecast archive: import, query, history, tag."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from climate_ml.commands.common import (
    PROBLEM_HELP,
    StoreOpt,
    archive_app,
    err,
)
from climate_ml.errors import QueryError
from climate_ml.store import Store


@archive_app.command("import")
def archive_import(
    problem: Annotated[str, typer.Argument(help=PROBLEM_HELP)],
    file: Annotated[Path, typer.Option("--file", help="CSV or NetCDF of forecasts by init and lead.")],
    model: Annotated[str, typer.Option("--model", help="Name for these forecasts in the archive.")],
    column: Annotated[str | None, typer.Option("--column", help="Value column/variable (default: the model name, else 'forecast').")] = None,
    note: Annotated[str, typer.Option("--note", help="Provenance note (e.g. the citation).")] = "",
    dataset: Annotated[str | None, typer.Option("--dataset", help="The observations the forecasts' target is defined on (default: the problem's embedded data).")] = None,
    replace: Annotated[bool, typer.Option("--replace")] = False,
    store: StoreOpt = None,
):
    """Archive forecasts issued elsewhere, checked against the problem's target definition; they
    then appear on the leaderboard, scored on the same inits as the other models."""
    from climate_ml.archive import import_forecasts
    from climate_ml.problems import get_problem

    prob = get_problem(problem)
    fc, action, dropped = import_forecasts(Store.at(store), prob, file, model, column, note, replace, dataset=dataset)
    inits = pd.DatetimeIndex(fc["init_time"].values)
    typer.echo(f"{action}: {model} forecasts for {len(inits)} inits {inits[0]:%Y-%m}..{inits[-1]:%Y-%m}, "
               f"leads {int(fc['lead'].min())}..{int(fc['lead'].max())}"
               + (f" (dropped leads {dropped[0]}..{dropped[-1]}, beyond {prob.name}'s)" if dropped else ""))


@archive_app.command("query")
def archive_query(
    problem: Annotated[str, typer.Option("--problem")],
    model: Annotated[str | None, typer.Option("--model")] = None,
    init: Annotated[str | None, typer.Option("--init", help="Init months: YYYY-MM, YYYY (the year) or a range A:B of them.")] = None,
    lead: Annotated[str | None, typer.Option("--lead", help="A lead or several: 3 or 1,3,6 (months).")] = None,
    valid: Annotated[str | None, typer.Option("--valid", help="Valid months, as --init: forecasts for these months.")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="The archive as it stood at a UTC date (YYYY-MM-DD, the end of that day), an ISO time, or a tag.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="The data set the forecasts were made on (default: the problem's embedded data).")] = None,
    box: Annotated[str | None, typer.Option("--box", help="Maps only: lat_min,lat_max,lon_min,lon_max (degrees east; e.g. 70,90,0,360) or a region name; cells outside are left out.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv, json, netcdf (CF-1.11), climpred or weatherbench2 (both NetCDF)")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file instead of stdout.")] = None,
    store: StoreOpt = None,
):
    """Archived forecasts, with the observed outcome where known, as CSV, JSON or NetCDF."""
    from climate_ml.requests import ArchiveQuery, cli_option

    request = ArchiveQuery.checked(cli_option, problem=problem, model=model, init=init, lead=lead, valid=valid,
                                   as_of=as_of, dataset=dataset, box=box, format=fmt)  # before touching the store
    data = request.export(Store.at(store))
    if output:
        output.write_bytes(data)
        err.print(f"wrote {output}")
    elif fmt in ("netcdf", "climpred", "weatherbench2"):
        if sys.stdout.isatty():
            raise QueryError("NetCDF is binary: use --output FILE or redirect stdout")
        sys.stdout.buffer.write(data)
    else:
        typer.echo(data.decode().rstrip())


@archive_app.command("history")
def archive_history(
    problem: Annotated[str, typer.Argument(help=PROBLEM_HELP)],
    limit: Annotated[int, typer.Option("--limit", help="Newest commits to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    store: StoreOpt = None,
):
    """The archive's commits, newest first: when, what was written, and tags."""
    from climate_ml.archive import history
    from climate_ml.problems import get_problem

    get_problem(problem)
    rows = history(Store.at(store), problem)[:limit]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        typer.echo(f"{r['written_at']}  {r['id']}  {r['message']}" + (f"  [tag: {', '.join(r['tags'])}]" if r["tags"] else ""))


@archive_app.command("tag")
def archive_tag(
    problem: Annotated[str, typer.Argument(help=PROBLEM_HELP)],
    name: Annotated[str, typer.Argument(help="Name for the archive's current state, e.g. before-2026-27-winter.")],
    store: StoreOpt = None,
):
    """Name the archive's current state; query it later with --as-of NAME."""
    from climate_ml.archive import tag
    from climate_ml.problems import get_problem

    get_problem(problem)
    typer.echo(f"tagged {problem} archive snapshot {tag(Store.at(store), problem, name)} as {name}")
