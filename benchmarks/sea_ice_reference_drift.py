"""How much worse the per-cell damped anomaly persistence reference is after its cut-off than
inside its training window, on the real NSIDC-0051 maps (a diagnostic for the sea-ice
ConvLSTM's member spread, which is taken from errors inside the training window).

For each cut-off T: the reference is fitted on the maps up to T; its RMS error per lead over
the ocean cells is taken (a) in sample, over inits from ``--since`` to T whose valid month is
up to T, and (b) out of sample, over the inits from T to T + ``--years`` (the test years a
backtest with that cut-off forecasts). The ratio b / a is how much a spread taken in sample
falls short for the reference's part of the error.

    python benchmarks/sea_ice_reference_drift.py [--cutoffs 2010-07 2013-07] [--years 3]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from climate_ml.sea_ice_fields import fit_fields, forecast_fields
from climate_ml.workflows import ensure_dataset

LEADS = [1, 2, 3, 4, 5, 6]


def rms_errors(fit, flat: np.ndarray, times: pd.DatetimeIndex, inits, last_valid: pd.Timestamp) -> np.ndarray:
    """RMS error per lead of the reference's forecasts from ``inits`` whose valid month is up to ``last_valid``."""
    sq, n = np.zeros(len(LEADS)), np.zeros(len(LEADS))
    for i in inits:
        fc = forecast_fields(fit, flat[i], times[i], LEADS, "damped_anomaly_persistence")
        for j, lead in enumerate(LEADS):
            v = i + lead
            if v < len(times) and times[v] <= last_valid:
                err = fc[j] - flat[v]
                sq[j] += np.nansum(err ** 2)
                n[j] += np.isfinite(err).sum()
    return np.sqrt(sq / np.maximum(n, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="store root (default: CLIMATE_ML_STORE or ./climate-ml-data)")
    ap.add_argument("--dataset", default="nsidc-0051-monthly-north-local")
    ap.add_argument("--cutoffs", nargs="+", default=["2010-07", "2013-07"])
    ap.add_argument("--years", type=int, default=3, help="test years after each cut-off")
    ap.add_argument("--since", default="1989-01", help="first init of the in-sample errors")
    args = ap.parse_args()
    obs = ensure_dataset(args.store, args.dataset)
    conc = obs[[v for v in obs.data_vars if obs[v].ndim == 3][0]].load()
    times = pd.DatetimeIndex(conc["time"].values)
    flat = conc.transpose("time", ...).values.reshape(len(times), -1)
    flat = flat[:, np.isfinite(flat).any(0)].astype("float64")
    print(f"{args.dataset}: damped anomaly persistence, RMS error of concentration per lead {LEADS}")
    for cut in args.cutoffs:
        t0 = pd.Timestamp(cut)
        t1 = t0 + pd.DateOffset(years=args.years) - pd.DateOffset(months=1)
        train = times <= t0
        fit = fit_fields(flat[train], times[train], t0, LEADS)
        inside = rms_errors(fit, flat, times, np.flatnonzero((times >= pd.Timestamp(args.since)) & (times < t0)), t0)
        after = rms_errors(fit, flat, times, np.flatnonzero((times >= t0) & (times <= t1)), times[-1])
        print(f"cut-off {t0:%Y-%m}: in sample {np.round(inside, 4).tolist()}, inits {t0:%Y-%m}..{t1:%Y-%m} "
              f"{np.round(after, 4).tolist()}, ratio {np.round(after / inside, 2).tolist()}")


if __name__ == "__main__":
    main()
