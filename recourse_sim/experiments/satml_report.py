"""The SaTML 2023 headline findings, checked against a results table, and the markdown report.

Each finding is computed from the final round, averaging over repetitions as the paper does (its
significance tables average the permutation p-values of the 5 folds). "Significant" means mean p < 0.05.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recourse_sim.experiments.satml import REAL, SYNTHETIC, final_round_table

MITIGATIONS = ("generic_conservative", "gravitational", "claproar")
MAIN_GENERATORS = ("generic", "greedy", "revise", "dice")
ALPHA = 0.05


@dataclass(frozen=True)
class Finding:
    claim: str
    ours: str
    holds: bool | None  # None: not checkable with this run (e.g. an experiment was not run)


def _share_significant(table: pd.DataFrame, column: str) -> pd.Series:
    return table.groupby("experiment")[column].apply(lambda p: float((p < ALPHA).mean()))


def _fmt_shares(shares: pd.Series) -> str:
    return ", ".join(f"{k} {v:.0%}" for k, v in shares.items())


def findings(frame: pd.DataFrame) -> list[Finding]:
    """Evaluate the paper's qualitative claims on a (possibly partial) reproduction results table."""
    table = final_round_table(frame)
    experiments = set(table["experiment"])
    generators = set(table["generator"])
    out: list[Finding] = []

    main = table[table["generator"].isin(MAIN_GENERATORS)]  # the paper's Section 5 generators
    if "domain_mmd_pvalue" in main and not main.empty:
        shares = _share_significant(main, "domain_mmd_pvalue")
        others = shares.drop("circles", errors="ignore")
        holds = (bool((others >= 0.5).all() and shares["circles"] < others.min())
                 if "circles" in shares and len(others) else None)
        out.append(Finding("Significant domain shift everywhere except circles (share of model x generator "
                           "systems with p < 0.05; generic, greedy, REVISE, DiCE)", _fmt_shares(shares), holds))
    if "model_mmd_pvalue" in main and not main.empty:
        syn = main[main["experiment"].isin(SYNTHETIC)]
        by_model = syn.groupby("model")["model_mmd_pvalue"].apply(lambda p: float((p < ALPHA).mean()))
        networks = by_model.drop("logistic_regression", errors="ignore")
        holds = (bool(by_model["logistic_regression"] > networks.max())
                 if "logistic_regression" in by_model and len(networks) else None)
        out.append(Finding("Model shift on the data (sample PP-MMD) is significant mostly for logistic regression; "
                           "the paper's neural networks are not significant on linearly separable, circles and "
                           "moons (share of synthetic systems with p < 0.05)", _fmt_shares(by_model), holds))

    synthetic = table[table["experiment"].isin(SYNTHETIC) & (table["generator"] == "generic")]
    if not synthetic.empty and {"logistic_regression", "mlp", "deep_ensemble"} <= set(synthetic["model"]):
        by_model = synthetic.groupby("model")["disagreement"].mean()
        holds = bool(by_model["logistic_regression"] > max(by_model["mlp"], by_model["deep_ensemble"]))
        out.append(Finding("Effects largest for logistic regression; MLP and deep ensemble similar "
                           "(mean final disagreement, generic, synthetic data)",
                           ", ".join(f"{m} {v:.3f}" for m, v in by_model.items()), holds))

    if "overlapping" in experiments and {"f1_change", "disagreement"} <= set(table.columns):
        part = table[(table["experiment"] == "overlapping") & table["generator"].isin(MAIN_GENERATORS)]
        drop = -part["f1_change"].min() * 100
        disagree = part["disagreement"].max() * 100
        out.append(Finding("Overlapping data: F1 falls 5-10+ points; disagreement reaches ~25%",
                           f"largest F1 drop {drop:.1f} points, largest disagreement {disagree:.1f}%",
                           bool(drop >= 3.0 and disagree >= 10.0)))

    if "revise" in generators and {"model_mmd_grid", "domain_mmd"} <= set(table.columns):
        syn = table[table["experiment"].isin(SYNTHETIC) & table["generator"].isin(MAIN_GENERATORS)]
        if not syn.empty:
            ranking = syn.groupby("generator")["model_mmd_grid"].mean().sort_values()
            out.append(Finding("REVISE has the lowest model shift on synthetic data (grid PP-MMD)",
                               "ranking " + " < ".join(f"{g} ({v:.4f})" for g, v in ranking.items()),
                               bool(ranking.index[0] == "revise")))
        real = table[table["experiment"].isin(REAL) & table["generator"].isin(MAIN_GENERATORS)]
        if not real.empty:
            ranking = real.groupby("generator")["domain_mmd"].mean().sort_values(ascending=False)
            out.append(Finding("REVISE has the largest domain shift on real data",
                               "ranking " + " > ".join(f"{g} ({v:.4f})" for g, v in ranking.items()),
                               bool(ranking.index[0] == "revise")))

    if "generic" in generators and set(MITIGATIONS) <= generators:
        cells = table.set_index(["experiment", "model", "generator"])
        for metric, label in (("model_mmd", "model shift"), ("domain_mmd", "domain shift")):
            shares = {}
            for mitigation in MITIGATIONS:
                ours = cells.xs(mitigation, level="generator")[metric]
                generic = cells.xs("generic", level="generator")[metric]
                shares[mitigation] = float((ours <= generic).mean())
            out.append(Finding(f"All three mitigations reduce {label} relative to generic "
                               "(share of experiment x model cells where the mitigation is at or below generic)",
                               ", ".join(f"{k} {v:.0%}" for k, v in shares.items()),
                               bool(min(shares.values()) >= 0.5)))
        mit = table[table["generator"].isin(MITIGATIONS)]
        best = mit.loc[mit.groupby(["experiment", "model"])["domain_mmd"].idxmin(), "generator"]
        share = float((best == "claproar").mean())
        out.append(Finding("ClaPROAR is especially good at reducing domain shift (share of cells where it is the "
                           "lowest of the three mitigations)", f"{share:.0%}", bool(share >= 1 / 3)))
        if "linearly_separable" in experiments:
            ls = mit[mit["experiment"] == "linearly_separable"].groupby("generator")["model_mmd"].mean().sort_values()
            out.append(Finding("Gravitational is best on linearly separable data (model shift)",
                               "ranking " + " < ".join(f"{g} ({v:.4f})" for g, v in ls.items()),
                               bool(ls.index[0] == "gravitational")))
    return out


