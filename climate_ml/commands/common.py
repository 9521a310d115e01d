"""What every command shares: the Typer app and its sub-apps, the common options, and small
helpers (store root, month parsing, progress bars, which contract a model file follows)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from climate_ml.errors import QueryError
from climate_ml.requests import field_contract, parse_month  # noqa: F401  (the commands' helpers)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="climate-ml: ingest gridded observations into Zarr, backtest forecasters without lookahead, "
    "issue, archive and verify forecasts. Add --debug anywhere for full tracebacks on errors.",
)
catalog_app = typer.Typer(no_args_is_help=True, help="Browse the data catalog.")
archive_app = typer.Typer(no_args_is_help=True, help="Query the forecast archive.")
app.add_typer(catalog_app, name="catalog")
app.add_typer(archive_app, name="archive")
err = Console(stderr=True)

PROBLEM_HELP = "A forecasting problem, e.g. el_nino, arctic_sea_ice, california_rainfall (`climate-ml problems` lists them)."
StoreOpt = Annotated[str | None, typer.Option("--store", help="Store root folder (default ./climate-ml-data or $CLIMATE_ML_STORE).")]
SchedulerOpt = Annotated[str | None, typer.Option("--scheduler", help="Dask scheduler address (tcp://host:8786) to run on (default $CLIMATE_ML_DASK_SCHEDULER, else this process).")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="Stored dataset or catalog entry of the target's observations (default: the problem's embedded data).")]
TargetVarOpt = Annotated[str | None, typer.Option(
    "--target-variable", help="The target's variable in a data set with several (e.g. Nino34 in an index file); "
    "the other variables become predictors.")]
PredictorOpt = Annotated[list[str] | None, typer.Option(
    "--predictor-dataset", help="A dataset adding predictors, e.g. an SST data set for rainfall (repeatable; "
    "default: the default data's predictors with the default dataset, none otherwise).")]


def parse_units(values: list[str] | None):
    """``--units U`` (every variable) or ``--units VAR=U`` (repeatable) as the ingest expects."""
    if not values:
        return None
    pairs = [v.split("=", 1) for v in values if "=" in v]
    if not pairs:
        if len(values) > 1:
            raise QueryError(f"bad --units {values}: give one unit, or VAR=UNIT for each variable")
        return values[0]
    if len(pairs) != len(values):
        raise QueryError(f"bad --units {values}: mix of UNIT and VAR=UNIT")
    return {k: v for k, v in pairs}


def progress_bar(label: str):
    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.description}"),
                    TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)
