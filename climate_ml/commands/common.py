"""What every command shares: the Typer app and its sub-apps, the common options, and small
helpers (store root, month parsing, progress bars, which contract a model file follows)."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from climate_ml.errors import QueryError
from climate_ml.requests import field_contract, parse_month  # noqa: F401  (the commands' helpers)

# without rich markup, Typer joins a docstring's wrapped lines in the command list (with it, the
# list keeps every line break of the source)
MARKUP = None
app = typer.Typer(
    add_completion=False,
    rich_markup_mode=MARKUP,
    no_args_is_help=True,
    help="climate-ml: ingest gridded observations into Zarr, backtest forecasters without lookahead, "
    "issue, archive and verify forecasts. Add --debug anywhere for full tracebacks on errors.",
)
catalog_app = typer.Typer(no_args_is_help=True, rich_markup_mode=MARKUP, help="Browse the data catalog.")
archive_app = typer.Typer(no_args_is_help=True, rich_markup_mode=MARKUP, help="Query the forecast archive.")
app.add_typer(catalog_app, name="catalog")
app.add_typer(archive_app, name="archive")
err = Console(stderr=True)

PROBLEM_HELP = "A forecasting problem, e.g. el_nino, arctic_sea_ice, california_rainfall (`climate-ml problems` lists them)."
StoreOpt = Annotated[str | None, typer.Option("--store", help="Store root: a folder, or s3://bucket/prefix (az://container/prefix) for a store in object storage (default ./climate-ml-data or $CLIMATE_ML_STORE).")]
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
    """A bar on a terminal; where stderr is a log (cron, a batch job, CI), a line per step
    instead (``ProgressLines``), so that hours of work are never silent."""
    if not err.is_terminal:
        return ProgressLines(label)
    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.description}"),
                    TimeElapsedColumn(), console=err, transient=True)


class ProgressLines:
    """The progress bar's interface (``add_task``, ``update``) written as one line per new
    message: ``HH:MM:SS label: message (elapsed H:MM:SS)``, and where the message counts done
    work as ``k/n`` (``3/24 model-folds``), the time left at the pace so far, read from the last
    count in the message (``8/72 model-folds, 1/12 folds``: from the folds), none before the
    first of it is done. The time before a count's work began (reading the data) is not paid
    again, so it is left out: where the count was shown at 0 (parallel workers announce
    ``0/n`` when their units start), the pace is the time since then over the steps done, which
    holds when workers finish their steps in batches; otherwise, from the second step on, the
    pace of the steps since the first."""

    def __init__(self, label: str, clock=time.monotonic, now=None):
        self.label, self.clock, self.now = label, clock, now or (lambda: datetime.now().strftime("%H:%M:%S"))
        self.start, self.last = clock(), None
        self.first: dict[int, tuple[int, float]] = {}  # per count's total: its first step and when
        self.zero: dict[int, float] = {}  # per count's total: when it was first shown at 0

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str = "", total=None) -> int:
        self.update(0, description=description)
        return 0

    def update(self, task: int, description: str | None = None, **_) -> None:
        if not description or description == self.last:
            return
        self.last = description
        elapsed = self.clock() - self.start
        line = f"{self.now()} {self.label}: {description} (elapsed {_hms(elapsed)}"
        counts = re.findall(r"\b(\d+)/(\d+)\b", description)
        k, n = (int(c) for c in counts[-1]) if counts else (0, 0)
        if k == 0 and n:
            self.zero.setdefault(n, elapsed)
        if 0 < k < n:
            k0, t0 = self.first.setdefault(n, (k, elapsed))
            if n in self.zero:
                pace = (elapsed - self.zero[n]) / k
            else:
                pace = (elapsed - t0) / (k - k0) if k > k0 else elapsed / k
            line += f", about {_hms(pace * (n - k))} left"
        err.print(line + ")", markup=False, highlight=False, soft_wrap=True)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
