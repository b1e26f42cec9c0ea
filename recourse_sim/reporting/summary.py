"""Aggregation across repetitions: mean and Student-t 95% confidence interval per system x round x metric."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special  # scipy.stats costs ~0.6 s to import; its t quantile is special.stdtrit

GROUP = ["model", "generator", "round", "metric"]


def levels(column: pd.Series) -> list:
    """A column's distinct values in order of appearance, by ``unique()``: a Python loop over a results table's
    string column (``dict.fromkeys``) took ~13 ms a time on 118k rows in a profile of the SaTML moons figures."""
    return list(column.unique())


def summarise(frame: pd.DataFrame, confidence: float = 0.95, by: list[str] | None = None) -> pd.DataFrame:
    """Mean, standard deviation, count and a t-interval of ``value`` over repetitions (NaNs ignored).

    With one repetition the interval collapses to the mean (no spread can be estimated).
    """
    by = by or [c for c in GROUP if c in frame.columns]
    grouped = frame.groupby(by, sort=True)["value"]
    out = grouped.agg(mean="mean", std="std", n="count").reset_index()
    sem = out["std"] / np.sqrt(out["n"].clip(lower=1))
    t = special.stdtrit((out["n"] - 1).clip(lower=1), 0.5 + confidence / 2)  # Student-t quantile
    half = np.where(out["n"] > 1, t * sem, 0.0)
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out


def markdown_table(table: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A table as a markdown table (floats as ``floatfmt``); "_(no data)_" when it is empty."""
    if table.empty:
        return "_(no data)_"
    columns = list(table.columns)
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    for row in table.itertuples(index=False):
        cells = [format(v, floatfmt) if isinstance(v, (float, np.floating)) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def study_extent(frame: pd.DataFrame) -> str:
    """What a study's combined table covers, as its report's setup line says it: ``"50 rounds, 5 repetitions,
    experiments: a, b"`` (columns ``round``, ``repetition``, ``experiment``)."""
    rounds = int(frame["round"].max())
    reps = int(frame["repetition"].max()) + 1
    return f"{rounds} rounds, {reps} repetitions, experiments: {', '.join(sorted(frame['experiment'].unique()))}"


def wall_time_note(seconds: float) -> str:
    """The reports' wall-time sentence: resumed cells ran in an earlier invocation and are not in ``seconds``."""
    return f"Wall time of the last invocation {seconds / 60:.1f} min (cells resumed from the stores are not counted)."
