"""Populations: 2-D scatter plots of individuals with each model's decision boundary (PCA for d > 2).

- :func:`plot_population`: populations before and after recourse, side by side;
- :class:`Projection` + :func:`draw_population` / :func:`plot_population_snapshot`: one population by label and
  by received recourse, with the boundary (or both in one panel, ``colour_by="label_and_recourse"``, for
  several systems side by side).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from recourse_sim.models.base import DECISION_THRESHOLD
from recourse_sim.reporting.style import PALETTE, RECOURSE_COLOURS, finish, panel_grid, plt, prepare_figure

#: How :func:`draw_population` colours individuals.
COLOUR_BY = ("label", "recourse", "label_and_recourse")


def _boundary(ax, predict_proba, X: np.ndarray, resolution: int = 150) -> None:
    pad = 0.5
    (x0, y0), (x1, y1) = X.min(0) - pad, X.max(0) + pad
    xx, yy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    grid = torch.tensor(np.c_[xx.ravel(), yy.ravel()], dtype=torch.float32)
    p = np.asarray(predict_proba(grid)).reshape(xx.shape)
    ax.contourf(xx, yy, p, levels=np.linspace(0, 1, 11), cmap="RdBu", alpha=0.25, vmin=0, vmax=1)
    ax.contour(xx, yy, p, levels=[DECISION_THRESHOLD], colors="k", linewidths=1.2)


def plot_population(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray | None, object]],
    path: str | Path | None = None,
    feature_names: Sequence[str] = ("x1", "x2"),
) -> plt.Figure:
    """Scatter 2-D populations with the decision boundary (p = 0.5) and probability shading.

    Each panel is ``(title, X (n, 2), y (n,), moved (n,) bool or None, predict_proba(X) -> p)``; individuals
    who implemented recourse are drawn with a black edge.
    """
    fig, axes = panel_grid(1, len(panels), panel=(3.4, 3.4))
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


def draw_surface(ax, predict_proba, projection: Projection, limits, resolution: int = 120, shade: bool = True) -> None:
    (x0, x1), (y0, y1) = limits
    xx, yy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    grid = projection.inverse_transform(np.c_[xx.ravel(), yy.ravel()])
    p = np.asarray(predict_proba(torch.tensor(grid, dtype=torch.float32))).reshape(xx.shape)
    if shade:
        ax.contourf(xx, yy, p, levels=np.linspace(0, 1, 11), cmap="RdBu", alpha=0.22, vmin=0, vmax=1)
    ax.contour(xx, yy, p, levels=[DECISION_THRESHOLD], colors="k", linewidths=1.2)


def padded_limits(Z: np.ndarray, pad: float = 0.15) -> tuple[tuple[float, float], tuple[float, float]]:
    lo, hi = Z.min(0), Z.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return (lo[0] - pad * span[0], hi[0] + pad * span[0]), (lo[1] - pad * span[1], hi[1] + pad * span[1])


def _recourse_groups(n: int, recourse_round, current_round: int | None) -> tuple:
    """``(members (n,) bool, legend name, marker size)`` for: never received recourse, received it in an earlier
    round, received it in ``current_round`` (default: the latest round in ``recourse_round``; -1 = never)."""
    rounds = np.full(n, -1) if recourse_round is None else np.asarray(
        recourse_round.cpu() if isinstance(recourse_round, torch.Tensor) else recourse_round)
    now = current_round if current_round is not None else (rounds.max() if len(rounds) else -1)
    return (
        (rounds < 0, "no recourse", 7),
        ((rounds >= 0) & (rounds != now), "recourse, earlier round", 12),
        ((rounds >= 0) & (rounds == now), "recourse, this round", 22),
    )


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
    from ``recourse_round`` (n,) (-1 = never); ``colour_by="label_and_recourse"``: by label, with a ring around
    each recipient (purple: an earlier round, orange: this round), so one panel shows both. ``predict_proba``
    (X (m, d) tensor -> p (m,)) adds the decision boundary p = 0.5 (black) and probability shading.
    ``projection`` maps d > 2 features to 2-D (PCA).
    """
    if colour_by not in COLOUR_BY:
        raise ValueError(f"colour_by must be one of {', '.join(map(repr, COLOUR_BY))}; got {colour_by!r}")
    X = np.asarray(X.cpu() if isinstance(X, torch.Tensor) else X)
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    projection = projection or Projection.fit(X)
    Z = projection.transform(X)
    limits = limits or padded_limits(Z)
    if predict_proba is not None:
        draw_surface(ax, predict_proba, projection, limits)
    if colour_by in ("label", "label_and_recourse"):
        for label, colour, name, marker in ((0, PALETTE[3], "y = 0", "o"), (1, PALETTE[0], "y = 1", "s")):
            members = y == label
            ax.scatter(Z[members, 0], Z[members, 1], s=10, color=colour, alpha=0.75, label=name, lw=0, marker=marker)
    if colour_by == "recourse":
        for (members, name, size), colour in zip(_recourse_groups(len(X), recourse_round, current_round),
                                                 RECOURSE_COLOURS):
            if members.any() or legend:
                ax.scatter(Z[members, 0], Z[members, 1], s=size, color=colour, alpha=0.85, label=name, lw=0)
    if colour_by == "label_and_recourse":
        # Rings, not fills: the fill keeps showing the label, which recourse may have changed.
        received = _recourse_groups(len(X), recourse_round, current_round)[1:]
        for (members, name, _size), colour in zip(received, RECOURSE_COLOURS[1:]):
            if members.any() or legend:
                ax.scatter(Z[members, 0], Z[members, 1], s=30, facecolors="none", edgecolors=colour, lw=1.0,
                           label=name)
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
    figure = prepare_figure(figure, (7.6, 3.6))
    projection = projection or Projection.fit(X, feature_names)
    limits = padded_limits(projection.transform(X))
    ax_label, ax_recourse = figure.subplots(1, 2, sharex=True, sharey=True)
    draw_population(ax_label, X, y, colour_by="label", predict_proba=predict_proba, projection=projection,
                    limits=limits, title="Population by label")
    draw_population(ax_recourse, X, y, colour_by="recourse", recourse_round=recourse_round,
                    current_round=current_round, predict_proba=predict_proba, projection=projection, limits=limits,
                    title="Population by received recourse")
    if title:
        figure.suptitle(title, fontsize=10)
    return finish(figure, path)
