"""The one table of the metrics a simulation reports: what each means, how a figure labels it, its unit.

Result tables, figures, reports and the dashboard read names, labels and units from here; the formulas live in
the modules beside this one (:mod:`~recourse_sim.metrics.mmd`, :mod:`~recourse_sim.metrics.model_shift`,
:mod:`~recourse_sim.metrics.performance`, :mod:`~recourse_sim.metrics.recourse`,
:mod:`~recourse_sim.metrics.faithfulness`).
"""

from __future__ import annotations

from dataclasses import dataclass

from recourse_sim.registry import Registry

#: The lags (rounds since an individual's latest recourse) at which reliability is reported.
RELIABILITY_LAGS = (0, 1, 5, 10)
#: The L-infinity radii (standardised feature units) of the adversarial-robustness metrics; the CT paper sweeps
#: epsilon over [0, 0.1]. Fixed here because each radius names a metric (``fgsm_accuracy_eps0.05``).
ROBUSTNESS_EPSILONS = (0.05, 0.1)
#: The attacks of the robustness metrics (CT Sec. 5.8: FGSM, and PGD with 40 steps of 0.01).
ROBUSTNESS_ATTACKS = ("fgsm", "pgd")


def robustness_metric(attack: str, epsilon: float) -> str:
    """The name of the accuracy under ``attack`` at radius ``epsilon``: ``pgd_accuracy_eps0.1``."""
    return f"{attack}_accuracy_eps{epsilon:g}"


@dataclass(frozen=True)
class MetricInfo:
    """``description``: one line on the definition; ``label``: a figure title; ``unit``: the axis unit, if any."""

    description: str
    label: str
    unit: str | None = None

    def __str__(self) -> str:
        return self.description


_MMD = "MMD², dimensionless"

METRICS: Registry[MetricInfo] = Registry("metric")

