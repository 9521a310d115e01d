"""Load test of `climate-ml serve-api`: a mixed load from concurrent clients on loopback.

Builds a store (an archive of --models models x --inits inits x 18 leads, and a recorded toy
backtest for the leaderboard), starts the real server in its own process, sends --requests
requests from --clients threads (forecasts as JSON, CSV and NetCDF, the leaderboard, the page),
and prints the status counts, p50 / p99 latency per kind and whether the server survived.

    python benchmarks/load_api.py [--requests 2000] [--clients 8]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.api import running_server
from climate_ml.archive import write_forecast
from climate_ml.problems import get_problem
from climate_ml.schema import INIT, LEAD, add_valid_time
from climate_ml.workflows import evaluate, problem_inputs


def build_store(root: Path, n_models: int, n_inits: int) -> None:
    inits = pd.date_range("1970-01", periods=n_inits, freq="MS")
    rng = np.random.default_rng(0)
    for m in range(n_models):
        fc = add_valid_time(xr.DataArray(rng.normal(0, 1, (n_inits, 18)), dims=(INIT, LEAD),
                                         coords={INIT: inits, LEAD: list(range(1, 19))}))
        write_forecast(root, "el_nino", f"model{m:02d}", fc, {"model": f"model{m:02d}", "kind": "hindcast"})
    record_toy_backtest(root)


def record_toy_backtest(root: Path) -> None:
    """A recorded El Nino backtest of the references on the toy data: the leaderboard's content."""
    problem = get_problem("el_nino")
    dataset, obs, prepared = problem_inputs(root, problem)
    evaluate(root, problem, [], prepared, obs, dataset, "2016-01", "2023-12", 48, blend=False, guard=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--inits", type=int, default=120)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="climate-ml-load-")) / "store"
    tic = time.perf_counter()
    build_store(root, args.models, args.inits)
    print(f"store: {args.models} models x {args.inits} inits x 18 leads + a recorded backtest "
          f"({time.perf_counter() - tic:.0f} s to build)")
    kinds = {
        "json": "/forecasts?problem=el_nino&init=1975-01:1976-12&lead=6",
        "csv": "/forecasts?problem=el_nino&model=model03&format=csv",
        "netcdf": "/forecasts?problem=el_nino&model=model05&init=1980&format=netcdf",
        "leaderboard": "/leaderboard?problem=el_nino&n_boot=100",
        "page": "/",
        "bad": "/forecasts?problem=el_nino&lead=six",
    }
    expected = {k: 200 for k in kinds} | {"bad": 400}
    names = list(kinds)
    with running_server(root, workers=2) as base:  # serve-api's default
        def one(i: int):
            kind = names[i % len(names)]
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(base + kinds[kind], timeout=60) as r:
                    r.read()
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            except OSError as e:
                status = f"connection error ({type(e).__name__})"
            return kind, status, time.perf_counter() - t0

        tic = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - tic
        with urllib.request.urlopen(base + "/health", timeout=10) as r:
            alive = r.status == 200
    statuses = Counter((k, s) for k, s, _ in results)
    errors = sum(n for (k, s), n in statuses.items() if s != expected[k])
    print(f"{args.requests} requests from {args.clients} clients in {wall:.1f} s ({args.requests / wall:.0f} req/s); "
          f"unexpected statuses: {errors}; server alive afterwards: {alive}")
    by_kind = defaultdict(list)
    for k, _, dt in results:
        by_kind[k].append(dt * 1000)
    print(f"{'kind':<12}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}  statuses")
    for k in names:
        v = np.array(by_kind[k])
        st = ", ".join(f"{s}: {n}" for (kk, s), n in sorted(statuses.items(), key=str) if kk == k)
        print(f"{k:<12}{len(v):>6}{np.percentile(v, 50):>10.1f}{np.percentile(v, 99):>10.1f}  {st}")
    allv = np.array([dt * 1000 for _, _, dt in results])
    print(f"{'all':<12}{len(allv):>6}{np.percentile(allv, 50):>10.1f}{np.percentile(allv, 99):>10.1f}")
    if errors or not alive:
        sys.exit(1)


if __name__ == "__main__":
    main()
