"""The hidden costs of recourse in tables and figures: what recourse costs bystanders and the lender.

The per-round metrics (:mod:`recourse_sim.metrics.hidden_costs`, and the objective terms at the implemented
points) are summarised per system as their **mean over all rounds** (a run's total harm per round, not one
noisy final round), per repetition; with a no-recourse control in the table, each system's mean is also paired
with its control's (same repetition: same people, recipients and retraining), so the attributable part of a
cost comes with a t-interval and a paired test across repetitions (:mod:`~recourse_sim.reporting.attribution`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from recourse_sim.metrics.catalogue import HIDDEN_COST_METRICS, split_group
from recourse_sim.reporting.attribution import has_control, paired_effects, summarise_effects
from recourse_sim.reporting.summary import summarise

#: What the hidden-costs table reports per system, in its column order (the ones a table has).
TABLE_METRICS = (*HIDDEN_COST_METRICS, "approval_rate", "truly_improved", "recourse_cost", "agent_cost")


def round_means(frame: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS) -> pd.DataFrame:
    """Each system's mean over the rounds (>= 1) of every metric in ``metrics``, per repetition: the tidy table's
    columns, with ``round`` set to 0 so the result pairs like any results table."""
    part = frame[frame["metric"].isin(metrics) & (frame["round"] >= 1)]
    keys = [c for c in part.columns if c not in ("round", "value")]
    means = part.groupby(keys, sort=True, dropna=False)["value"].mean().reset_index()
    means.insert(len(keys), "round", 0)
    return means


def hidden_costs_table(frame: pd.DataFrame, by: Sequence[str] = ("model", "generator")) -> pd.DataFrame:
    """One row per ``by`` group (e.g. experiment x model x generator), one column per metric: the mean over
    rounds and repetitions, and, with a control, ``<metric> vs control`` (mean difference [95% CI] (p))."""
    means = round_means(frame)
    if means.empty:
        return pd.DataFrame()
    by = [c for c in by if c in means.columns]
    levels = summarise(means, by=[*by, "metric"]).pivot_table(index=by, columns="metric", values="mean")
    ordered = [m for m in TABLE_METRICS if m in levels.columns]
    table = levels[ordered]
    if has_control(means):
        pairs = paired_effects(means, metrics=ordered)
        # A cost the control does not have (terms at implemented points, movers' costs) has no paired difference.
        effects = summarise_effects(pairs.dropna(subset=["control"]))
        effects["cell"] = [f"{m:+.3g} [{lo:+.3g}, {hi:+.3g}] (p={p:.2g})" for m, lo, hi, p in
                           effects[["mean", "ci_low", "ci_high", "p_value"]].itertuples(index=False)]
        wide = effects.pivot_table(index=by, columns="metric", values="cell", aggfunc="first")
        wide.columns = [f"{m} vs control" for m in wide.columns]
        table = table.join(wide)
        table = table[[c for m in ordered for c in (m, f"{m} vs control") if c in table.columns]]
    return table.reset_index()


def group_gap_table(frame: pd.DataFrame, metric: str = "approval_rate",
                    by: Sequence[str] = ("model", "generator")) -> pd.DataFrame:
    """The gap in ``metric`` between two groups at the final round: ``metric[second] - metric[first]`` (groups in
    the order the results name them, e.g. ``SEX_female - SEX_male``; with more groups, the largest minus the
    smallest), mean and 95% CI over repetitions per ``by`` group, and with a control its paired difference to
    the control's gap: whether recourse widens (> 0 for a positive gap) or narrows it. Empty without groups."""
    part = frame[[split_group(m)[0] == metric and split_group(m)[1] is not None for m in frame["metric"]]]
    if part.empty:
        return pd.DataFrame()
    part = part[part["round"] == part["round"].max()]
    groups = list(dict.fromkeys(split_group(m)[1] for m in part["metric"]))
    keys = [c for c in part.columns if c not in ("system", "metric", "value")]
    wide = part.pivot_table(index=keys, columns="metric", values="value").reset_index()
    columns = [f"{metric}[{g}]" for g in groups]
    if len(groups) == 2:
        gap, name = wide[columns[1]] - wide[columns[0]], f"{groups[1]} - {groups[0]}"
    else:
        gap, name = wide[columns].max(axis=1) - wide[columns].min(axis=1), "largest - smallest"
    gaps = wide[keys].assign(metric=f"{metric} gap ({name})", value=gap)
    by = [c for c in by if c in gaps.columns]
    table = summarise(gaps, by=[*by, "metric"])[[*by, "metric", "mean", "ci_low", "ci_high", "n"]]
    if has_control(gaps):
        effects = summarise_effects(paired_effects(gaps, metrics=[gaps["metric"].iloc[0]]))
        effects = effects[[*by, "mean", "ci_low", "ci_high", "p_value"]].rename(
            columns={"mean": "vs control", "ci_low": "vs control ci_low", "ci_high": "vs control ci_high"})
        table = table.merge(effects, on=by, how="left")
    return table


def hidden_cost_metrics(frame: pd.DataFrame) -> list[str]:
    """The hidden costs the table has (collateral rejections and approvals, lender loss, accuracy against the
    truth, external costs at the implemented points), in :data:`HIDDEN_COST_METRICS` order."""
    available = set(frame["metric"].unique())
    return [m for m in HIDDEN_COST_METRICS if m in available]


def plot_hidden_costs(frame: pd.DataFrame, path: str | Path | None = None):
    """Trajectories of the hidden costs the table has (:func:`hidden_cost_metrics`) per generator, 95% bands; None
    when it has none of them."""
    from recourse_sim.reporting.trajectories import plot_trajectories  # matplotlib only when drawing

    present = hidden_cost_metrics(frame)
    if not present:
        return None
    return plot_trajectories(frame, metrics=present, path=path)
