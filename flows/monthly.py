"""The operational monthly job, as a Prefect flow and a cron deployment.

Each month: ingest the new observations (only new months are appended), issue forecasts from
every registered model for the latest observed month with the problem's probabilities, archive
them, attach the outlook (table and PNG: plume and multi-model probabilities) as a Prefect
artifact, record the outcomes that have come due beside their forecasts, verify every archived
forecast, and compare the live forecasts' running skill with each model's backtest (drift). ``serve`` registers it with a Prefect server as a
deployment on a cron schedule and executes its runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from climate_ml.backtest import default_jobs
from climate_ml.catalog import get_entry
from climate_ml.errors import ClimateMLError, DownloadError
from climate_ml.ingest import ingest_entry
from climate_ml.problems import get_problem
from climate_ml.report import plot_outlook
from climate_ml.requests import OutlookRequest, VerifyRequest
from climate_ml.store import Store
from climate_ml.workflows import multi_model_outlook, problem_inputs, verify_forecasts

DEFAULT_CRON = "0 6 5 * *"  # 06:00 UTC on the 5th: monthly SST analyses are out by then


def only_downloads(task, task_run, state) -> bool:
    """Prefect's retry condition: try a failed download again later (the network, a file not yet
    published); data that arrived but are wrong (corrupt, wrong units, revised values) fail the
    run at once, with their one-line error, instead of after minutes of retries."""
    return isinstance(state.data, DownloadError)


@task(retries=3, retry_delay_seconds=[10, 60, 300], retry_condition_fn=only_downloads)
def ingest_new_months(store: Store, dataset: str) -> str:
    """Network IO (a download for URL entries): the only step with retries, for downloads only."""
    res = ingest_entry(get_entry(dataset), store)
    revised = f", {res.n_revised} stored months revised" if res.n_revised else ""
    return f"{dataset}: {res.action} ({res.n_new} new months{revised}, {res.n_time} in store)"


@task
def issue_outlook(store: Store, request: OutlookRequest, run_dir: str, n_jobs: int = 1) -> dict:
    """The requested models' forecasts from the latest month with every input, archived, with
    the problem's probabilities and their multi-model mean (as `climate-ml outlook`); the outlook
    PNG, and a Prefect artifact with its table. A model that fails is one line; the others still
    forecast. The models' fits (the forecasts and the backtest that calibrates the
    probabilities) run in ``n_jobs`` local processes."""
    problem = request.definition()
    problem_name = problem.name
    dataset, obs, prepared = problem_inputs(store, problem, request.dataset,
                                            None if request.predictors is None else list(request.predictors))
    outlook = multi_model_outlook(store, problem, request.model_paths(), obs, prepared, dataset, request.init,
                                  n_jobs=n_jobs)
    png = plot_outlook(outlook, Path(run_dir) / f"outlook-{problem_name}-{outlook.init:%Y-%m}.png", problem)
    for name, reason in outlook.failures.items():
        get_run_logger().warning(f"FAILED {name}: {reason}")
    create_markdown_artifact(
        key=f"outlook-{problem_name.replace('_', '-')}",
        markdown=f"## {problem_name} outlook on {dataset} from {outlook.init:%Y-%m}\n\n{outlook.table()}\n\n"
                 + "".join(f"- FAILED {n}: {r}\n" for n, r in outlook.failures.items()) + f"\nplot: `{png}`\n",
        description=f"{problem_name}: every model's forecast and the category probabilities")
    return {"forecasts": [*outlook.summaries.values(), *({"model": n, "error": r} for n, r in outlook.failures.items())],
            "consensus": outlook.consensus, "png": str(png)}


@task
def verify_all(store: Store, request: VerifyRequest) -> dict:
    """The library's verification step (as `climate-ml verify`): outcomes that have come due
    recorded beside their forecasts, every archived forecast scored, the live forecasts' running
    skill against each model's backtest kept in the archive; drift also goes into a Prefect
    artifact and the result."""
    done = verify_forecasts(store, request)
    problem_name, dataset = request.problem, done.dataset
    drifting = done.drifting
    through = next((s.attrs["verified_through"] for s in (done.skill, done.map_skill) if s is not None), "-")
    lines = [f"## {problem_name} on {dataset}: live skill against the backtest, verified through {through}", "",
             f"{len(drifting)} (model, lead) outside their backtest interval; {done.outcomes_recorded} outcome(s) "
             "newly recorded.", "",
             "| model | lead | score | live | n | backtest | interval | status |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['lead']} | {r['score']} | {r['live']} | {r['n']} | {r['backtest']} | "
              f"{r['backtest_ci']} | {r['status']} |" for r in done.monitoring if r["n"] > 0 or r["status"] == "drift"]
    create_markdown_artifact(key=f"skill-drift-{problem_name.replace('_', '-')}", markdown="\n".join(lines),
                             description=f"{problem_name}: running skill of live forecasts and drift flags")
    if drifting:
        get_run_logger().warning("DRIFT: " + ", ".join(f"{r['model']} lead {r['lead']}" for r in drifting))
    return {"verification": done.index or [], "outcomes_recorded": done.outcomes_recorded, "drift": drifting,
            "monitoring": done.monitoring}


@flow(name="climate-ml-monthly", log_prints=True)
def monthly_forecast(problem: str = "el_nino", dataset: str | None = None, store: str | None = None,
                     models: list[str] | None = None, predictors: list[str] | None = None,
                     n_jobs: int | None = None) -> dict:
    """Ingest new observations (the target's and the predictors'), forecast with every model,
    archive, verify. Without a dataset: the problem's default data and predictors. ``n_jobs``:
    local processes for the models' fits (default: the CPUs, at most 4)."""
    logger = get_run_logger()
    store = Store.at(store)
    prob = get_problem(problem)
    if predictors is None:
        predictors = list(prob.default_predictors) if dataset is None else []
    dataset = dataset or prob.default_dataset
    for name in [dataset, *predictors]:
        logger.info(ingest_new_months(store, name))
    wanted = OutlookRequest.checked(problem=problem, models=models, dataset=dataset, predictors=predictors)
    run_dir = store.run_dir(f"monthly-{problem}")
    outlook = issue_outlook(store, wanted, str(run_dir), default_jobs() if n_jobs is None else n_jobs)
    issued = outlook["forecasts"]
    checked = verify_all(store, VerifyRequest.checked(problem=problem, dataset=dataset, predictors=predictors))
    summary = {"problem": problem, "dataset": dataset, "predictors": predictors, "forecasts": issued,
               "consensus": outlook["consensus"], "outlook_png": outlook["png"], **checked}
    (run_dir / "monthly.json").write_text(json.dumps(summary, indent=1))
    kept = store.publish_run(run_dir)  # the folder, or its copy in the store's bucket
    ok = [i for i in issued if "error" not in i]
    failed = [i["model"] for i in issued if "error" in i]
    logger.info(f"issued {len(ok)} forecasts from {ok[0]['init'] if ok else '-'}"
                + (f"; FAILED: {', '.join(failed)}" if failed else "") + f"; summary in {kept}")
    return summary