for _name, _info in {
    "domain_mmd": MetricInfo(
        "Unbiased MMD^2 between the current training positives and the never-moved held-out (test) positives "
        "(default; Gaussian kernel, median-heuristic length-scale, <=1000 samples per side); "
        "domain_reference='initial': the reference code's initial positives (train+test at t=0) vs current "
        "positives", "Domain shift (MMD²)", _MMD),
    "model_mmd": MetricInfo(
        "Unbiased MMD^2 between the initial and current models' predicted probabilities on the initial X "
        "(PP-MMD)", "Model shift (PP-MMD²)", _MMD),
    "model_mmd_grid": MetricInfo(
        "PP-MMD on 1000 random points of a 100-step lattice spanning each feature's range",
        "Model shift on grid (PP-MMD²)", _MMD),
    "perturbation": MetricInfo(
        "Parameter change: mean over tensors of ||theta_t - theta_0||_2 / numel (code); paper: "
        "sum ||theta_t - theta_{t-1}||^2", "Parameter perturbation"),
    "disagreement": MetricInfo(
        "Share of initial X whose label differs between the initial and current model",
        "Disagreement with t=0 model", "share"),
    "decisiveness": MetricInfo(
        "| ||p_0 - 0.5||_2 - ||p_t - 0.5||_2 | over initial X (code); paper: mean (p_t - 0.5)^2",
        "Decisiveness change"),
    "accuracy": MetricInfo("Accuracy of the current model on the untouched test set", "Test accuracy", "share"),
    "f1": MetricInfo("Macro F1 of the current model on the untouched test set", "Test F1 (macro)"),
    "f1_change": MetricInfo("F1 on the test set minus the initial model's F1 (round 0)", "Δ test F1 vs t=0"),
    "validity": MetricInfo("Share of this round's counterfactuals classified in the target class",
                           "Validity of recourse", "share"),
    "recourse_cost": MetricInfo("Mean Euclidean distance between factuals and their counterfactuals",
                                "Cost of recourse (L2)", "feature units"),
    "n_recourse": MetricInfo("Number of individuals given recourse this round", "Individuals given recourse",
                             "individuals"),
    "n_nonfinite": MetricInfo(
        "Recipients whose chosen counterfactual was not a finite point (a diverged search); they do not move "
        "and are left out of validity and cost", "Non-finite counterfactuals", "individuals"),
    "search_steps": MetricInfo("Mean number of counterfactual search iterations this round", "Search iterations",
                               "iterations"),
    "acted_share": MetricInfo(
        "Share of this round's recipients (with a finite counterfactual) who acted on it ([agents] compliance and "
        "budget)", "Recipients who acted", "share"),
    "agent_cost": MetricInfo(
        "Mean of the movers' own cost sum_j w_ij |x'_j - x_j| / s_j of the move they made ([agents] cost weights; "
        "standardised units)", "Movers' own cost", "weighted L1"),
    "move_fraction": MetricInfo("Mean share of the way to the counterfactual the movers went ([agents] partial "
                                "moves and budgets)", "Share of the way moved", "share"),
    "term_yloss": MetricInfo("-log p(y=1|x') at the points movers moved to (the objective's yloss)",
                             "yloss at the implemented point"),
    "term_cost": MetricInfo("||x' - x||_2 in the search space at the implemented points (the individual cost term)",
                            "Cost term at the implemented point", "standardised units"),
    "term_extcost_gravity": MetricInfo(
        "||x' - c||_2 in the search space, c the mean of the system's target-class data (gravitational's "
        "external cost) at the implemented points", "External cost: distance to target class",
        "standardised units"),
    "term_extcost_loss": MetricInfo(
        "BCE(M(x'), yhat(x')) at the implemented points where valid (ClaPROAR's external cost)",
        "External cost: model loss at x'"),
    "approval_rate": MetricInfo("Share of the current population the model approves, after this round's retraining",
                                "Approval rate", "share"),
    "collateral_rejections": MetricInfo(
        "Share of bystanders (features unchanged this round) approved before this round's retraining and "
        "rejected after it", "Collateral rejections", "share of bystanders"),
    "collateral_approvals": MetricInfo(
        "Share of bystanders rejected before this round's retraining and approved after it",
        "Collateral approvals", "share of bystanders"),
    "lender_loss": MetricInfo(
        "Share of the current population approved but truly negative (true labels: the data's, then the outcome "
        "model's)", "Lender's realised loss", "share of population"),
    "truth_accuracy": MetricInfo("Share of the current population whose decision equals its true label",
                                 "Accuracy against the truth", "share"),
    "truly_improved": MetricInfo("Share of this round's movers whose true label went from 0 to 1",
                                 "Movers truly improved", "share"),
    **{
        f"reliability_lag{lag}": MetricInfo(
            f"Share of individuals whose latest recourse was {lag} round(s) ago that the model, after this "
            "round's retraining, still approves", f"Recourse reliability (lag {lag})", "share")
        for lag in RELIABILITY_LAGS
    },
    # The [metrics] faithfulness metrics (metrics/faithfulness.py), every evaluated round, in the order of the
    # ECCCo/CT evaluations: plausibility of the implemented counterfactuals, then the model's view of them
    # (conformal uncertainty), then the model's robustness, then recourse under protected features.
    "implausibility": MetricInfo(
        "Mean over the implemented counterfactuals (everyone who implemented recourse so far, where they are now) "
        "of the mean L2 distance to their 100 nearest target-class rows of the system's current training data, "
        "themselves excluded (ECCCo.jl)", "Implausibility (current target data)", "feature units"),
    "implausibility_initial": MetricInfo(
        "As implausibility, against the target-class rows of the initial (t = 0) training data",
        "Implausibility (t=0 target data)", "feature units"),
    "ip_star": MetricInfo(
        "CT's IP*: unbiased MMD^2 between the implemented counterfactuals (<= mmd_samples) and the never-moved "
        "held-out (test) positives; Gaussian kernel with the domain test's length-scale (CT paper: 0.5; its "
        "code: 5.0)", "IP* (MMD² to target class)", _MMD),
    "unfaithfulness": MetricInfo(
        "ECCCo's unfaithfulness: mean L2 distance of the implemented counterfactuals to the current model's own "
        "samples of the target class (SGLD from fresh chains: metrics.sgld_chains = 50, sgld_steps = 500, keep the "
        "sgld_keep = 25 of lowest energy; the true mean, twice ECCCo.jl's halved values)",
        "Unfaithfulness (distance to model samples)", "feature units"),
    "set_size": MetricInfo(
        "Mean size of the conformal prediction set {y : 1 - p_y(x') <= q} at the implemented counterfactuals; q "
        "split-calibrated on the held-out test set at coverage 0.95 (or in-sample: metrics.conformal_calibration)",
        "Conformal set size at x'", "labels"),
    "uncertainty": MetricInfo(
        "ECCCo's uncertainty: mean smooth set size max(0, sum_y sigmoid((q - s_y)/T) - kappa), T = 0.1, kappa = 1, "
        "at the implemented counterfactuals (q as for set_size)", "Uncertainty at x' (Ω)"),
    **{
        robustness_metric(attack, eps): MetricInfo(
            f"Accuracy of the current model on the held-out test set under {attack.upper()} "
            f"{'(40 steps of 0.01) ' if attack == 'pgd' else ''}with L-inf radius {eps:g} in standardised "
            "feature units (each feature's standard deviation on the initial data)",
            f"{attack.upper()} accuracy (ε = {eps:g})", "share")
        for attack in ROBUSTNESS_ATTACKS for eps in ROBUSTNESS_EPSILONS
    },
    "protected_cost": MetricInfo(
        "Mean L1 cost (factual -> counterfactual) of the valid counterfactuals of the system's generator rerun "
        "on a sample of the currently rejected with the protected features immutable (metrics."
        "protected_features); nobody moves", "Cost of recourse, protected features fixed", "feature units (L1)"),
    "protected_validity": MetricInfo(
        "Share of those counterfactuals (all K copies) that are valid", "Validity, protected features fixed",
        "share"),
}.items():
    METRICS.register(_name, _info)
    if _name.endswith("mmd") or _name == "model_mmd_grid":
        METRICS.register(f"{_name}_pvalue", MetricInfo(
            f"Permutation p-value of {_name} (100 permutations, share of null >= observed)",
            f"p-value: {_info.label}"))
del _name, _info


#: The metrics a run and the reproduction report plot as the hidden costs of recourse (where present).
HIDDEN_COST_METRICS = ("collateral_rejections", "collateral_approvals", "lender_loss", "truth_accuracy",
                       "term_extcost_gravity", "term_extcost_loss")


def group_metric(metric: str, group: str) -> str:
    """The name of ``metric`` restricted to one group of individuals: ``validity[female]``."""
    return f"{metric}[{group}]"


def split_group(metric: str) -> tuple[str, str | None]:
    """``validity[female]`` -> ``("validity", "female")``; a metric without a group -> ``(metric, None)``."""
    if metric.endswith("]") and "[" in metric:
        base, group = metric[:-1].split("[", 1)
        return base, group
    return metric, None


def metric_label(metric: str, units: bool = False) -> str:
    """Human-readable label of a metric (``domain_mmd`` -> "Domain shift (MMD²)"), optionally with its unit; a
    group's metric names its group (``validity[female]`` -> "Validity of recourse (female)")."""
    base, group = split_group(metric)
    if base not in METRICS:
        return metric.replace("_", " ").capitalize()
    info = METRICS[base]
    label = info.label if group is None else f"{info.label} ({group})"
    return f"{label} [{info.unit}]" if units and info.unit else label
