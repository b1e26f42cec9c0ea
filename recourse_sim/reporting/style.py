"""What every figure shares: the headless backend, the colour-blind-safe palette and figure handling.

Importing this module selects matplotlib's headless Agg backend, except inside a Jupyter kernel.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # headless by default; notebooks keep their inline backend
    matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# Okabe & Ito (2008) colour-blind-safe palette.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
DEFAULT_METRICS = ("domain_mmd", "model_mmd", "disagreement", "decisiveness", "f1", "recourse_cost")
# Recourse status colours (colour-blind safe, Okabe & Ito): never / earlier round / this round.
RECOURSE_COLOURS = ("#BBBBBB", PALETTE[4], PALETTE[1])


def panel_grid(rows: int, cols: int, panel: tuple[float, float]):
    """A figure of ``rows x cols`` panels of ``panel`` inches each (e.g. one row per model, one column per metric);
    returns ``(figure, axes)`` with ``axes`` always 2-D."""
    return plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), squeeze=False,
                        constrained_layout=True)


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
