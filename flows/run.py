"""``climate-ml run``: the main job as a Prefect flow, over every problem with an embedded
default data set (El Nino on the toy ocean, Arctic sea ice on the toy sea-ice field, California
rainfall on the toy nClimDiv precipitation with the toy ocean as predictor).

Per problem (a subflow): make/ingest the default data -> build features on a Dask cluster ->
backtest every model in models/ that serves the problem -> issue and archive forecasts from
the latest month -> verify the archive -> print skill tables and write a skill-vs-lead PNG.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import xarray as xr
from prefect import flow, get_run_logger, task

from climate_ml.backtest import default_jobs, issue_forecasts
from climate_ml.cluster import dask_client, local_cluster, scheduler_address
from climate_ml.errors import ClimateMLError
from climate_ml.problems import get_problem, problem_names
from climate_ml.problems.seasonal_totals import MONTH_ABBR
from climate_ml.report import markdown_table, plot_ice_edge, plot_skill, skill_table
from climate_ml.requests import BacktestRequest, VerifyRequest
from climate_ml.store import Store
from climate_ml.workflows import (
    Evaluation,
    ensure_dataset,
    issue_with_outlook,
    problem_inputs,
    registered_models,
    run_backtest_request,
    verify_forecasts,
)


@task
def ingest_default(store: Store, dataset: str) -> str:
    obs = ensure_dataset(store, dataset)
    t = pd.DatetimeIndex(obs["time"].values)
    return f"{dataset}: {len(t)} months {t[0]:%Y-%m}..{t[-1]:%Y-%m}"


@task
def build_features(store: Store, problem_name: str, dataset: str, scheduler: str | None) -> xr.Dataset:
    """The problem's inputs, computed lazily from Zarr on a Dask cluster."""
    problem = get_problem(problem_name)
    predictors = list(problem.default_predictors)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # cluster start/stop chatter, incl. closed comms
    with dask_client(scheduler) if scheduler else local_cluster(2):
        return problem_inputs(store, problem, dataset, predictors)[2]


@task
def evaluate_all(store: Store, problem_name: str, dataset: str, prepared: xr.Dataset, test_start: str,
                 refit_every: int, n_jobs: int = 1, scheduler: str | None = None) -> Evaluation:
    """The library's one backtest path (as `climate-ml backtest`): every model that serves the
    problem, the lookahead guard, the blend, the record for the leaderboard, the hindcasts archived.
    Its (model, fold) fits run in ``n_jobs`` local processes, or on the Dask ``scheduler``."""
    problem = get_problem(problem_name)
    extra = [p for n, p in registered_models(problem_name).items() if n not in problem.references]
    request = BacktestRequest.checked(problem=problem_name, model_paths=extra, dataset=dataset, test_start=test_start,
                                      test_end=pd.Timestamp(prepared["time"].values[-2]), refit_every=refit_every,
                                      archive=True, n_jobs=n_jobs, scheduler=scheduler)
    logger = get_run_logger()
    return run_backtest_request(store, request, prepared=prepared,
                        progress=lambda msg: logger.info(f"{problem_name} backtest: {msg}"))


@task
def forecast_all(problem_name: str, prepared: xr.Dataset, n_jobs: int = 1,
                 scheduler: str | None = None) -> tuple[dict, dict]:
    """Every registered model's forecast from the latest month with every input: (forecasts,
    failures). The fits are units for the backtest's executors (``n_jobs`` processes or Dask)."""
    problem = get_problem(problem_name)
    return issue_forecasts(problem, registered_models(problem_name), prepared, problem.last_init(prepared),
                           n_jobs=n_jobs, scheduler=scheduler)


@task
def issue(store: Store, problem_name: str, dataset: str, model: str, prepared: xr.Dataset, recent=None,
          forecast: xr.DataArray | None = None) -> dict:
    """One model's forecast from the latest month (made by ``forecast_all``), archived with its
    probabilities, calibrated on ``recent``, the run's own backtest of it; a model that fails is
    one line, not the run's end."""
    try:
        return _issue(store, problem_name, dataset, model, prepared, recent, forecast)
    except ClimateMLError as exc:
        get_run_logger().warning(f"FAILED {model}: {exc}")
        return {"model": model, "error": str(exc)}


