"""How much of California's November-March rainfall ENSO can give, on the real data: what the
rainfall aims (correlation >= 0.3, BSS of the upper tercile > 0.10) ask for, and what even a
perfect forecast of the season's Nino indices would reach.

1. The BSS of the upper tercile that a perfectly calibrated forecast earns at a given
   correlation (Gaussian; ``scores.expected_upper_tercile_bss``).
2. The correlation of each Nino index with the Nov-Mar total (NOAA nClimDiv, California), in
   the sample: its Sep-Oct mean (known at an October init) and its Nov-Mar mean (observed
   during the season; an oracle), Pearson and Spearman.
3. Rolling-origin oracles (``california_rainfall.tercile_skill_from``): before each season a
   linear regression on the indices, fitted on earlier seasons only, gives P(above the upper
   tercile): Gaussian on the totals' normal scores, or the totals (mm) with the training
   residuals as the spread; BSS and correlation over the test seasons.
4. The whole map the rainfall ConvLSTM reads (Kaplan SST anomalies, 27.5S-27.5N,
   182.5-287.5E at 5 degrees): the leading principal components of the season's Sep-Oct (a
   forecast) or Nov-Mar (an oracle) mean map, EOFs fitted on the seasons up to 1984 only, in
   the same rolling regressions from 1985.
5. Beyond ENSO: the Sep-Oct means of the XRO climate-mode indices (ORAS5, 1979-2024: the
   Pacific meridional modes, the Indian Ocean and Atlantic modes, warm water volume), in the
   sample.
6. A later and wider map: ERSST v5 detrended anomalies (1980-2018, 55S-60N), the same
   regressions on the tropical Pacific (30S-30N) and on the rainfall ConvLSTM's whole box
   (30S-60N, with the North Pacific), EOFs fitted on 1980-1995, seasons from 1996; and how many
   of the map's cells correlate with the total at p < 0.05 at all.

Kaplan SST (1856-2014-10) gives the Nino indices, as in the rainfall skill table, so the
oracle's Nov-Mar seasons end with 2013/14.

    python benchmarks/rain_predictability.py [--store DIR] [--plot docs/california_rain_enso.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from climate_ml.problems import get_problem
from climate_ml.problems.california_rainfall import (
    season_field_pcs,
    season_table,
    tercile_skill_from,
)
from climate_ml.report import plot_season_scatter
from climate_ml.scores import expected_upper_tercile_bss
from climate_ml.workflows import ensure_dataset

TARGET, SST, MODES = "nclimdiv-precip-california-local", "kaplan-local", "xro-oras5-indices-local"
ERSST = "ersst-anom-detrended-local"
INDICES = ("nino34", "nino3", "nino4", "nino12")
PERIODS = ((1950, 2014), (1985, 2014))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="store root (default: a new temporary one)")
    ap.add_argument("--plot", default=None, metavar="PNG",
                    help="also draw the Nov-Mar total against the Sep-Oct and the Nov-Mar Nino 3.4, 1950-2014")
    args = ap.parse_args()

    print("1. BSS of the upper tercile of a calibrated Gaussian forecast with correlation r\n")
    rs = (0.2, 0.27, 0.3, 0.35, 0.4, 0.41, 0.45, 0.5)
    print("| r | " + " | ".join(f"{r:.2f}" for r in rs) + " |\n|---|" + "---:|" * len(rs))
    print("| BSS | " + " | ".join(f"{expected_upper_tercile_bss(r):.3f}" for r in rs) + " |")

    root = Path(args.store or tempfile.mkdtemp(prefix="climate-ml-rain-"))
    problem = get_problem("california_rainfall")
    prepared = problem.prepare(ensure_dataset(root, TARGET), {SST: ensure_dataset(root, SST)})
    seasons = season_table(prepared)

    print("\n2. Correlation with the Nov-Mar total, in the sample (Pearson / Spearman, seasons)\n")
    header = " | ".join(f"{a}-{b}" for a, b in PERIODS)
    print(f"| index, months | {header} |\n|---|" + "---|" * len(PERIODS))
    for index in INDICES:
        for months in ("sep_oct", "nov_mar"):
            cells = []
            for a, b in PERIODS:
                both = seasons[[f"{index}_{months}", "total"]].loc[a:b].dropna()
                pearson = both.corr().iloc[0, 1]
                spearman = spearmanr(both.iloc[:, 0], both.iloc[:, 1])[0]
                cells.append(f"{pearson:.2f} / {spearman:.2f} ({len(both)})")
            print(f"| {index} {months.replace('_', '-')} | " + " | ".join(cells) + " |")
    wettest_el_ninos = [1982, 1997]  # the two strongest El Nino winters of the record, both very wet
    rest = seasons.loc[1950:2014].drop(wettest_el_ninos)
    print("\nPearson, 1950-2013 (the Nov-Mar means end there) without the 1982/83 and 1997/98 seasons: " + ", ".join(
        f"{index} nov-mar {rest[[f'{index}_nov_mar', 'total']].dropna().corr().iloc[0, 1]:.2f}" for index in INDICES))

    print("\n3. Rolling-origin regressions (fitted on earlier seasons only): BSS upper tercile / correlation (seasons)\n")
    sets = {"Sep-Oct Nino 3.4 (a forecast)": ["nino34_sep_oct"],
            "Sep-Oct, all four indices (a forecast)": [f"{i}_sep_oct" for i in INDICES],
            "Nov-Mar Nino 3.4 (oracle)": ["nino34_nov_mar"],
            "Nov-Mar Nino 3 (oracle)": ["nino3_nov_mar"],
            "Nov-Mar, all four indices (oracle)": [f"{i}_nov_mar" for i in INDICES]}
    runs = [(first, spread) for spread in ("gaussian", "residuals") for first in (1950, 1985)]
    print("| predictors | " + " | ".join(f"{spread}, seasons from {first}" for first, spread in runs) + " |\n|---|"
          + "---|" * len(runs))
    for label, columns in sets.items():
        cells = []
        for first, spread in runs:
            skill = tercile_skill_from(seasons, columns, first, spread=spread)
            cells.append(f"{skill['bss_upper_tercile']:+.3f} / {skill['correlation']:.2f} ({skill['seasons']})")
        print(f"| {label} | " + " | ".join(cells) + " |")

    if args.plot:
        panels = {"nino34_sep_oct": "Sep-Oct Nino 3.4 anomaly (degC), known in October",
                  "nino34_nov_mar": "Nov-Mar Nino 3.4 anomaly (degC), an oracle"}
        drawn = plot_season_scatter(seasons.loc[1950:2014], panels, args.plot,
                                    "California Nov-Mar precipitation (nClimDiv) against ENSO (Kaplan SST)")
        print(f"\nplot: {drawn}")

    print("\n4. Leading PCs of the SST anomaly map (EOFs fitted on seasons up to 1984): BSS upper tercile / correlation, "
          "seasons from 1985\n")
    print("| map months | PCs | Gaussian | residuals |\n|---|---:|---|---|")
    for label, months in (("Sep-Oct (a forecast)", (9, 10)), ("Nov-Mar (oracle)", (11, 12, 1, 2, 3))):
        with_pcs = seasons.join(season_field_pcs(prepared, 1984, k=5, months=months))
        for k in (1, 2, 3, 5):
            cells = []
            for spread in ("gaussian", "residuals"):
                skill = tercile_skill_from(with_pcs, [f"field_pc{i + 1}" for i in range(k)], 1985, spread=spread)
                cells.append(f"{skill['bss_upper_tercile']:+.3f} / {skill['correlation']:.2f} ({skill['seasons']})")
            print(f"| {label} | {k} | " + " | ".join(cells) + " |")

    modes = season_table(problem.prepare(ensure_dataset(root, TARGET), {MODES: ensure_dataset(root, MODES)}))
    print("\n5. Sep-Oct climate-mode indices (XRO, ORAS5) with the Nov-Mar total, in the sample (Pearson / Spearman)\n")
    print("| index | seasons | Pearson | Spearman |\n|---|---:|---:|---:|")
    for column in (c for c in modes.columns if c.endswith("_sep_oct")):
        both = modes[[column, "total"]].dropna()
        print(f"| {column.removesuffix('_sep_oct')} | {len(both)} | {both.corr().iloc[0, 1]:.2f} | "
              f"{spearmanr(both.iloc[:, 0], both.iloc[:, 1])[0]:.2f} |")

    print("\n6. A later, wider map: ERSST v5 detrended anomalies (1980-2018, 55S-60N at 5 degrees), EOFs fitted on the "
          "seasons 1980-1995, rolling regressions from 1996: BSS upper tercile / correlation (seasons), with the 95% "
          "interval of the correlation (Fisher z)\n")
    ersst = problem.prepare(ensure_dataset(root, TARGET), {ERSST: ensure_dataset(root, ERSST)})
    later = season_table(ersst)
    print("| predictors | PCs | Gaussian | residuals |\n|---|---:|---|---|")
    rows = [("Sep-Oct Nino 3.4 (a forecast)", later, ["nino34_sep_oct"], "")]
    for region, label in (("tropical_pacific", "30S-30N"), (None, "30S-60N, the rainfall ConvLSTM's box")):
        for months, when in (((9, 10), "Sep-Oct (a forecast)"), ((11, 12, 1, 2, 3), "Nov-Mar (oracle)")):
            with_pcs = later.join(season_field_pcs(ersst, 1995, k=3, months=months, region=region))
            rows += [(f"{label} map, {when}", with_pcs, [f"field_pc{i + 1}" for i in range(k)], k) for k in (1, 2, 3)]
    for label, table, columns, k in rows:
        cells = []
        for spread in ("gaussian", "residuals"):
            skill = tercile_skill_from(table, columns, 1996, spread=spread)
            half = 1.96 / np.sqrt(skill["seasons"] - 3)
            low, high = np.tanh(np.arctanh(skill["correlation"]) + np.array([-half, half]))
            cells.append(f"{skill['bss_upper_tercile']:+.3f} / {skill['correlation']:.2f} [{low:.2f}, {high:.2f}] "
                         f"({skill['seasons']})")
        print(f"| {label} | {k} | " + " | ".join(cells) + " |")
    share, cells, seasons_n = _significant_cells(ersst, later)
    print(f"\nIn the sample, the Sep-Oct anomaly of {share:.1%} of the {cells} ocean cells of the 30S-60N map "
          f"correlates with the Nov-Mar total at p < 0.05 ({seasons_n} seasons; 5% would by chance).")


def _significant_cells(prepared, seasons) -> tuple[float, int, int]:
    """The share of ocean cells whose Sep-Oct mean anomaly correlates with the season's total at
    p < 0.05 (two-sided, Pearson), in the sample; with the number of cells and of seasons."""
    field = prepared["field"]
    sep_oct = field.where(field["time"].dt.month.isin([9, 10]), drop=True)
    maps = sep_oct.groupby("time.year").mean()
    years = [y for y in maps["year"].values
             if y in seasons.index and np.isfinite(seasons.loc[y, "total"]) and np.isfinite(maps.sel(year=y)).any()]
    values = maps.sel(year=years).values.reshape(len(years), -1)
    ocean = np.isfinite(values).all(axis=0)
    total = seasons.loc[years, "total"].values
    p = np.array([pearsonr(values[:, j], total)[1] for j in np.flatnonzero(ocean)])
    return float((p < 0.05).mean()), int(ocean.sum()), len(years)


if __name__ == "__main__":
    main()
