"""Speed of the forecast archive (Icechunk): point queries in process and over HTTP, raw chunk
reads for comparison, and the cost of appending one init to a small and a large archive.

Builds an archive of --models models x --inits inits x 18 leads (each model one commit), then:
  * in process: p50 of a point query (one model, init, lead) against a raw read of the chunk
    that holds it through zarr on the same Icechunk snapshot;
  * append: seconds and bytes written to add one init at 60 inits and at --inits inits;
  * HTTP: --requests point queries as JSON from --clients concurrent clients against
    `climate-ml serve-api`, p50 / p99.

    python benchmarks/archive_speed.py [--models 10] [--inits 600] [--requests 2000] [--clients 8]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import icechunk
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from climate_ml.api import running_server
from climate_ml.archive import archive_path, export, query, write_forecast
from climate_ml.schema import INIT, LEAD, add_valid_time

LEADS = list(range(1, 19))


def forecasts(inits: pd.DatetimeIndex, seed: int) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    return add_valid_time(xr.DataArray(rng.normal(0, 1, (len(inits), len(LEADS))), dims=(INIT, LEAD),
                                       coords={INIT: inits, LEAD: LEADS}))


def bytes_on_disk(path: Path) -> dict[Path, int]:
    return {p: p.stat().st_size for p in path.rglob("*") if p.is_file()}


def append_cost(root: Path, model: str, da: xr.DataArray) -> tuple[float, int]:
    before = bytes_on_disk(archive_path(root, "el_nino"))
    tic = time.perf_counter()
    write_forecast(root, "el_nino", model, da, {"kind": "forecast"})
    seconds = time.perf_counter() - tic
    after = bytes_on_disk(archive_path(root, "el_nino"))
    return seconds, sum(s for p, s in after.items() if before.get(p) != s)


def percentiles(ms: list[float]) -> str:
    return f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--inits", type=int, default=600)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="serve-api processes (its default)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="climate-ml-archive-")) / "store"
    inits = pd.date_range("1970-01", periods=args.inits + 1, freq="MS")
    tic = time.perf_counter()
    for m in range(args.models):
        write_forecast(root, "el_nino", f"model{m:02d}", forecasts(inits[:-1], m), {"kind": "hindcast"})
    print(f"archive: {args.models} models x {args.inits} inits x {len(LEADS)} leads, "
          f"{sum(bytes_on_disk(archive_path(root, 'el_nino')).values()) / 1e6:.1f} MB, "
          f"built in {time.perf_counter() - tic:.1f} s ({args.models} commits)")

    # in process: point queries against raw chunk reads of the same snapshot
    rng = np.random.default_rng(1)
    picks = [(f"model{rng.integers(args.models):02d}", inits[rng.integers(args.inits)], int(rng.integers(1, 19)))
             for _ in range(300)]
    query(root, "el_nino")  # load the snapshot once, as a running server has
    q_ms = []
    for model, init, lead in picks:
        t0 = time.perf_counter()
        export(query(root, "el_nino", model, f"{init:%Y-%m}", lead, provenance=False), "json")  # as the API does
        q_ms.append((time.perf_counter() - t0) * 1000)
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(archive_path(root, "el_nino"))))
    group = zarr.open_group(repo.readonly_session("main").store, mode="r")
    arrays = {m: group[f"toy-ocean/{m}/forecast"] for m in {p[0] for p in picks}}
    raw_ms = []
    for model, init, lead in picks:
        k = inits.get_loc(init)
        t0 = time.perf_counter()
        arrays[model][k, lead - 1]
        raw_ms.append((time.perf_counter() - t0) * 1000)
    ratio = np.percentile(q_ms, 50) / np.percentile(raw_ms, 50)
    print(f"in process: point query to JSON {percentiles(q_ms)}; raw zarr read of one value {percentiles(raw_ms)}; "
          f"ratio of p50s {ratio:.2f} (aim <= 3)")

    # append one init at 60 inits and at the full size
    write_forecast(root, "el_nino", "small", forecasts(inits[:60], 99), {"kind": "hindcast"})
    s_small, b_small = append_cost(root, "small", forecasts(inits[60:61], 98))
    s_large, b_large = append_cost(root, "model00", forecasts(inits[-1:], 97))
    print(f"append one init: at 60 inits {s_small * 1000:.0f} ms, {b_small / 1e3:.1f} kB written; "
          f"at {args.inits} inits {s_large * 1000:.0f} ms, {b_large / 1e3:.1f} kB written")

    # over HTTP, concurrent clients
    urls = [f"/forecasts?problem=el_nino&model={m}&init={i:%Y-%m}&lead={ld}" for m, i, ld in picks]
    with running_server(root, args.workers) as base:
        for u in urls[:100]:  # warm the snapshot cache of every server process
            urllib.request.urlopen(base + u, timeout=30).read()

        def one(i: int) -> tuple[int, float]:
            t0 = time.perf_counter()
            with urllib.request.urlopen(base + urls[i % len(urls)], timeout=60) as r:
                r.read()
                return r.status, (time.perf_counter() - t0) * 1000

        tic = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - tic
    bad = sum(1 for s, _ in results if s != 200)
    print(f"HTTP ({args.workers} server process(es)): {args.requests} point queries from {args.clients} clients in {wall:.1f} s "
          f"({args.requests / wall:.0f} req/s), {bad} not 200; {percentiles([ms for _, ms in results])} "
          "(aims: p50 < 20 ms, p99 < 100 ms)")
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
