"""Trajectories of metrics over rounds: one line per generator with 95% CI bands across repetitions.

- :func:`plot_trajectories`: one row of panels per model (the run and reproduction figures);
- :func:`plot_trajectory_grid`: rows by any column (model, dataset, ...), for notebooks and the dashboard.

The no-recourse control (generator ``"none"``) is drawn as a dashed grey line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from recourse_sim.generators.control import CONTROL
from recourse_sim.metrics.catalogue import METRICS, metric_label
from recourse_sim.reporting.style import (
    DEFAULT_METRICS, colour_map, confidence_band, finish, panel_grid, plt, prepare_figure,
)
from recourse_sim.reporting.summary import levels, summarise


def plot_trajectories(
    frame: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS, path: str | Path | None = None
) -> plt.Figure:
    """Mean trajectory per generator over rounds with a 95% CI band across repetitions; the no-recourse control
    (generator ``"none"``) is the dashed grey line."""
    present = set(levels(frame["metric"]))
    metrics = [m for m in metrics if m in present]
    summary = summarise(frame[frame["metric"].isin(metrics)])
    models = levels(frame["model"])
    colours = colour_map(levels(frame["generator"]))
    ncol = min(len(colours), 6)
    fig, axes = panel_grid(len(models), len(metrics), panel=(3.2, 2.7), legend_rows=-(-len(colours) // ncol))
    lines = dict(tuple(summary.groupby(["model", "metric", "generator"], sort=False)))  # one lookup per line
    for row, model in enumerate(models):
        for col, metric in enumerate(metrics):
            ax = axes[row, col]
            for generator, colour in colours.items():
                line = lines.get((model, metric, generator))
                if line is None:
                    continue
                if generator == CONTROL:  # the no-recourse control: what retraining alone does
                    ax.plot(line["round"], line["mean"], ls="--", color="0.25", lw=1.2, label=f"{generator} (control)")
                    confidence_band(ax, line["round"], line["ci_low"], line["ci_high"], color="0.5", alpha=0.15, lw=0)
                    continue
                ax.plot(line["round"], line["mean"], marker="o", ms=3, color=colour, label=generator)
                confidence_band(ax, line["round"], line["ci_low"], line["ci_high"], color=colour, alpha=0.2, lw=0)
            ax.set_title(metric_label(metric), fontsize=9)
            ax.set_xlabel("Round")
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel(model)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False)
    if path is not None:
        fig.savefig(path, dpi=150)
        plt.close(fig)
    return fig


def plot_trajectory_grid(
    frame: pd.DataFrame,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    row: str | None = "model",
    hue: str = "generator",
    path: str | Path | None = None,
    figure: Figure | None = None,
    panel_size: tuple[float, float] = (3.2, 2.6),
    legend: bool = True,
    col_wrap: int | None = None,
) -> Figure:
    """Mean trajectory over rounds with a 95% CI band across repetitions, one line per ``hue`` value.

    Generalises :func:`plot_trajectories`: rows are the values of any column (``"model"``, or e.g. a
    ``"dataset"`` column added when concatenating several runs; ``None`` for a single row), columns are
    ``metrics``. Metrics absent from ``frame`` are skipped; a panel without data says so. Pass ``figure`` to
    draw into an existing (e.g. dashboard) figure; it is cleared first. With ``row=None``, ``col_wrap`` wraps
    the metric panels into rows of that many columns.
    """
    present = set(levels(frame["metric"])) if len(frame) else set()
    metrics = [m for m in metrics if m in present] or list(metrics)
    rows = levels(frame[row]) if row is not None and len(frame) else [None]
    hues = levels(frame[hue]) if len(frame) else []
    colours = colour_map(hues)
    by = [c for c in (row, hue, "round", "metric") if c is not None]
    summary = summarise(frame[frame["metric"].isin(metrics)], by=by) if len(frame) else pd.DataFrame(columns=by)
    wrap = row is None and col_wrap is not None and col_wrap < len(metrics)
    grid = (int(np.ceil(len(metrics) / col_wrap)), col_wrap) if wrap else (len(rows), len(metrics))
    size = (panel_size[0] * grid[1], panel_size[1] * grid[0] + (0.4 if legend else 0.0))
    figure = prepare_figure(figure, size)
    axes = np.atleast_2d(np.asarray(figure.subplots(*grid, squeeze=False)))
    if wrap:
        for ax in axes.ravel()[len(metrics):]:
            ax.set_axis_off()
        axes = axes.ravel()[: len(metrics)].reshape(1, -1)
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    for r, row_value in enumerate(rows):
        for c, metric in enumerate(metrics):
            ax = axes[r, c]
            part = summary[summary["metric"] == metric] if len(summary) else summary
            if row is not None and len(part):
                part = part[part[row] == row_value]
            drawn = False
            for i, (name, colour) in enumerate(colours.items()):
                line = part[part[hue] == name].dropna(subset=["mean"]) if len(part) else part
                if line.empty:
                    continue
                ax.plot(line["round"], line["mean"], marker=markers[i % len(markers)], ms=3.5, lw=1.5,
                        color=colour, label=str(name))
                confidence_band(ax, line["round"], line["ci_low"], line["ci_high"], color=colour, alpha=0.2, lw=0)
                drawn = True
            if not drawn:
                ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="0.5")
            title = metric_label(metric)
            ax.set_title(title if row_value is None else f"{title}\n{row}: {row_value}", fontsize=9)
            ax.set_xlabel("Round")
            unit = METRICS[metric].unit if metric in METRICS else None
            if unit:
                ax.set_ylabel(unit, fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
    if legend and hues:
        handles = [Line2D([], [], color=colours[h], marker=markers[i % len(markers)], ms=4, label=str(h))
                   for i, h in enumerate(hues)]
        figure.legend(handles=handles, loc="outside lower center", ncol=min(len(hues), 6), frameon=False,
                      fontsize=8, title=hue, title_fontsize=8)
    return finish(figure, path)
