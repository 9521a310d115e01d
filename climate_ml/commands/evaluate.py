"""Evaluating models: backtests (index and field models), the leaderboard, regime-shift stress."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from climate_ml.commands.common import (
    PROBLEM_HELP,
    DatasetOpt,
    PredictorOpt,
    SchedulerOpt,
    StoreOpt,
    TargetVarOpt,
    app,
    err,
    parse_month,
    progress_bar,
)
from climate_ml.errors import QueryError
from climate_ml.store import Store


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
    archive: Annotated[bool, typer.Option("--archive", help="Archive every model's out-of-sample forecasts as hindcasts "
                                                             "(for field models: all members of every map, with the observed maps).")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Field models with --archive: overwrite different archived maps.")] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Field models: write a PNG map of each model's probability of ice at lead 1 from the last "
                       "verified test init, with the observed ice edge.")] = None,
    guard: Annotated[bool, typer.Option("--guard/--no-guard", help="Run the lookahead guard on the submitted models (skip it knowingly).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    store: StoreOpt = None,
):
    """Rolling-origin backtest of model files against the problem's references on the same
    folds; each run is recorded for `climate-ml leaderboard`. Field models (files that say
    TARGET = "sea_ice_concentration", for arctic_sea_ice, e.g. models/convlstm_sea_ice.py) are
    backtested on the concentration maps against the per-cell references of models/fields/
    (give one of those alone to run only the references), scored by IIEE, extent error, binary
    accuracy, the Brier score of P(ice), the CRPS of concentration and the members' spread/skill."""
    from climate_ml.cluster import scheduler_address
    from climate_ml.model_api import model_name
    from climate_ml.report import skill_table
    from climate_ml.requests import BacktestRequest, cli_option
    from climate_ml.workflows import backtest_summary, run_backtest_request

    request = BacktestRequest.checked(
        cli_option, problem=problem, model_paths=model_paths, dataset=dataset, predictors=predictor_dataset,
        target_variable=target_variable, test_start=test_start, test_end=test_end, refit_every=refit_every,
        n_jobs=n_jobs, scheduler=scheduler_address(scheduler), time_limit=time_limit, blend=blend, record=record,
        archive=archive, replace=replace, guard=guard)
    prob, store, start = request.definition(), Store.at(store), request.test_start
    if request.fields:  # concentration maps: the field backtest, recorded for the field leaderboard
        _field_backtest(store, request, plot, as_json)
        return
    if plot:
        raise QueryError("--plot is for field models (maps); these are index models")
    with progress_bar("backtest") as bar:
        task = bar.add_task("", total=None)
        ev = run_backtest_request(store, request, progress=lambda msg: bar.update(task, description=msg), log=err.print)
    dataset, end = ev.dataset, ev.test_end
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


@app.command("leaderboard")
def leaderboard_cmd(
    problem: Annotated[str, typer.Argument(help=PROBLEM_HELP)],
    score: Annotated[str, typer.Option("--score", help="A registered metric: acc, rmse, mae...; for sea-ice maps (field backtests) iiee, sie_rmse, binary_accuracy, ice_brier or conc_crps.")] = "acc",
    lead: Annotated[int | None, typer.Option("--lead", help="One lead with confidence intervals.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Only runs on this dataset.")] = None,
    reference: Annotated[str | None, typer.Option("--reference", help="Model that differences are taken against (default: the problem's strongest reference).")] = None,
    work: Annotated[str | None, typer.Option("--work", help="Work key (default: that of the newest run).")] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples (100-5000).")] = 1000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    store: StoreOpt = None,
):
    """Models x leads from recorded backtests of the same work (plus imported forecasts on the
    same inits), with block-bootstrap (by year) confidence intervals."""
    from climate_ml.leaderboard import format_board
    from climate_ml.requests import LeaderboardRequest, cli_option

    request = LeaderboardRequest.checked(cli_option, problem=problem, score=score, dataset=dataset,
                                         reference=reference, n_boot=n_boot, work=work)
    table = request.table(Store.at(store))
    typer.echo(json.dumps(table) if as_json else format_board(table, lead))


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
    _, _, prepared = problem_inputs(Store.at(store), prob, dataset, predictor_dataset, log=err.print)
    end = parse_month(test_end, "--test-end") or prob.last_init(prepared)
    specs = {**reference_paths(prob), **{model_name(p): Path(p) for p in model_paths}}
    report = stress_test(prob, specs, prepared, parse_month(train_end, "--train-end"), parse_month(test_start, "--test-start"),
                         end, refit_every)
    typer.echo(json.dumps(report) if as_json else format_stress(report, lead))


def _field_backtest(store: Store, request, plot: Path | None, as_json: bool) -> None:
    """`backtest` of field models: the field backtest with its map of the probability of ice."""
    import numpy as np

    from climate_ml.report import plot_ice_probability
    from climate_ml.sea_ice_fields import THRESHOLD
    from climate_ml.workflows import run_backtest_request

    recent: dict[str, dict] = {}  # model -> the lead-1 probability of ice of its two latest inits

    def keep(name, init, maps):  # only with --plot: else the maps need not come back from the units
        latest = recent.setdefault(name, {})
        latest[init] = (maps[:, 0] >= THRESHOLD).mean(0)
        for old in sorted(latest)[:-2]:
            del latest[old]

    with progress_bar("field backtest") as bar:
        task = bar.add_task("", total=None)
        run = run_backtest_request(store, request, on_forecast=keep if plot else None, log=err.print,
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
    prob = request.definition()
    _report_field_run(run, prob, request.dataset or prob.default_dataset, f"{request.test_start:%Y-%m}",
                      request.refit_every, as_json, request.archive)


def _report_field_run(run, prob, dataset: str, test_start: str, refit_every: int, as_json: bool, archive: bool) -> None:
    """What `backtest` with field models prints; exit 3 when a model failed."""
    from climate_ml.report import skill_table

    leads = list(prob.leads)
    err.print(f"recorded {run.record.name} (`climate-ml leaderboard {prob.name} --score iiee` ranks the models)")
    if as_json:
        typer.echo(json.dumps({"problem": prob.name, "dataset": dataset, "test_period": [test_start, f"{run.end:%Y-%m}"],
                               "refit_every_months": refit_every, "leads": leads, "scores": run.summary,
                               "failed": run.failures, "record": run.record.name,
                               **({"archived": run.archived} if archive else {})}))
    else:
        for metric in ("iiee", "sie_rmse", "binary_accuracy", "ice_brier", "conc_crps"):
            typer.echo(skill_table(run.summary, metric, leads) + "\n")
        spread = {name: s for name, s in run.summary.items() if any(v is not None for v in s["spread_skill"].values())}
        if spread:
            typer.echo(skill_table(spread, "spread_skill", leads) + "\n")
        for name, reason in run.failures.items():
            typer.echo(f"FAILED {name}: {reason}")
    if run.failures:
        raise typer.Exit(3)
