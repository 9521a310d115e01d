"""The operational monthly job, as a Prefect flow and a cron deployment.

Each month: ingest the new observations (only new months are appended), issue forecasts from
every registered model for the latest observed month, archive them, and verify every archived
forecast whose target has now been observed. ``serve`` registers it with a Prefect server as a
deployment on a cron schedule and executes its runs.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task

from climate_ml.catalog import get_entry
from climate_ml.ingest import ingest_entry
from climate_ml.problems import get_problem
from climate_ml.store import open_obs, store_root
from climate_ml.verify import verification_records, verify_archive
from climate_ml.workflows import forecast_and_archive, registered_models

DEFAULT_CRON = "0 6 5 * *"  # 06:00 UTC on the 5th: monthly SST analyses are out by then


@task(retries=3, retry_delay_seconds=[10, 60, 300])
def ingest_new_months(root: str, dataset: str) -> str:
    """Network IO (a download for URL entries): the only step with retries."""
    res = ingest_entry(get_entry(dataset), Path(root))
    return f"{dataset}: {res.action} ({res.n_new} new months, {res.n_time} in store)"


@task
def forecast_model(root: str, problem_name: str, dataset: str, model: str) -> dict:
    problem = get_problem(problem_name)
    obs = open_obs(Path(root), dataset)
    prepared = problem.prepare(obs)
    init = pd.Timestamp(prepared["time"].values[-1])
    fc, action = forecast_and_archive(Path(root), problem, registered_models(problem_name)[model], obs, prepared, dataset, init)
    return {"model": model, "init": f"{init:%Y-%m}", "archive": action,
            "forecast": {int(k): round(float(v), 3) for k, v in zip(fc["lead"].values, fc.values[0], strict=True)}}


@task
def verify_all(root: str, problem_name: str, dataset: str) -> list[dict]:
    problem = get_problem(problem_name)
    return verification_records(verify_archive(Path(root), problem, problem.prepare(open_obs(Path(root), dataset))))


@flow(name="climate-ml-monthly", log_prints=True)
def monthly_forecast(problem: str = "el_nino", dataset: str = "toy-ocean", store: str | None = None,
                     models: list[str] | None = None) -> dict:
    """Ingest new observations, forecast with every model, archive, verify."""
    logger = get_run_logger()
    root = str(store_root(store))
    logger.info(ingest_new_months(root, dataset))
    available = registered_models(problem)
    names = models or list(available)
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise ValueError(f"unknown models {unknown} (registered: {sorted(available)})")
    issued = [forecast_model(root, problem, dataset, m) for m in names]
    verified = verify_all(root, problem, dataset)
    run_dir = Path(root) / "runs" / f"{_dt.datetime.now(_dt.UTC):%Y%m%dT%H%M%SZ}-monthly-{problem}"
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {"problem": problem, "dataset": dataset, "forecasts": issued, "verification": verified}
    (run_dir / "monthly.json").write_text(json.dumps(summary, indent=1))
    logger.info(f"issued {len(issued)} forecasts from {issued[0]['init'] if issued else '-'}; summary in {run_dir}")
    return summary


def serve(cron: str = DEFAULT_CRON, problem: str = "el_nino", dataset: str = "toy-ocean", store: str | None = None,
          name: str = "monthly") -> None:
    """Register the monthly deployment with the Prefect server ($PREFECT_API_URL) and run its
    flow runs as they come due (blocks until interrupted)."""
    monthly_forecast.serve(
        name=name,
        cron=cron,
        parameters={"problem": problem, "dataset": dataset, "store": str(store_root(store))},
        description="Ingest new observations, forecast with every model, archive, verify.",
    )