def _issue(store: Store, problem_name: str, dataset: str, model: str, prepared: xr.Dataset, recent=None,
           forecast: xr.DataArray | None = None) -> dict:
    problem = get_problem(problem_name)
    obs = ensure_dataset(store, dataset)
    out, _ = issue_with_outlook(store, problem, registered_models(problem_name)[model], obs, prepared, dataset,
                                problem.last_init(prepared), recent=recent, forecast=forecast)
    last = max(out["forecast"])
    return {**out, "lead": last, "value": out["forecast"][last]}


@task
def field_skill(store: Store, problem_name: str, dataset: str, test_start: str, refit_every: int, run_dir: str,
                n_jobs: int = 1, scheduler: str | None = None) -> dict:
    """Concentration-field forecasts (per-cell references) scored by IIEE, extent error and
    binary accuracy, recorded for the field leaderboard; a skill plot and a map of the ice edge
    in the last verifiable September."""
    from climate_ml.sea_ice_fields import field_forecast_maps
    from climate_ml.workflows import field_backtest_run

    times = pd.DatetimeIndex(ensure_dataset(store, dataset)["time"].values)
    run = field_backtest_run(store, dataset, test_start, times[-2], refit_every, problem=problem_name,
                             n_jobs=n_jobs, scheduler=scheduler)  # recorded
    conc, summary = run.concentration, run.summary
    leads = list(get_problem(problem_name).leads)
    plot_skill(summary, Path(run_dir) / "field_skill_vs_lead.png",
               f"sea-ice concentration fields on {dataset}: inits {test_start}.., refit every {refit_every} months",
               leads, metrics=("binary_accuracy", "iiee"))
    september = times[times.month == 9][-1]
    init = september - pd.DateOffset(months=3)
    maps = field_forecast_maps(conc, init, 3, ("linear_trend", "damped_anomaly_persistence"))
    png = plot_ice_edge(conc.sel(time=september).values, {k: v.values for k, v in maps.items()},
                        Path(run_dir) / "ice_edge.png", f"{september:%Y-%m}: observed vs lead-3 forecasts from {init:%Y-%m}")
    return {"scores": summary, "map": str(png)}


@task
def verify(store: Store, problem_name: str, dataset: str, prepared: xr.Dataset) -> list[dict]:
    """The library's verification step (as `climate-ml verify`): the index forecasts' scores."""
    obs = ensure_dataset(store, dataset)
    done = verify_forecasts(store, VerifyRequest.checked(problem=problem_name, dataset=dataset), obs, prepared)
    return done.index or []


def field_lines(fields: dict | None) -> list[str]:
    if not fields:
        return []
    return ["Concentration-field forecasts:", skill_table(fields["scores"], "binary_accuracy", range(1, 7)), "",
            skill_table(fields["scores"], "iiee", range(1, 7)), "", f"ice-edge map: {fields['map']}", ""]


def season_lines(result) -> list[str]:
    """The season-total summary per model, for problems that have one."""
    lines = []
    for name in result.forecasts:
        season = result.extra(name).get("season")
        if season:
            lines.append(f"  {name:<18} season (all inits): " + ", ".join(
                f"{k} {season[k]['all']}" for k in ("rmse", "correlation", "bss_upper_tercile", "rpss")))
    prob = result.definition
    months = "/".join(MONTH_ABBR[m - 1] for m in getattr(prob, "season_inits", ()))
    return [f"{getattr(prob, 'season_label', 'season')} total from {months} inits:", *lines, ""] if lines else []


