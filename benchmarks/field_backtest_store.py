"""The field backtest of the per-cell references with the map stack held in memory (as it is up to
``workflows.FIELD_HELD_BYTES``) or left in the Zarr store (as it is above that size; ``--from-store``
sets the limit to 0): wall time, the peak RSS of this process and of its largest worker, and, with
``--compare FILE``, whether the scores equal those of an earlier run saved with ``--save FILE``.

``--archive-members N`` adds a field model of N members (damped anomaly persistence shifted by
evenly spaced offsets) and archives its hindcasts, as ``backtest --archive`` does: the peak RSS
here then shows what holding, spilling and writing those maps costs (N = 9, the sea-ice
ConvLSTM's members, over 2005-01..2016-12 makes 144 inits x 6 leads x 9 maps of the grid).

    python benchmarks/field_backtest_store.py --store STORE [--n-jobs 2] [--save held.nc]
    python benchmarks/field_backtest_store.py --store STORE [--n-jobs 2] --from-store --compare held.nc
    python benchmarks/field_backtest_store.py --store STORE --n-jobs 2 --archive-members 9
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import xarray as xr
from bench_oisst_scale import MemorySampler  # (this folder: peak RSS of every process, sampled)

from climate_ml import workflows

MEMBERS_MODEL = '''
import numpy as np
import xarray as xr

from climate_ml.sea_ice_fields import PerCellReference

TARGET = "sea_ice_concentration"
OFFSETS = np.linspace(-0.1, 0.1, {members})


class Shifted(PerCellReference):
    def predict(self, conc):
        mean = super().predict(conc)
        return xr.concat([(mean + d).clip(0, 1) for d in OFFSETS], dim="member")


def make_model():
    return Shifted("damped_anomaly_persistence")
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="climate-ml-data")
    ap.add_argument("--dataset", default="nsidc-0051-monthly-north-local")
    ap.add_argument("--test-start", default="2005-01")
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--from-store", action="store_true", help="leave the stack in the store, whatever its size")
    ap.add_argument("--save", help="write the per-sample scores to this NetCDF file")
    ap.add_argument("--compare", help="check the scores against a file written with --save")
    ap.add_argument("--archive-members", type=int, default=0, metavar="N",
                    help="also backtest a field model of N members and archive its maps")
    args = ap.parse_args()
    workflows.ensure_dataset(args.store, args.dataset)
    if args.from_store:
        workflows.FIELD_HELD_BYTES = 0
    folder = tempfile.TemporaryDirectory()
    extra = {}
    if args.archive_members:
        path = Path(folder.name) / f"dap_{args.archive_members}_members.py"
        path.write_text(MEMBERS_MODEL.format(members=args.archive_members))
        extra = {"model_paths": [path], "archive": True, "replace": True, "log": print}
    tic = time.perf_counter()
    with MemorySampler(0.2) as mem:
        run = workflows.field_backtest_run(args.store, args.dataset, args.test_start, n_jobs=args.n_jobs, **extra)
    seconds = time.perf_counter() - tic
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GB
    # the workers, sampled every 0.2 s (the kernel's peak of child processes would also count the
    # short `git` call that stamps the code version, forked from this process at its size)
    child = max((v for pid, v in mem.per_pid.items() if pid != os.getpid()), default=0) / 2**30
    where = "read from the store" if run.concentration.chunks is not None else "held in memory"
    print(f"maps {where}: {seconds:.0f} s with --n-jobs {args.n_jobs}; peak RSS {own:.2f} GB here, "
          f"{child:.2f} GB in the largest worker (sampled), {mem.total / 2**30:.2f} GB all processes together")
    print("IIEE by lead:", {k: round(v, 4) for k, v in run.summary["damped_anomaly_persistence"]["iiee"].items()})
    if args.save:
        run.scores.to_netcdf(args.save)
    if args.compare:
        saved = xr.load_dataset(args.compare)
        same = all(saved[v].equals(run.scores[v]) for v in saved.data_vars)
        print("scores identical to", args.compare, ":", same)


if __name__ == "__main__":
    main()
