"""Matplotlib figures from result tables and simulation states (publication-ready, colour-blind safe).

- :func:`plot_trajectories`: metric trajectories over rounds, one line per generator, 95% CI bands across
  repetitions; one row of panels per model.
- :func:`plot_population`: 2-D populations before and after recourse with each model's decision boundary.
- :func:`plot_trajectory_grid`: trajectories with CI bands, rows by any column (model, dataset, ...).
- :func:`plot_population_snapshot` / :func:`draw_population`: one population by label and by received
  recourse, with the boundary; PCA (:class:`Projection`) for d > 2.
- :func:`plot_generator_grid`: the same factuals explained by several generators, search paths on the
  decision surface.

Figures use the Okabe & Ito colour-blind-safe palette, label every axis (units where a metric has one) and
carry legends. Importing this module selects the headless Agg backend, except inside a Jupyter kernel.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # headless by default; notebooks keep their inline backend
    matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from recourse_sim.experiments.summary import summarise
from recourse_sim.generators.control import CONTROL

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
    """Mean trajectory per generator over rounds with a 95% CI band across repetitions; the no-recourse control
    (generator ``"none"``) is the dashed grey line."""
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
                if generator == CONTROL:  # the no-recourse control: what retraining alone does
                    ax.plot(line["round"], line["mean"], ls="--", color="0.25", lw=1.2, label=f"{generator} (control)")
                    ax.fill_between(line["round"], line["ci_low"], line["ci_high"], color="0.5", alpha=0.15, lw=0)
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


def plot_final_bars(
    frame: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS, path: str | Path | None = None
) -> plt.Figure:
    """Final-round value per generator (bars) with 95% CI across repetitions; one row of panels per model."""
    final = frame[frame["round"] == frame["round"].max()]
    metrics = [m for m in metrics if m in set(final["metric"])]
    summary = summarise(final[final["metric"].isin(metrics)])
    models = list(dict.fromkeys(frame["model"]))
    generators = list(dict.fromkeys(frame["generator"]))
    colours = _colours(generators)
    fig, axes = plt.subplots(
        len(models), len(metrics), figsize=(3.0 * len(metrics), 2.6 * len(models)), squeeze=False,
        constrained_layout=True,
    )
    for row, model in enumerate(models):
        for col, metric in enumerate(metrics):
            ax = axes[row, col]
            part = summary[(summary["model"] == model) & (summary["metric"] == metric)].set_index("generator")
            part = part.reindex(generators)
            x = np.arange(len(generators))
            err = np.vstack([part["mean"] - part["ci_low"], part["ci_high"] - part["mean"]])
            ax.bar(x, part["mean"], yerr=err, color=[colours[g] for g in generators], capsize=2)
            ax.set_xticks(x, generators, rotation=60, ha="right", fontsize=7)
            ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            if col == 0:
                ax.set_ylabel(model)
    if path is not None:
        fig.savefig(path, dpi=150)
        plt.close(fig)
    return fig


# =========================================================================================================
# Figures for notebooks, the dashboard and reports (added with the interactive tooling).
#
# - :func:`plot_trajectory_grid`: metric trajectories with 95% CI bands, rows by any column (model, dataset...).
# - :class:`Projection` + :func:`draw_population` / :func:`plot_population_snapshot`: 2-D population snapshots
#   (PCA for d > 2) coloured by label or by "received recourse", with the decision boundary.
# - :class:`GeneratorPanel` + :func:`plot_generator_grid`: the same factuals explained by several generators,
#   search paths drawn on the decision surface.
# =========================================================================================================

from dataclasses import dataclass, field  # noqa: E402

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

#: Units/scales appended to axis labels where the metric has one.
METRIC_UNITS = {
    "domain_mmd": "MMD², dimensionless",
    "model_mmd": "MMD², dimensionless",
    "model_mmd_grid": "MMD², dimensionless",
    "disagreement": "share",
    "accuracy": "share",
    "validity": "share",
    "recourse_cost": "feature units",
    "n_recourse": "individuals",
    "search_steps": "iterations",
}

# Recourse status colours (colour-blind safe, Okabe & Ito): never / earlier round / this round.
_RECOURSE_COLOURS = ("#BBBBBB", PALETTE[4], PALETTE[1])


def _prepare_figure(figure: Figure | None, size: tuple[float, float]) -> Figure:
    """A new pyplot figure (shown inline in notebooks, like the figures above), or ``figure`` cleared.

    Pass a ``matplotlib.figure.Figure`` to stay outside pyplot's global state (servers, threads).
    """
    if figure is None:
        return plt.figure(figsize=size, layout="constrained")
    figure.clear()
    figure.set_layout_engine("constrained")
    return figure


def _finish(figure: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        figure.savefig(path, dpi=150)
        if plt.fignum_exists(getattr(figure, "number", -1)):
            plt.close(figure)
    return figure


def metric_label(metric: str, units: bool = False) -> str:
    """Human-readable label of a metric (``domain_mmd`` -> "Domain shift (MMD²)"), optionally with its unit."""
    if metric in METRIC_LABELS:
        label = METRIC_LABELS[metric]
    elif metric.endswith("_pvalue") and metric[: -len("_pvalue")] in METRIC_LABELS:
        label = f"p-value: {METRIC_LABELS[metric[: -len('_pvalue')]]}"
    elif metric.startswith("reliability_lag"):
        label = f"Recourse reliability (lag {metric[len('reliability_lag'):]})"
    else:
        label = metric.replace("_", " ").capitalize()
    if units and metric in METRIC_UNITS:
        label = f"{label} [{METRIC_UNITS[metric]}]"
    return label


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
    present = set(frame["metric"]) if len(frame) else set()
    metrics = [m for m in metrics if m in present] or list(metrics)
    rows = list(dict.fromkeys(frame[row])) if row is not None and len(frame) else [None]
    hues = list(dict.fromkeys(frame[hue])) if len(frame) else []
    colours = _colours(hues)
    by = [c for c in (row, hue, "round", "metric") if c is not None]
    summary = summarise(frame[frame["metric"].isin(metrics)], by=by) if len(frame) else pd.DataFrame(columns=by)
    wrap = row is None and col_wrap is not None and col_wrap < len(metrics)
    grid = (int(np.ceil(len(metrics) / col_wrap)), col_wrap) if wrap else (len(rows), len(metrics))
    size = (panel_size[0] * grid[1], panel_size[1] * grid[0] + (0.4 if legend else 0.0))
    figure = _prepare_figure(figure, size)
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
                ax.fill_between(line["round"], line["ci_low"], line["ci_high"], color=colour, alpha=0.2, lw=0)
                drawn = True
            if not drawn:
                ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="0.5")
            title = metric_label(metric)
            ax.set_title(title if row_value is None else f"{title}\n{row}: {row_value}", fontsize=9)
            ax.set_xlabel("Round")
            if metric in METRIC_UNITS:
                ax.set_ylabel(METRIC_UNITS[metric], fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
    if legend and hues:
        handles = [Line2D([], [], color=colours[h], marker=markers[i % len(markers)], ms=4, label=str(h))
                   for i, h in enumerate(hues)]
        figure.legend(handles=handles, loc="outside lower center", ncol=min(len(hues), 6), frameon=False,
                      fontsize=8, title=hue, title_fontsize=8)
    return _finish(figure, path)


@dataclass(frozen=True)
class Projection:
    """A 2-D view of d-dimensional data: the identity for d = 2, else PCA fitted once (on the initial data).

    ``inverse_transform`` lifts 2-D points back onto the plane through the data mean spanned by the first two
    principal components, which is where the decision boundary is drawn for d > 2 (a slice, not the full
    boundary: every other direction is held at the mean).
    """

    mean: np.ndarray
    components: np.ndarray  # (2, d)
    labels: tuple[str, str] = ("x1", "x2")
    explained: tuple[float, float] | None = None

    @classmethod
    def fit(cls, X, feature_names: Sequence[str] | None = None) -> Projection:
        X = np.asarray(X.cpu() if isinstance(X, torch.Tensor) else X, dtype=np.float64)
        d = X.shape[1]
        names = list(feature_names) if feature_names is not None else [f"x{j + 1}" for j in range(d)]
        if d == 1:
            raise ValueError("a 2-D view needs at least 2 features")
        if d == 2:
            return cls(np.zeros(2), np.eye(2), (names[0], names[1]))
        mean = X.mean(0)
        _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
        share = (s**2) / (s**2).sum()
        return cls(mean, vt[:2], (f"PC1 ({share[0]:.0%} of variance)", f"PC2 ({share[1]:.0%} of variance)"),
                   (float(share[0]), float(share[1])))

    @property
    def is_identity(self) -> bool:
        return self.explained is None

    def transform(self, X) -> np.ndarray:
        X = np.asarray(X.cpu() if isinstance(X, torch.Tensor) else X, dtype=np.float64)
        return X if self.is_identity else (X - self.mean) @ self.components.T

    def inverse_transform(self, Z) -> np.ndarray:
        Z = np.asarray(Z, dtype=np.float64)
        return Z if self.is_identity else Z @ self.components + self.mean


def _surface(ax, predict_proba, projection: Projection, limits, resolution: int = 120, shade: bool = True) -> None:
    (x0, x1), (y0, y1) = limits
    xx, yy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    grid = projection.inverse_transform(np.c_[xx.ravel(), yy.ravel()])
    p = np.asarray(predict_proba(torch.tensor(grid, dtype=torch.float32))).reshape(xx.shape)
    if shade:
        ax.contourf(xx, yy, p, levels=np.linspace(0, 1, 11), cmap="RdBu", alpha=0.22, vmin=0, vmax=1)
    ax.contour(xx, yy, p, levels=[0.5], colors="k", linewidths=1.2)


def _limits(Z: np.ndarray, pad: float = 0.15) -> tuple[tuple[float, float], tuple[float, float]]:
    lo, hi = Z.min(0), Z.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return (lo[0] - pad * span[0], hi[0] + pad * span[0]), (lo[1] - pad * span[1], hi[1] + pad * span[1])


def draw_population(
    ax,
    X,
    y,
    *,
    colour_by: str = "label",
    recourse_round=None,
    current_round: int | None = None,
    predict_proba=None,
    projection: Projection | None = None,
    limits=None,
    title: str | None = None,
    legend: bool = True,
) -> None:
    """Draw one 2-D population snapshot into ``ax``.

    ``colour_by="label"``: y = 0 / y = 1 (vermillion / blue); ``colour_by="recourse"``: individuals who never
    received recourse (grey), received it in an earlier round (purple), or in ``current_round`` (orange),
    from ``recourse_round`` (n,) (-1 = never). ``predict_proba`` (X (m, d) tensor -> p (m,)) adds the decision
    boundary p = 0.5 (black) and probability shading. ``projection`` maps d > 2 features to 2-D (PCA).
    """
    X = np.asarray(X.cpu() if isinstance(X, torch.Tensor) else X)
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    projection = projection or Projection.fit(X)
    Z = projection.transform(X)
    limits = limits or _limits(Z)
    if predict_proba is not None:
        _surface(ax, predict_proba, projection, limits)
    if colour_by == "label":
        for label, colour, name, marker in ((0, PALETTE[3], "y = 0", "o"), (1, PALETTE[0], "y = 1", "s")):
            members = y == label
            ax.scatter(Z[members, 0], Z[members, 1], s=10, color=colour, alpha=0.75, label=name, lw=0, marker=marker)
    elif colour_by == "recourse":
        rounds = np.full(len(X), -1) if recourse_round is None else np.asarray(
            recourse_round.cpu() if isinstance(recourse_round, torch.Tensor) else recourse_round)
        now = current_round if current_round is not None else (rounds.max() if len(rounds) else -1)
        groups = (
            (rounds < 0, "no recourse", 7),
            ((rounds >= 0) & (rounds != now), "recourse, earlier round", 12),
            ((rounds >= 0) & (rounds == now), "recourse, this round", 22),
        )
        for (members, name, size), colour in zip(groups, _RECOURSE_COLOURS):
            if members.any() or legend:
                ax.scatter(Z[members, 0], Z[members, 1], s=size, color=colour, alpha=0.85, label=name, lw=0)
    else:
        raise ValueError(f"colour_by must be 'label' or 'recourse'; got {colour_by!r}")
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ax.set_xlabel(projection.labels[0])
    ax.set_ylabel(projection.labels[1])
    if title:
        ax.set_title(title, fontsize=9)
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        if predict_proba is not None:
            handles.append(Line2D([], [], color="k", lw=1.2))
            labels.append("decision boundary" + (" (PC plane)" if not projection.is_identity else ""))
        ax.legend(handles, labels, fontsize=7, loc="best", framealpha=0.8)


def plot_population_snapshot(
    X,
    y,
    predict_proba=None,
    *,
    recourse_round=None,
    current_round: int | None = None,
    projection: Projection | None = None,
    feature_names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
    figure: Figure | None = None,
) -> Figure:
    """Two panels of one population: coloured by label, and by received recourse; both with the boundary.

    ``projection`` defaults to PCA of ``X`` (identity for 2-D data, axes named by ``feature_names``).
    """
    figure = _prepare_figure(figure, (7.6, 3.6))
    projection = projection or Projection.fit(X, feature_names)
    limits = _limits(projection.transform(X))
    ax_label, ax_recourse = figure.subplots(1, 2, sharex=True, sharey=True)
    draw_population(ax_label, X, y, colour_by="label", predict_proba=predict_proba, projection=projection,
                    limits=limits, title="Population by label")
    draw_population(ax_recourse, X, y, colour_by="recourse", recourse_round=recourse_round,
                    current_round=current_round, predict_proba=predict_proba, projection=projection, limits=limits,
                    title="Population by received recourse")
    if title:
        figure.suptitle(title, fontsize=10)
    return _finish(figure, path)


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
    limits = _limits(np.concatenate(points), pad=0.08)
    nrows = int(np.ceil(len(panels) / ncols))
    figure = _prepare_figure(figure, (3.3 * ncols, 3.2 * nrows + 0.4))
    axes = np.atleast_1d(figure.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)).ravel()
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    for ax, panel in zip(axes, panels):
        _surface(ax, predict_proba, projection, limits, resolution=100)
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
    return _finish(figure, path)
