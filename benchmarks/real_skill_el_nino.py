"""Real-data skill for the README: El Nino on the Kaplan SST anomalies.

Trains from 1856, tests inits 1984-01..2014-10, refitting every --refit-every months (12 for
the README table), for every model in models/. Adds the published Ham et al. (2019) CNN
forecasts (../shared/data/forecasts) scored on exactly the same inits and target, and checks
that this project's target equals the CSV's ``kaplan_obs`` column.

    python benchmarks/real_skill_el_nino.py [--refit-every 12] [--store DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.catalog import real_data_dir
from climate_ml.problems import get_problem
from climate_ml.report import markdown_table
from climate_ml.schema import INIT, LEAD
from climate_ml.scores import METRICS
from climate_ml.workflows import ensure_dataset, registered_models, run_backtest


def ham_cnn(leads) -> tuple[xr.DataArray, xr.DataArray]:
    df = pd.read_csv(real_data_dir() / "forecasts" / "ham2019_cnn_nino34_by_init_lead.csv")
    df["init"] = pd.to_datetime(df["init"] + "-01")
    cnn = df.pivot(index="init", columns="lead", values="cnn")
    obs = df.pivot(index="init", columns="lead", values="kaplan_obs")
    def to_da(t):
        t = t.reindex(columns=list(leads))
        return xr.DataArray(t.values, dims=(INIT, LEAD), coords={INIT: t.index.values, LEAD: list(leads)})
    return to_da(cnn), to_da(obs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refit-every", type=int, default=12)
    ap.add_argument("--store", default=None)
    args = ap.parse_args()
    root = Path(args.store or tempfile.mkdtemp(prefix="climate-ml-real-"))
    problem = get_problem("el_nino")
    prepared = problem.prepare(ensure_dataset(root, "kaplan-local"))
    models = [p for n, p in registered_models("el_nino").items() if n not in problem.references]
    tic = time.perf_counter()
    res = run_backtest(problem, models, prepared, "1984-01", "2014-10", args.refit_every)
    print(f"backtest: {time.perf_counter() - tic:.0f} s, refit every {args.refit_every} months, failures: {res.failures or 'none'}")

    scores = {n: res.scores(n) for n in res.forecasts}
    cnn, cnn_obs = ham_cnn(problem.leads)
    inits = res.obs[INIT].values
    cnn = cnn.reindex({INIT: inits})
    # Same inits and pairs: score the CNN against this project's own observed target.
    scores["ham2019_cnn (published)"] = {m: {str(k): round(float(v), 4) for k, v in zip(problem.leads, METRICS[m].compute(cnn, res.obs).values, strict=True)} for m in METRICS}
    both = cnn_obs.reindex({INIT: inits}).sel({LEAD: list(range(2, 19))})
    diff = np.abs(both - res.obs.sel({LEAD: list(range(2, 19))}))
    print(f"target check vs the CSV's kaplan_obs (leads 2-18): max |difference| = {float(diff.max()):.3f} degC, "
          f"mean = {float(diff.mean()):.4f} degC (climatology refitted per fold here)")
    for metric in ("acc", "rmse"):
        print(f"\n{metric.upper()} (rows: models, columns: lead in months)\n")
        print(markdown_table(scores, metric, problem.leads))


if __name__ == "__main__":
    main()
