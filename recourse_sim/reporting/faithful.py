"""The faithful-first report (``recourse-sim reproduce faithful``): three questions, answered with CIs.

1. Is ECCCo more faithful than generic and REVISE on each model, and does JEM make it more plausible? (the ECCCo
   paper's tables): unfaithfulness and implausibility at the final round, and ECCCo's paired differences to the
   other generators (same repetition: the same model initialisation and recipients);
2. Does CT reduce the endogenous domain and model shift caused by recourse, compared with conventional training and
   with the generator-side mitigation (gravitational)? At what cost in accuracy? The final-round effects
   attributable to recourse (system - paired control) per model and generator, and each model's test accuracy;
3. Do the CT paper's claims (plausibility up, the cost of recourse with protected features down, adversarial
   robustness up) hold at the first evaluation, and after 50 rounds of recourse? ECCCo's counterfactuals on the
   CT-trained vs the conventional MLP at the first and the final evaluated round.

Every cell is ``mean [95% CI]`` over repetitions (Student t); a paired difference also gives its paired t-test p.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from recourse_sim.metrics.catalogue import ROBUSTNESS_EPSILONS, robustness_metric
from recourse_sim.reporting.attribution import paired_effects, summarise_effects
from recourse_sim.reporting.summary import markdown_table as _markdown
from recourse_sim.reporting.summary import levels, study_extent, summarise, wall_time_note

if TYPE_CHECKING:
    from recourse_sim.reporting.figure_files import FigureFile

#: The faithfulness figures' metrics (trajectories per model and generator).
FAITHFUL_METRICS = ("unfaithfulness", "implausibility", "ip_star", "set_size")
SHIFT = ("domain_mmd", "model_mmd", "disagreement", "accuracy")
_STRONGEST = max(ROBUSTNESS_EPSILONS)
CT_CLAIMS = ("implausibility", "ip_star", "protected_cost", "protected_validity",
             robustness_metric("fgsm", _STRONGEST), robustness_metric("pgd", _STRONGEST), "accuracy")
KEYS = ["experiment", "model", "generator"]


def _cell(mean: float, low: float, high: float, p: float | None = None) -> str:
    text = f"{mean:.4g} [{low:.3g}, {high:.3g}]"
    return text if p is None else f"{mean:+.4g} [{low:+.3g}, {high:+.3g}] (p={p:.2g})"


def level_table(frame: pd.DataFrame, metrics: Sequence[str], round_: int | str = "final",
                generators: Sequence[str] | None = None) -> pd.DataFrame:
    """``mean [CI]`` over repetitions per experiment x model x generator at a round (``"final"``: each metric's
    last recorded round, ``"first"``: its first recorded round after round 0)."""
    part = frame[frame["metric"].isin(metrics)]
    if generators is not None:
        part = part[part["generator"].isin(generators)]
    part = part.dropna(subset=["value"])
    if round_ in ("final", "first"):
        rounds = part[part["round"] > 0].groupby("metric")["round"]
        pick = rounds.max() if round_ == "final" else rounds.min()
        part = part[part["round"] == part["metric"].map(pick)]
    else:
        part = part[part["round"] == round_]
    if part.empty:
        return pd.DataFrame(columns=KEYS)
    summary = summarise(part, by=[*KEYS, "metric"])
    summary["cell"] = [_cell(m, lo, hi) for m, lo, hi in summary[["mean", "ci_low", "ci_high"]].itertuples(index=False)]
    wide = summary.pivot_table(index=KEYS, columns="metric", values="cell", aggfunc="first")
    return wide[[m for m in metrics if m in wide.columns]].reset_index()


def generator_differences(frame: pd.DataFrame, metric: str, generator: str = "eccco",
                          others: Sequence[str] = ("generic", "revise")) -> pd.DataFrame:
    """``generator - other`` in ``metric`` at the final round, paired per repetition, per experiment x model:
    ``mean [CI] (p)`` (negative: ``generator`` lower)."""
    part = frame[(frame["metric"] == metric) & frame["generator"].isin([generator, *others])]
    part = part[part["round"] == part["round"].max()]
    wide = part.pivot_table(index=["experiment", "model", "repetition"], columns="generator", values="value")
    rows = []
    for other in others:
        if generator not in wide or other not in wide:
            continue
        diff = (wide[generator] - wide[other]).rename("effect").reset_index().assign(versus=other, metric=metric)
        rows.append(summarise_effects(diff, by=["experiment", "model", "versus", "metric"]))
    if not rows:
        return pd.DataFrame()
    out = pd.concat(rows, ignore_index=True)
    out[f"{generator} - other"] = [_cell(m, lo, hi, p) for m, lo, hi, p in
                                   out[["mean", "ci_low", "ci_high", "p_value"]].itertuples(index=False)]
    return out[["experiment", "model", "versus", "metric", f"{generator} - other"]]


def shift_effects_table(frame: pd.DataFrame, metrics: Sequence[str] = SHIFT) -> pd.DataFrame:
    """Final-round effects attributable to recourse (system - paired control) per experiment x model x generator."""
    effects = summarise_effects(paired_effects(frame, metrics=metrics))
    if effects.empty:
        return pd.DataFrame(columns=KEYS)
    effects = effects[effects["round"] == effects["round"].max()].copy()
    effects["cell"] = [_cell(m, lo, hi, p) for m, lo, hi, p in
                       effects[["mean", "ci_low", "ci_high", "p_value"]].itertuples(index=False)]
    wide = effects.pivot_table(index=KEYS, columns="metric", values="cell", aggfunc="first")
    return wide[[m for m in metrics if m in wide.columns]].reset_index()


def report_markdown(frame: pd.DataFrame, seconds: float, quick: bool, figures: Sequence[str]) -> str:
    """The report: setup line, the three questions' tables, the figure index."""
    lines = [
        "# Faithful first: JEM, ECCCo and Counterfactual Training in the recourse loop" + (" (quick)" if quick else ""),
        "",
        f"{study_extent(frame)}; models: {', '.join(levels(frame['model']))}. {wall_time_note(seconds)} "
        "Cells: mean [95% CI] over repetitions; differences are paired per repetition (p: paired t-test). "
        "Definitions: docs/faithful.md.",
        "",
        "## 1. Faithfulness and plausibility of the implemented counterfactuals (final round)",
        "",
        _markdown(level_table(frame, ["unfaithfulness", "implausibility", "ip_star", "set_size", "validity"])),
        "",
        "ECCCo minus generic and minus REVISE, paired per repetition (negative: ECCCo lower):",
        "",
        _markdown(pd.concat([generator_differences(frame, m) for m in ("unfaithfulness", "implausibility")],
                            ignore_index=True)),
        "",
        "## 2. Shift attributable to recourse (final round, system - paired control)",
        "",
        _markdown(shift_effects_table(frame)),
        "",
        "Each model's test accuracy at round 0 (the cost of its training, before any recourse):",
        "",
        _markdown(level_table(frame, ["accuracy"], round_=0, generators=["none"])),
        "",
        "## 3. The CT claims at the first and at the final evaluation (ECCCo's counterfactuals)",
        "",
        "First evaluated round after round 0:",
        "",
        _markdown(level_table(frame, CT_CLAIMS, round_="first", generators=["eccco"])),
        "",
        "Final round:",
        "",
        _markdown(level_table(frame, CT_CLAIMS, round_="final", generators=["eccco"])),
        "",
        "## Figures",
        "",
        *[f"- `{name}`" for name in figures],
    ]
    return "\n".join(lines) + "\n"


def faithful_figures(results: pd.DataFrame, figures_dir: Path) -> list[FigureFile]:
    """The report's figures: per experiment, the shift and the faithfulness trajectories."""
    from recourse_sim.reporting.figure_files import FigureFile
    from recourse_sim.reporting.trajectories import plot_trajectories  # matplotlib only when drawing

    return [
        FigureFile(plot_trajectories, frame, figures_dir / f"{experiment}_{kind}.png", {"metrics": metrics})
        for experiment, frame in results.groupby("experiment", sort=True)
        for kind, metrics in (("shift", SHIFT), ("faithfulness", FAITHFUL_METRICS))
    ]
