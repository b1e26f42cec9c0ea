"""Science we stand behind: shuffled rows, the no-recourse control and attributable effects, a calibrated and
powerful domain-shift test, and shift metrics recomputed from the population (issue 11)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from recourse_sim.data import DATASETS
from recourse_sim.experiments import Scenario, run_scenario
from recourse_sim.reporting.attribution import paired_effects, summarise_effects
from recourse_sim.metrics import disagreement, f1_score, median_length_scale, mmd2_unbiased, perturbation
from recourse_sim.simulation import MetricSettings, RecourseDynamics
from recourse_sim.simulation.evaluation import ShiftEvaluator

SYNTHETIC = ("linearly_separable", "overlapping", "circles", "moons")
REAL = ("give_me_some_credit", "credit_default", "california_housing")


def _longest_run(y: np.ndarray) -> int:
    changes = np.flatnonzero(np.diff(y) != 0)
    edges = np.concatenate([[-1], changes, [len(y) - 1]])
    return int(np.diff(edges).max())


# ------------------------------------------------------------------------------------------ no hidden order
@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_rows_are_not_sorted_by_class(name):
    """In a random order of 500 + 500 labels the longest run of one label is about log2(1000) ~ 10 (P(run >= 25)
    < 1e-4); class-sorted rows have a run of 500. The split must keep the rows shuffled."""
    rng = np.random.default_rng(0)
    dataset = DATASETS[name](1000, rng)
    train, test = dataset.stratified_split(0.2, rng)
    for part in (dataset, train, test):
        assert _longest_run(part.y.numpy()) < 25


@pytest.mark.parametrize("name", REAL)
def test_real_rows_are_not_sorted_by_class(name):
    rng = np.random.default_rng(0)
    dataset = DATASETS[name](2000, rng)
    assert _longest_run(dataset.y.numpy()) < 25
    # All rows (unbalanced): the label does not follow the row order; the share of positives in the first and
    # the second half of the rows agree within 0.05 (shuffled: the difference's sd is < 0.01 for these sizes).
    y = DATASETS[name](None, rng).y.numpy()
    half = len(y) // 2
    assert abs(y[:half].mean() - y[half:].mean()) < 0.05


def _initial_fit(dataset: str, model: dict) -> tuple[float, float]:
    scenario = Scenario.from_dict({"name": "initial", "seed": 42, "rounds": 1, "device": "cpu",
                                   "data": {"name": dataset, "n_samples": 400}, "models": [model],
                                   "generators": ["generic"]})
    config = scenario.build()
    classifier = next(iter(config.models.values())).fit(config.train.X, config.train.y)
    negative = float((classifier.predict(config.train.X) == 0).float().mean())
    return negative, float(f1_score(config.test.y, classifier.predict(config.test.X)))


#: (dataset, model) -> minimal test macro-F1 of the initial model. Logistic regression cannot separate concentric
#: circles (about chance); every other pair is (nearly) separable or, for overlapping blobs, ~0.85.
MIN_F1 = {("circles", "logistic_regression"): 0.3}


@pytest.mark.parametrize("dataset", SYNTHETIC)
@pytest.mark.parametrize("model", [{"name": "logistic_regression", "epochs": 30},
                                   {"name": "mlp", "hidden_sizes": [32], "epochs": 30}], ids=["lr", "mlp"])
def test_initial_models_see_both_classes(dataset, model):
    """With class-sorted rows, batch-1 training in row order ended on one class: on circles the initial logistic
    regression predicted ~1 % negative and nobody ever got recourse. With shuffled rows the initial model predicts
    between 30 % and 70 % negative on balanced data, and its test macro-F1 is >= 0.8 (>= 0.3 for logistic regression
    on circles)."""
    negative, f1 = _initial_fit(dataset, model)
    assert 0.3 <= negative <= 0.7, negative
    assert f1 >= MIN_F1.get((dataset, model["name"]), 0.8), f1


# ------------------------------------------------------------------------------------------- the control
def _scenario(generators, **overrides) -> Scenario:
    raw = {"name": "control", "seed": 5, "rounds": 4, "repetitions": 2, "recourse_share": 0.2, "device": "cpu",
           "data": {"name": "overlapping", "n_samples": 300},
           "models": [{"name": "logistic_regression", "epochs": 20}],
           "generators": generators,
           "metrics": {"evaluate_every": 2, "permutations": 20, "grid_points": 50}}
    raw.update(overrides)
    return Scenario.from_dict(raw)


def test_control_recipients_are_chosen_but_never_move():
    run = run_scenario(_scenario(["generic", "none"]))
    dynamics, frame = run.dynamics, run.results
    train = dynamics.config.train
    for system in dynamics.systems:
        X, y = dynamics.population.X[system.index], dynamics.population.y[system.index]
        if system.generator == "none":
            assert torch.equal(X, train.X) and torch.equal(y, train.y)
            assert (dynamics.population.recourse_round[system.index] < 0).all()
        else:
            assert (dynamics.population.recourse_round[system.index] >= 0).any()
    n = frame[frame["metric"] == "n_recourse"].pivot_table(index=["repetition", "round"], columns="generator",
                                                            values="value")
    assert (n["none"] == n["generic"]).all() and (n["none"] > 0).all()  # the same recipients, chosen each round
    quality = frame[(frame["generator"] == "none") & frame["metric"].isin(["validity", "recourse_cost"])]
    assert quality["value"].isna().all()  # no recourse, so no recourse quality


def test_adding_a_control_leaves_the_other_systems_unchanged():
    """The control does not vote on the candidates and the metrics draw from their own generator, so a run with a
    control reproduces the run without it exactly (logistic regression: no dropout, no shuffling)."""
    alone = run_scenario(_scenario(["generic", "claproar"]))
    with_control = run_scenario(_scenario(["generic", "none", "claproar"]))
    for system in alone.dynamics.systems:
        twin = next(s for s in with_control.dynamics.systems
                    if (s.generator, s.repetition) == (system.generator, system.repetition))
        assert torch.equal(alone.dynamics.population.X[system.index], with_control.dynamics.population.X[twin.index])
    a = alone.results[alone.results["metric"].isin(["disagreement", "f1", "validity"])]
    b = with_control.results[with_control.results["generator"] != "none"]
    merged = a.merge(b, on=["model", "generator", "repetition", "round", "metric"])
    assert len(merged) == len(a) and np.array_equal(merged["value_x"], merged["value_y"], equal_nan=True)


def test_attributable_effects_are_paired_differences_with_a_paired_t_test():
    """Independent truth: scipy's paired t-test and t-interval on hand-made values."""
    rng = np.random.default_rng(1)
    control = rng.normal(0.10, 0.02, size=5)
    treated = control + np.array([0.05, 0.07, 0.04, 0.06, 0.08])
    rows = [{"experiment": "e", "model": "m", "generator": g, "repetition": r, "round": 10, "metric": "domain_mmd",
             "value": v} for g, values in (("generic", treated), ("none", control)) for r, v in enumerate(values)]
    rows.append({"experiment": "e", "model": "m", "generator": "generic", "repetition": 0, "round": 10,
                 "metric": "validity", "value": 1.0})  # not a shift metric: no effect
    effects = paired_effects(pd.DataFrame(rows))
    assert set(effects["metric"]) == {"domain_mmd"} and len(effects) == 5
    np.testing.assert_allclose(effects.sort_values("repetition")["effect"], treated - control)
    summary = summarise_effects(effects).iloc[0]
    diff = treated - control
    half = stats.t.ppf(0.975, 4) * diff.std(ddof=1) / np.sqrt(5)
    assert summary["mean"] == pytest.approx(diff.mean())
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert summary["p_value"] == pytest.approx(stats.ttest_rel(treated, control).pvalue)