def reliability_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean share of recipients still approved k rounds later, per generator (all experiments and models)."""
    rel = frame[frame["metric"].str.startswith("reliability_lag")]
    if rel.empty:
        return pd.DataFrame()
    table = rel.pivot_table(index="generator", columns="metric", values="value", aggfunc="mean")
    return table[sorted(table.columns, key=lambda c: int(c.removeprefix("reliability_lag")))]


def cost_trend_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean cost of recourse in the first vs the last fifth of the rounds, per generator."""
    cost = frame[frame["metric"] == "recourse_cost"]
    if cost.empty:
        return pd.DataFrame()
    horizon = cost["round"].max()
    early = cost[cost["round"] <= max(1, horizon // 5)].groupby("generator")["value"].mean()
    late = cost[cost["round"] > horizon - max(1, horizon // 5)].groupby("generator")["value"].mean()
    return pd.DataFrame({"early": early, "late": late, "change_%": 100 * (late / early - 1)})


def _markdown(table: pd.DataFrame, floatfmt: str = ".4g") -> str:
    if table.empty:
        return "_(no data)_"
    columns = list(table.columns)
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    for row in table.itertuples(index=False):
        cells = [format(v, floatfmt) if isinstance(v, (float, np.floating)) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_markdown(frame: pd.DataFrame, seconds: float, quick: bool, figures: list[str]) -> str:
    """The reproduction report: findings, final-round tables, beyond-the-paper analyses, figure index."""
    table = final_round_table(frame)
    columns = ["experiment", "model", "generator", "domain_mmd", "domain_mmd_pvalue", "model_mmd",
               "model_mmd_pvalue", "model_mmd_grid_pvalue", "disagreement", "decisiveness", "f1_change",
               "recourse_cost", "validity"]
    rounds = int(frame["round"].max())
    reps = int(frame["repetition"].max()) + 1
    lines = [
        "# SaTML 2023 reproduction report" + (" (quick)" if quick else ""),
        "",
        f"Altmeyer et al., *Endogenous Macrodynamics in Algorithmic Recourse* (IEEE SaTML 2023). {rounds} rounds, "
        f"{reps} repetitions, experiments: {', '.join(sorted(set(frame['experiment'])))}. Wall time of the last "
        f"invocation {seconds / 60:.1f} min (cells resumed from the stores are not counted).",
        "",
        "## Headline findings",
        "",
        "| claim (paper) | ours | holds |",
        "|---|---|---|",
    ]
    for f in findings(frame):
        mark = {True: "yes", False: "**no**", None: "n/a"}[f.holds]
        lines.append(f"| {f.claim} | {f.ours} | {mark} |")
    lines += ["", f"## Final round (mean over repetitions; p-values are means of the {reps} permutation p-values)", "",
              _markdown(table[[c for c in columns if c in table]]), "",
              "## Beyond the paper", "", "### Recourse reliability",
              "Share of individuals whose latest recourse was k rounds ago that the retrained model still approves "
              "(mean over rounds, experiments and models).", "", _markdown(reliability_table(frame).reset_index()), "",
              "### Cost of recourse over rounds",
              "Mean distance moved by recipients early (first fifth of the rounds) vs late (last fifth).", "",
              _markdown(cost_trend_table(frame).reset_index()), "", "## Figures", ""]
    lines += [f"- `{name}`" for name in figures]
    return "\n".join(lines) + "\n"
