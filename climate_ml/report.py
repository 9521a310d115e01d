"""Plots and tables: skill by lead for every model."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from climate_ml.schema import LEAD  # noqa: E402

REFERENCES = ("persistence", "climatology", "damped_persistence")


def skill_table(scores: dict[str, dict[str, dict[str, float]]], metric: str, leads) -> str:
    """A fixed-width table, models x leads, of one metric."""
    leads = [str(int(x)) for x in leads]
    width = max(len(m) for m in scores) + 2
    head = "model".ljust(width) + "".join(f"{'L' + lead:>7}" for lead in leads)
    lines = [f"{metric.upper()} by lead (months)", head, "-" * len(head)]
    for name, s in scores.items():
        vals = s[metric]
        lines.append(name.ljust(width) + "".join(
            f"{vals[lead]:>7.2f}" if vals.get(lead) is not None else f"{'-':>7}" for lead in leads))
    return "\n".join(lines)


def markdown_table(scores: dict[str, dict[str, dict[str, float]]], metric: str, leads) -> str:
    leads = [str(int(x)) for x in leads]
    lines = ["| model | " + " | ".join(leads) + " |", "|---|" + "---:|" * len(leads)]
    for name, s in scores.items():
        vals = s[metric]
        cells = [f"{vals[lead]:.2f}" if vals.get(lead) is not None else "-" for lead in leads]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


AXIS_LABELS = {
    "acc": "anomaly correlation (ACC)", "rmse": "RMSE", "bss_upper_tercile": "Brier skill score, upper tercile",
    "rpss": "ranked probability skill score", "iiee": "integrated ice-edge error (10^6 km^2)",
    "binary_accuracy": "binary accuracy (ice >= 15%)", "sie_rmse": "RMSE of sea-ice extent (10^6 km^2)",
    "ice_brier": "Brier score of the probability of ice",
}


def plot_skill(scores: dict[str, dict[str, dict[str, float]]], path: str | Path, title: str, leads,
               units: str = "", metrics=("acc", "rmse")) -> Path:
    """One panel per metric against lead for every model; references dashed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), constrained_layout=True, squeeze=False)
    axes = axes[0]
    lead_vals = [int(x) for x in leads]
    for name, s in scores.items():
        style = "--" if name in REFERENCES else "-"
        for ax, metric in zip(axes, metrics, strict=True):
            ys = [s[metric].get(str(k)) for k in lead_vals]
            ax.plot(lead_vals, [float("nan") if v is None else v for v in ys], style, marker="o", ms=3, label=name)
    for ax, metric in zip(axes, metrics, strict=True):
        label = AXIS_LABELS.get(metric, metric)
        ax.set_ylabel(f"{label} ({units})" if metric in ("rmse", "mae") and units else label)
        if metric == "acc":
            ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ticks = [k for k in lead_vals if k in (1, 3, 6, 9, 12, 15, 18, 24)] or lead_vals
    for ax in axes:
        ax.set_xticks(ticks)
        ax.set_xlabel(f"{LEAD} (months)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ice_edge(observed, forecasts: dict, path: str | Path, title: str, threshold: float = 0.15) -> Path:
    """The observed concentration (y, x) as a map, with the observed ice edge (black) and each
    forecast's ice edge (coloured contours) at ``threshold``."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 7), constrained_layout=True)
    obs = np.asarray(observed)
    im = ax.imshow(obs, cmap="Blues_r", vmin=0, vmax=1, interpolation="nearest")
    ax.contour(np.nan_to_num(obs, nan=0.0), levels=[threshold], colors="black", linewidths=1.4)
    handles = [plt.Line2D([], [], color="black", lw=1.4, label="observed")]
    for (name, field), color in zip(forecasts.items(), ("tab:red", "tab:orange", "tab:green", "tab:purple"), strict=False):
        ax.contour(np.nan_to_num(np.asarray(field), nan=0.0), levels=[threshold], colors=color, linewidths=1.0)
        handles.append(plt.Line2D([], [], color=color, lw=1.0, label=name))
    ax.set_facecolor("tan")  # land (NaN)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(handles=handles, fontsize=8, loc="lower left")
    fig.colorbar(im, ax=ax, shrink=0.6, label="sea-ice concentration")
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_season_scatter(seasons, columns: dict[str, str], path: str | Path, title: str,
                        label_seasons=(1982, 1997)) -> Path:
    """The wet-season total against predictor indices, one panel per entry of ``columns``
    (column of ``california_rainfall.season_table`` -> axis label): each season a dot, the
    record's terciles of the total as dashed lines, the Pearson and Spearman correlations in the
    panel's title, and ``label_seasons`` labelled (e.g. the strongest El Nino winters)."""
    from scipy.stats import spearmanr

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(columns), figsize=(4.6 * len(columns), 4.2), sharey=True,
                             constrained_layout=True, squeeze=False)
    for ax, (column, label) in zip(axes[0], columns.items(), strict=True):
        both = seasons[[column, "total"]].dropna()
        ax.scatter(both[column], both["total"], s=16, color="tab:blue", alpha=0.75)
        for q in (1 / 3, 2 / 3):
            ax.axhline(both["total"].quantile(q), color="grey", lw=0.8, ls="--")
        for year in label_seasons:
            if year in both.index:
                ax.scatter(both.loc[year, column], both.loc[year, "total"], s=30, color="tab:red")
                ax.annotate(f"{year}/{(year + 1) % 100:02d}", (both.loc[year, column], both.loc[year, "total"]),
                            xytext=(4, -10), textcoords="offset points", fontsize=8, color="tab:red")
        rho = spearmanr(both[column], both["total"])[0]
        ax.set_title(f"{label}\nPearson {both.corr().iloc[0, 1]:.2f}, Spearman {rho:.2f}, "
                     f"{both.index.min()}-{both.index.max()}", fontsize=9)
        ax.set_xlabel(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Nov-Mar total (mm); dashed: terciles")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_ice_probability(observed, probabilities: dict, path: str | Path, title: str, threshold: float = 0.15) -> Path:
    """One map per model of the forecast probability of ice (the share of members with
    concentration >= ``threshold``, as IceNet draws it), with the observed ice edge in black."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, len(probabilities))
    fig, axes = plt.subplots(1, n, figsize=(4.8 * n, 6.6), constrained_layout=True, squeeze=False)
    obs = np.asarray(observed)
    im = None
    for ax, (name, prob) in zip(axes[0], probabilities.items(), strict=False):
        im = ax.imshow(np.asarray(prob), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.contour(np.nan_to_num(obs, nan=0.0), levels=[threshold], colors="white", linewidths=1.6)
        ax.contour(np.nan_to_num(obs, nan=0.0), levels=[threshold], colors="black", linewidths=0.8)
        ax.set_facecolor("tan")  # land (NaN)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.6, label=f"probability of ice (concentration >= {threshold:.0%})")
    fig.suptitle(title + " (black: observed ice edge)", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _draw_plume(ax, observed, forecasts: dict, problem) -> None:
    """The observed target before the init (black) and every model's forecast against valid
    time; members thin, ensemble means thick; references dashed; for El Nino the +-0.5 degC
    thresholds."""
    import numpy as np
    import pandas as pd

    if len(observed):
        ax.plot(observed.index, observed.values, color="black", lw=2.2, marker="o", ms=3, label="observed")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, fc) in enumerate(forecasts.items()):
        color = colors[k % len(colors)]
        valid = pd.DatetimeIndex(np.asarray(fc["valid_time"].values).reshape(-1)[: fc.sizes["lead"]])
        style = "--" if name in REFERENCES or name == "xro" else "-"
        if "member" in fc.dims:
            for m in range(fc.sizes["member"]):
                ax.plot(valid, fc.isel(member=m).values.reshape(-1), color=color, lw=0.4, alpha=0.35)
            fc = fc.mean("member")
        values = fc.values.reshape(-1)
        if len(observed):  # join the plume to the last observation
            valid = valid.insert(0, observed.index[-1])
            values = np.concatenate([[observed.values[-1]], values])
        ax.plot(valid, values, style, color=color, lw=1.8, label=name)
    for level, label in getattr(problem, "plot_lines", ()):
        ax.axhline(level, color="grey", lw=0.8 if label else 0.5, ls=":" if label else "-")
        if label:
            ax.text(ax.get_xlim()[0], level, f" {label}", va="bottom" if level > 0 else "top", fontsize=8, color="grey")
    ax.set_ylabel(f"{getattr(problem, 'description', '').split(',')[0][:60]}\n({problem.target_units})", fontsize=9)
    ax.set_xlabel("valid month")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)


def plot_plume(observed, forecasts: dict, path: str | Path, title: str, problem) -> Path:
    """IRI-style plume of every model's forecast (init_time=1, lead[, member]) with the
    observed history."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 4.8), constrained_layout=True)
    _draw_plume(ax, observed, forecasts, problem)
    ax.set_title(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


CATEGORY_COLORS = {"la_nina": "#2166ac", "neutral": "#bdbdbd", "el_nino": "#b2182b",
                   "below": "#a6611a", "near": "#bdbdbd", "above": "#018571",
                   "new_record_low": "#b2182b", "below_last_year": "#f4a582", "above_last_year": "#4393c3"}
CATEGORY_NAMES = {"la_nina": "La Nina", "neutral": "neutral", "el_nino": "El Nino", "new_record_low": "record low",
                  "below_last_year": "below last year", "above_last_year": "above last year"}


def plot_outlook(outlook, path: str | Path, problem) -> Path:
    """The outlook as a person reads it: the plume above, and below it the multi-model
    probability of each category for every lead as stacked bars (CPC / IRI style)."""
    import numpy as np
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 2 if outlook.consensus else 1
    fig, axes = plt.subplots(rows, 1, figsize=(9, 4.6 * rows), constrained_layout=True, squeeze=False)
    _draw_plume(axes[0, 0], outlook.observed, outlook.forecasts, problem)
    axes[0, 0].set_title(f"{outlook.problem} on {outlook.dataset}: forecasts from {outlook.init:%Y-%m}")
    if outlook.consensus:
        ax = axes[1, 0]
        leads = sorted(outlook.consensus, key=int)
        first = next(iter(outlook.summaries.values()))
        labels = [first.get("valid_season", {}).get(k, f"{outlook.init + pd.DateOffset(months=int(k)):%b}").split()[0]
                  + f"\nL{k}" for k in leads]  # the season (El Nino) or the valid month
        bottom = np.zeros(len(leads))
        for c in outlook.consensus[leads[0]]:
            v = np.array([outlook.consensus[k][c] for k in leads])
            ax.bar(range(len(leads)), v, bottom=bottom, color=CATEGORY_COLORS.get(c), label=f"P({c})", width=0.8)
            for i, (b, h) in enumerate(zip(bottom, v, strict=True)):
                if h >= 0.12:
                    ax.text(i, b + h / 2, f"{h:.0%}", ha="center", va="center", fontsize=7, color="white")
            bottom += v
        ax.set_xticks(range(len(leads)), labels, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability (mean of the models)")
        ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18))
        ax.set_title(f"category probabilities, mean of {len(outlook.summaries)} models' calibrated probabilities",
                     fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def probability_tables(res, leads, bss_leads) -> str:
    """Markdown: every model's RPSS at ``leads`` and the Brier skill score of each of the
    problem's scored categories at ``bss_leads`` (against the reference probabilities of its
    scoring context), then the reliability of each scored category for the model (not
    climatology) with the best RPSS at the last of ``leads``, all leads pooled."""
    problem = res.definition
    cats = problem.scored_categories
    names = {c: CATEGORY_NAMES.get(c, c) for c in cats}
    span = " / ".join(f"L{k}" for k in bss_leads)
    lines = ["| model | " + " | ".join(f"RPSS L{k}" for k in leads) + " | "
             + " | ".join(f"BSS {names[c]} {span}" for c in cats) + " |",
             "|---|" + "---:|" * (len(leads) + len(cats))]
    best, best_rpss = None, -float("inf")
    for name in res.forecasts:
        s = res.scores(name)
        lines.append(f"| {name} | " + " | ".join(f"{s['rpss'][str(k)]:.2f}" for k in leads) + " | "
                     + " | ".join(" / ".join(f"{s[f'bss_{c}'][str(k)]:.2f}" for k in bss_leads) for c in cats) + " |")
        if s["rpss"][str(leads[-1])] > best_rpss and name != "climatology":
            best, best_rpss = name, s["rpss"][str(leads[-1])]
    for c in cats:
        lines += ["", reliability_table(res.extra(best)["reliability"][c], f"P({names[c]}) from {best}, all leads")]
    return "\n".join(lines)


def reliability_table(bins: list[dict], label: str) -> str:
    """Markdown: a reliability table (``probabilities.reliability``), bins with forecasts only."""
    lines = [f"reliability of {label} (bins with forecasts):",
             "| forecast probability | n | mean forecast | observed frequency |", "|---|---:|---:|---:|"]
    lines += [f"| {b['bin'][0]:.1f}-{b['bin'][1]:.1f} | {b['n']} | {b['forecast']:.2f} | {b['observed']:.2f} |"
              for b in bins if b["n"]]
    return "\n".join(lines)