def require_prefect_server() -> None:
    """Without PREFECT_API_URL, ``serve`` would poll a temporary server that schedules nothing."""
    from prefect.settings import PREFECT_API_URL


    if not PREFECT_API_URL.value():
        raise ClimateMLError("serve needs a Prefect server to schedule on: start one (`prefect server start`) and set "
                             "PREFECT_API_URL, e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api")


def check_schedule(cron: str, problems: list[str] | None = None, dataset: str | None = None,
                   predictors: list[str] | None = None) -> list[str]:
    """The problems to schedule, once the arguments are checked (before any server is asked):
    known problems and catalog entries, a dataset for one problem only, a cron string Prefect
    takes (five fields, e.g. ``0 6 5 * *``, or ``@monthly``)."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    from climate_ml.catalog import get_entry
    from climate_ml.problems import get_problem, problem_names

    for p in problems or []:
        get_problem(p)
    for name in [dataset, *(predictors or [])]:
        if name is not None:
            get_entry(name)
    problems = list(problems or problem_names())
    if (dataset or predictors) and len(problems) != 1:
        raise ClimateMLError("--dataset and --predictor-dataset belong to one problem: give exactly one --problem")
    try:
        CronSchedule(cron=cron)
    except ValidationError:
        raise ClimateMLError(f"bad --cron {cron!r}: not a cron schedule (minute hour day month weekday, "
                             "e.g. '0 6 5 * *' for 06:00 UTC on the 5th)") from None
    return problems


def serve(cron: str = DEFAULT_CRON, problems: list[str] | None = None, dataset: str | None = None,
          store: str | None = None, predictors: list[str] | None = None) -> None:
    """Register one monthly deployment per problem (``monthly-<problem>``, all problems by
    default) with the Prefect server at $PREFECT_API_URL and run their flow runs as they come
    due, in one process (blocks until interrupted)."""
    from prefect import serve as prefect_serve

    problems = check_schedule(cron, problems, dataset, predictors)
    require_prefect_server()
    deployments = [
        monthly_forecast.to_deployment(
            name=f"monthly-{p}", cron=cron,
            parameters={"problem": p, "dataset": dataset, "store": str(Store.at(store)), "predictors": predictors},
            description=f"{p}: ingest new observations, forecast with every model, archive, verify.")
        for p in problems
    ]
    prefect_serve(*deployments, print_starting_message=False)
