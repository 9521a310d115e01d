"""The ``climate-ml`` command line: parse, call the library, print. Errors are one line on
stderr with a non-zero exit (2 for bad input); ``--debug`` shows the full traceback."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated

import click
import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from climate_ml.errors import ClimateMLError, QueryError

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

StoreOpt = Annotated[Path | None, typer.Option("--store", help="Store root (default ./climate-ml-data or $CLIMATE_ML_STORE).")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="Stored dataset or catalog entry (default: the embedded toy-ocean).")]


def _root(store):
    from climate_ml.store import store_root

    return store_root(store)


def _month(text: str | None, what: str) -> pd.Timestamp | None:
    if text is None:
        return None
    try:
        ts = pd.Timestamp(text + "-01") if len(text) == 7 else None
    except ValueError:
        ts = None
    if ts is None:
        raise QueryError(f"bad {what} {text!r}: expected YYYY-MM")
    return ts


def _progress(label: str):
    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.description}"),
                    TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)


@catalog_app.command("list")
def catalog_list():
    """List catalog entries."""
    from climate_ml.catalog import load_catalog

    for name, e in load_catalog().items():
        kind = "generated" if e.source.generator else ("local" if e.source.path else "download")
        typer.echo(f"{name:30s} {e.format:15s} {kind:9s} {e.description[:70]}")


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


@app.command()
def ingest(
    entry: Annotated[str | None, typer.Argument(help="Catalog entry name.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Ad hoc: a file you already have.")] = None,
    variable: Annotated[str | None, typer.Option("--variable", help="Variable inside --file.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Dataset name in the store.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="cf-netcdf or noaa-psl-index (auto-detected).")] = None,
    units: Annotated[str | None, typer.Option("--units", help="Units, when the file does not say.")] = None,
    store: StoreOpt = None,
):
    """Ingest a catalog entry, or a file with --file/--variable/--name, into the Zarr store."""
    from climate_ml.catalog import get_entry
    from climate_ml.ingest import ingest_entry, ingest_file

    root = _root(store)
    if file is not None:
        if entry is not None:
            raise QueryError("give either a catalog entry or --file, not both")
        if not variable or not name:
            raise QueryError("--file needs --variable and --name")
        res = ingest_file(file, variable, name, root, fmt=fmt, units=units)
    else:
        if entry is None:
            raise QueryError("give a catalog entry name or --file PATH")
        res = ingest_entry(get_entry(entry), root, name=name)
    extra = f" (+{res.n_new} months)" if res.action == "appended" else ""
    typer.echo(f"{res.action}: {res.path} ({res.n_time} months){extra}")


@app.command()
def index(
    region: Annotated[str, typer.Argument(help="nino34, nino3, nino4, nino12, ...")],
    dataset: DatasetOpt = None,
    anomaly: Annotated[bool, typer.Option("--anomaly", help="Departures from the full-record monthly climatology.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
    store: StoreOpt = None,
):
    """Print a monthly area-mean index (columns time,value)."""
    from climate_ml.features import anomalies, fit_climatology
    from climate_ml.regions import box_mean, get_region
    from climate_ml.workflows import ensure_dataset

    if fmt not in ("csv", "json"):
        raise QueryError(f"bad --format {fmt!r} (csv or json)")
    get_region(region)
    obs = ensure_dataset(_root(store), dataset or "toy-ocean", log=err.print)
    da = obs[next(iter(obs.data_vars))]
    series = box_mean(da, region) if "lat" in da.dims else da
    series = series.compute()
    if anomaly:
        series = anomalies(series, fit_climatology(series, series["time"].values[-1]))
    df = pd.DataFrame({"time": pd.DatetimeIndex(series["time"].values).strftime("%Y-%m"), "value": series.values.round(4)})
    typer.echo(df.to_csv(index=False).rstrip() if fmt == "csv" else df.to_json(orient="records"))


@app.command("backtest")
def backtest_cmd(
    problem: Annotated[str, typer.Argument(help="el_nino")],
    model_path: Annotated[Path, typer.Argument(help="A model file, e.g. models/lightgbm_lagged.py")],
    dataset: DatasetOpt = None,
    test_start: Annotated[str, typer.Option("--test-start", help="First test init, YYYY-MM.")] = "1990-01",
    test_end: Annotated[str | None, typer.Option("--test-end", help="Last test init, YYYY-MM (default: end of data).")] = None,
    refit_every: Annotated[int, typer.Option("--refit-every", help="Months between refits.")] = 12,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    store: StoreOpt = None,
):
    """Rolling-origin backtest of MODEL_PATH against persistence, climatology and damped persistence."""
    from climate_ml.model_api import load_model_factory, model_name
    from climate_ml.problems import get_problem
    from climate_ml.report import skill_table
    from climate_ml.workflows import DEFAULT_DATASET, backtest_summary, ensure_dataset, run_backtest

    prob = get_problem(problem)
    load_model_factory(model_path)  # fail fast on a broken path before any data work
    dataset = dataset or DEFAULT_DATASET[prob.name]
    start = _month(test_start, "--test-start")
    end = _month(test_end, "--test-end")
    obs = ensure_dataset(_root(store), dataset, log=err.print)
    prepared = prob.prepare(obs)
    end = end or pd.Timestamp(prepared["time"].values[-1])
    with _progress("backtest") as bar:
        task = bar.add_task("", total=None)
        res = run_backtest(prob, [model_path], prepared, start, end, refit_every,
                           progress=lambda msg: bar.update(task, description=msg))
    summary = backtest_summary(res, model_name(model_path), dataset, start, end, refit_every, prob.leads)
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        scores = {n: res.scores(n) for n in res.forecasts}
        for metric in ("acc", "rmse"):
            typer.echo(skill_table(scores, metric, prob.leads) + "\n")
    if "error" in summary:
        err.print(f"error: {summary['error']}")
        raise typer.Exit(3)


@app.command()
def forecast(
    problem: Annotated[str, typer.Argument(help="el_nino")],
    model_path: Annotated[Path, typer.Argument(help="A model file.")],
    init: Annotated[str, typer.Option("--init", help="Init month YYYY-MM (data up to it are used).")],
    dataset: DatasetOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a different archived forecast for this init.")] = False,
    store: StoreOpt = None,
):
    """Train on data up to --init, forecast every lead, and archive the forecast."""
    from climate_ml.problems import get_problem
    from climate_ml.workflows import DEFAULT_DATASET, ensure_dataset, forecast_and_archive

    prob = get_problem(problem)
    init_ts = _month(init, "--init")
    dataset = dataset or DEFAULT_DATASET[prob.name]
    root = _root(store)
    obs = ensure_dataset(root, dataset, log=err.print)
    fc, action = forecast_and_archive(root, prob, model_path, obs, prob.prepare(obs), dataset, init_ts, replace)
    rows = [{"lead": int(lead), "valid_time": f"{pd.Timestamp(v):%Y-%m}", "forecast": round(float(x), 4)}
            for lead, v, x in zip(fc["lead"].values, fc["valid_time"].values[0], fc.values[0], strict=True)]
    if as_json:
        typer.echo(json.dumps({"problem": prob.name, "model": model_path.stem, "init_time": init, "archive": action, "forecast": rows}))
    else:
        typer.echo(f"{prob.name} forecast from {model_path.stem}, init {init} ({action} in archive)")
        for r in rows:
            typer.echo(f"  lead {r['lead']:2d}  {r['valid_time']}  {r['forecast']:+.2f} {prob.target_units}")


@archive_app.command("query")
def archive_query(
    problem: Annotated[str, typer.Option("--problem")],
    model: Annotated[str | None, typer.Option("--model")] = None,
    init: Annotated[str | None, typer.Option("--init", help="YYYY-MM or YYYY-MM:YYYY-MM")] = None,
    lead: Annotated[int | None, typer.Option("--lead")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv, json or netcdf")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file instead of stdout.")] = None,
    store: StoreOpt = None,
):
    """Archived forecasts as CSV, JSON or NetCDF."""
    from climate_ml.archive import export, parse_init_range, query
    from climate_ml.problems import get_problem

    parse_init_range(init)  # validate parameters before touching the store

    if fmt not in ("csv", "json", "netcdf"):
        raise QueryError(f"bad --format {fmt!r} (csv, json or netcdf)")
    if lead is not None and lead < 1:
        raise QueryError(f"bad --lead {lead}: leads are positive months")
    get_problem(problem)
    data = export(query(_root(store), problem, model, init, lead), fmt)
    if output:
        output.write_bytes(data)
        err.print(f"wrote {output}")
    elif fmt == "netcdf":
        if sys.stdout.isatty():
            raise QueryError("NetCDF is binary: use --output FILE or redirect stdout")
        sys.stdout.buffer.write(data)
    else:
        typer.echo(data.decode().rstrip())


@app.command()
def verify(
    problem: Annotated[str, typer.Argument(help="el_nino")],
    dataset: DatasetOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    store: StoreOpt = None,
):
    """Score every archived forecast whose target has been observed, per model and lead."""
    from climate_ml.problems import get_problem
    from climate_ml.verify import verification_records, verify_archive
    from climate_ml.workflows import DEFAULT_DATASET, ensure_dataset

    prob = get_problem(problem)
    root = _root(store)
    obs = ensure_dataset(root, dataset or DEFAULT_DATASET[prob.name], log=err.print)
    recs = verification_records(verify_archive(root, prob, prob.prepare(obs)))
    if as_json:
        typer.echo(json.dumps(recs))
    else:
        typer.echo(pd.DataFrame(recs).to_string(index=False))


@app.command()
def run(
    quick: Annotated[bool, typer.Option("--quick", help="Short test period and sparse refits (well under a minute).")] = False,
    store: StoreOpt = None,
):
    """The main job, as a Prefect flow: data -> features -> backtest -> forecast -> archive -> verify -> report."""
    from flows.run import climate_ml_run

    summary = climate_ml_run(store=str(_root(store)), quick=quick)
    typer.echo(summary["text"])


@app.command("serve")
def serve_cmd(
    cron: Annotated[str, typer.Option("--cron", help="Cron schedule (UTC).")] = "0 6 5 * *",
    problem: Annotated[str, typer.Option("--problem")] = "el_nino",
    dataset: Annotated[str, typer.Option("--dataset", help="Catalog entry to ingest each month.")] = "toy-ocean",
    store: StoreOpt = None,
):
    """Serve the monthly forecast flow as a Prefect deployment on a cron schedule (needs a
    Prefect server: set PREFECT_API_URL, e.g. after `prefect server start`)."""
    from climate_ml.catalog import get_entry
    from climate_ml.problems import get_problem
    from flows.monthly import serve

    get_problem(problem)
    get_entry(dataset)
    parts = cron.split()
    if len(parts) != 5:
        raise QueryError(f"bad --cron {cron!r}: expected 5 fields (minute hour day month weekday)")
    serve(cron=cron, problem=problem, dataset=dataset, store=str(_root(store)))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="climate-ml", standalone_mode=False)
        return 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        err.print("aborted")
        return 130
    except ClimateMLError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if debug:
            traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)".splitlines()[0], file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
