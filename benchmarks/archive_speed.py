"""Speed of the forecast archive (Icechunk): point queries in process and over HTTP, raw chunk
reads for comparison, and the cost of appending one init to a small and a large archive; then
the same for one field model's concentration maps on the NSIDC 25 km grid (448 x 304).

Builds an archive of --models models x --inits inits x 18 leads (each model one commit), then:
  * in process: p50 of a point query (one model, init, lead) against a raw read of the chunk
    that holds it through zarr on the same Icechunk snapshot;
  * append: seconds and bytes written to add one init at 60 inits and at --inits inits;
  * HTTP: --requests point queries as JSON from --clients concurrent clients against
    `climate-ml serve-api`, p50 / p99.

    python benchmarks/archive_speed.py [--models 10] [--inits 600] [--requests 2000] [--clients 8]
        [--field-inits 120] [--field-requests 200]
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
from climate_ml.archive import export, query, write_forecast
from climate_ml.schema import INIT, LEAD, add_valid_time
from climate_ml.store import Store
from climate_ml.synthetic import polar_stereographic_grid

LEADS = list(range(1, 19))
FIELD_LEADS = list(range(1, 7))


def forecasts(inits: pd.DatetimeIndex, seed: int) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    return add_valid_time(xr.DataArray(rng.normal(0, 1, (len(inits), len(LEADS))), dims=(INIT, LEAD),
                                       coords={INIT: inits, LEAD: LEADS}))


def bytes_on_disk(at) -> dict[Path, int]:
    """The files of an archive kept in the store (``Store.archive``'s folder); none where the
    archive is in object storage (``CLIMATE_ML_ARCHIVE_URL``: the sizes then read 0)."""
    return {p: p.stat().st_size for p in at.path.rglob("*") if p.is_file()} if at.path is not None else {}


def append_cost(root: Path, model: str, da: xr.DataArray) -> tuple[float, int]:
    before = bytes_on_disk(Store.at(root).archive("el_nino"))
    tic = time.perf_counter()
    write_forecast(root, "el_nino", model, da, {"kind": "forecast"})
    seconds = time.perf_counter() - tic
    after = bytes_on_disk(Store.at(root).archive("el_nino"))
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
    ap.add_argument("--field-inits", type=int, default=120, help="inits of the field model's maps")
    ap.add_argument("--field-requests", type=int, default=200, help="one-map HTTP queries")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="climate-ml-archive-")) / "store"
    inits = pd.date_range("1970-01", periods=args.inits + 1, freq="MS")
    tic = time.perf_counter()
    for m in range(args.models):
        write_forecast(root, "el_nino", f"model{m:02d}", forecasts(inits[:-1], m), {"kind": "hindcast"})
    print(f"archive: {args.models} models x {args.inits} inits x {len(LEADS)} leads, "
          f"{sum(bytes_on_disk(Store.at(root).archive('el_nino')).values()) / 1e6:.1f} MB, "
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
    repo = icechunk.Repository.open(Store.at(root).archive("el_nino").storage())
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
    field_group(root, args)


def field_maps(inits: pd.DatetimeIndex, seed: int) -> xr.DataArray:
    """Concentration maps (init, lead 1-6, y, x) on the NSIDC 25 km polar stereographic grid."""
    x, y, lat, lon, _ = polar_stereographic_grid()
    rng = np.random.default_rng(seed)
    maps = rng.random((len(inits), len(FIELD_LEADS), len(y), len(x)), dtype="float32")
    return add_valid_time(xr.DataArray(maps, dims=(INIT, LEAD, "y", "x"), attrs={"units": "1"},
                                       coords={INIT: inits, LEAD: FIELD_LEADS, "y": y, "x": x,
                                               "lat": (("y", "x"), lat), "lon": (("y", "x"), lon)}))


def field_group(root: Path, args) -> None:
    """One field model on the sea-ice grid: a map query, a region box, an append, over HTTP."""
    inits = pd.date_range("1990-01", periods=args.field_inits + 1, freq="MS")
    tic = time.perf_counter()
    for start in range(0, args.field_inits, 60):  # in commits of 60 inits, as yearly backtests add them
        write_forecast(root, "arctic_sea_ice", "maps", field_maps(inits[start:min(start + 60, args.field_inits)], start),
                       {"kind": "hindcast"}, dataset="nsidc-grid")
    size = sum(bytes_on_disk(Store.at(root).archive("arctic_sea_ice")).values()) / 1e6
    print(f"field group: 1 model x {args.field_inits} inits x {len(FIELD_LEADS)} leads of 448 x 304 maps, {size:.0f} MB, "
          f"built in {time.perf_counter() - tic:.1f} s")
    rng = np.random.default_rng(2)
    picks = [(inits[rng.integers(args.field_inits)], int(rng.integers(1, 7))) for _ in range(50)]
    query(root, "arctic_sea_ice", dataset="nsidc-grid")
    q_ms, box_ms = [], []
    for init, lead in picks:
        t0 = time.perf_counter()
        query(root, "arctic_sea_ice", "maps", f"{init:%Y-%m}", lead, dataset="nsidc-grid", provenance=False
              )["forecast"].load()
        q_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        query(root, "arctic_sea_ice", "maps", f"{init:%Y-%m}", lead, dataset="nsidc-grid", provenance=False,
              box="80,90,0,360")["forecast"].load()
        box_ms.append((time.perf_counter() - t0) * 1000)
    repo = icechunk.Repository.open(Store.at(root).archive("arctic_sea_ice").storage())
    array = zarr.open_group(repo.readonly_session("main").store, mode="r")["nsidc-grid/maps/forecast"]
    raw_ms = []
    for init, lead in picks:
        t0 = time.perf_counter()
        array[inits.get_loc(init), lead - 1]
        raw_ms.append((time.perf_counter() - t0) * 1000)
    print(f"  one map in process {percentiles(q_ms)}; raw zarr read of that map {percentiles(raw_ms)}; "
          f"ratio of p50s {np.percentile(q_ms, 50) / np.percentile(raw_ms, 50):.2f}; with a box (north of 80N) "
          f"{percentiles(box_ms)}")
    write_forecast(root, "arctic_sea_ice", "small", field_maps(inits[:60], 5), {"kind": "hindcast"}, dataset="nsidc-grid")
    times = []
    for model, new in (("small", inits[60:61]), ("maps", inits[-1:])):
        before = bytes_on_disk(Store.at(root).archive("arctic_sea_ice"))
        t0 = time.perf_counter()
        write_forecast(root, "arctic_sea_ice", model, field_maps(new, 7), {"kind": "forecast"}, dataset="nsidc-grid")
        after = bytes_on_disk(Store.at(root).archive("arctic_sea_ice"))
        times.append((time.perf_counter() - t0, sum(s for p, s in after.items() if before.get(p) != s)))
    print(f"  append one init of maps: at 60 inits {times[0][0] * 1000:.0f} ms, {times[0][1] / 1e6:.1f} MB written; "
          f"at {args.field_inits} inits {times[1][0] * 1000:.0f} ms, {times[1][1] / 1e6:.1f} MB written")
    urls = [f"/forecasts?problem=arctic_sea_ice&dataset=nsidc-grid&model=maps&init={i:%Y-%m}&lead={ld}&format=netcdf"
            for i, ld in picks]
    with running_server(root, args.workers) as base:
        for u in urls[:10]:
            urllib.request.urlopen(base + u, timeout=60).read()

        def one(i: int) -> tuple[int, float, int]:
            t0 = time.perf_counter()
            with urllib.request.urlopen(base + urls[i % len(urls)], timeout=60) as r:
                n = len(r.read())
                return r.status, (time.perf_counter() - t0) * 1000, n

        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(one, range(args.field_requests)))
    bad = sum(1 for s, _, _ in results if s != 200)
    print(f"  HTTP: {args.field_requests} one-map NetCDF queries ({results[0][2] / 1e3:.0f} kB each) from "
          f"{args.clients} clients, {bad} not 200; {percentiles([ms for _, ms, _ in results])}")
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
