"""What drawing a field model's ice edge at an extent forecast does to its archived maps: the
sea-ice extent aim of the spatial-forecasts issue (the extent of the maps at least as good as the
best extent reference at leads 1-3), measured on hindcasts already in the archive.

For each archived init of ``--model`` (a field backtest run with ``--archive``) the member-mean
map is scored as archived and again with its 15% contour moved to where it encloses the extent
forecast of ``sea_ice_fields.ExtentForecast`` (damped anomaly persistence of the ice-covered
fraction of the ocean), fitted on the months up to that init's own training cut-off
(``prov_train_end``): ``threshold_at_extent`` then ``remap_edge``, as the sea-ice ConvLSTM's
``match_extent="forecast"`` does to each network's map (with one network exactly this); and a third
time at the mean of that extent forecast and the map's own extent (``match_extent="mean"``; an equal-weight combination,
fixed beforehand, not fitted). Scores are ``field_scores``' IIEE and extent error, as the field
backtest computes them.

    python benchmarks/sea_ice_extent_edge.py --store STORE [--model convlstm_sea_ice] [--dataset nsidc-0051-monthly-north-local]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sea_ice_extent_oracle import ocean_rows  # (this folder: the same maps, held the same way)

from climate_ml.archive import query
from climate_ml.sea_ice_fields import (
    THRESHOLD,
    ExtentForecast,
    FieldRows,
    field_scores,
    remap_edge,
    threshold_at_extent,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="climate-ml-data")
    ap.add_argument("--dataset", default="nsidc-0051-monthly-north-local")
    ap.add_argument("--model", default="convlstm_sea_ice")
    args = ap.parse_args()
    tic = time.perf_counter()
    conc, _, grid, flat, ocean, area = ocean_rows(args.store, args.dataset)
    times = pd.DatetimeIndex(conc["time"].values)
    ds = query(args.store, "arctic_sea_ice", args.model, dataset=args.dataset).isel(model=0)
    inits, leads = pd.DatetimeIndex(ds["init_time"].values), [int(k) for k in ds["lead"].values]
    cutoffs = pd.DatetimeIndex(ds["prov_train_end"].values.astype(str))
    print(f"{args.model}: {len(inits)} archived inits {inits[0]:%Y-%m}..{inits[-1]:%Y-%m}, "
          f"{len(set(cutoffs))} training cut-offs", flush=True)
    fits: dict[pd.Timestamp, ExtentForecast] = {}
    ways = ("as archived", "edge at the extent forecast", "edge at the mean of both extents")
    scores = {w: {k: [[] for _ in leads] for k in ("iiee", "sie_error")} for w in ways}
    moved = [[] for _ in leads]
    for n, (init, cut) in enumerate(zip(inits, cutoffs, strict=True)):
        if cut not in fits:
            upto = times <= cut
            fits[cut] = ExtentForecast(FieldRows(flat[upto], times[upto]), area, leads)
        i = times.get_loc(init)
        mean = ds["forecast"].isel(init_time=n).mean("member").transpose("lead", *grid).values
        mean = mean.reshape(len(leads), -1)[:, ocean].astype("float64")
        forecast = fits[cut].predict(flat[i], init)
        own = (mean >= THRESHOLD) @ area
        t = threshold_at_extent(mean, area, forecast)
        maps = {ways[0]: mean, ways[1]: remap_edge(mean, t),
                ways[2]: remap_edge(mean, threshold_at_extent(mean, area, 0.5 * (forecast + own)))}
        for j, lead in enumerate(leads):
            if i + lead >= len(times):
                continue
            moved[j].append(t[j])
            for w, m in maps.items():
                s = field_scores(m[j], flat[i + lead], area)
                for k in ("iiee", "sie_error"):
                    scores[w][k][j].append(s[k])
    print(f"\n{args.dataset}, {len(inits)} inits, {time.perf_counter() - tic:.0f} s")
    print(f"{'':<62}" + "".join(f"{'L' + str(k):>8}" for k in leads))
    for w in ways:
        print(f"{'IIEE (10^6 km^2), ' + w:<62}" + "".join(f"{np.mean(v):8.3f}" for v in scores[w]["iiee"]))
    for w in ways[1:]:
        print(f"{'IIEE ratio to as archived, ' + w:<62}" + "".join(
            f"{np.mean(b) / np.mean(a):8.3f}" for a, b in zip(scores[ways[0]]["iiee"], scores[w]["iiee"], strict=True)))
    for w in ways:
        print(f"{'extent RMSE (10^6 km^2), ' + w:<62}" + "".join(
            f"{np.sqrt(np.mean(np.square(v))):8.3f}" for v in scores[w]["sie_error"]))
    print(f"{'median threshold moved to 15%':<62}" + "".join(f"{np.median(v):8.2f}" for v in moved))


if __name__ == "__main__":
    main()