def test_effects_need_a_control_and_refuse_two():
    frame = pd.DataFrame([{"model": "m", "generator": g, "repetition": 0, "round": 1, "metric": "f1", "value": 1.0}
                          for g in ("generic", "none", "none")])
    with pytest.raises(ValueError, match="more than one control"):
        paired_effects(frame)
    assert paired_effects(frame[frame["generator"] == "generic"]).empty


# --------------------------------------------------------------------------------- the domain-shift test
def _evaluator(train, test, **settings) -> ShiftEvaluator:
    X0, y0 = torch.cat([train.X, test.X]), torch.cat([train.y, test.y])
    return ShiftEvaluator(X0, y0, test.X, test.y, MetricSettings(**settings), torch.Generator().manual_seed(0))


def test_domain_test_is_calibrated_under_no_movement():
    """Under no movement the training positives and the held-out positives are two independent samples of one
    distribution, so the default test's false-positive rate at alpha = 0.05 is ~5 %: over 200 seeded nulls
    (overlapping blobs, a fresh dataset and split each) it must stay <= 0.08 (the 97.5 % binomial quantile for
    n = 200, p = 0.05 is 0.085). The reference code's comparison (a set with its own subset) has p ~ 1."""
    held_out, initial = [], []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        train, test = DATASETS["overlapping"](200, rng).stratified_split(0.5, rng)
        positives = train.X[train.y == 1]
        held_out.append(_evaluator(train, test, permutations=100).domain_shift(positives)[1])
        if seed < 20:  # the protocol's 80/20 split: the current positives are 80 % of the reference set
            train, test = DATASETS["overlapping"](200, rng).stratified_split(0.2, rng)
            evaluator = _evaluator(train, test, permutations=100, domain_reference="initial")
            initial.append(evaluator.domain_shift(train.X[train.y == 1])[1])
    assert np.mean(np.array(held_out) < 0.05) <= 0.08
    assert np.mean(held_out) == pytest.approx(0.5, abs=0.08)  # p-values ~ uniform under the null
    assert np.mean(initial) > 0.9  # the reference variant is not a two-sample test: it (almost) never rejects


