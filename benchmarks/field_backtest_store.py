"""The field backtest of the per-cell references with the map stack held in memory (as it is up to
``workflows.FIELD_HELD_BYTES``) or left in the Zarr store (as it is above that size; ``--from-store``
sets the limit to 0): wall time, the peak RSS of this process and of its largest worker, and, with
``--compare FILE``, whether the scores equal those of an earlier run saved with ``--save FILE``.

    python benchmarks/field_backtest_store.py --store STORE [--n-jobs 2] [--save held.nc]
    python benchmarks/field_backtest_store.py --store STORE [--n-jobs 2] --from-store --compare held.nc
"""

from __future__ import annotations

import argparse
import resource
import time

import xarray as xr

from climate_ml import workflows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="climate-ml-data")
    ap.add_argument("--dataset", default="nsidc-0051-monthly-north-local")
    ap.add_argument("--test-start", default="2005-01")
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--from-store", action="store_true", help="leave the stack in the store, whatever its size")
    ap.add_argument("--save", help="write the per-sample scores to this NetCDF file")
    ap.add_argument("--compare", help="check the scores against a file written with --save")
    args = ap.parse_args()
    workflows.ensure_dataset(args.store, args.dataset)
    if args.from_store:
        workflows.FIELD_HELD_BYTES = 0
    tic = time.perf_counter()
    run = workflows.field_backtest_run(args.store, args.dataset, args.test_start, n_jobs=args.n_jobs)
    seconds = time.perf_counter() - tic
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GB
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    where = "read from the store" if run.concentration.chunks is not None else "held in memory"
    print(f"maps {where}: {seconds:.0f} s with --n-jobs {args.n_jobs}; peak RSS {own:.2f} GB here, "
          f"{child:.2f} GB in the largest worker")
    print("IIEE by lead:", {k: round(v, 4) for k, v in run.summary["damped_anomaly_persistence"]["iiee"].items()})
    if args.save:
        run.scores.to_netcdf(args.save)
    if args.compare:
        saved = xr.load_dataset(args.compare)
        same = all(saved[v].equals(run.scores[v]) for v in saved.data_vars)
        print("scores identical to", args.compare, ":", same)


if __name__ == "__main__":
    main()
