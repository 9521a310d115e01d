"""Real-data skill for the README: California rainfall from the nClimDiv statewide record with
Kaplan SST anomalies (Nino indices) as predictors.

Trains on all earlier years and tests inits 1985-01..2014-10 (the Kaplan record ends in
2014-10), i.e. wet seasons 1985/86..2014/15 for the Aug-Oct inits, refitting every
--refit-every months (12 for the README). Prints per-lead monthly scores, the wet-season scores
per init month and 95% bootstrap intervals (resampling seasons) of the season skill, and the
plain correlation of Sep-Oct Nino 3.4 with the Nov-Mar total over 1950-2014 as a check on the data.

    python benchmarks/real_skill_california.py [--refit-every 12] [--store DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from climate_ml.problems import get_problem
from climate_ml.problems.california_rainfall import enso_rain_correlation, season_skill_interval
from climate_ml.report import markdown_table, reliability_table
from climate_ml.workflows import ensure_dataset, registered_models, run_backtest

TARGET, SST = "nclimdiv-precip-california-local", "kaplan-local"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refit-every", type=int, default=12)
    ap.add_argument("--store", default=None)
    args = ap.parse_args()
    root = Path(args.store or tempfile.mkdtemp(prefix="climate-ml-real-"))
    problem = get_problem("california_rainfall")
    prepared = problem.prepare(ensure_dataset(root, TARGET), {SST: ensure_dataset(root, SST)})
    print(f"corr(Sep-Oct Nino 3.4, Nov-Mar total), 1950-2014: {enso_rain_correlation(prepared):.2f}")
    models = [p for n, p in registered_models(problem.name).items() if n not in problem.references]
    tic = time.perf_counter()
    res = run_backtest(problem, models, prepared, "1985-01", "2014-10", args.refit_every)
    print(f"backtest: {time.perf_counter() - tic:.0f} s, refit every {args.refit_every} months, failures: {res.failures or 'none'}")
    scores = {n: res.scores(n) for n in res.forecasts}
    for metric in ("rmse", "acc", "bss_upper_tercile", "rpss"):
        print(f"\nmonthly totals, {metric} (rows: models, columns: lead in months)\n")
        print(markdown_table(scores, metric, problem.leads))
    for metric in ("rmse", "correlation", "brier_upper_tercile", "bss_upper_tercile", "rpss"):
        seasons = {n: res.extra(n)["season"][metric] for n in res.forecasts}
        cols = list(next(iter(seasons.values())))
        print(f"\nNov-Mar total, {metric} by init month\n")
        print("| model | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
        for n, row in seasons.items():
            print(f"| {n} | " + " | ".join("-" if row[c] is None else f"{row[c]:.2f}" for c in cols) + " |")
    print("\nNov-Mar total, all init months: point [95% interval, seasons resampled]")
    for n in res.forecasts:
        iv = season_skill_interval(problem, res, n)
        print(f"  {n:<18} " + "; ".join(f"{k} {p:+.2f} [{lo:+.2f}, {hi:+.2f}]" for k, (p, lo, hi) in iv.items()))
    # the monthly tercile probabilities of the model with the best mean RPSS over leads, all leads pooled
    best = max((n for n in res.forecasts if n != "climatology"),
               key=lambda n: sum(v for v in scores[n]["rpss"].values() if v is not None))
    for category in ("above", "below"):
        print("\n" + reliability_table(res.extra(best)["reliability"][category],
                                        f"P(monthly total {category} its tercile) from {best}, all leads"))


if __name__ == "__main__":
    main()
