"""Blending speed: 20 models x 18 leads x 31 yearly folds (inits 1984-01..2014-10), greedy
forward selection with replacement inside each fold (issue 4 target: under a minute).

    python benchmarks/bench_blend.py [--models 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.backtest import fold_starts
from climate_ml.blend import blend_backtest
from climate_ml.problems import get_problem
from climate_ml.schema import INIT, LEAD
from climate_ml.scores import METRICS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=20)
    args = ap.parse_args()
    problem = get_problem("el_nino")
    inits = pd.date_range("1984-01", "2014-10", freq="MS")
    rng = np.random.default_rng(0)
    truth = rng.normal(0, 1, (len(inits), len(problem.leads)))
    obs = xr.DataArray(truth, dims=(INIT, LEAD), coords={INIT: inits, LEAD: list(problem.leads)})
    # models of varying quality: signal share decreasing with the model index
    forecasts = {f"m{k:02d}": obs * (1 - k / args.models) + rng.normal(0, 0.3 + 0.05 * k, obs.shape) for k in range(args.models)}
    starts = fold_starts("1984-01", "2014-10", 12)
    tic = time.perf_counter()
    result = blend_backtest(problem, forecasts, obs, starts)
    secs = time.perf_counter() - tic
    best = min(forecasts, key=lambda n: float(METRICS["rmse"].compute(forecasts[n], obs).mean()))
    print(f"blend of {args.models} models x {len(problem.leads)} leads x {len(starts)} folds: {secs:.2f} s (target < 60 s)")
    print(f"mean RMSE: blend {float(METRICS['rmse'].compute(result.forecast, obs).mean()):.3f}, "
          f"best single ({best}) {float(METRICS['rmse'].compute(forecasts[best], obs).mean()):.3f}")
    top = sorted(result.contributivity().items(), key=lambda kv: -kv[1])[:5]
    print("top contributivity: " + ", ".join(f"{k} {v:.0%}" for k, v in top))


if __name__ == "__main__":
    main()