#: Share of the training positives replaced by negatives in the power test. Credit default's two classes
#: overlap so much in feature space (its classifiers reach F1 ~0.7) that a 20 % swap is detected in only a
#: minority of draws by any length-scale (benchmarks/results/shift_test_calibration.md), so it gets 50 %.
PLANTED = {"give_me_some_credit": 0.2, "california_housing": 0.2, "credit_default": 0.5}


@pytest.mark.parametrize("name", REAL)
def test_domain_test_detects_a_planted_shift_on_real_data(name):
    """Power on the data we ship, at the SaTML experiments' size (5,000 balanced rows, 80/20): replace a share of
    the training positives by training negatives; the default test (median heuristic, float64) rejects at
    p < 0.05. (Issue 11 measured p = 0.23 on GMSC with the paper's l = 0.5, and p = 1 for every 29-D test in
    float32.) Calibration and power over 100 draws: benchmarks/shift_test_calibration.py."""
    rng = np.random.default_rng(0)
    train, test = DATASETS[name](5000, rng).stratified_split(0.2, rng)
    positives, negatives = train.X[train.y == 1], train.X[train.y == 0]
    k = int(PLANTED[name] * len(positives))
    shifted = torch.cat([positives[k:], negatives[:k]])
    assert _evaluator(train, test).domain_shift(shifted)[1] < 0.05


def test_median_length_scale_is_the_median_pairwise_distance():
    X = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # distances 3, 4, 5
    assert median_length_scale(X) == pytest.approx(4.0)


# ------------------------------------------------------------- shift metrics recomputed from the population
@pytest.mark.parametrize("definitions", ["code", "paper"])
def test_shift_metrics_equal_a_recomputation_from_the_population(definitions):
    """After two rounds every reported shift metric equals an independent recomputation from the state:
    the domain MMD from the system's current *positives* against the held-out positives, disagreement and F1
    from the models' predictions, perturbation from the parameters (paper: against the previous *round*)."""
    scenario = _scenario(["generic"], rounds=2, repetitions=1,
                         metrics={"evaluate_every": 1, "permutations": 0, "grid_points": 50,
                                  "definitions": definitions})
    dynamics = RecourseDynamics(scenario.build(), seed=scenario.seed)
    stack = dynamics.stacks[0]
    dynamics.step()
    previous = [p.clone() for p in stack.classifier.parameters_stacked()]
    dynamics.step()
    frame = dynamics.results()
    reported = frame[frame["round"] == 2].set_index("metric")["value"]
    config, pop = dynamics.config, dynamics.population
    test_positives = config.test.X[config.test.y == 1].double()
    positives = pop.X[0][pop.y[0] == 1].double()
    scale = median_length_scale(torch.cat([config.train.X, config.test.X])[torch.cat([config.train.y, config.test.y]) == 1])
    assert reported["domain_mmd"] == pytest.approx(float(mmd2_unbiased(test_positives, positives, scale)), rel=1e-6)
    X0 = torch.cat([config.train.X, config.test.X])
    initial = dynamics.initial_classifiers[stack.name]
    assert reported["disagreement"] == pytest.approx(float(disagreement(initial.proba_positive(X0),
                                                                        stack.classifier.proba_positive(X0))[0]))
    assert reported["f1"] == pytest.approx(float(f1_score(config.test.y, stack.classifier.predict(config.test.X)[0])))
    p0, p_now = initial.proba_positive(X0)[0], stack.classifier.proba_positive(X0)[0]
    if definitions == "paper":  # mean (p_t - 0.5)^2 over the initial X (the paper's text)
        expected_decisiveness = float(((p_now - 0.5) ** 2).mean())
    else:  # | ||p_0 - 0.5||_2 - ||p_t - 0.5||_2 | (the reference code)
        expected_decisiveness = abs(float((p0 - 0.5).norm()) - float((p_now - 0.5).norm()))
    assert reported["decisiveness"] == pytest.approx(expected_decisiveness, rel=1e-5)
    reference = previous if definitions == "paper" else list(initial.parameters_stacked())
    expected = perturbation(stack.classifier.parameters_stacked(), reference, definition=definitions, stacked=True)
    assert reported["perturbation"] == pytest.approx(float(expected[0]), rel=1e-6)


