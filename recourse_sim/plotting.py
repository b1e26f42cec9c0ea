"""Matplotlib figures from result tables and simulation states (publication-ready, colour-blind safe).

- :func:`plot_trajectories`: metric trajectories over rounds, one line per generator, 95% CI bands across
  repetitions; one row of panels per model.
- :func:`plot_population`: 2-D populations before and after recourse with each model's decision boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)  # headless by default; notebooks keep their inline backend
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from recourse_sim.experiments.summary import summarise

# Okabe & Ito (2008) colour-blind-safe palette.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

METRIC_LABELS = {
    "domain_mmd": "Domain shift (MMD²)",
    "model_mmd": "Model shift (PP-MMD²)",
    "model_mmd_grid": "Model shift on grid (PP-MMD²)",
    "perturbation": "Parameter perturbation",
    "disagreement": "Disagreement with t=0 model",
    "decisiveness": "Decisiveness change",
    "accuracy": "Test accuracy",
    "f1": "Test F1 (macro)",
    "f1_change": "Δ test F1 vs t=0",
    "validity": "Validity of recourse",
    "recourse_cost": "Cost of recourse (L2)",
    "search_steps": "Search iterations",
    "n_recourse": "Individuals given recourse",
}
DEFAULT_METRICS = ("domain_mmd", "model_mmd", "disagreement", "decisiveness", "f1", "recourse_cost")


def _colours(labels: Sequence[str]) -> dict[str, str]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


def plot_trajectories(
    frame: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS, path: str | Path | None = None
) -> plt.Figure:
    """Mean trajectory per generator over rounds with a 95% CI band across repetitions."""
    metrics = [m for m in metrics if m in set(frame["metric"])]
    summary = summarise(frame[frame["metric"].isin(metrics)])
    models = list(dict.fromkeys(frame["model"]))
    colours = _colours(list(dict.fromkeys(frame["generator"])))
    fig, axes = plt.subplots(
        len(models), len(metrics), figsize=(3.2 * len(metrics), 2.7 * len(models)), squeeze=False,
        constrained_layout=True,
    )
    for row, model in enumerate(models):
        for col, metric in enumerate(metrics):
            ax = axes[row, col]
            part = summary[(summary["model"] == model) & (summary["metric"] == metric)]
            for generator, colour in colours.items():
                line = part[part["generator"] == generator]
                if line.empty:
                    continue
                ax.plot(line["round"], line["mean"], marker="o", ms=3, color=colour, label=generator)
                ax.fill_between(line["round"], line["ci_low"], line["ci_high"], color=colour, alpha=0.2, lw=0)
            ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=9)
            ax.set_xlabel("Round")
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel(model)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), frameon=False)
    if path is not None:
        fig.savefig(path, dpi=150)
        plt.close(fig)
    return fig


def _boundary(ax, predict_proba, X: np.ndarray, resolution: int = 150) -> None:
    pad = 0.5
    (x0, y0), (x1, y1) = X.min(0) - pad, X.max(0) + pad
    xx, yy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    grid = torch.tensor(np.c_[xx.ravel(), yy.ravel()], dtype=torch.float32)
    p = np.asarray(predict_proba(grid)).reshape(xx.shape)
    ax.contourf(xx, yy, p, levels=np.linspace(0, 1, 11), cmap="RdBu", alpha=0.25, vmin=0, vmax=1)
    ax.contour(xx, yy, p, levels=[0.5], colors="k", linewidths=1.2)


def plot_population(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray | None, object]],
    path: str | Path | None = None,
    feature_names: Sequence[str] = ("x1", "x2"),
) -> plt.Figure:
    """Scatter 2-D populations with the decision boundary (p = 0.5) and probability shading.

    Each panel is ``(title, X (n, 2), y (n,), moved (n,) bool or None, predict_proba(X) -> p)``; individuals
    who implemented recourse are drawn with a black edge.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.4), squeeze=False, constrained_layout=True)
    for ax, (title, X, y, moved, predict_proba) in zip(axes[0], panels):
        _boundary(ax, predict_proba, X)
        for label, colour, name in ((0, PALETTE[3], "y = 0"), (1, PALETTE[0], "y = 1")):
            members = y == label
            ax.scatter(X[members, 0], X[members, 1], s=9, color=colour, alpha=0.7, label=name, lw=0)
        if moved is not None and moved.any():
            ax.scatter(X[moved, 0], X[moved, 1], s=14, facecolors="none", edgecolors="k", lw=0.6, label="moved")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(feature_names[0])
        ax.set_ylabel(feature_names[1])
    axes[0, 0].legend(fontsize=7, loc="best")
    if path is not None:
        fig.savefig(path, dpi=150)
        plt.close(fig)
    return fig
