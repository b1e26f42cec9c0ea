"""The effect attributable to recourse: every system minus its paired no-recourse control.

A model retrained every round drifts even when nobody moves (warm starts, a fresh optimiser per round,
dropout). The control system (generator ``"none"``, see :mod:`recourse_sim.generators.control`) has the same
data, model, seeds, recipients and retraining schedule and differs only in that its recipients do not act, so

    effect(system, round, metric) = value(system) - value(paired control)

within one repetition (and seed, and grid cell) is what recourse did. Across repetitions the effects are
independent replicates: the summary reports their mean, a Student-t confidence interval and a paired t-test
(a one-sample t-test of the per-repetition differences against 0). With one repetition the interval
collapses to the mean and the test is not defined (NaN).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import special  # scipy.stats costs ~0.6 s to import; the t tail is special.stdtr

from recourse_sim.generators.control import CONTROL
from recourse_sim.reporting.summary import summarise

#: The metrics that measure a shift from round 0 (or a level that shifts): each gets an attributable effect.
SHIFT_METRICS = (
    "domain_mmd", "model_mmd", "model_mmd_grid", "perturbation", "disagreement", "decisiveness",
    "accuracy", "f1", "f1_change",
)
def has_control(frame: pd.DataFrame) -> bool:
    return "generator" in frame.columns and bool((frame["generator"] == CONTROL).any())


def paired_effects(frame: pd.DataFrame, metrics: Sequence[str] = SHIFT_METRICS) -> pd.DataFrame:
    """Per-repetition effects: one row per non-control system x round x metric in ``metrics``.

    ``frame`` is a tidy results table (``model``, ``generator``, ``repetition``, ``round``, ``metric``,
    ``value``, and any further key columns such as ``experiment`` or ``seed``, which are kept and paired on).
    Returns those keys with ``generator``, ``value`` (the system's), ``control`` (its paired control's) and
    ``effect = value - control``. Empty when the table has no control.
    """
    if not has_control(frame):
        return pd.DataFrame(columns=[*frame.columns.drop("system", errors="ignore"), "control", "effect"])
    return paired_differences(frame, "generator", CONTROL, metrics, label=f"control (generator {CONTROL!r})").rename(
        columns={"reference": "control"})


def paired_differences(frame: pd.DataFrame, column: str, reference, metrics: Sequence[str] | None = None,
                       ignore: Sequence[str] = ("system", "cell_id"), label: str | None = None) -> pd.DataFrame:
    """Every row whose ``column`` is not ``reference`` minus its twin whose ``column`` is ``reference``.

    Twins agree on every other key column (model, generator, repetition, round, metric, seed, the other grid axes
    ...; ``ignore`` lists columns that name a row without pairing it), so a difference isolates what ``column``
    changes: the generator against the no-recourse control (:func:`paired_effects`), or one setting of a sweep
    axis against another (``recourse-sim report --versus``). Returns the keys with ``column``, ``value``,
    ``reference`` (the twin's value) and ``effect = value - reference``; rows without a twin are dropped. Two twins
    for one row are refused (``label`` names the reference in that message).
    """
    part = frame if metrics is None else frame[frame["metric"].isin(metrics)]
    part = part.drop(columns=[c for c in ignore if c in part.columns])
    keys = [c for c in part.columns if c not in (column, "value")]
    twins = part[part[column] == reference].drop(columns=[column]).rename(columns={"value": "reference"})
    duplicated = twins.duplicated(keys)
    if duplicated.any():
        raise ValueError(f"more than one {label or f'{column} = {reference!r} row'} per {keys}: "
                         f"{twins[duplicated].head(1).to_dict('records')}")
    others = part[part[column] != reference]
    out = others.merge(twins, on=keys, how="inner", validate="many_to_one")
    out["effect"] = out["value"] - out["reference"]
    return out.reset_index(drop=True)


def summarise_effects(effects: pd.DataFrame, by: Sequence[str] | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """Mean attributable effect, t-interval and paired t-test p-value over repetitions, per ``by`` group.

    ``by`` defaults to every key column except ``repetition`` (model, generator, round, metric and any others).
    """
    if effects.empty:
        return pd.DataFrame()
    by = list(by) if by is not None else [c for c in effects.columns
                                          if c not in ("repetition", "value", "control", "reference", "effect")]
    values = effects[[*by, "effect"]].rename(columns={"effect": "value"})
    summary = summarise(values, confidence=confidence, by=by)
    summary["p_value"] = effects.groupby(by, sort=True)["effect"].apply(_paired_t_p).to_numpy()
    return summary


def _paired_t_p(differences: pd.Series) -> float:
    """Two-sided p-value of a one-sample t-test of the differences against 0 (NaN below 2 finite values;
    0 when every difference is the same non-zero number, 1 when all are 0)."""
    d = differences.dropna().to_numpy(dtype=float)
    if d.size < 2:
        return float("nan")
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    t = d.mean() / np.sqrt(d.var(ddof=1) / d.size)
    return float(2.0 * special.stdtr(d.size - 1, -abs(t)))  # two-sided Student-t tail, as ttest_1samp
