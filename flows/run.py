"""``climate-ml run``: the main job as a Prefect flow.

make/ingest the default data -> build features on a Dask cluster -> backtest every model in
models/ -> issue and archive forecasts from the latest month -> verify the archive -> print a
skill table and write a skill-vs-lead PNG.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from pathlib import Path

import pandas as pd
import xarray as xr
from prefect import flow, get_run_logger, task

from climate_ml.problems import get_problem
from climate_ml.report import markdown_table, plot_skill, skill_table
from climate_ml.store import store_root
from climate_ml.verify import verification_records, verify_archive
from climate_ml.workflows import (
    archive_backtest,
    ensure_dataset,
    forecast_and_archive,
    registered_models,
    run_backtest,
)

DATASET = "toy-ocean"


@task
def ingest_default(root: str) -> str:
    obs = ensure_dataset(Path(root), DATASET)
    return f"{DATASET}: {obs.sizes['time']} months {pd.Timestamp(obs['time'].values[0]):%Y-%m}..{pd.Timestamp(obs['time'].values[-1]):%Y-%m}"


@task
def build_features(root: str, problem_name: str, scheduler: str | None) -> xr.Dataset:
    """Box means and the coarse field, computed lazily from Zarr on a Dask cluster."""
    from dask.distributed import Client, LocalCluster

    problem = get_problem(problem_name)
    obs = ensure_dataset(Path(root), DATASET)
    if scheduler:
        with Client(scheduler):
            return problem.prepare(obs)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.WARNING) as cluster, Client(cluster):
        return problem.prepare(obs)


@task
def backtest_all(problem_name: str, prepared: xr.Dataset, test_start: str, refit_every: int):
    problem = get_problem(problem_name)
    paths = registered_models(problem_name)
    extra = [p for n, p in paths.items() if n not in problem.references]
    test_end = pd.Timestamp(prepared["time"].values[-2])
    return run_backtest(problem, extra, prepared, test_start, test_end, refit_every)


@task
def archive_hindcasts(root: str, problem_name: str, result) -> dict:
    obs = ensure_dataset(Path(root), DATASET)
    return archive_backtest(Path(root), get_problem(problem_name), result, obs, DATASET, registered_models(problem_name))


@task
def issue(root: str, problem_name: str, model: str, prepared: xr.Dataset) -> dict:
    problem = get_problem(problem_name)
    obs = ensure_dataset(Path(root), DATASET)
    init = pd.Timestamp(prepared["time"].values[-1])
    fc, action = forecast_and_archive(Path(root), problem, registered_models(problem_name)[model], obs, prepared, DATASET, init)
    return {"model": model, "init": f"{init:%Y-%m}", "archive": action,
            "lead6": round(float(fc.sel(lead=6).values[0]), 3) if 6 in fc["lead"].values else None}


@task
def verify(root: str, problem_name: str, prepared: xr.Dataset) -> list[dict]:
    return verification_records(verify_archive(Path(root), get_problem(problem_name), prepared))


@flow(name="climate-ml-run", log_prints=True)
def climate_ml_run(store: str | None = None, quick: bool = False, scheduler: str | None = None) -> dict:
    """Run the whole pipeline on the embedded default data; return a summary."""
    logger = get_run_logger()
    root = str(store_root(store))
    problem = get_problem("el_nino")
    scheduler = scheduler or os.environ.get("CLIMATE_ML_DASK_SCHEDULER")
    test_start, refit = ("2016-01", 60) if quick else ("1990-01", 24)

    logger.info(ingest_default(root))
    prepared = build_features(root, problem.name, scheduler)
    result = backtest_all(problem.name, prepared, test_start, refit)
    if result.failures:
        logger.warning(f"failed models: {result.failures}")
    actions = archive_hindcasts(root, problem.name, result)
    issued = [issue(root, problem.name, m, prepared) for m in registered_models(problem.name)]
    verified = verify(root, problem.name, prepared)

    scores = {n: result.scores(n) for n in result.forecasts}
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(root) / "runs" / f"{stamp}-{problem.name}"
    run_dir.mkdir(parents=True, exist_ok=True)
    png = plot_skill(scores, run_dir / "skill_vs_lead.png",
                     f"{problem.name}: backtest on {DATASET}, inits {test_start}.., refit every {refit} months", problem.leads)
    (run_dir / "scores.json").write_text(json.dumps({"backtest": scores, "verification": verified, "forecasts": issued}, indent=1))
    (run_dir / "skill.md").write_text(markdown_table(scores, "acc", problem.leads) + "\n")
    text = "\n".join([
        skill_table(scores, "acc", problem.leads),
        "",
        skill_table(scores, "rmse", problem.leads),
        "",
        "forecasts issued from " + (issued[0]["init"] if issued else "-") + ": "
        + ", ".join(f"{i['model']} lead 6 = {i['lead6']:+.2f} degC" for i in issued if i["lead6"] is not None),
        f"archive:   {Path(root) / 'archive' / (problem.name + '.zarr')} ({', '.join(f'{k}: {v}' for k, v in actions.items())})",
        f"plot:      {png}",
        f"scores:    {run_dir / 'scores.json'}",
    ])
    return {"text": text, "run_dir": str(run_dir), "scores": scores, "verification": verified,
            "forecasts": issued, "failures": result.failures}
