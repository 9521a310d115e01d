"""What every command shares: the Typer app and its sub-apps, the common options, and small
helpers (store root, month parsing, progress bars, which contract a model file follows)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from climate_ml.errors import QueryError

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
StoreOpt = Annotated[Path | None, typer.Option("--store", help="Store root (default ./climate-ml-data or $CLIMATE_ML_STORE).")]
SchedulerOpt = Annotated[str | None, typer.Option("--scheduler", help="Dask scheduler address (tcp://host:8786) to run on (default $CLIMATE_ML_DASK_SCHEDULER, else this process).")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="Stored dataset or catalog entry of the target's observations (default: the problem's embedded data).")]
TargetVarOpt = Annotated[str | None, typer.Option(
    "--target-variable", help="The target's variable in a data set with several (e.g. Nino34 in an index file); "
    "the other variables become predictors.")]
PredictorOpt = Annotated[list[str] | None, typer.Option(
    "--predictor-dataset", help="A dataset adding predictors, e.g. an SST data set for rainfall (repeatable; "
    "default: the default data's predictors with the default dataset, none otherwise).")]


def store_path(store):
    from climate_ml.store import store_root

    return store_root(store)


def parse_month(text: str | None, what: str) -> pd.Timestamp | None:
    if text is None:
        return None
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text):
        raise QueryError(f"bad {what} {text!r}: expected YYYY-MM")
    if not 1678 <= int(text[:4]) <= 2261:
        raise QueryError(f"bad {what} {text!r}: year outside 1678..2261")
    return pd.Timestamp(text + "-01")


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



def field_contract(prob, model_paths, verb: str) -> bool:
    """True when the model files are field models (TARGET = "sea_ice_concentration"), False for
    index models; mixing the two, or field models for another problem, is a one-line error."""
    from climate_ml.model_api import FIELD_TARGET, load_model_factory, model_target

    targets = {model_target(load_model_factory(path)) for path in model_paths}
    if FIELD_TARGET not in targets:
        return False
    if len(targets) > 1:
        raise QueryError("give field models (TARGET = 'sea_ice_concentration') and index models in separate runs")
    if not prob.field_references:
        from climate_ml.problems import problem_classes

        with_maps = ", ".join(sorted(name for name, cls in problem_classes().items() if cls.field_references))
        raise QueryError(f"field models forecast sea-ice concentration maps: {verb} them on a problem with a field "
                         f"target ({with_maps}), not {prob.name}")
    return True
