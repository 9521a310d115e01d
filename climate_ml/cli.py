"""The ``climate-ml`` command line: parse, call the library, print. Errors are one line on
stderr with a non-zero exit (2 for bad input); ``--debug`` shows the full traceback."""

from __future__ import annotations

import json
import os
import re
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


def _root(store):
    from climate_ml.store import store_root

    return store_root(store)


def _month(text: str | None, what: str) -> pd.Timestamp | None:
    if text is None:
        return None
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text):
        raise QueryError(f"bad {what} {text!r}: expected YYYY-MM")
    if not 1678 <= int(text[:4]) <= 2261:
        raise QueryError(f"bad {what} {text!r}: year outside 1678..2261")
    return pd.Timestamp(text + "-01")


def _units(values: list[str] | None):
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


def _progress(label: str):
    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.description}"),
                    TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)


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

    root = _root(store)
    if name is not None:
        check_name(name)
    if file is not None:
        if entry is not None:
            raise QueryError("give either a catalog entry or --file, not both")
        if not name:
            raise QueryError("--file needs --name (the dataset name in the store)")
        with dask_client(scheduler_address(scheduler)):
            res = ingest_file(file, variable, name, root, fmt=fmt, units=_units(units), region=region, anomaly=anomaly)
    else:
        if entry is None:
            raise QueryError("give a catalog entry name or --file PATH")
        with dask_client(scheduler_address(scheduler)):
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
    problem: Annotated[str, typer.Argument(help=PROBLEM_HELP)],
    model_paths: Annotated[list[Path], typer.Argument(help="One or more model files, e.g. models/lightgbm_lagged.py")],
    dataset: DatasetOpt = None,
    predictor_dataset: PredictorOpt = None,
    target_variable: TargetVarOpt = None,
    test_start: Annotated[str, typer.Option("--test-start", help="First test init, YYYY-MM.")] = "1990-01",
    test_end: Annotated[str | None, typer.Option("--test-end", help="Last test init, YYYY-MM (default: end of data).")] = None,
    refit_every: Annotated[int, typer.Option("--refit-every", help="Months between refits.")] = 12,
    n_jobs: Annotated[int, typer.Option("--n-jobs", help="Local worker processes for (model, fold) units.")] = 1,
    scheduler: SchedulerOpt = None,
    time_limit: Annotated[float | None, typer.Option("--time-limit", help="Seconds allowed per model and fold; slower models fail.")] = None,
    blend: Annotated[bool, typer.Option("--blend/--no-blend", help="Add a Caruana blend of all models, selected inside each fold.")] = True,
    record: Annotated[bool, typer.Option("--record/--no-record", help="Record the run for the leaderboard.")] = True,
    archive: Annotated[bool, typer.Option("--archive", help="Archive every model's out-of-sample forecasts as hindcasts.")] = False,
    guard: Annotated[bool, typer.Option("--guard/--no-guard", help="Run the lookahead guard on the submitted models (skip it knowingly).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    store: StoreOpt = None,
):
    """Rolling-origin backtest of model files against the problem's references on the same
    folds; each run is recorded for `climate-ml leaderboard`. Field models (files that say
    TARGET = "sea_ice_concentration", for arctic_sea_ice) go through the field backtest of
    `sea-ice-fields`, scored by IIEE, extent error, binary accuracy and the Brier score of P(ice)."""
    from climate_ml.cluster import scheduler_address
    from climate_ml.model_api import model_name
    from climate_ml.problems import get_problem
    from climate_ml.report import skill_table
    from climate_ml.workflows import backtest_summary, evaluate, problem_inputs

    prob = get_problem(problem, target_variable=target_variable)
    fields = _field_models(prob, model_paths, "backtest")  # fails fast on a broken path
    if n_jobs < 1:
        raise QueryError(f"bad --n-jobs {n_jobs}: must be at least 1")
    start = _month(test_start, "--test-start")
    end = _month(test_end, "--test-end")
    root = _root(store)
    if fields:  # concentration maps: the field backtest, recorded for the field leaderboard
        from climate_ml.workflows import field_backtest_run

        with _progress("field backtest") as bar:
            task = bar.add_task("", total=None)
            run = field_backtest_run(root, dataset or prob.default_dataset, start, end, refit_every, model_paths,
                                     archive=archive, log=err.print, progress=lambda msg: bar.update(task, description=msg))
        _report_field_run(run, dataset or prob.default_dataset, test_start, refit_every, as_json, archive)
        return
    dataset, obs, prepared = problem_inputs(root, prob, dataset, predictor_dataset, log=err.print)
    end = min(end, prob.last_init(prepared)) if end else prob.last_init(prepared)
    with _progress("backtest") as bar:
        task = bar.add_task("", total=None)
        ev = evaluate(root, prob, model_paths, prepared, obs, dataset, start, end, refit_every, blend=blend,
                      record=record, archive=archive, guard=guard, progress=lambda msg: bar.update(task, description=msg),
                      n_jobs=n_jobs, scheduler=scheduler_address(scheduler), time_limit=time_limit)
    res = ev.result
    contributivity, record_dir = ev.contributivity, ev.record_dir
    names = [model_name(p) for p in model_paths] + (["blend"] if "blend" in res.forecasts else [])
    summaries = {n: backtest_summary(res, n, dataset, start, end, refit_every, prob.leads) for n in names}
    if as_json:
        if len(model_paths) == 1:
            out = summaries[names[0]]
        else:
            first = summaries[names[0]]
            out = {k: first[k] for k in ("problem", "dataset", "test_period", "refit_every_months", "leads", "references")}
            out["models"] = {n: {k: v for k, v in s.items() if k in ("scores", "skill", "n_verified", "error")} for n, s in summaries.items()}
        if contributivity is not None:
            out["blend_contributivity"] = contributivity
        out["record"] = str(record_dir) if record_dir else None
        typer.echo(json.dumps(out))
    else:
        scores = {n: res.scores(n) for n in res.forecasts}
        for metric in ("acc", "rmse"):
            typer.echo(skill_table(scores, metric, prob.leads) + "\n")
        for name in res.forecasts:
            season = res.extra(name).get("season")
            if season:
                typer.echo(f"{name}: {prob.season_label} season " + ", ".join(
                    f"{k} {season[k]['all']}" for k in ("rmse", "correlation", "bss_upper_tercile", "rpss")))
        for name in res.members:
            s = scores[name]
            typer.echo(f"{name}: {res.members[name].sizes['member']} members; CRPS by lead "
                       + ", ".join(f"L{k} {v}" for k, v in s["crps"].items())
                       + "; spread/skill " + ", ".join(f"L{k} {v}" for k, v in s["spread_skill"].items())
                       + f"; rank histogram {res.extra(name)['rank_histogram']}")
        if contributivity:
            typer.echo("blend contributivity: " + ", ".join(f"{k} {v:.0%}" for k, v in contributivity.items() if v > 0))
        for name, reason in res.failures.items():
            typer.echo(f"FAILED {name}: {reason}")
        if record_dir:
            err.print(f"recorded in {record_dir}", soft_wrap=True)
    if any(model_name(p) in res.failures for p in model_paths):
        raise typer.Exit(3)


def _field_models(prob, model_paths, verb: str) -> bool:
    """True when the model files are field models (TARGET = "sea_ice_concentration"), False for
    index models; mixing the two, or field models for another problem, is a one-line error."""
    from climate_ml.model_api import FIELD_TARGET, load_model_factory, model_target

    targets = {model_target(load_model_factory(path)) for path in model_paths}
    if FIELD_TARGET not in targets:
        return False
    if len(targets) > 1:
        raise QueryError("give field models (TARGET = 'sea_ice_concentration') and index models in separate runs")
    if prob.name != "arctic_sea_ice":
        raise QueryError(f"field models forecast sea-ice concentration maps: {verb} them on arctic_sea_ice, not {prob.name}")
    return True


@app.command("leaderboard")
def leaderboard_cmd(
    problem: Annotated[str, typer.Argument(help=PROBLEM_HELP)],
    score: Annotated[str, typer.Option("--score", help="A registered metric: acc, rmse, mae...; for sea-ice maps (field backtests) iiee, sie_rmse, binary_accuracy or ice_brier.")] = "acc",
    lead: Annotated[int | None, typer.Option("--lead", help="One lead with confidence intervals.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Only runs on this dataset.")] = None,
    reference: Annotated[str | None, typer.Option("--reference", help="Model that differences are taken against (default: the problem's strongest reference).")] = None,
    work: Annotated[str | None, typer.Option("--work", help="Work key (default: that of the newest run).")] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    store: StoreOpt = None,
):
    """Models x leads from recorded backtests of the same work (plus imported forecasts on the
    same inits), with block-bootstrap (by year) confidence intervals."""
    from climate_ml.leaderboard import FIELD_METRICS, format_board, leaderboard_table
    from climate_ml.scores import METRICS

    if score not in METRICS and score not in FIELD_METRICS:
        raise QueryError(f"bad --score {score!r} ({', '.join(METRICS)}; for maps {', '.join(FIELD_METRICS)})")
    if n_boot < 100:
        raise QueryError(f"bad --n-boot {n_boot}: use at least 100")
    table = leaderboard_table(_root(store), problem, score, dataset, reference, n_boot, work)
    typer.echo(json.dumps(table) if as_json else format_board(table, lead))


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
    fc, action, dropped = import_forecasts(_root(store), prob, file, model, column, note, replace, dataset=dataset)
    inits = pd.DatetimeIndex(fc["init_time"].values)
    typer.echo(f"{action}: {model} forecasts for {len(inits)} inits {inits[0]:%Y-%m}..{inits[-1]:%Y-%m}, "
               f"leads {int(fc['lead'].min())}..{int(fc['lead'].max())}"
               + (f" (dropped leads {dropped[0]}..{dropped[-1]}, beyond {prob.name}'s)" if dropped else ""))


@app.command("stress")
def stress_cmd(
    problem: Annotated[str, typer.Argument(help="A problem whose features carry an ENSO phase (e.g. el_nino, california_rainfall).")],
    model_paths: Annotated[list[Path], typer.Argument(help="Model files.")],
    dataset: DatasetOpt = None,
    predictor_dataset: PredictorOpt = None,
    target_variable: TargetVarOpt = None,
    train_end: Annotated[str, typer.Option("--train-end", help="Last month of the training era.")] = "1949-12",
    test_start: Annotated[str, typer.Option("--test-start")] = "1980-01",
    test_end: Annotated[str | None, typer.Option("--test-end")] = None,
    refit_every: Annotated[int, typer.Option("--refit-every", help="Refits of the in-regime comparison.")] = 12,
    lead: Annotated[int, typer.Option("--lead", help="Lead shown in the text table.")] = 6,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    store: StoreOpt = None,
):
    """Regime shift: train on one era and test on another, against the usual refitted backtest;
    skill by target season and ENSO phase at the init."""
    from climate_ml.model_api import load_model_factory, model_name
    from climate_ml.problems import get_problem
    from climate_ml.stress import format_stress, stress_test
    from climate_ml.workflows import problem_inputs, reference_paths

    prob = get_problem(problem, target_variable=target_variable)
    if prob.enso_phase is None:
        raise QueryError(f"stress breaks skill down by ENSO phase at the init; {prob.name!r} has no ENSO phase")
    for path in model_paths:
        load_model_factory(path)
    if lead not in prob.leads:
        raise QueryError(f"bad --lead {lead}: {prob.name} leads are {prob.leads[0]}..{prob.leads[-1]}")
    _, _, prepared = problem_inputs(_root(store), prob, dataset, predictor_dataset, log=err.print)
    end = _month(test_end, "--test-end") or prob.last_init(prepared)
    specs = {**reference_paths(prob), **{model_name(p): Path(p) for p in model_paths}}
    report = stress_test(prob, specs, prepared, _month(train_end, "--train-end"), _month(test_start, "--test-start"),
                         end, refit_every)
    typer.echo(json.dumps(report) if as_json else format_stress(report, lead))


@app.command("sea-ice-fields")
def sea_ice_fields_cmd(
    dataset: Annotated[str, typer.Option("--dataset", help="A sea-ice concentration field (fraction, with cell_area).")] = "toy-sea-ice",
    test_start: Annotated[str, typer.Option("--test-start", help="First test init, YYYY-MM.")] = "2012-01",
    test_end: Annotated[str | None, typer.Option("--test-end", help="Last test init, YYYY-MM (default: end of data).")] = None,
    refit_every: Annotated[int, typer.Option("--refit-every", help="Months between refits.")] = 12,
    model_paths: Annotated[list[Path] | None, typer.Option(
        "--model", help="A field model file (TARGET = \"sea_ice_concentration\"), e.g. models/convlstm_sea_ice.py; repeatable.")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="With --model: write a PNG map of each model's probability of ice at lead 1 from the last "
                       "verified test init, with the observed ice edge.")] = None,
    archive: Annotated[bool, typer.Option(
        "--archive", help="With --model: archive each model's out-of-sample maps (all members) as hindcasts, with "
                          "the observed maps; query them with `climate-ml archive query --problem arctic_sea_ice "
                          "--dataset NAME --model M [--box ...]`.")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="With --archive: overwrite different archived maps.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    store: StoreOpt = None,
):
    """Backtest concentration-field forecasts at leads 1-6: the per-cell references
    (climatology, linear trend, trend persistence, damped anomaly persistence) and any field
    model files given with --model, on the same folds. Scores: integrated ice-edge error,
    sea-ice-extent error, binary accuracy (ice = concentration >= 15%) and the Brier score of
    the probability of ice (from the members of a model that has them)."""
    import numpy as np

    from climate_ml.report import plot_ice_probability
    from climate_ml.sea_ice_fields import THRESHOLD
    from climate_ml.workflows import field_backtest_run

    start = _month(test_start, "--test-start")
    end = _month(test_end, "--test-end")
    if refit_every < 1:
        raise QueryError(f"bad --refit-every {refit_every}: must be at least 1")
    recent: dict[str, dict] = {}  # model -> the lead-1 probability of ice of its two latest inits

    def keep(name, init, maps):
        if plot:
            latest = recent.setdefault(name, {})
            latest[init] = (maps[:, 0] >= THRESHOLD).mean(0)
            for old in sorted(latest)[:-2]:
                del latest[old]

    with _progress("field backtest") as bar:
        task = bar.add_task("", total=None)
        run = field_backtest_run(_root(store), dataset, start, end, refit_every, model_paths or [], archive=archive,
                                 replace=replace, on_forecast=keep, log=err.print,
                                 progress=lambda msg: bar.update(task, description=msg))
    conc = run.concentration
    map_init = min(run.end, pd.Timestamp(conc["time"].values[-1]) - pd.DateOffset(months=1))  # lead 1 observed
    kept = {name: p[map_init] for name, p in recent.items() if map_init in p}
    if plot and kept:
        valid = map_init + pd.DateOffset(months=1)
        ocean = np.isfinite(conc.values).any(0)
        probs = {name: np.where(ocean, p.reshape(ocean.shape), np.nan) for name, p in kept.items()}
        png = plot_ice_probability(conc.sel(time=valid).values, probs, plot, f"{valid:%Y-%m} from {map_init:%Y-%m} (lead 1)")
        err.print(f"wrote {png}")
    _report_field_run(run, dataset, test_start, refit_every, as_json, archive)


def _report_field_run(run, dataset: str, test_start: str, refit_every: int, as_json: bool, archive: bool) -> None:
    """What `sea-ice-fields` and `backtest` with field models print; exit 3 when a model failed."""
    from climate_ml.report import skill_table

    leads = list(range(1, 7))
    err.print(f"recorded {run.record.name} (`climate-ml leaderboard arctic_sea_ice --score iiee` ranks the models)")
    if as_json:
        typer.echo(json.dumps({"problem": "arctic_sea_ice", "dataset": dataset, "test_period": [test_start, f"{run.end:%Y-%m}"],
                               "refit_every_months": refit_every, "leads": leads, "scores": run.summary,
                               "failed": run.failures, "record": run.record.name,
                               **({"archived": run.archived} if archive else {})}))
    else:
        for metric in ("iiee", "sie_rmse", "binary_accuracy", "ice_brier"):
            typer.echo(skill_table(run.summary, metric, leads) + "\n")
        for name, reason in run.failures.items():
            typer.echo(f"FAILED {name}: {reason}")
    if run.failures:
        raise typer.Exit(3)


@app.command()
def forecast(
    problem: Annotated[str, typer.Argument(help=PROBLEM_HELP)],
    model_paths: Annotated[list[Path], typer.Argument(help="One or more model files.")],
    init: Annotated[str, typer.Option("--init", help="Init month YYYY-MM (data up to it are used), or a range A:B of them.")],
    dataset: DatasetOpt = None,
    predictor_dataset: PredictorOpt = None,
    target_variable: TargetVarOpt = None,
    refit_every: Annotated[int, typer.Option("--refit-every", help="With a range of inits: months between refits.")] = 12,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a plume PNG: every model's forecast with the observed history.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a different archived forecast for this init.")] = False,
    store: StoreOpt = None,
):
    """Train on data up to --init, forecast every lead with each model, and archive the forecasts.
    With a range --init A:B, forecast every init in it, fitting once per --refit-every months.
    Field models (TARGET = "sea_ice_concentration", for arctic_sea_ice) forecast concentration
    maps from one init; the maps are archived and their extents printed."""
    from climate_ml.problems import get_problem
    from climate_ml.report import CATEGORY_NAMES, plot_plume
    from climate_ml.workflows import (
        forecast_and_archive,
        observed_history,
        problem_inputs,
    )

    prob = get_problem(problem, target_variable=target_variable)
    span = init.split(":") if ":" in init else None
    if span is not None and len(span) != 2:
        raise QueryError(f"bad --init {init!r}: expected YYYY-MM or a range YYYY-MM:YYYY-MM")
    init_ts = _month(init, "--init") if span is None else None
    first, last = (_month(span[0], "--init start"), _month(span[1], "--init end")) if span else (None, None)
    if span and last < first:
        raise QueryError(f"bad --init {init!r}: end before start")
    if refit_every < 1:
        raise QueryError(f"bad --refit-every {refit_every}: must be at least 1")
    root = _root(store)
    if _field_models(prob, model_paths, "forecast"):  # fails fast on a broken path before any data work
        _forecast_maps(root, prob, model_paths, dataset, init_ts, span, replace, as_json)
        return
    dataset, obs, prepared = problem_inputs(root, prob, dataset, predictor_dataset, log=err.print)
    if span:
        _forecast_range(root, prob, model_paths, obs, prepared, dataset, first, last, refit_every, replace, as_json)
        return
    results, forecasts = {}, {}
    for model_path in model_paths:
        fc, action, outlook = forecast_and_archive(root, prob, model_path, obs, prepared, dataset, init_ts, replace,
                                                   outlook=True)
        forecasts[model_path.stem] = fc
        mean = fc.mean("member") if "member" in fc.dims else fc
        rows = [{"lead": int(lead), "valid_time": f"{pd.Timestamp(v):%Y-%m}", "forecast": round(float(x), 4)}
                for lead, v, x in zip(mean["lead"].values, mean["valid_time"].values[0], mean.values[0], strict=True)]
        for r in rows if outlook else []:
            if "monthly_terciles" in outlook:  # rainfall
                r["terciles"] = outlook["monthly_terciles"][str(r["lead"])]
            if "categories" in outlook:  # El Nino: the season centred on valid_time; sea ice: record low, last year
                if "valid_season" in outlook:
                    r["season"] = outlook["valid_season"][str(r["lead"])]
                r["categories"] = outlook["categories"][str(r["lead"])]
                if isinstance(outlook.get("thresholds"), dict):
                    r["thresholds"] = outlook["thresholds"][str(r["lead"])]
        out = {"problem": prob.name, "model": model_path.stem, "init_time": init, "dataset": dataset, "archive": action,
               "forecast": rows}
        if outlook and "season" in outlook:
            out["season"] = outlook["season"]
        results[model_path.stem] = out
    png = None
    if plot is not None:
        png = plot_plume(observed_history(prob, prepared, init_ts), forecasts, plot,
                         f"{prob.name} on {dataset}: forecasts from {init}", prob)
        err.print(f"wrote {png}")
    if as_json:
        typer.echo(json.dumps(next(iter(results.values())) if len(results) == 1 else
                              {"problem": prob.name, "init_time": init, "dataset": dataset, "models": results}))
        return
    for name, out in results.items():
        typer.echo(f"{prob.name} forecast from {name}, init {init} on {dataset} ({out['archive']} in archive)")
        for r in out["forecast"]:
            terc, cats = r.get("terciles"), r.get("categories")
            extra = (f"   P(below/near/above) {terc['below']:.2f}/{terc['near']:.2f}/{terc['above']:.2f}" if terc else
                     (f"   {r['season']}" if "season" in r else "")
                     + f"  P({'/'.join(CATEGORY_NAMES.get(c, c) for c in cats)}) "
                     + "/".join(f"{v:.2f}" for v in cats.values())
                     + ("  (record {record_low:.2f}, last year {last_year:.2f})".format(**r["thresholds"])
                        if "thresholds" in r else "") if cats else "")
            typer.echo(f"  lead {r['lead']:2d}  {r['valid_time']}  {r['forecast']:{'+' if prob.target_is_anomaly else ''}.2f} "
                       f"{prob.target_units}" + extra)
        if "season" in out:
            s = out["season"]
            p = s["probability"]
            typer.echo(f"  {s['months']} total {s['forecast']:.0f} {s['units']} (terciles {s['tercile_edges'][0]:.0f} / "
                       f"{s['tercile_edges'][1]:.0f}): P(below/near/above) {p['below']:.2f}/{p['near']:.2f}/{p['above']:.2f}")


def _forecast_maps(root, prob, model_paths, dataset, init, span, replace, as_json) -> None:
    from climate_ml.workflows import field_forecast_and_archive

    if span:
        raise QueryError("field models forecast one init at a time (--init YYYY-MM); "
                         "`climate-ml backtest arctic_sea_ice FILE` runs them over a test period")
    dataset = dataset or prob.default_dataset
    results = [field_forecast_and_archive(root, dataset, Path(p), init, replace=replace, log=err.print)
               for p in model_paths]
    if as_json:
        typer.echo(json.dumps(results[0] if len(results) == 1 else {"problem": prob.name, "models": results}))
        return
    for out in results:
        typer.echo(f"{prob.name} concentration maps from {out['model']} ({out['members']} members), init "
                   f"{out['init_time']} on {dataset} ({out['archive']} in archive); extent of the mean map:")
        for r in out["forecast"]:
            seen = f"   observed {r['observed_extent']:.2f}" if "observed_extent" in r else ""
            typer.echo(f"  lead {r['lead']:2d}  {r['valid_time']}  {r['extent']:.2f} {out['units']}{seen}")
    err.print(f"query the maps with `climate-ml archive query --problem {prob.name} --model {results[0]['model']} "
              f"--init {results[0]['init_time']} --dataset {dataset} --format netcdf -o maps.nc`")


def _forecast_range(root, prob, model_paths, obs, prepared, dataset, first, last, refit_every, replace, as_json):
    from climate_ml.workflows import forecast_range

    times = pd.DatetimeIndex(prepared["time"].values)
    if first < times[0] or last > times[-1]:
        raise QueryError(f"bad --init {first:%Y-%m}:{last:%Y-%m}: the data cover {times[0]:%Y-%m}..{times[-1]:%Y-%m}")
    with _progress("forecasting") as bar:
        task = bar.add_task("", total=None)
        result, actions = forecast_range(root, prob, model_paths, obs, prepared, dataset, first, last, refit_every,
                                         replace, lambda msg: bar.update(task, description=msg))
    out = {"problem": prob.name, "dataset": dataset, "inits": f"{first:%Y-%m}:{last:%Y-%m}",
           "refit_every_months": refit_every,
           "models": {name: {"archive": actions.get(name), "n_inits": int(fc.sizes["init_time"]),
                             "n_fits": int(len(set(result.fit_end.values.tolist()))) if result.fit_end is not None else None}
                      for name, fc in result.forecasts.items()}}
    if as_json:
        typer.echo(json.dumps(out))
        return
    for name, m in out["models"].items():
        typer.echo(f"{prob.name} forecasts from {name} for {m['n_inits']} inits {out['inits']} on {dataset}, "
                   f"{m['n_fits']} fits ({m['archive']} in archive)")


@app.command()
def outlook(
    problem: Annotated[str, typer.Argument(help=PROBLEM_HELP)],
    init: Annotated[str | None, typer.Option("--init", help="Init month YYYY-MM (default: the latest month with every input).")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="Models in models/ (repeatable; default: every model of the problem).")] = None,
    dataset: DatasetOpt = None,
    predictor_dataset: PredictorOpt = None,
    target_variable: TargetVarOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="PNG to write (default: <store>/runs/outlook-<problem>-<init>.png).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    store: StoreOpt = None,
):
    """The latest outlook: every model's forecast from one init (archived), the problem's
    probabilities (El Nino: La Nina / neutral / El Nino; rainfall: terciles) with their
    multi-model mean, as a table and a PNG (plume and probability bars)."""
    from climate_ml.problems import get_problem
    from climate_ml.report import plot_outlook
    from climate_ml.workflows import multi_model_outlook, problem_inputs, registered_models

    prob = get_problem(problem, target_variable=target_variable)
    init_ts = _month(init, "--init")
    available = registered_models(prob.name)
    unknown = sorted(set(model or []) - set(available))
    if unknown:
        raise QueryError(f"unknown model {unknown[0]!r} for {prob.name} (models: {', '.join(available)})")
    root = _root(store)
    name, obs, prepared = problem_inputs(root, prob, dataset, predictor_dataset, log=err.print)
    paths = {m: available[m] for m in (model or available)}
    with _progress("outlook") as bar:
        bar.add_task(f"{len(paths)} models", total=None)
        result = multi_model_outlook(root, prob, paths, obs, prepared, name, init_ts)
    png = plot_outlook(result, output or root / "runs" / f"outlook-{prob.name}-{result.init:%Y-%m}.png", prob)
    if as_json:
        typer.echo(json.dumps({"problem": prob.name, "dataset": name, "init_time": f"{result.init:%Y-%m}",
                               "models": result.summaries, "consensus": result.consensus, "failed": result.failures,
                               "png": str(png)}))
    else:
        typer.echo(f"{prob.name} outlook on {name} from {result.init:%Y-%m} ({prob.target_units})")
        typer.echo(result.table())
        for m, reason in result.failures.items():
            typer.echo(f"FAILED {m}: {reason}")
        err.print(f"wrote {png}")
    if not result.summaries:
        raise typer.Exit(3)


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
    from climate_ml.archive import FORMATS, export, parse_init_range, parse_leads, query
    from climate_ml.problems import get_problem
    from climate_ml.regions import parse_box

    parse_init_range(init)  # validate parameters before touching the store
    parse_init_range(valid)
    parse_leads(lead)
    if box is not None:
        parse_box(box)
    if fmt not in FORMATS:
        raise QueryError(f"bad --format {fmt!r} ({', '.join(FORMATS)})")
    get_problem(problem)
    data = export(query(_root(store), problem, model, init, lead, dataset=dataset, valid=valid, as_of=as_of,
                        box=box), fmt)
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
    rows = history(_root(store), problem)[:limit]
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
    typer.echo(f"tagged {problem} archive snapshot {tag(_root(store), problem, name)} as {name}")