@flow(name="climate-ml-problem", log_prints=True)
def run_problem(problem_name: str, store: str, quick: bool, scheduler: str | None, n_jobs: int = 1) -> dict:
    logger = get_run_logger()
    store = Store.at(store)  # the flow's parameter is the folder; its tasks get the Store
    problem = get_problem(problem_name)
    dataset = problem.default_dataset
    test_start, refit = problem.run_schedule[1 if quick else 0]
    for name in [dataset, *problem.default_predictors]:
        logger.info(ingest_default(store, name))
    prepared = build_features(store, problem_name, dataset, scheduler)
    ev = evaluate_all(store, problem_name, dataset, prepared, test_start, refit, n_jobs, scheduler)
    result, actions = ev.result, ev.archived
    for name, reason in result.failures.items():
        logger.warning(f"FAILED {name}: {reason}")
    made, unmade = forecast_all(problem_name, prepared, n_jobs, scheduler)
    issued = []
    for m in registered_models(problem_name):
        if m in unmade:
            logger.warning(f"FAILED {m}: {unmade[m]}")
            issued.append({"model": m, "error": unmade[m]})
        else:
            issued.append(issue(store, problem_name, dataset, m, prepared, result, made[m]))
    failed_issue = [i for i in issued if "error" in i]
    issued = [i for i in issued if "error" not in i]
    verified = verify(store, problem_name, dataset, prepared)

    scores = {n: result.scores(n) for n in result.forecasts}
    extra = {n: result.extra(n) for n in result.forecasts}
    run_dir = store.run_dir(problem_name)
    png = plot_skill(scores, run_dir / "skill_vs_lead.png",
                     f"{problem_name}: backtest on {dataset}, inits {test_start}.., refit every {refit} months", problem.leads,
                     units=problem.target_units)
    fields = None
    if problem.field_references and "cell_area" in ensure_dataset(store, dataset).coords:
        fields = field_skill(store, problem_name, dataset, test_start, refit, str(run_dir), n_jobs, scheduler)
    (run_dir / "scores.json").write_text(json.dumps({"backtest": scores, "extra": extra, "fields": fields,
                                                     "verification": verified, "forecasts": issued}, indent=1))
    (run_dir / "skill.md").write_text(markdown_table(scores, "acc", problem.leads) + "\n")
    kept = store.publish_run(run_dir)  # the folder, or its copy in the store's bucket
    text = "\n".join([
        f"== {problem_name} ({problem.description}) on {dataset}",
        skill_table(scores, "acc", problem.leads),
        "",
        skill_table(scores, "rmse", problem.leads),
        "",
        *season_lines(result),
        *field_lines(fields),
        "forecasts issued from " + (issued[0]["init"] if issued else "-") + ": "
        + ", ".join(f"{i['model']} lead {i['lead']} = {i['value']:{'+' if problem.target_is_anomaly else ''}.2f} "
                    f"{problem.target_units}" for i in issued),
        *[f"FAILED {name}: {reason}" for name, reason in result.failures.items()],
        *[f"FAILED forecast {i['model']}: {i['error']}" for i in failed_issue],
        f"archive:   {store.archive(problem_name)} :: {dataset} ({', '.join(f'{k}: {v}' for k, v in actions.items())})",
        f"leaderboard: climate-ml leaderboard {problem_name} (run recorded in {ev.record_dir})",
        f"plot:      {png}",
        f"scores:    {run_dir / 'scores.json'}",
        *([f"report:    {kept}"] if kept != str(run_dir) else []),
    ])
    return {"text": text, "run_dir": str(run_dir), "scores": scores, "verification": verified,
            "forecasts": issued, "failures": result.failures}


@flow(name="climate-ml-run", log_prints=True)
def climate_ml_run(store: str | None = None, quick: bool = False, scheduler: str | None = None,
                   n_jobs: int | None = None) -> dict:
    """Run the whole pipeline for every problem on the embedded default data; return summaries.
    Backtests run in ``n_jobs`` local processes (default: the CPUs, at most 4) or on the Dask
    ``scheduler`` when one is given (or set in CLIMATE_ML_DASK_SCHEDULER)."""
    store = Store.at(store)
    scheduler = scheduler_address(scheduler)
    n_jobs = default_jobs() if n_jobs is None else n_jobs
    summaries, failed = {}, {}
    for name in problem_names():  # one problem failing never stops the others
        state = run_problem(name, str(store), quick, scheduler, n_jobs, return_state=True)
        if state.is_completed():
            summaries[name] = state.result()
        else:
            reason = str(state.message or "failed").splitlines()[0]
            failed[name] = reason
            summaries[name] = {"text": f"== {name}: FAILED ({reason})", "failed": reason}
    text = "\n\n".join(s["text"] for s in summaries.values()) + "\n\n" + NEXT_STEPS.format(store=store)
    return {"text": text, "problems": summaries, "failed": failed}


NEXT_STEPS = """Next:
  .venv/bin/climate-ml leaderboard el_nino                   # skill with 95% intervals (`climate-ml problems` lists the others)
  .venv/bin/climate-ml archive query --problem el_nino --init 2024 --format csv   # the archived forecasts
  .venv/bin/climate-ml serve-api                              # the web page at http://127.0.0.1:8000/
  .venv/bin/climate-ml backtest el_nino models/template.py    # your own model, against the references
(store: {store}; `source .venv/bin/activate` puts climate-ml on PATH)"""
