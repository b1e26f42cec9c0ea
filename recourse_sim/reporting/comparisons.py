"""Comparisons across generators: final-round bars, and the same factuals explained by several generators.

- :func:`plot_final_bars`: the final-round value per generator with 95% CI across repetitions;
- :class:`GeneratorPanel` + :func:`plot_generator_grid`: search paths drawn on the decision surface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from recourse_sim.metrics.catalogue import metric_label
from recourse_sim.reporting.populations import Projection, draw_surface, padded_limits
from recourse_sim.reporting.style import DEFAULT_METRICS, PALETTE, colour_map, finish, panel_grid, plt, prepare_figure
from recourse_sim.reporting.summary import levels, summarise


#: :func:`plot_final_bars`' margins (inches, see :data:`~recourse_sim.reporting.style.GRID_MARGINS`): its x tick
#: labels stand rotated by 60 degrees below every panel.
ROTATED_LABEL_MARGINS = {"left": 1.05, "bottom": 1.2, "between_x": 0.6, "between_y": 1.45}


def plot_final_bars(
    frame: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS, path: str | Path | None = None
) -> plt.Figure:
    """Final-round value per generator (bars) with 95% CI across repetitions; one row of panels per model."""
    final = frame[frame["round"] == frame["round"].max()]
    metrics = [m for m in metrics if m in set(final["metric"])]
    summary = summarise(final[final["metric"].isin(metrics)])
    models = levels(frame["model"])
    generators = levels(frame["generator"])
    colours = colour_map(generators)
    # room below each row for its generators' names, rotated (up to 20 characters at 7 pt: ~1 inch tall)
    fig, axes = panel_grid(len(models), len(metrics), panel=(3.0, 2.9), margins=ROTATED_LABEL_MARGINS)
    for row, model in enumerate(models):
        for col, metric in enumerate(metrics):
            ax = axes[row, col]
            part = summary[(summary["model"] == model) & (summary["metric"] == metric)].set_index("generator")
            part = part.reindex(generators)
            x = np.arange(len(generators))
            err = np.vstack([part["mean"] - part["ci_low"], part["ci_high"] - part["mean"]])
            ax.bar(x, part["mean"], yerr=err, color=[colours[g] for g in generators], capsize=2)
            ax.set_xticks(x, generators, rotation=60, ha="right", fontsize=7)
            ax.set_title(metric_label(metric), fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            if col == 0:
                ax.set_ylabel(model)
    if path is not None:
        fig.savefig(path, dpi=150)
        plt.close(fig)
    return fig


@dataclass
class GeneratorPanel:
    """One generator's explanations of the shared factuals, for :func:`plot_generator_grid`.

    ``factuals`` (B, d); ``counterfactuals`` (B, K, d); ``paths`` (T, B, K, d) positions along the search
    (from :func:`recourse_sim.viz.trace_search`) or None; ``note`` is printed under the title (e.g. validity);
    ``error`` marks a generator that could not run here (the panel shows the message instead).
    """

    title: str
    factuals: np.ndarray | None = None
    counterfactuals: np.ndarray | None = None
    paths: np.ndarray | None = None
    note: str = ""
    error: str | None = None
    extra: dict = field(default_factory=dict)


def plot_generator_grid(
    panels: Sequence[GeneratorPanel],
    predict_proba,
    X,
    y,
    *,
    feature_names: Sequence[str] | None = None,
    ncols: int = 3,
    path: str | Path | None = None,
    figure: Figure | None = None,
) -> Figure:
    """The same factuals explained by several generators, side by side on the model's decision surface.

    Each panel shows the data (faint), the probability shading and the boundary p = 0.5, every factual
    (black circle), the search path of each of its K copies (thin lines, one colour per factual) and the final
    counterfactuals (crosses). 2-D data are drawn as they are; d > 2 through PCA of ``X``.
    """
    projection = Projection.fit(X, feature_names)
    Zdata = projection.transform(X)
    yv = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    points = [Zdata] + [projection.transform(p.counterfactuals.reshape(-1, p.counterfactuals.shape[-1]))
                        for p in panels if p.counterfactuals is not None]
    limits = padded_limits(np.concatenate(points), pad=0.08)
    nrows = int(np.ceil(len(panels) / ncols))
    figure = prepare_figure(figure, (3.3 * ncols, 3.2 * nrows + 0.4))
    axes = np.atleast_1d(figure.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)).ravel()
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    for ax, panel in zip(axes, panels):
        draw_surface(ax, predict_proba, projection, limits, resolution=100)
        for label, colour in ((0, PALETTE[3]), (1, PALETTE[0])):
            members = yv == label
            ax.scatter(Zdata[members, 0], Zdata[members, 1], s=4, color=colour, alpha=0.25, lw=0)
        ax.set_title(panel.title + (f"\n{panel.note}" if panel.note else ""), fontsize=9)
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
        if panel.error is not None:
            ax.text(0.5, 0.5, "not run here:\n" + panel.error, ha="center", va="center", fontsize=7,
                    transform=ax.transAxes, wrap=True, bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
            continue
        F_ = projection.transform(panel.factuals)
        B = F_.shape[0]
        colours = [PALETTE[(i + 1) % len(PALETTE)] for i in range(B)]
        if panel.paths is not None:
            T, _, K, d = panel.paths.shape
            Zp = projection.transform(panel.paths.reshape(-1, d)).reshape(T, B, K, 2)
            for b in range(B):
                for k in range(K):
                    ax.plot(Zp[:, b, k, 0], Zp[:, b, k, 1], color=colours[b], lw=0.8, alpha=0.8)
        if panel.counterfactuals is not None:
            K = panel.counterfactuals.shape[1]
            Zc = projection.transform(panel.counterfactuals.reshape(-1, panel.counterfactuals.shape[-1]))
            ax.scatter(Zc[:, 0], Zc[:, 1], marker="X", s=28, c=np.repeat(colours, K, axis=0), edgecolors="k",
                       lw=0.4, zorder=4)
        ax.scatter(F_[:, 0], F_[:, 1], marker="o", s=30, facecolors="white", edgecolors="k", lw=1.0, zorder=5)
    for ax in axes[(nrows - 1) * ncols:]:
        ax.set_xlabel(projection.labels[0])
    for ax in axes[::ncols]:
        ax.set_ylabel(projection.labels[1])
    handles = [
        Line2D([], [], marker="o", ls="", mfc="white", mec="k", label="factual"),
        Line2D([], [], color="0.3", lw=0.8, label="search path (one per copy)"),
        Line2D([], [], marker="X", ls="", color="0.3", mec="k", label="counterfactual"),
        Line2D([], [], color="k", lw=1.2, label="decision boundary p = 0.5"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False, fontsize=8)
    return finish(figure, path)