@app.command()
def verify(
    problem: Annotated[str, typer.Argument(help=PROBLEM_HELP)],
    dataset: DatasetOpt = None,
    predictor_dataset: PredictorOpt = None,
    target_variable: TargetVarOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    store: StoreOpt = None,
):
    """Record the outcomes observed since in the archive, beside their forecasts, and score every
    archived forecast whose target has been observed, per model and lead. Archived concentration
    maps (field models) get their observed maps and the field scores (IIEE, extent RMSE, binary
    accuracy, Brier score of P(ice))."""
    from climate_ml.archive import list_models
    from climate_ml.problems import get_problem
    from climate_ml.sea_ice_fields import concentration_field
    from climate_ml.verify import (
        record_field_outcomes,
        record_outcomes,
        verification_records,
        verify_archive,
        verify_fields,
    )
    from climate_ml.workflows import problem_inputs

    prob = get_problem(problem, target_variable=target_variable)
    root = _root(store)
    name, obs, prepared = problem_inputs(root, prob, dataset, predictor_dataset, log=err.print)
    index_models = list_models(root, prob.name, name, kind="index")
    map_models = list_models(root, prob.name, name, kind="maps")
    if not index_models and not map_models:
        raise QueryError(f"no forecasts archived for {prob.name} on {name}")
    recs, maps = [], []
    if index_models:
        filled = record_outcomes(root, prob, prepared, name)
        if filled:
            err.print(f"recorded {filled} newly observed outcome(s) in the archive")
        recs = verification_records(verify_archive(root, prob, prepared, name))
    if map_models:
        conc, area = concentration_field(obs)
        conc = conc.load()
        filled = record_field_outcomes(root, prob, conc, name)
        if filled:
            err.print(f"recorded {filled} newly observed map value(s) in the archive")
        maps = verify_fields(root, prob, conc, area, name)
    if as_json:
        typer.echo(json.dumps(recs if not map_models else {"index": recs, "maps": maps}))
        return
    if recs:
        typer.echo(pd.DataFrame(recs).to_string(index=False))
    if maps:
        typer.echo(("\n" if recs else "") + "concentration maps (iiee, sie_rmse in 10^6 km^2):")
        typer.echo(pd.DataFrame(maps).to_string(index=False))


