"""Can a per-cell statistical forecast of the real NSIDC-0051 maps place the ice edge better than
damped anomaly persistence from the maps' own history? A diagnostic of the sea-ice ConvLSTM's
0.85 x IIEE aim: it shows how much the history of concentration alone holds beyond the reference.

Each variant is the per-cell trend at the valid month plus a damped departure, fitted on the
maps up to each yearly cut-off (test inits 2005-01..2016-06, as the README's ConvLSTM run), and
scored by IIEE per lead (``sea_ice_fields.field_scores``):

  damped_anomaly_persistence   the reference: one damping per init month and lead, all cells pooled
  blocks B                     one damping per init month, lead and block of B x B cells (25 km
                               cells: B=4 is 100 km); the pooled one where a block has no variance
  blocks B + valid month - 12  two coefficients per block: the departure at the init and the one
                               12 months before the valid month (the memory of last year's edge)
  trend over W years           the trend and damping fitted on the last W training years only

    python benchmarks/sea_ice_damping_variants.py [--blocks 1 4 16] [--windows 20 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from climate_ml.sea_ice_fields import field_scores, fit_fields, forecast_fields
from climate_ml.workflows import ensure_dataset

LEADS = [1, 2, 3, 4, 5, 6]
REFERENCE = "damped_anomaly_persistence"


def block_damping(anom: np.ndarray, months: np.ndarray, train: np.ndarray, block: np.ndarray,
                  pooled: np.ndarray, lag12: bool) -> np.ndarray:
    """Coefficients (12 init months, lead, predictor, cell) of the departure at the init (and,
    with ``lag12``, of the one 12 months before the valid month), least squares over each block
    of cells on the training pairs; a block without variance falls back on ``pooled``."""
    n_blocks, k = block.max() + 1, 2 if lag12 else 1
    coef = np.zeros((12, len(LEADS), k, anom.shape[1]))
    for m in range(12):
        for j, lead in enumerate(LEADS):
            r = np.flatnonzero(train & (months == m))
            r = r[(r + lead < len(train)) & (r + lead - 12 >= 0)]
            r = r[train[r + lead]]
            x = [anom[r], anom[r + lead - 12]][:k]
            target = anom[r + lead]
            gram = np.array([[np.bincount(block, (a * b).sum(0), n_blocks) for b in x] for a in x])  # (k, k, blocks)
            cross = np.array([np.bincount(block, (a * target).sum(0), n_blocks) for a in x])  # (k, blocks)
            ok = gram[0, 0] > 1e-9 * gram[0, 0].max()
            ridge = (1e-3 * np.trace(gram) + 1e-12)[None, None] * np.eye(k)[:, :, None]  # keeps a 2 x 2 solvable
            sol = np.linalg.solve(np.moveaxis(gram + ridge, -1, 0), np.moveaxis(cross, -1, 0)[..., None])[..., 0]
            if k == 1:
                sol = np.clip(sol, 0.0, 1.0)
            sol[~ok] = 0.0
            sol[~ok, 0] = pooled[m, j]
            coef[m, j] = sol.T[:, block]
    return coef


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="store root (default: CLIMATE_ML_STORE or ./climate-ml-data)")
    ap.add_argument("--dataset", default="nsidc-0051-monthly-north-local")
    ap.add_argument("--blocks", nargs="+", type=int, default=[1, 4, 16], help="block sizes in cells")
    ap.add_argument("--windows", nargs="+", type=int, default=[20, 10], help="trend windows in years")
    ap.add_argument("--test-start", default="2005-01")
    ap.add_argument("--test-end", default="2016-06")
    args = ap.parse_args()
    tic = time.perf_counter()
    obs = ensure_dataset(args.store, args.dataset)
    conc = obs[[v for v in obs.data_vars if obs[v].ndim == 3][0]].load().transpose("time", ...)
    times = pd.DatetimeIndex(conc["time"].values)
    grid = [d for d in conc.dims if d != "time"]
    flat = conc.values.reshape(len(times), -1)
    ocean = np.isfinite(flat).any(0)
    flat = flat[:, ocean].astype("float64")
    area = obs["cell_area"].transpose(*grid).values.ravel()[ocean]
    iy, ix = np.divmod(np.flatnonzero(ocean), conc.sizes[grid[1]])
    months, years = times.month.values - 1, times.year.values
    first, last = pd.Timestamp(args.test_start), pd.Timestamp(args.test_end)
    iiee: dict[str, list[list[float]]] = {}

    def score(name: str, j: int, forecast: np.ndarray, v: int) -> None:
        iiee.setdefault(name, [[] for _ in LEADS])[j].append(field_scores(np.clip(forecast, 0, 1), flat[v], area)["iiee"])

    for year in range(first.year, last.year + 1):
        cut = pd.Timestamp(f"{year - 1}-12-01")
        train = np.asarray(times <= cut)
        fit = fit_fields(flat[train], times[train], cut, LEADS)
        anom = np.nan_to_num(fit.departures(flat, times))  # used at training pairs and at the inits only
        coefs = {}
        for b in args.blocks:
            block = np.unique((iy // b) * (ix.max() + 1) + ix // b, return_inverse=True)[1]
            for lag12 in (False, True):
                coefs[f"blocks {b}" + (" + valid month - 12" if lag12 else "")] = block_damping(
                    anom, months, train, block, fit.damping, lag12)
        windows = {}
        for w in args.windows:
            recent = train & (years > year - 1 - w)
            windows[f"trend over {w} years"] = fit_fields(flat[recent], times[recent], cut, LEADS)
        inits = np.flatnonzero((years == year) & (times >= first) & (times <= last))
        for i in inits:
            maps = forecast_fields(fit, flat[i], times[i], LEADS, REFERENCE)
            for j, lead in enumerate(LEADS):
                v = i + lead
                if v >= len(times):
                    continue
                score(REFERENCE, j, maps[j], v)
                trend = fit.trend(times[[v]])[0]
                for name, c in coefs.items():
                    extra = c[months[i], j, 1] * anom[v - 12] if c.shape[2] == 2 else 0.0
                    score(name, j, trend + c[months[i], j, 0] * anom[i] + extra, v)
            for name, wfit in windows.items():
                for j, wmap in enumerate(forecast_fields(wfit, flat[i], times[i], LEADS, REFERENCE)):
                    if i + LEADS[j] < len(times):
                        score(name, j, wmap, i + LEADS[j])
        print(f"fold {cut:%Y-%m}: {len(inits)} inits ({time.perf_counter() - tic:.0f} s)", flush=True)
    base = np.array([np.mean(v) for v in iiee[REFERENCE]])
    print(f"\nIIEE (10^6 km^2) by lead {LEADS}, inits {first:%Y-%m}..{last:%Y-%m}, and its ratio to {REFERENCE}")
    for name, values in iiee.items():
        mean = np.array([np.mean(v) for v in values])
        print(f"{name:32s} " + " ".join(f"{x:.3f}" for x in mean) + "   ratio " + " ".join(f"{x:.3f}" for x in mean / base))
    print(f"{time.perf_counter() - tic:.0f} s")


if __name__ == "__main__":
    main()
