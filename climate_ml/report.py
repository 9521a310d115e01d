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


def plot_skill(scores: dict[str, dict[str, dict[str, float]]], path: str | Path, title: str, leads) -> Path:
    """ACC and RMSE against lead for every model; references dashed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    lead_vals = [int(x) for x in leads]
    for name, s in scores.items():
        style = "--" if name in REFERENCES else "-"
        for ax, metric in zip(axes, ("acc", "rmse"), strict=True):
            ys = [s[metric].get(str(k)) for k in lead_vals]
            ax.plot(lead_vals, [float("nan") if v is None else v for v in ys], style, marker="o", ms=3, label=name)
    axes[0].set_ylabel("anomaly correlation (ACC)")
    axes[0].axhline(0.5, color="grey", lw=0.6, ls=":")
    axes[1].set_ylabel("RMSE (degC)")
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
