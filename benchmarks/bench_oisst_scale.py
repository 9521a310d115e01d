"""Larger than memory: a daily 0.25-degree global SST field in NOAA's OISST layout (one NetCDF
file per year, ``sst.day.mean.YYYY.nc``), 1982-2001 by default: 7305 days x 720 x 1440 float32,
30.3 GB on disk, more than this machine's memory.

On a Dask LocalCluster whose workers have a memory limit (default: 2 worker processes, one thread
each, 1.5 GB each), it runs what the pipeline runs:

1. ingest: the yearly files -> monthly means (one task per month) -> ``obs/oisst.zarr``, with the
   checks every ingest makes (units, plausible values, sha256 of the source);
2. read: one plain read of the stored monthly field (the yardstick for 3);
3. features: the El Nino problem's inputs from the store (Nino box means and the coarse
   tropical-Pacific field in one Dask pass), training-window anomalies, EOFs, lags.

Prints seconds, throughput (MB of source per second) and the peak resident memory of every
process (sampled every 0.1 s; for the workers also their own kernel high-water mark), and the
peak of their sum. Aims (issue 15): total peak < 4 GB, ingest >= 100 MB/s, features <= 3x read.
Page caches are dropped before the ingest where the system allows it (root).

    python benchmarks/bench_oisst_scale.py [--workdir DIR] [--years 1982-2001] [--resolution 0.25]
        [--workers 2] [--memory-limit 1.5GB] [--json FILE] [--keep]

A small version (two years at 4 degrees) runs in the tests (tests/test_scale.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class MemorySampler:
    """Peak RSS of this process and all its descendants (per pid, and of their sum)."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.per_pid, self.total = interval, {}, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            self.per_pid[p.pid] = max(self.per_pid.get(p.pid, 0), rss)
        self.total = max(self.total, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def _worker_peak() -> tuple[int, int]:
    return os.getpid(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def run(workdir: Path, years: list[int], resolution: float, workers: int, memory_limit: str, fit_end: str) -> dict:
    from dask.distributed import Client, LocalCluster

    from climate_ml.ingest import ingest_file
    from climate_ml.problems import get_problem
    from climate_ml.store import open_obs
    from climate_ml.synthetic import write_oisst_like

    src, root = workdir / "oisst", workdir / "store"
    expected = [src / f"sst.day.mean.{y}.nc" for y in years]
    tic = time.perf_counter()
    if not all(p.exists() for p in expected):
        write_oisst_like(src, years, resolution=resolution)
    write_s = time.perf_counter() - tic
    source_mb = sum(p.stat().st_size for p in expected) / 1e6
    shutil.rmtree(root, ignore_errors=True)
    out = {"years": f"{years[0]}-{years[-1]}", "resolution": resolution, "files": len(expected),
           "source_mb": round(source_mb, 1), "write_s": round(write_s, 1), "workers": workers,
           "memory_limit": memory_limit, "stages": {}}
    with LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=memory_limit,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())

        def stage(name, fn):
            cached = drop_caches() if name == "ingest" else None
            with MemorySampler() as mem:
                t0 = time.perf_counter()
                result = fn()
                secs = time.perf_counter() - t0
            own = dict(client.run(_worker_peak).values()) if name == "ingest" else {}
            procs = {}
            for pid, rss in mem.per_pid.items():
                role = ("client+scheduler" if pid == os.getpid() else "worker" if pid in worker_pids else "other")
                procs[f"{role} {pid}"] = round(max(rss, own.get(pid, 0)) / 2**20, 1)
            out["stages"][name] = {"seconds": round(secs, 2), "peak_total_mb": round(mem.total / 2**20, 1),
                                   "peak_per_process_mb": procs, **({"caches_dropped": cached} if cached is not None
                                                                    else {})}
            return result

        written = stage("ingest", lambda: ingest_file(src, "sst", "oisst", root))
        out["months"] = written.n_time
        stage("read", lambda: float(open_obs(root, "oisst")["sst"].sum().compute()))

        def features():
            problem = get_problem("el_nino")
            prepared = problem.prepare(open_obs(root, "oisst"))
            fold = problem.fold_data(prepared, fit_end)
            return fold.X.load()

        X = stage("features", features)
        out["features"] = {"variables": sorted(map(str, X.data_vars)), "inits": int(X.sizes["init_time"])
                           if "init_time" in X.dims else int(X.sizes.get("time", 0))}
    st = out["stages"]
    out["ingest_mb_per_s"] = round(source_mb / st["ingest"]["seconds"], 1)
    out["features_over_read"] = round(st["features"]["seconds"] / st["read"]["seconds"], 2)
    out["peak_total_mb"] = max(s["peak_total_mb"] for s in st.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=None, help="where the source files and the store go (default: a new temp dir)")
    ap.add_argument("--years", default="1982-2001", help="first-last year (default 1982-2001: 30.3 GB at 0.25 degree)")
    ap.add_argument("--resolution", type=float, default=0.25, help="grid spacing in degrees (default 0.25, OISST's)")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes, one thread each (default 2)")
    ap.add_argument("--memory-limit", default="1.5GB", help="memory limit of each worker (default 1.5GB)")
    ap.add_argument("--fit-end", default=None, help="training window end for the features (default: 5 years "
                                                    "before the end)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the workdir (the source files are reused next time)")
    args = ap.parse_args()
    first, _, last = args.years.partition("-")
    years = list(range(int(first), int(last or first) + 1))
    fit_end = args.fit_end or f"{max(years[0] + 2, years[-1] - 5)}-12"
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="climate-ml-oisst-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        r = run(workdir, years, args.resolution, args.workers, args.memory_limit, fit_end)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    st = r["stages"]
    print(f"source: {r['files']} yearly files {r['years']} at {r['resolution']} degree, {r['source_mb'] / 1e3:.1f} GB "
          f"(written in {r['write_s']:.0f} s; reused if it was there)")
    print(f"cluster: {r['workers']} worker processes x 1 thread, memory limit {r['memory_limit']} each")
    print(f"ingest:   {st['ingest']['seconds']:8.1f} s  {r['ingest_mb_per_s']:7.1f} MB/s of source (aim >= 100)  "
          f"-> {r['months']} monthly means  caches dropped: {st['ingest']['caches_dropped']}")
    print(f"read:     {st['read']['seconds']:8.2f} s  (one plain read of the monthly store)")
    print(f"features: {st['features']['seconds']:8.2f} s  = {r['features_over_read']:.2f} x read (aim <= 3)")
    for name, s in st.items():
        procs = ", ".join(f"{k} {v:.0f}" for k, v in sorted(s["peak_per_process_mb"].items()))
        print(f"peak RSS {name:8s}: total {s['peak_total_mb']:7.0f} MB  ({procs})")
    print(f"peak memory, all processes together: {r['peak_total_mb']:.0f} MB (aim < 4096)")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
