"""Real-data skill for the README: El Nino, on three works, against XRO.

Works (test inits, refit every --refit-every months on an expanding window):
  K   Kaplan SST target (5-degree tropical Pacific field) with the CRO file's ORAS5 heat content
      (Hm, Hw) and Nino indices as predictors; test inits 1984-01..2014-10. Training starts
      where every predictor exists (1958). The published Ham et al. (2019) CNN is scored on
      the same pairs.
  K0  the same without predictors (SST only, training from 1856): the setting of the earlier
      README table, to show what ocean memory adds.
  O   the XRO indices file alone (ORAS5 Nino34 target; WWV and the climate modes as
      predictors); test inits 1995-01..2024-12.
  P   the PMEL/CPC file (OISST Nino 3.4 target; warm water volume and 850 hPa trade winds as
      predictors); test inits 2000-01..2025-05.

Every El Nino model in models/ runs, with the references (XRO among them); the run is recorded
and put on the leaderboard with XRO as the reference: '*' marks leads where a model beats XRO
with 95% confidence (block bootstrap by year).

    python benchmarks/real_skill_el_nino.py --work K [--refit-every 12] [--models xro_boosted lightgbm_lagged]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from climate_ml.archive import import_forecasts, imported_forecasts
from climate_ml.backtest import fold_starts
from climate_ml.blend import blend_backtest
from climate_ml.catalog import real_data_dir
from climate_ml.leaderboard import assemble, format_board, record_backtest, score_board
from climate_ml.problems import get_problem
from climate_ml.report import probability_tables
from climate_ml.schema import INIT, LEAD
from climate_ml.workflows import problem_inputs, reference_paths, registered_models, run_backtest

WORKS = {
    "K": dict(dataset="kaplan-local", predictors=["cro-oras5-heat-content-local"], test=("1984-01", "2014-10")),
    "K0": dict(dataset="kaplan-local", predictors=[], test=("1984-01", "2014-10")),
    "O": dict(dataset="xro-oras5-indices-local", predictors=[], test=("1995-01", "2024-12")),
    "P": dict(dataset="pmel-cpc-enso-local", predictors=[], test=("2000-01", "2025-05")),
}


def ham_cnn(leads) -> tuple[xr.DataArray, xr.DataArray]:
    df = pd.read_csv(real_data_dir() / "forecasts" / "ham2019_cnn_nino34_by_init_lead.csv")
    df["init"] = pd.to_datetime(df["init"] + "-01")
    obs = df.pivot(index="init", columns="lead", values="kaplan_obs").reindex(columns=list(leads))
    return xr.DataArray(obs.values, dims=(INIT, LEAD), coords={INIT: obs.index.values, LEAD: list(leads)})


def print_probability_scores(problem, res) -> None:
    """P(La Nina / neutral / El Nino) of every model (spread from its own earlier out-of-sample
    errors): RPSS and Brier skill against the training-window climatological frequencies, and
    the reliability of P(El Nino) and P(La Nina) for the model with the best RPSS at lead 6."""
    print("\nCategory probabilities (La Nina < -0.5 <= neutral <= +0.5 < El Nino, degC), skill against "
          "climatological frequencies\n")
    print(probability_tables(res, [1, 3, 6, 9, 12], [3, 6]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", choices=list(WORKS), default="K")
    ap.add_argument("--refit-every", type=int, default=12)
    ap.add_argument("--models", nargs="*", default=None, help="model names in models/ (default: every El Nino model)")
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--store", default=None)
    args = ap.parse_args()
    work = WORKS[args.work]
    root = Path(args.store or tempfile.mkdtemp(prefix="climate-ml-real-"))
    problem = get_problem("el_nino")
    dataset, obs, prepared = problem_inputs(root, problem, work["dataset"], work["predictors"], log=print)
    start, end = work["test"]
    end = min(pd.Timestamp(end), problem.last_init(prepared))
    available = registered_models("el_nino")
    names = args.models if args.models is not None else [n for n in available if n not in problem.references]
    models = [available[n] for n in names]
    tic = time.perf_counter()
    res = run_backtest(problem, models, prepared, start, end, args.refit_every, n_jobs=args.n_jobs)
    print(f"work {args.work}: {dataset} + {work['predictors'] or 'no predictor data set'}, test inits {start}..{end:%Y-%m}, "
          f"refit every {args.refit_every} months: {time.perf_counter() - tic:.0f} s; failures: {res.failures or 'none'}")
    for name, secs in res.seconds.items():
        print(f"  {name}: {secs:.0f} s")
    files = {**reference_paths(problem), **{Path(p).stem: Path(p) for p in models}}
    if len(names) >= 1 and len(res.forecasts) >= 2:
        submitted = [n for n in names if n in res.forecasts]
        b = blend_backtest(problem, res.forecasts, res.obs, fold_starts(start, end, args.refit_every),
                           prior=submitted or None)
        res.forecasts["blend"] = b.forecast
        files["blend"] = Path("blend")
        print("blend contributivity: " + ", ".join(f"{k} {v:.0%}" for k, v in b.contributivity().items() if v > 0))
    record_backtest(root, problem, res, dataset, obs.attrs.get("source_sha256", ""), start, end, args.refit_every, files)
    print_probability_scores(problem, res)
    if args.work.startswith("K"):
        import_forecasts(root, problem, real_data_dir() / "forecasts" / "ham2019_cnn_nino34_by_init_lead.csv",
                         "ham2019_cnn", column="cnn", note="Ham, Kim & Luo 2019 (published)", dataset=dataset)
        both = ham_cnn(problem.leads).reindex({INIT: res.obs[INIT].values}).sel({LEAD: list(range(2, 19))})
        diff = np.abs(both - res.obs.sel({LEAD: list(range(2, 19))}))
        print(f"target check vs the CSV's kaplan_obs (leads 2-18): max |difference| = {float(diff.max()):.3f} degC, "
              f"mean = {float(diff.mean()):.4f} degC (climatology refitted per fold here)")
    board = assemble(root, "el_nino", imported=imported_forecasts(root, "el_nino"))
    for score in ("acc", "rmse"):
        table = score_board(board, score, "xro", n_boot=1000)
        print()
        print(format_board(table))
        print(f"\n{score.upper()} (rows: models, columns: lead in months; * = better than xro with 95% confidence)\n")
        print("| model | " + " | ".join(str(k) for k in problem.leads) + " |")
        print("|---|" + "---:|" * len(problem.leads))
        for r in table["rows"]:
            cells = [("-" if v["score"] is None else f"{v['score']:.2f}") + ("*" if v["significantly_better_than_reference"] else "")
                     for v in (r["leads"][str(k)] for k in problem.leads)]
            print(f"| {r['model']} | " + " | ".join(cells) + " |")
    print(f"\nstore: {root}")


if __name__ == "__main__":
    main()
