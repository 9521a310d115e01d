"""How much of a concentration map's integrated ice-edge error (IIEE) is the amount of ice, and
how much is where it lies: a diagnostic for the sea-ice IIEE aim, on the real NSIDC-0051 maps.

For each yearly fold the edge-calibrated damped anomaly persistence reference
(``models/damped_anomaly_persistence_edge.py``) is fitted on the maps up to the fold's start
and forecasts every init of the year. Each forecast map's ice edge is then drawn three ways:

- as forecast (its 15% contour);
- at the contour whose extent equals an extent forecast: damped anomaly persistence of the
  ice-covered fraction of the ocean area, fitted on the same training months with the per-cell
  machinery (``sea_ice_fields.ExtentForecast``);
- at the contour whose extent equals the **observed** extent of the valid month (an oracle: no
  forecast can know it). With the amount of ice exactly right, what IIEE is left is misplaced ice.

    python benchmarks/sea_ice_extent_oracle.py [--store climate-ml-data] [--test-start 2005-01] [--test-end 2016-06]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from climate_ml.model_api import load_model_factory
from climate_ml.sea_ice_fields import (
    THRESHOLD,
    ExtentForecast,
    FieldRows,
    concentration_field,
    threshold_at_extent,
)
from climate_ml.workflows import MODELS_DIR, ensure_dataset

LEADS = [1, 2, 3, 4, 5, 6]


def contour_at_extent(forecast: np.ndarray, area: np.ndarray, extent: float) -> np.ndarray:
    """Ice (bool per cell) where the forecast is at or above the concentration whose contour
    encloses ``extent`` (the cells with the highest concentrations first), at any concentration."""
    return forecast >= threshold_at_extent(forecast[None], area, np.array([extent]), bounds=(0.0, 1.0))[0]


def ocean_rows(store, dataset: str):
    """The data set's concentration maps held: (the DataArray, the cell areas as a DataArray,
    the grid dims, (time, ocean cells) float64 rows, the ocean mask over the flattened grid, the
    ocean cells' areas in m^2); ocean = cells with data in some month."""
    conc, cell_area = concentration_field(ensure_dataset(store, dataset))
    conc = conc.load()
    grid = [d for d in conc.dims if d != "time"]
    flat = conc.transpose("time", *grid).values.reshape(conc.sizes["time"], -1).astype("float64")
    ocean = np.isfinite(flat).any(0)
    return conc, cell_area, grid, flat[:, ocean], ocean, cell_area.transpose(*grid).values.ravel()[ocean]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="climate-ml-data")
    ap.add_argument("--dataset", default="nsidc-0051-monthly-north-local")
    ap.add_argument("--test-start", default="2005-01")
    ap.add_argument("--test-end", default="2016-06")
    args = ap.parse_args()
    conc, cell_area, grid, flat, ocean, area = ocean_rows(args.store, args.dataset)
    times = pd.DatetimeIndex(conc["time"].values)
    area = area / 1e12  # 10^6 km^2
    factory = load_model_factory(MODELS_DIR / "damped_anomaly_persistence_edge.py")
    ways = ("as forecast", "extent of the fraction forecast", "observed extent (oracle)")
    iiee = {w: [[] for _ in LEADS] for w in ways}
    extent_error = {w: [[] for _ in LEADS] for w in ways[:2]}
    end = pd.Timestamp(args.test_end)
    for t0 in pd.date_range(args.test_start, end, freq="12MS"):
        tic = time.perf_counter()
        model = factory().fit(conc.sel(time=slice(None, t0)), cell_area, LEADS)
        upto = times <= t0
        extent_fit = ExtentForecast(FieldRows(flat[upto], times[upto]), area, LEADS)
        for init in pd.date_range(t0, min(t0 + pd.DateOffset(months=11), end), freq="MS"):
            i = times.get_loc(init)
            maps = model.predict(conc.isel(time=slice(0, i + 1))).transpose("lead", *grid).values
            maps = maps.reshape(len(LEADS), -1)[:, ocean]
            extent = extent_fit.predict(flat[i], init)
            for j, lead in enumerate(LEADS):
                if i + lead >= len(times):
                    continue
                seen = flat[i + lead] >= THRESHOLD
                observed_extent = seen @ area
                edges = {ways[0]: maps[j] >= THRESHOLD,
                         ways[1]: contour_at_extent(maps[j], area, extent[j]),
                         ways[2]: contour_at_extent(maps[j], area, observed_extent)}
                for w, ice in edges.items():
                    iiee[w][j].append((ice != seen) @ area)
                extent_error[ways[0]][j].append(edges[ways[0]] @ area - observed_extent)
                extent_error[ways[1]][j].append(extent[j] - observed_extent)
        print(f"fold {t0:%Y-%m}: {time.perf_counter() - tic:.0f} s", flush=True)
    print(f"\nmean IIEE (10^6 km^2), damped_anomaly_persistence_edge, inits {args.test_start}..{args.test_end}")
    print(f"{'edge drawn':<36}" + "".join(f"{'L' + str(k):>8}" for k in LEADS))
    for w in ways:
        print(f"{w:<36}" + "".join(f"{np.mean(v):8.3f}" for v in iiee[w]))
    print(f"{'oracle / as forecast':<36}" + "".join(
        f"{np.mean(o) / np.mean(f):8.3f}" for o, f in zip(iiee[ways[2]], iiee[ways[0]], strict=True)))
    print("\nRMSE of the extent (10^6 km^2)")
    for w, v in extent_error.items():
        print(f"{w:<36}" + "".join(f"{np.sqrt(np.mean(np.square(e))):8.3f}" for e in v))


if __name__ == "__main__":
    main()
