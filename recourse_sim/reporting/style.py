"""What every figure shares: the headless backend, the colour-blind-safe palette and figure handling.

Importing this module selects matplotlib's headless Agg backend, except inside a Jupyter kernel.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

if "ipykernel" not in sys.modules:  # headless by default; notebooks keep their inline backend
    matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Polygon  # noqa: E402

# Okabe & Ito (2008) colour-blind-safe palette.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
DEFAULT_METRICS = ("domain_mmd", "model_mmd", "disagreement", "decisiveness", "f1", "recourse_cost")
# Recourse status colours (colour-blind safe, Okabe & Ito): never / earlier round / this round.
RECOURSE_COLOURS = ("#BBBBBB", PALETTE[4], PALETTE[1])


#: The fixed margins of a panel grid, in inches: room for the y tick labels and the row label (left), the panel
#: titles (top), the x tick labels and "Round" (bottom), and the same between panels, plus one legend row.
GRID_MARGINS = {"left": 0.95, "right": 0.15, "top": 0.3, "bottom": 0.5, "between_x": 0.8, "between_y": 0.75,
                "legend_row": 0.28}


def panel_grid(rows: int, cols: int, panel: tuple[float, float], legend_rows: int = 0,
               margins: dict[str, float] | None = None):
    """A figure of ``rows x cols`` panels of ``panel`` inches each (e.g. one row per model, one column per metric),
    with ``legend_rows`` rows of figure legend below them (place it with ``loc="lower center"``); returns
    ``(figure, axes)`` with ``axes`` always 2-D.

    The panels sit at fixed margins (:data:`GRID_MARGINS`, or those of its keys ``margins`` replaces, e.g. more room
    below panels with rotated tick labels), not where a layout engine puts them: an engine draws the figure twice,
    once to measure it, which was half of the time a run spent on its figures (an 18-panel trajectory figure:
    2.6 s with constrained layout, 1.5 s with fixed margins).
    """
    margin = GRID_MARGINS | (margins or {})
    legend = legend_rows * margin["legend_row"]
    width, height = panel[0] * cols, panel[1] * rows + legend
    axes_width = (width - margin["left"] - margin["right"] - (cols - 1) * margin["between_x"]) / cols
    axes_height = (height - legend - margin["top"] - margin["bottom"] - (rows - 1) * margin["between_y"]) / rows
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=margin["left"] / width, right=1 - margin["right"] / width,
                        bottom=(margin["bottom"] + legend) / height, top=1 - margin["top"] / height,
                        wspace=margin["between_x"] / axes_width, hspace=margin["between_y"] / axes_height)
    return fig, axes


def confidence_band(ax, x, low, high, **style) -> None:  # noqa: ANN001 (an Axes and array-likes)
    """The band between ``low`` and ``high`` over ``x`` as one filled polygon (rows with a missing bound left out),
    drawn after the line it surrounds (whose plotting makes the axes rescale to their data at the next draw).

    What ``ax.fill_between`` draws for a band without gaps, for a fraction of its cost (~0.13 ms a band here against
    ~1 ms): the SaTML report's 20 trajectory figures (up to 144 bands each) drew in 17.5 s instead of 22 s.
    """
    x, low, high = (np.asarray(values, dtype=float) for values in (x, low, high))
    keep = np.isfinite(x) & np.isfinite(low) & np.isfinite(high)
    if keep.sum() < 2:
        return
    x, low, high = x[keep], low[keep], high[keep]
    outline = np.column_stack([np.concatenate([x, x[::-1]]), np.concatenate([low, high[::-1]])])
    # add_artist, and the data limits straight from the vertices: add_patch walks the outline in Python. The view
    # limits follow the data limits at the next draw, as requested by the line plotted before the band.
    ax.add_artist(Polygon(outline, **style))
    ax.update_datalim(outline)


def colour_map(labels: Sequence[str]) -> dict[str, str]:
    """A palette colour for each label, in order (cycling after eight)."""
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


def prepare_figure(figure: Figure | None, size: tuple[float, float]) -> Figure:
    """A new pyplot figure (shown inline in notebooks, like the figures above), or ``figure`` cleared.

    Pass a ``matplotlib.figure.Figure`` to stay outside pyplot's global state (servers, threads).
    """
    if figure is None:
        return plt.figure(figsize=size, layout="constrained")
    figure.clear()
    figure.set_layout_engine("constrained")
    return figure


def finish(figure: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        figure.savefig(path, dpi=150)
        if plt.fignum_exists(getattr(figure, "number", -1)):
            plt.close(figure)
    return figure