@app.command()
def run(
    quick: Annotated[bool, typer.Option("--quick", help="Short test period and sparse refits (about 5 minutes instead of about 11 on 2 cores).")] = False,
    store: StoreOpt = None,
):
    """The main job, as a Prefect flow: data -> features -> backtest -> forecast -> archive -> verify -> report."""
    from flows.run import climate_ml_run

    summary = climate_ml_run(store=str(_root(store)), quick=quick)
    typer.echo(summary["text"])


@app.command("serve")
def serve_cmd(
    cron: Annotated[str, typer.Option("--cron", help="Cron schedule (UTC).")] = "0 6 5 * *",
    problem: Annotated[list[str] | None, typer.Option("--problem", help="Problems to schedule (repeatable; default: every problem).")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Catalog entry to ingest each month, for one --problem (default: the problem's embedded data).")] = None,
    predictor_dataset: PredictorOpt = None,
    store: StoreOpt = None,
):
    """Serve the monthly forecast flow of every problem (or those given) as Prefect deployments
    on a cron schedule, one deployment per problem, in this process. Needs a Prefect server:
    set PREFECT_API_URL, e.g. after `prefect server start`."""
    from climate_ml.catalog import get_entry
    from climate_ml.problems import get_problem
    from flows.monthly import require_prefect_server, serve

    require_prefect_server()
    for p in problem or []:
        get_problem(p)
    for name in [dataset, *(predictor_dataset or [])]:
        if name is not None:
            get_entry(name)
    parts = cron.split()
    if len(parts) != 5:
        raise QueryError(f"bad --cron {cron!r}: expected 5 fields (minute hour day month weekday)")
    err.print(f"serving the monthly job for {', '.join(problem or ['every problem'])} on cron {cron!r}; Ctrl-C stops")
    serve(cron=cron, problems=problem, dataset=dataset, store=str(_root(store)), predictors=predictor_dataset)


@app.command("serve-api")
def serve_api(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="Server processes (each keeps its own snapshot cache).")] = 2,
    store: StoreOpt = None,
):
    """Serve the forecast archive and leaderboard over HTTP (GET /forecasts, /leaderboard)."""
    import uvicorn

    if not 0 < port < 65536:
        raise QueryError(f"bad --port {port}")
    if not 1 <= workers <= 64:
        raise QueryError(f"bad --workers {workers}: between 1 and 64")
    os.environ["CLIMATE_ML_STORE"] = str(_root(store))  # what each worker process's app serves
    uvicorn.run("climate_ml.api:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level="warning")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    command = typer.main.get_command(app)
    try:
        # without standalone mode click returns a command's typer.Exit code instead of raising it
        code = command.main(args=argv, prog_name="climate-ml", standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C into Exit(130), silently
            print("aborted (interrupted)", file=sys.stderr)
        return code if isinstance(code, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("aborted (interrupted)", file=sys.stderr)
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
