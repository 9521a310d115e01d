"""Ingest and feature-building at ERSST scale: a 2-degree global monthly SST field for
1854-01..2025-12 (89 x 180 x 2064 float32, about 132 MB), written as an ERSST-like NetCDF.

Prints: ingest seconds and MB/s, one plain read of the Zarr store, feature-building seconds
(Nino indices and a coarse tropical-Pacific field in one Dask pass over the store, then
training-window anomalies, EOF principal components, lags and rolling means), their ratio, and
the peak resident memory of each stage (each stage runs in its own process).

Targets (issue 2): features <= 3x one plain read; peak memory < 1.5 GB.

    python benchmarks/bench_ingest_features.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_LAT, N_LON = 89, 180
START, END = "1854-01", "2025-12"


def make_source(path: Path) -> float:
    """Write the synthetic field month-block by month-block (never whole in memory)."""
    import netCDF4

    time_idx = pd.date_range(START, END, freq="MS")
    lat = np.linspace(88, -88, N_LAT)  # descending, like ERSST
    lon = np.arange(0, 360, 2.0)
    rng = np.random.default_rng(0)
    base = (28 - 0.0035 * lat[:, None] ** 2 + 0 * lon[None, :]).astype("float32")
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", N_LAT)
        nc.createDimension("lon", N_LON)
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.calendar = "days since 1800-01-01", "proleptic_gregorian"
        t[:] = (time_idx - pd.Timestamp("1800-01-01")).days.values
        nc.createVariable("lat", "f4", ("lat",))[:] = lat
        nc["lat"].units = "degrees_north"
        nc.createVariable("lon", "f4", ("lon",))[:] = lon
        nc["lon"].units = "degrees_east"
        v = nc.createVariable("sst", "f4", ("time", "lat", "lon"), chunksizes=(12, N_LAT, N_LON))
        v.units = "degC"
        for i in range(0, len(time_idx), 120):
            n = min(120, len(time_idx) - i)
            season = np.cos(2 * np.pi * (time_idx.month.values[i:i + n] - 3) / 12)[:, None, None]
            v[i:i + n] = base + season + rng.normal(0, 0.5, (n, N_LAT, N_LON)).astype("float32")
    return N_LAT * N_LON * len(time_idx) * 4 / 1e6


def stage(name: str, workdir: str) -> dict:
    """Run one stage in this process and report seconds and peak RSS."""
    from climate_ml.ingest import ingest_file
    from climate_ml.problems import get_problem
    from climate_ml.store import open_obs

    root = Path(workdir) / "store"
    # the problem registry is imported before the clock starts (its modules pull in scipy.stats,
    # about 1 s here): the stages compare work on the data, not module imports
    problem = get_problem("el_nino")
    tic = time.perf_counter()
    if name == "ingest":
        ingest_file(Path(workdir) / "ersst_like.nc", "sst", "bench", root)
    elif name == "read":
        float(open_obs(root, "bench")["sst"].sum().compute())
    elif name == "features":
        # What the pipeline runs: one Dask pass over the store for the Nino box means and the
        # coarse tropical-Pacific field, then training-window anomalies, EOFs, lags, rolling means.
        prepared = problem.prepare(open_obs(root, "bench"))
        fold = problem.fold_data(prepared, "1990-12")
        fold.X.load()
    secs = time.perf_counter() - tic
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"stage": name, "seconds": round(secs, 2), "peak_rss_mb": round(peak_mb, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage, args.workdir)))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="climate-ml-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    mb = make_source(workdir / "ersst_like.nc")
    print(f"source: {mb:.0f} MB float32 ({N_LAT}x{N_LON}x{len(pd.date_range(START, END, freq='MS'))}) in {workdir}")
    results = {}
    for name in ("ingest", "read", "features"):
        out = subprocess.run([sys.executable, __file__, "--stage", name, "--workdir", str(workdir)],
                             capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    ing, rd, ft = results["ingest"], results["read"], results["features"]
    print(f"ingest:   {ing['seconds']:6.2f} s  {mb / ing['seconds']:6.1f} MB/s  peak RSS {ing['peak_rss_mb']:.0f} MB")
    print(f"read:     {rd['seconds']:6.2f} s  (one plain read of the Zarr store)  peak RSS {rd['peak_rss_mb']:.0f} MB")
    print(f"features: {ft['seconds']:6.2f} s  = {ft['seconds'] / rd['seconds']:.2f} x read (target <= 3)  peak RSS {ft['peak_rss_mb']:.0f} MB")
    peak = max(r["peak_rss_mb"] for r in results.values())
    print(f"peak memory over all stages: {peak:.0f} MB (target < 1536 MB)")


if __name__ == "__main__":
    main()
