"""`climate-ml forecast --init A:B` over --inits inits in one call, against single-init calls
(--singles of them timed, the mean scaled to --inits), on the embedded toy data.

    python benchmarks/forecast_range.py [--model models/ridge_ocean.py] [--inits 100] [--singles 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def cli(store: Path, *args: str) -> float:
    tic = time.perf_counter()
    subprocess.run([sys.executable, "-m", "climate_ml.cli", *args], check=True, capture_output=True,
                   env={**os.environ, "CLIMATE_ML_STORE": str(store)})
    return time.perf_counter() - tic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "ridge_ocean.py"))
    ap.add_argument("--inits", type=int, default=100)
    ap.add_argument("--singles", type=int, default=5)
    args = ap.parse_args()
    inits = pd.date_range("2010-01", periods=args.inits, freq="MS")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        cli(store, "ingest", "toy-ocean")  # ingest outside the timings
        cli(store, "ingest", "toy-heat-content")
        ranged = cli(store, "forecast", "el_nino", args.model, "--init", f"{inits[0]:%Y-%m}:{inits[-1]:%Y-%m}")
        singles = [cli(store, "forecast", "el_nino", args.model, "--init", f"{inits[-1] + pd.DateOffset(months=k + 1):%Y-%m}")
                   for k in range(args.singles)]
    mean = sum(singles) / len(singles)
    print(f"{Path(args.model).name}: one call for {args.inits} inits {ranged:.1f} s; single-init calls "
          f"{mean:.1f} s each (mean of {args.singles}), so {args.inits} of them ~{mean * args.inits:.0f} s: "
          f"{mean * args.inits / ranged:.0f}x (aim >= 20x)")


if __name__ == "__main__":
    main()