def test_relabelling_uses_the_pre_refit_model_at_the_implemented_counterfactual(monkeypatch):
    """Each mover's new row is one of its K counterfactuals, and its new label is the *pre-refit* model's
    decision at that very row (Altmeyer et al. 2023: y <- M(x')). A short, noisy search leaves many copies
    invalid, so relabelling everyone 1, or labelling from another copy, fails this test."""
    import recourse_sim.simulation.model as simulation

    seen = {}

    def spy(model, factual, generators, context, **kwargs):
        result = search(model, factual, generators, context, **kwargs)
        S, B, K, d = result.counterfactuals.shape
        seen["cf"] = result.counterfactuals.clone()
        seen["p"] = model.proba_positive(result.counterfactuals.reshape(S, B * K, d)).view(S, B, K).clone()
        return result

    search = simulation.search
    monkeypatch.setattr(simulation, "search", spy)
    scenario = _scenario([{"name": "generic", "max_steps": 3}], rounds=1, repetitions=1,
                         search={"init_noise": 1.0})
    dynamics = RecourseDynamics(scenario.build(), seed=scenario.seed)
    before = dynamics.population.X.clone()
    dynamics.step()
    pop = dynamics.population
    rows = (pop.recourse_round[0] == 1).nonzero().flatten()
    assert len(rows) > 5
    moved_rows = torch.nonzero((before[0] != pop.X[0]).any(1)).flatten()
    assert set(moved_rows.tolist()) <= set(rows.tolist())
    cf, p = seen["cf"][0], seen["p"][0]
    order = torch.argsort(rows)  # recipients are searched in sorted row order
    labels = []
    for column, row in enumerate(rows[order].tolist()):
        match = (cf[column] == pop.X[0, row]).all(-1).nonzero().flatten()
        assert len(match) >= 1, f"row {row} is not one of its counterfactuals"
        label = float(p[column, match[0]] >= 0.5)
        assert pop.y[0, row].item() == label
        labels.append(label)
    assert 0 < np.mean(labels) < 1  # both outcomes occur, so "always 1" cannot pass


def test_a_non_finite_counterfactual_is_not_implemented_and_is_counted(monkeypatch):
    """A diverged search (NaN or inf) must not poison the population: that recipient stays, is counted in
    ``n_nonfinite`` and left out of validity and cost; the others move as usual."""
    import recourse_sim.simulation.model as simulation

    def diverging(model, factual, generators, context, **kwargs):
        result = search(model, factual, generators, context, **kwargs)
        result.counterfactuals[:, 0] = float("nan")  # the first recipient of every system, all K copies
        return result

    search = simulation.search
    monkeypatch.setattr(simulation, "search", diverging)
    scenario = _scenario(["generic"], rounds=1, repetitions=1)
    dynamics = RecourseDynamics(scenario.build(), seed=scenario.seed)
    before = dynamics.population.X.clone()
    dynamics.step()
    frame = dynamics.results().set_index("metric")["value"]
    assert torch.isfinite(dynamics.population.X).all()
    assert frame["n_nonfinite"] == 1 and frame["n_recourse"] > 1
    moved = int((before[0] != dynamics.population.X[0]).any(1).sum())
    assert 0 < moved <= frame["n_recourse"] - 1
    assert np.isfinite(frame["recourse_cost"]) and 0 <= frame["validity"] <= 1


def test_pairing_by_model_shares_recipients_within_a_model_only():
    """``pairing = "model"``: the generators of one model share their recipients, drawn from the rows that model's
    systems all predict negative, while another model no longer vetoes them (the reference pairs across models)."""
    scenario = _scenario(["generic", "none"], rounds=1, repetitions=1, pairing="model",
                         models=[{"name": "logistic_regression", "epochs": 20},
                                 {"name": "mlp", "hidden_sizes": [8], "epochs": 10}])
    dynamics = RecourseDynamics(scenario.build(), seed=scenario.seed)
    assert [g.tolist() for g in dynamics.recipient_groups] == [[0, 1], [2, 3]]
    negative = {stack.name: (stack.classifier.predict(dynamics.population.X[stack.systems]) == 0).all(0)
                for stack in dynamics.stacks}
    dynamics.step()
    frame = dynamics.results()
    n = frame[frame["metric"] == "n_recourse"].set_index("system")["value"]
    for stack in dynamics.stacks:
        expected = round(0.2 * int(negative[stack.name].sum()))
        assert n[f"{stack.name}/generic/rep0"] == n[f"{stack.name}/none/rep0"] == expected
    moved = dynamics.population.recourse_round[0] == 1
    assert negative["logistic_regression"][moved].all()
