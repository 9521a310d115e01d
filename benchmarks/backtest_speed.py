"""Wall time and peak memory of the Kaplan LightGBM backtest of the speed issue:

    climate-ml backtest el_nino models/lightgbm_lagged.py --dataset kaplan-local \\
        --test-start 1984-01 --test-end 2014-10 [--n-jobs N]

(31 yearly refits x 18 leads, with the references, the lookahead guard and the blend), run in a
fresh store on the real Kaplan data of ../shared/data.

    python benchmarks/backtest_speed.py [--model models/lightgbm_lagged.py] [--n-jobs 1]

With BENCH_JSON=FILE the backtest's --json output is also written to FILE (to compare two versions).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "lightgbm_lagged.py"))
    ap.add_argument("--n-jobs", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CLIMATE_ML_STORE": str(Path(tmp) / "store")}
        subprocess.run([sys.executable, "-m", "climate_ml.cli", "ingest", "kaplan-local"], env=env, check=True,
                       capture_output=True)
        tic = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "climate_ml.cli", "backtest", "el_nino", args.model, "--dataset",
                            "kaplan-local", "--test-start", "1984-01", "--test-end", "2014-10", "--n-jobs",
                            str(args.n_jobs), "--json"], env=env, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - tic
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    acc = json.loads(p.stdout)["scores"]["acc"]
    if os.environ.get("BENCH_JSON"):
        Path(os.environ["BENCH_JSON"]).write_text(p.stdout)
    print(f"{Path(args.model).name}, --n-jobs {args.n_jobs}: {seconds:.0f} s, peak RSS of a child {peak:.0f} MB; "
          f"ACC at leads 1/6/12/18: {acc['1']} / {acc['6']} / {acc['12']} / {acc['18']}")


if __name__ == "__main__":
    main()
