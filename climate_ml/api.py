"""HTTP service over the forecast archive and the leaderboard (thin: parse, call, return).

    GET /            the leaderboard web page (climate_ml/web/index.html)
    GET /health
    GET /problems                                    every problem: leads, units, the page's panels
    GET /metrics                                     every score the leaderboard ranks by
    GET /forecasts?problem=el_nino[&dataset=NAME][&model=M][&init=YYYY-MM:YYYY-MM][&lead=L[,L]][&valid=A:B]
                  [&box=LAT0,LAT1,LON0,LON1 or a region name: maps only]
                  [&as_of=YYYY-MM-DD|TAG][&format=json|csv|netcdf|climpred|weatherbench2]
    GET /archive?problem=el_nino[&dataset=NAME]      models, inits, kinds, last commits
    GET /plume?problem=el_nino[&dataset=NAME]        latest live forecasts and the observed history
    GET /icemap?problem=arctic_sea_ice[&dataset=NAME][&model=M][&lead=1][&step=N]
                                                     P(ice) map of the latest verified init, observed ice
    GET /rainseason?problem=california_rainfall[&dataset=NAME]   (any problem with a season total)
                                                     the season so far, its terciles, the archived outlooks
    GET /seasonal?problem=arctic_sea_ice[&dataset=NAME][&years=3]
                                                     extent by month: recent years, record lows, 1981-2010 mean
    GET /archive/history?problem=el_nino
    GET /monitoring?problem=el_nino[&dataset=NAME]   running skill of live forecasts (and maps), drift flags
    GET /leaderboard?problem=el_nino[&score=acc|rmse|mae|<registered metric>|iiee|sie_rmse|binary_accuracy|ice_brier|conc_crps]
                  [&dataset=NAME][&reference=M]

Bad, missing or unknown parameters get HTTP 400 with ``{"error": "<one line>"}``; the store is
only read.
Run with ``climate-ml serve-api [--host 127.0.0.1] [--port 8000] [--store DIR]``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import xarray as xr
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from climate_ml import __version__
from climate_ml.archive import (
    contents,
    history,
    latest_forecasts,
    latest_verified_map,
    read_monitoring,
    snapshot_id,
)
from climate_ml.errors import ClimateMLError, DamagedError, QueryError
from climate_ml.problems import get_problem, problem_classes, problem_names
from climate_ml.requests import ArchiveQuery, LeaderboardRequest
from climate_ml.scores import MAP_METRICS, METRICS
from climate_ml.store import RECORD_KINDS, Store, StoreLike
from climate_ml.verify import drift_records

PAGE = Path(__file__).parent / "web" / "index.html"
SCRIPT = Path(__file__).parent / "web" / "page.js"
# The page's own script only (no inline script, nothing from elsewhere): names drawn from data can
# never run as code, even if one slipped past the page's text-only rendering.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
MEDIA = {"json": "application/json", "csv": "text/csv", "netcdf": "application/x-netcdf",
         "climpred": "application/x-netcdf", "weatherbench2": "application/x-netcdf"}


def _records_state(store: Store, problem: str) -> tuple:
    """The recorded backtests of a problem (index and field) as (file, modification time) pairs."""
    return tuple(sorted((str(p), p.stat().st_mtime_ns) for kind in RECORD_KINDS
                        for p in store.record_files(problem, kind)))


def known_parameters(request: Request) -> None:
    """A query parameter the endpoint does not take is a 400 naming it: a misspelt ``?modle=xro``
    would otherwise answer for every model. The page itself (``/``) keeps its own parameters."""
    route = request.scope.get("route")
    if route is None or route.path in ("/", "/page.js"):
        return
    known = [p.alias for p in route.dependant.query_params]
    unknown = [k for k in dict.fromkeys(request.query_params) if k not in known]
    if unknown:
        raise QueryError(f"unknown query parameter {unknown[0]!r} for {route.path} "
                         f"(known: {', '.join(known) or 'none'})")


def create_app(store: StoreLike) -> FastAPI:
    """The HTTP service over one store (a ``Store`` or its folder): it only reads it."""
    store = Store.at(store)
    app = FastAPI(title="climate-ml archive", version=__version__, dependencies=[Depends(known_parameters)])
    boards: dict[tuple, bytes] = {}
    board_locks = [threading.Lock() for _ in range(16)]  # striped: one table is computed once at a time
    warm = threading.Event()

    @app.exception_handler(ClimateMLError)
    async def bad_input(request: Request, exc: ClimateMLError):
        return JSONResponse(status_code=400, content={"error": str(exc)})

    @app.exception_handler(DamagedError)
    async def damaged(request: Request, exc: DamagedError):
        # the server's data, not the request, is at fault; its paths go to the server log only
        logging.getLogger("climate_ml.api").error("%s: %s", request.url.path, exc)
        return JSONResponse(status_code=500, content={"error": "stored data needed for this request cannot be read "
                                                               "(damaged); the server log names it"})

    @app.exception_handler(RequestValidationError)
    async def bad_type(request: Request, exc: RequestValidationError):
        """FastAPI's own parameter checks, in the one error shape: 400 {"error": one line}."""
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        if first.get("type") == "missing":
            return JSONResponse(status_code=400, content={"error": f"missing query parameter {where!r}"})
        got = first.get("input")
        return JSONResponse(status_code=400, content={"error": f"bad {where} {got!r}: {first.get('msg', 'invalid')}"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)})

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        # never internals (paths, tracebacks) in a response; the server log has them
        return JSONResponse(status_code=500, content={"error": f"internal error ({type(exc).__name__})"})

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(), headers={"Content-Security-Policy": CSP})

    @app.get("/page.js")
    def page_script() -> Response:
        return Response(SCRIPT.read_text(), media_type="text/javascript", headers={"Content-Security-Policy": CSP})

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "version": __version__, "warm": warm.is_set()}

    @app.get("/metrics")
    def metrics() -> list[dict]:
        """Every score the leaderboard ranks by: the registered index metrics, then the map ones."""
        return ([{"name": n, "description": m.description, "lower_is_better": m.lower_is_better, "kind": "index"}
                 for n, m in METRICS.items()]
                + [{"name": n, "description": m.description, "lower_is_better": m.lower_is_better, "kind": "map"}
                   for n, m in MAP_METRICS.items()])

    @app.get("/problems")
    def problems() -> list[dict]:
        out = []
        for name in problem_names():
            prob = get_problem(name)
            out.append({"name": name, "description": prob.description, "leads": list(prob.leads),
                        "units": prob.target_units, "panels": list(prob.panels)})
        return out

    def with_panel(problem: str, panel: str, what: str):
        prob = get_problem(problem)
        if panel not in prob.panels:
            having = [n for n, cls in problem_classes().items() if panel in cls.panels]
            raise QueryError(f"{what} is drawn for {', '.join(having) or 'no problem'}, not {problem}")
        return prob

    # async: a point query is ~2 ms of CPU on an archive snapshot already loaded; run on the event
    # loop it skips the thread-pool hop and the lock convoy of many threads (p99 1/3 lower, measured)
    @app.get("/forecasts")
    async def forecasts(problem: str, model: str | None = None, init: str | None = None, lead: str | None = None,
                  format: str = "json", dataset: str | None = None, valid: str | None = None,
                  as_of: str | None = None, box: str | None = None) -> Response:
        request = ArchiveQuery.checked(problem=problem, model=model, init=init, lead=lead, valid=valid, as_of=as_of,
                                       dataset=dataset, box=box, format=format)
        data = request.export(store, provenance=format not in ("json", "csv"))
        binary = MEDIA[format] == "application/x-netcdf"
        headers = {"Content-Disposition": f'attachment; filename="{problem}-{format}.nc"'} if binary else None
        return Response(content=data, media_type=MEDIA[format], headers=headers)

    @app.get("/monitoring")
    def monitoring(problem: str, dataset: str | None = None) -> dict:
        """The running skill of live forecasts against each model's backtest (drift flags): the
        index forecasts' rows, then the concentration maps' (each row names its score)."""
        prob = get_problem(problem)
        kept = [ds for ds in (read_monitoring(store, problem, dataset, kind=k) for k in ("index", "maps")) if ds is not None]
        if not kept:
            return {"problem": problem, "dataset": dataset or prob.default_dataset, "scores": [], "rows": [],
                    "note": "no live forecasts verified yet (the monthly flow writes this)"}
        return {"problem": problem, "dataset": kept[0].attrs["dataset"], "score": kept[0].attrs["score"],
                "scores": [ds.attrs["score"] for ds in kept],
                "verified_through": max(ds.attrs["verified_through"] for ds in kept),
                "rows": [r for ds in kept for r in drift_records(ds)]}

    @app.get("/archive")
    def archive_contents(problem: str, dataset: str | None = None) -> dict:
        get_problem(problem)
        return contents(store, problem, dataset)

    @app.get("/plume")
    def plume(problem: str, dataset: str | None = None) -> dict:
        """Every model's live forecast from the latest init, with the observed history."""
        get_problem(problem)
        return latest_forecasts(store, problem, dataset)

    @app.get("/icemap")
    def icemap(problem: str = "arctic_sea_ice", dataset: str | None = None, model: str | None = None,
               lead: int = 1, step: int | None = None) -> dict:
        """A field model's probability of ice (share of members >= 15%) at its latest verified
        init, with the observed ice at the valid month, every ``step``-th row and column (default:
        enough for at most 240 cells a side)."""
        from climate_ml.sea_ice_fields import THRESHOLD, ice_probability

        get_problem(problem)
        if step is not None and not 1 <= step <= 16:
            raise QueryError(f"bad step {step}: between 1 and 16")
        maps = latest_verified_map(store, problem, dataset, model, lead)
        grid = [d for d in maps["forecast"].dims if d != "member"]
        step = step or max(1, -(-max(maps.sizes[d] for d in grid) // 240))
        maps = maps.isel({d: slice(None, None, step) for d in grid})
        prob = ice_probability(maps["forecast"]).transpose(*grid).values
        seen = maps["observed"].transpose(*grid).values
        ice = np.where(np.isnan(seen), np.nan, (seen >= THRESHOLD).astype(float))

        def flat(a, digits):
            return [None if not np.isfinite(v) else round(float(v), digits) for v in a.ravel()]

        return {**maps.attrs, "threshold": THRESHOLD, "shape": list(prob.shape), "step": step,
                "members": int(maps.sizes.get("member", 1)), "probability": flat(prob, 3),
                "observed_ice": flat(ice, 0)}

    prepared_cache: dict[tuple, xr.Dataset] = {}

    def prepared_inputs(prob, dataset: str | None) -> tuple[str, xr.Dataset]:
        """The problem's prepared target from the stored data set (read only: nothing is ingested
        here), cached until the store changes."""
        from climate_ml.store import obs_version, open_obs
        name = dataset or prob.default_dataset
        key = (prob.name, name, obs_version(store, name))  # the name is checked before it touches the store
        if key not in prepared_cache:
            if len(prepared_cache) >= 4:
                prepared_cache.pop(next(iter(prepared_cache)))
            prepared_cache[key] = prob.prepare(open_obs(store, name))
        return name, prepared_cache[key]

    @app.get("/rainseason")
    def rainseason(problem: str = "california_rainfall", dataset: str | None = None) -> dict:
        """The problem's season so far (e.g. November-March: observed months and running total),
        the terciles of the season total, and each model's latest archived season outlook."""
        from climate_ml.archive import season_outlooks
        from climate_ml.workflows import wet_season

        prob = with_panel(problem, "season", "the season")
        name, prepared = prepared_inputs(prob, dataset)
        return {"problem": problem, "dataset": name, **wet_season(prob, prepared),
                "outlooks": season_outlooks(store, problem, name)}

    @app.get("/seasonal")
    def seasonal(problem: str = "arctic_sea_ice", dataset: str | None = None, years: int = 3) -> dict:
        """Sea-ice extent by calendar month: the last ``years`` years, each month's record low,
        the 1981-2010 mean, and the latest live forecasts (as the plume) at their valid months."""
        from climate_ml.workflows import seasonal_cycle

        prob = with_panel(problem, "seasonal_cycle", "the seasonal cycle")
        if not 1 <= years <= 10:
            raise QueryError(f"bad years {years}: between 1 and 10")
        name, prepared = prepared_inputs(prob, dataset)
        out = seasonal_cycle(prepared["extent"].assign_attrs(units=prob.target_units), years)
        return {"problem": problem, "dataset": name, **out, "forecasts": latest_forecasts(store, problem, name)}

    @app.get("/archive/history")
    def archive_history(problem: str, limit: int = 50) -> list[dict]:
        get_problem(problem)
        if not 1 <= limit <= 1000:
            raise QueryError(f"bad limit {limit}: between 1 and 1000")
        return history(store, problem)[:limit]

    @app.get("/leaderboard")
    def leaderboard(problem: str, score: str = "acc", dataset: str | None = None, reference: str | None = None,
                    n_boot: int = 500) -> Response:
        request = LeaderboardRequest.checked(problem=problem, score=score, dataset=dataset, reference=reference,
                                             n_boot=n_boot)
        return Response(content=board_json(request), media_type="application/json")

    def board_json(request: LeaderboardRequest) -> bytes:
        # the same records, archive state and parameters give the same table (the bootstrap is
        # seeded): computed once, not per request
        problem = request.problem
        key = (request, snapshot_id(store, problem), _records_state(store, problem))
        with board_locks[hash(key) % len(board_locks)]:  # a request during the warm-up waits for it
            if key not in boards:
                table = request.table(store)
                if len(boards) >= 64:
                    boards.pop(next(iter(boards)))
                boards[key] = json.dumps(table, allow_nan=False).encode()  # serialised once too
        return boards[key]

    def warm_up() -> None:
        """What the page asks first, computed before anyone asks: each problem's archive snapshot
        (plume, contents) and its default leaderboard. A first visit then reads caches."""
        for problem, cls in problem_classes().items():
            steps = [(latest_forecasts, (store, problem)), (contents, (store, problem)),
                     (board_json, (LeaderboardRequest(problem, "acc", n_boot=500),))]
            if "seasonal_cycle" in cls.panels:
                steps.append((seasonal, (problem, None, 3)))
            if "season" in cls.panels:
                steps.append((rainseason, (problem, None)))
            for step, args in steps:
                try:
                    step(*args)
                except Exception:  # nothing recorded or archived yet: the page shows the one-line error
                    pass
        warm.set()

    threading.Thread(target=warm_up, name="climate-ml-warm-up", daemon=True).start()
    return app


def app_from_environment() -> FastAPI:
    """The app over the store named by $CLIMATE_ML_STORE (how ``serve-api`` starts its workers)."""

    return create_app(Store.at(None))


@contextlib.contextmanager
def running_server(store: StoreLike, workers: int = 1):
    """``climate-ml serve-api`` on a free loopback port over ``store``; yields the base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "climate_ml.cli", "serve-api", "--port", str(port), "--store", str(store),
                             "--workers", str(workers)],
                            env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(60):
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            proc.kill()
            raise RuntimeError("server did not start: " + proc.stderr.read().decode()[-2000:])
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)
