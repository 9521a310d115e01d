"""Category probabilities from members, on real data: for each index model with members, the
probability scores with the spread from its out-of-sample errors alone, from its members alone,
from the two combined (``probabilities.combined_spread``, the default) and from counting the
members in each category.

El Nino: Kaplan SST (kaplan-local), test inits 1984-01..2014-10, refit every 60 months,
``convlstm`` and ``lightgbm_members``; mean RPSS and Brier skill scores of P(El Nino) and
P(La Nina) over leads 1-18, and RPSS at leads 1/3/6/9/12/15/18. Rainfall: nClimDiv California
with Kaplan SST, test inits 1985-01..2014-10, refit yearly, ``convlstm_rain``; mean BSS of the
upper tercile and RPSS of the monthly totals over leads 1-7, and the spread of the members'
November-March totals against the error of their mean.

    python benchmarks/member_probabilities.py [--store DIR] [--n-jobs 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from climate_ml.probabilities import (
    brier_skill,
    gaussian_category_probabilities,
    member_spread,
    observed_categories,
    rpss,
)
from climate_ml.problems import get_problem
from climate_ml.schema import INIT, LEAD, MEMBER
from climate_ml.scores import (
    CATEGORIES,
    brier_skill_upper_tercile,
    observed_category,
    ranked_probability_skill,
    shifted_climatology_probabilities,
    tercile_edges,
)
from climate_ml.workflows import MODELS_DIR, ensure_dataset, run_backtest

DROP = ("valid_time",)


def counted(members: xr.DataArray, lo, hi, labels) -> xr.DataArray:
    """P(category) as the share of members below ``lo``, between, above ``hi``."""
    below, above = (members < lo).mean(MEMBER), (members > hi).mean(MEMBER)
    return xr.concat([below, 1 - below - above, above], dim="category").assign_coords(category=list(labels))


def el_nino(root: Path, n_jobs: int) -> None:
    problem = get_problem("el_nino")
    prepared = problem.prepare(ensure_dataset(root, "kaplan-local"))
    tic = time.perf_counter()
    res = run_backtest(problem, [MODELS_DIR / "convlstm.py", MODELS_DIR / "lightgbm_members.py"], prepared,
                       "1984-01", "2014-10", 60, n_jobs=n_jobs)
    print(f"El Nino on kaplan-local, refit every 60 months: {time.perf_counter() - tic:.0f} s, "
          f"failures: {res.failures or 'none'}")
    obs = res.obs.drop_vars(DROP, errors="ignore")
    onehot = observed_categories(obs, problem.thresholds, problem.categories)
    ref = res.context["clim_probs"]
    leads = [1, 3, 6, 9, 12, 15, 18]
    print("\n| model | spread from | mean RPSS | mean BSS El Nino | mean BSS La Nina | RPSS " +
          " / ".join(f"L{k}" for k in leads) + " |\n|---|---|---:|---:|---:|---|")
    for name, members in res.members.items():
        members = members.drop_vars(DROP, errors="ignore")
        fc = res.forecasts[name].drop_vars(DROP, errors="ignore")
        variants = {
            "errors alone (before)": problem.category_probabilities(dataclasses.replace(res, members={}), name),
            "members alone": gaussian_category_probabilities(fc, member_spread(members), problem.thresholds,
                                                             problem.categories),
            "**errors and members (now)**": problem.category_probabilities(res, name),
            "member counts": counted(members, *problem.thresholds, problem.categories).where(fc.notnull()),
        }
        for label, probs in variants.items():
            r = rpss(probs, onehot, ref)
            bss = [float(brier_skill(probs, onehot, ref, c).mean()) for c in ("el_nino", "la_nina")]
            print(f"| {name} | {label} | {float(r.mean()):+.3f} | {bss[0]:+.3f} | {bss[1]:+.3f} | "
                  + " / ".join(f"{float(r.sel({LEAD: k})):+.2f}" for k in leads) + " |")


def rainfall(root: Path, n_jobs: int) -> None:
    problem = get_problem("california_rainfall")
    prepared = problem.prepare(ensure_dataset(root, "nclimdiv-precip-california-local"),
                               {"kaplan-local": ensure_dataset(root, "kaplan-local")})
    tic = time.perf_counter()
    res = run_backtest(problem, [MODELS_DIR / "convlstm_rain.py"], prepared, "1985-01", "2014-10", 12, n_jobs=n_jobs)
    print(f"\nCalifornia rainfall on nClimDiv with Kaplan SST, refit yearly: {time.perf_counter() - tic:.0f} s, "
          f"failures: {res.failures or 'none'}")
    ctx = res.context
    samples = ctx["climate_samples"]
    onehot = observed_category(res.obs, tercile_edges(samples))
    scale = np.maximum(samples.std("sample", skipna=True), 0.1)
    print("\n| model | spread from | mean BSS upper tercile | mean RPSS | BSS upper tercile L1-L7 |\n|---|---|---:|---:|---|")
    for name, members in res.members.items():
        fc = res.forecasts[name]
        edges = tercile_edges(samples)
        variants = {
            "errors alone (before)": problem.monthly_probabilities(dataclasses.replace(res, members={}), name),
            "members alone": shifted_climatology_probabilities(fc, samples, member_spread(members) / scale),
            "**errors and members (now)**": problem.monthly_probabilities(res, name),
            "member counts": counted(members, edges.isel(edge=0, drop=True), edges.isel(edge=1, drop=True),
                                     CATEGORIES).where(fc.notnull()),
        }
        for label, probs in variants.items():
            b = brier_skill_upper_tercile(probs, onehot)
            print(f"| {name} | {label} | {float(b.mean()):+.3f} | "
                  f"{float(ranked_probability_skill(probs, onehot).mean()):+.3f} | "
                  + " / ".join(f"{v:+.3f}" for v in b.values) + " |")
        rows = ctx["season_known"].notnull()
        totals = (ctx["season_known"] + (members * ctx["season_weights"]).sum(LEAD)).where(rows)
        err = (totals.mean(MEMBER) - ctx["season_obs"]).where(rows)
        spread = member_spread(totals).where(err.notnull())
        print(f"\n{name}: Nov-Mar totals of its members spread {float(np.sqrt((spread**2).mean(INIT))):.0f} mm "
              f"(RMS of sqrt((m+1)/m x variance)); their mean errs by {float(np.sqrt((err**2).mean(INIT))):.0f} mm "
              "(RMSE): the season keeps the spread of its past errors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="store holding (or to ingest) the local catalog entries")
    ap.add_argument("--n-jobs", type=int, default=2)
    args = ap.parse_args()
    root = Path(args.store or tempfile.mkdtemp(prefix="climate-ml-members-"))
    el_nino(root, args.n_jobs)
    rainfall(root, args.n_jobs)


if __name__ == "__main__":
    main()
