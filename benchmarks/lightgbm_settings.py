"""LightGBM settings for the speed issue, chosen without the test period: `lightgbm_lagged` alone
(no references, guard or blend), backtested with each setting on the real Kaplan SST (the El Nino
problem's default features, no predictors) in two periods, with two worker processes:

  validation  inits 1950-01..1982-06 (targets up to 1983-12), yearly refits from 1856
  test        inits 1984-01..2014-10, the period of `benchmarks/backtest_speed.py`

Each row: wall time, mean ACC and RMSE over leads 1-18, ACC at leads 1 / 6 / 12 / 18, and the
difference of the mean ACC and RMSE from the default setting's in the same period, with a 95%
interval from a block bootstrap by year of the inits (1000 resamples, paired: the same years for
both). The selection rule, fixed before the test period was run: among the settings that fit the
time aim, the best mean ACC on the validation period.

    python benchmarks/lightgbm_settings.py [--periods validation test] [--settings default C3 ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from climate_ml.backtest import backtest
from climate_ml.leaderboard import yearly_sums
from climate_ml.problems import get_problem
from climate_ml.schema import INIT, LEAD
from climate_ml.scores import METRICS
from climate_ml.workflows import problem_inputs

PERIODS = {"validation": ("1950-01", "1982-06"), "test": ("1984-01", "2014-10")}
SETTINGS = {  # LightGBMLagged keyword arguments on top of its defaults
    "default": {},
    "C1": {"max_bin": 63, "n_estimators": 150, "learning_rate": 0.06},
    "C2": {"max_bin": 31, "n_estimators": 150, "learning_rate": 0.06},
    "C3": {"max_bin": 63, "extra_trees": True, "n_estimators": 150, "learning_rate": 0.06},
    "C4": {"max_bin": 63, "colsample_bytree": 0.25, "n_estimators": 150, "learning_rate": 0.06},
    "C6": {"max_bin": 127, "n_estimators": 100, "learning_rate": 0.09},
    "G2": {"lead_group": 2},  # one booster per two adjacent leads, the lead a predictor
    "G3": {"lead_group": 3},
}


def yearly(fc, obs, metric: str) -> np.ndarray:
    """Per-year sums of the metric's statistics (year, lead, k) on the pairs both have."""
    f = fc.transpose(INIT, LEAD).values[None]
    o = obs.transpose(INIT, LEAD).values
    years = pd.DatetimeIndex(obs[INIT].values).year.values
    S, _ = yearly_sums(METRICS[metric], f, o, years)
    return S[:, 0]


def mean_score(metric: str, sums: np.ndarray) -> np.ndarray:
    """Mean over leads of the metric from summed statistics (..., lead, k)."""
    return METRICS[metric].reduce(sums).mean(axis=-1)


def difference(run, base, metric: str, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(run - base) of the mean score over leads, and its 95% paired block-bootstrap interval."""
    a, b = yearly(*run, metric), yearly(*base, metric)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(a), len(a)), minlength=len(a)) for _ in range(n_boot)])
    boot = mean_score(metric, np.einsum("by,ylk->blk", counts, a)) - mean_score(metric, np.einsum("by,ylk->blk", counts, b))
    point = float(mean_score(metric, a.sum(0)) - mean_score(metric, b.sum(0)))
    return point, float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--periods", nargs="+", default=list(PERIODS), choices=list(PERIODS))
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--n-jobs", type=int, default=2)
    args = ap.parse_args()
    problem = get_problem("el_nino")
    names = ["default", *[s for s in args.settings if s != "default"]]
    for name in names:
        print(f"{name}: LightGBMLagged({', '.join(f'{k}={v}' for k, v in SETTINGS[name].items())})")
    with tempfile.TemporaryDirectory() as tmp:
        _, _, prepared = problem_inputs(Path(tmp) / "store", problem, "kaplan-local", [])
        prepared = prepared.load()
        for period in args.periods:
            start, end = PERIODS[period]
            runs = {}
            for name in names:
                path = Path(tmp) / f"lightgbm_{name}.py"  # worker processes load models from files
                path.write_text("from climate_ml.boosting import LightGBMLagged\n\n\ndef make_model():\n"
                                f"    return LightGBMLagged(**{SETTINGS[name]!r})\n")
                tic = time.perf_counter()
                res = backtest(problem, {name: path}, prepared, start, end, 12, n_jobs=args.n_jobs)
                seconds = time.perf_counter() - tic
                if name in res.failures:
                    raise SystemExit(res.failures[name])
                runs[name] = (res.forecasts[name].drop_vars("valid_time", errors="ignore"),
                              res.obs.drop_vars("valid_time", errors="ignore"))
                acc = METRICS["acc"].compute(*runs[name]).values
                rmse = METRICS["rmse"].compute(*runs[name]).values
                line = (f"{period:10s} {name:8s} {seconds:6.1f} s  mean ACC {acc.mean():.4f}  mean RMSE {rmse.mean():.4f}"
                        f"  ACC 1/6/12/18 {acc[0]:.3f} / {acc[5]:.3f} / {acc[11]:.3f} / {acc[17]:.3f}")
                if name != "default":
                    da, dlo, dhi = difference(runs[name], runs["default"], "acc")
                    dr, rlo, rhi = difference(runs[name], runs["default"], "rmse")
                    line += f"  vs default: ACC {da:+.4f} [{dlo:+.4f}, {dhi:+.4f}], RMSE {dr:+.4f} [{rlo:+.4f}, {rhi:+.4f}]"
                print(line, flush=True)


if __name__ == "__main__":
    main()
