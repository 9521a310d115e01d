"""Probabilities of Arctic sea-ice extent on real data (NSIDC Sea Ice Index G02135 v4 monthly,
Northern Hemisphere): for each lead, P(a new record low for the valid month), P(below last
year's extent of that month but no record) and P(at or above last year), with each model's
spread calibrated on its own earlier out-of-sample errors. Skill (RPSS, Brier skill score of
"a new record low" and of "at or above last year", whose complement is "below last year")
against the trend climatology: the linear trend of the valid calendar month, fitted on the
training window, with the spread of the training years about it. Then the reliability tables.

    python benchmarks/real_skill_sea_ice.py [--test-start 2012-01] [--test-end 2024-12] [--refit-every 12]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from climate_ml.problems import get_problem  # noqa: E402
from climate_ml.report import probability_tables  # noqa: E402
from climate_ml.workflows import problem_inputs, run_backtest  # noqa: E402

DATASET = "nsidc-seaice-monthly-north-local"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test-start", default="2012-01")
    ap.add_argument("--test-end", default="2024-12")
    ap.add_argument("--refit-every", type=int, default=12)
    ap.add_argument("--store", default=None)
    args = ap.parse_args()
    root = Path(args.store or tempfile.mkdtemp(prefix="climate-ml-real-"))
    problem = get_problem("arctic_sea_ice")
    _, _, prepared = problem_inputs(root, problem, DATASET, None, log=print)
    tic = time.perf_counter()
    res = run_backtest(problem, ["models/damped_anomaly_persistence.py", "models/lightgbm_lagged.py"], prepared,
                       args.test_start, args.test_end, args.refit_every)
    print(f"\n{DATASET}: inits {args.test_start}..{args.test_end}, refit every {args.refit_every} months, "
          f"{time.perf_counter() - tic:.1f} s\n")
    print(probability_tables(res, list(problem.leads), [1, 3, 6]))


if __name__ == "__main__":
    main()
