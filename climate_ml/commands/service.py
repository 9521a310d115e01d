"""Running the pipeline and its services: the run flow, the scheduled deployment, the HTTP service."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from climate_ml.commands.common import (
    PredictorOpt,
    StoreOpt,
    app,
    err,
)
from climate_ml.errors import QueryError
from climate_ml.store import Store


@app.command()
def run(
    quick: Annotated[bool, typer.Option("--quick", help="Short test period and sparse refits (about 9 minutes on 2 cores).")] = False,
    store: StoreOpt = None,
    n_jobs: Annotated[int | None, typer.Option("--n-jobs", min=1, help="Local processes for the backtests' (model, fold) fits (default: the CPUs, at most 4).")] = None,
):
    """The main job, as a Prefect flow: data -> features -> backtest -> forecast -> archive -> verify -> report."""
    # Prefect's temporary server migrates a fresh database before it answers, which can take
    # longer than Prefect's default 20 s wait on a small machine (seen on 2 cores): wait longer
    # unless the user set it
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from flows.run import climate_ml_run

    summary = climate_ml_run(store=str(Store.at(store)), quick=quick, n_jobs=n_jobs)
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
    from flows.monthly import check_schedule, require_prefect_server, serve

    check_schedule(cron, problem, dataset, predictor_dataset)  # bad arguments first, then the server
    require_prefect_server()
    err.print(f"serving the monthly job for {', '.join(problem or ['every problem'])} on cron {cron!r}; Ctrl-C stops")
    serve(cron=cron, problems=problem, dataset=dataset, store=str(Store.at(store)), predictors=predictor_dataset)


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
    check_listen(host, port)
    os.environ["CLIMATE_ML_STORE"] = str(Store.at(store))  # what each worker process's app serves
    uvicorn.run("climate_ml.api:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level="warning")


def check_listen(host: str, port: int) -> None:
    """Bind ``host:port`` once, as the server will: a port in use or an address not on this
    machine is one line (uvicorn logged it and exited 3)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise QueryError(f"bad --host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a socket in TIME_WAIT is no obstacle
        try:
            sock.bind(address)
        except OSError as exc:
            raise QueryError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
