"""Heterogeneous agents and outcome models (issue 14): each option against a hand-computed or invariant truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recourse_sim.data import DATASETS
from recourse_sim.errors import ConfigError
from recourse_sim.experiments import Scenario
from recourse_sim.metrics.hidden_costs import (
    approval_rate,
    collateral_flips,
    lender_loss,
    truly_improved,
    truth_accuracy,
)
from recourse_sim.simulation import RecourseDynamics
from recourse_sim.simulation.agents import Agents, AgentSettings, Trait, agent_rng
from recourse_sim.simulation.objective_terms import implemented_terms


def agent_scenario(agents: dict | None = None, **overrides) -> Scenario:
    raw = {
        "name": "agents", "seed": 5, "rounds": 3, "recourse_share": 0.2,
        "data": {"name": "overlapping", "n_samples": 300},
        "models": [{"name": "logistic_regression", "epochs": 10}],
        "generators": ["generic", "gravitational", "none"],
        "metrics": {"evaluate_every": 3, "permutations": 0, "mmd_samples": 50, "grid_points": 20},
        "device": "cpu",
        "agents": agents or {},
    }
    raw.update(overrides)
    return Scenario.from_dict(raw)


def run(agents: dict | None = None, rounds: int = 3, **overrides) -> tuple[RecourseDynamics, object]:
    scenario = agent_scenario(agents, rounds=rounds, **overrides)
    dynamics = RecourseDynamics(scenario.build(), seed=scenario.seed)
    return dynamics, dynamics.run()


def values(frame, metric: str, generator: str = "generic") -> np.ndarray:
    part = frame[(frame["metric"] == metric) & (frame["generator"] == generator)]
    return part.sort_values("round")["value"].to_numpy()


# ------------------------------------------------------------------------------------ the formulas
def test_hidden_cost_formulas_by_hand():
    before = torch.tensor([[True, True, False, False, True]])
    after = torch.tensor([[True, False, True, False, False]])
    bystander = torch.tensor([[True, True, True, True, False]])  # the last one moved: not a bystander
    rejections, approvals = collateral_flips(before, after, bystander)
    assert rejections.item() == pytest.approx(1 / 4) and approvals.item() == pytest.approx(1 / 4)
    y_true = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0]])
    assert lender_loss(after, y_true).item() == pytest.approx(1 / 5)  # row 2: approved, truly negative
    assert truth_accuracy(after, y_true).item() == pytest.approx(3 / 5)  # rows 0, 1 and 4 agree
    assert approval_rate(after).item() == pytest.approx(2 / 5)
    assert math.isnan(approval_rate(after, torch.zeros_like(after)).item())  # nobody selected: NaN, not 0
    moved = torch.tensor([[True, True, True, False]])
    assert truly_improved(torch.tensor([[0.0, 0.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0, 1.0, 1.0]]),
                          moved).item() == pytest.approx(1 / 3)


def test_traits_have_their_distributions():
    rng = np.random.default_rng(0)
    beta = Trait.parse("t", {"distribution": "beta", "mean": 0.3, "concentration": 5}, "share").draw(200_000, rng)
    assert beta.mean() == pytest.approx(0.3, abs=0.003) and beta.var() == pytest.approx(0.3 * 0.7 / 6, rel=0.02)
    lognormal = Trait.parse("t", {"distribution": "lognormal", "median": 2.0, "sigma": 0.5}, "amount").draw(200_000, rng)
    assert np.median(lognormal) == pytest.approx(2.0, rel=0.01)
    assert np.log(lognormal).std() == pytest.approx(0.5, rel=0.01)
    uniform = Trait.parse("t", {"distribution": "uniform", "low": 0.2, "high": 0.6}, "fraction").draw(1000, rng)
    assert uniform.min() >= 0.2 and uniform.max() <= 0.6
    assert np.all(Trait.parse("t", 0.7, "share").draw(5, rng) == 0.7)


def test_cost_choice_and_acting_by_hand(overlapping):
    settings = AgentSettings(cost_weights={"x1": 2.0}, choice="cheapest", budget=1.0, move_fraction=0.5)
    agents = Agents.draw(settings, overlapping, scale=torch.tensor([1.0, 0.5]), seed=0)
    rows = torch.tensor([[0, 1]])
    factual = torch.zeros(1, 2, 2)
    # Cost = sum_j w_j |dx_j| / s_j: x1 weighs 2, x2 is in units of 0.5.
    copies = torch.tensor([[[[1.0, 0.0], [0.0, 0.25], [0.1, 0.1]], [[1.0, 1.0], [0.0, 1.0], [3.0, 0.0]]]])
    costs = agents.cost(factual, copies, rows)
    assert torch.allclose(costs, torch.tensor([[[2.0, 0.5, 0.4], [4.0, 2.0, 6.0]]]))
    proba = torch.tensor([[[0.9, 0.8, 0.4], [0.3, 0.2, 0.1]]])
    # Row 0: the cheapest *valid* copy (copy 2 is cheaper but invalid); row 1: none valid, the cheapest.
    assert agents.choose(costs, proba).tolist() == [[1, 1]]
    acts, fraction = agents.act(rows, torch.tensor([[1.5, 3.0]]), torch.tensor([0.5, 0.5]))
    # Half the way costs 0.75 <= 1 (acts) and 1.5 > 1 (refused).
    assert acts.tolist() == [[True, False]] and fraction.tolist() == [[0.5, 0.5]]
    partial = Agents.draw(AgentSettings(budget=1.0, over_budget="partial"), overlapping, torch.ones(2), seed=0)
    acts, fraction = partial.act(rows, torch.tensor([[0.5, 4.0]]), torch.tensor([0.5, 0.5]))
    assert acts.tolist() == [[True, True]] and fraction.tolist() == [[1.0, 0.25]]  # spends exactly the budget


def test_compliance_depends_on_cost_through_cost_aversion(overlapping):
    agents = Agents.draw(AgentSettings(compliance=0.8, cost_aversion=2.0), overlapping, torch.ones(2), seed=0)
    draws = torch.linspace(0, 0.999, overlapping.n_samples)
    rows = torch.arange(overlapping.n_samples).view(1, -1)
    acts, _ = agents.act(rows, torch.full((1, overlapping.n_samples), 0.5), draws)
    assert acts.float().mean().item() == pytest.approx(0.8 * math.exp(-1.0), abs=0.01)


def test_groups_from_a_categorical_attribute_a_feature_and_a_random_split(overlapping):
    credit = DATASETS["credit_default"](400, np.random.default_rng(0))
    agents = Agents.draw(AgentSettings(groups="SEX"), credit, torch.ones(credit.n_features), seed=0)
    assert agents.group_names == ("SEX_male", "SEX_female")
    female = credit.X[:, credit.schema.names.index("SEX_female")] == 1
    assert torch.equal(agents.group == 1, female)
    split = Agents.draw(AgentSettings(groups="x1", group_threshold=0.0), overlapping, torch.ones(2), seed=0)
    assert torch.equal(split.group == 1, overlapping.X[:, 0] >= 0.0)
    random = Agents.draw(AgentSettings(groups="random", group_share=0.3), overlapping, torch.ones(2), seed=0)
    assert (random.group == 0).float().mean().item() == pytest.approx(0.3, abs=0.07)
    same = Agents.draw(AgentSettings(groups="random", group_share=0.3), overlapping, torch.ones(2), seed=0)
    assert torch.equal(random.group, same.group)  # same seed, same draws


def test_the_agents_stream_is_separate_from_the_simulations():
    first, second = agent_rng(1).random(3), agent_rng(1).random(3)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, np.random.default_rng(1).random(3))


# ---------------------------------------------------------------------------------- in the simulation
def test_the_default_agents_are_the_reference_protocol():
    """An [agents] table that spells out the defaults changes nothing, and adds no agent metrics."""
    _, default = run()
    _, spelled = run({"outcome": "model", "choice": "random", "compliance": 1.0, "move_fraction": 1.0})
    assert default.equals(spelled)
    assert "acted_share" not in set(default["metric"])


def test_nobody_complies_nobody_moves():
    dynamics, frame = run({"compliance": 0.0})
    assert torch.equal(dynamics.population.X, dynamics.population.X[:1].expand_as(dynamics.population.X))
    assert (dynamics.population.recourse_round == -1).all()
    assert np.all(values(frame, "acted_share") == 0)
    assert np.all(values(frame, "n_recourse") > 0)  # recourse was offered, and refused


def test_compliance_is_paired_and_its_rate_is_the_propensity():
    dynamics, frame = run({"compliance": 0.5}, rounds=1)
    moved = dynamics.population.recourse_round == 1
    generic, gravitational = (next(s.index for s in dynamics.systems if s.generator == g)
                              for g in ("generic", "gravitational"))
    assert torch.equal(moved[generic], moved[gravitational])  # the same people act in every system
    n_offered = values(frame, "n_recourse")[0]
    assert moved[generic].sum().item() == pytest.approx(0.5 * n_offered, abs=3 * math.sqrt(n_offered / 4))


def test_partial_moves_go_the_fraction_of_the_way():
    full, _ = run(rounds=1)
    half, frame = run({"move_fraction": 0.5}, rounds=1)
    X0 = full.config.train.X
    system = next(s.index for s in full.systems if s.generator == "generic")
    moved = full.population.recourse_round[system] == 1
    assert torch.equal(moved, half.population.recourse_round[system] == 1)  # same recipients and searches
    step_full = full.population.X[system][moved] - X0[moved]
    step_half = half.population.X[system][moved] - X0[moved]
    assert torch.allclose(step_half, 0.5 * step_full, atol=1e-6)
    assert values(frame, "move_fraction") == pytest.approx([0.5])
    # Labels of partial movers are the model's decision at the point they reached, not at the counterfactual.
    assert half.population.y[system][moved].mean() < full.population.y[system][moved].mean()


def test_budgets_refuse_or_cap_the_cost():
    _, refuse = run({"budget": 0.8})
    _, partial = run({"budget": 0.8, "over_budget": "partial"})
    assert np.nanmax(values(refuse, "agent_cost")) <= 0.8
    assert np.nanmax(values(partial, "agent_cost")) <= 0.8 + 1e-5
    assert np.nanmin(values(refuse, "acted_share")) < 1  # someone was over budget and refused
    assert np.all(values(partial, "acted_share") == 1)  # no one refuses; the costly ones stop early
    assert np.nanmin(values(partial, "move_fraction")) < 1


def test_cheapest_choice_costs_less_than_random_on_the_same_searches():
    _, random = run({"cost_weights": {"x1": 1.0}}, rounds=1)  # the defaults, spelled out: agent metrics on
    _, cheapest = run({"choice": "cheapest"}, rounds=1)
    assert values(cheapest, "agent_cost")[0] < values(random, "agent_cost")[0]
    assert values(cheapest, "validity")[0] >= values(random, "validity")[0]


def test_unchanged_outcome_is_gaming_the_true_and_recorded_labels_never_move():
    dynamics, frame = run({"outcome": "unchanged"})
    pop = dynamics.population
    y0 = dynamics.config.train.y
    assert torch.equal(pop.y, y0.expand_as(pop.y)) and torch.equal(pop.y_true, pop.y)
    assert np.all(values(frame, "truly_improved") == 0)


def test_truth_outcome_records_the_true_draw_and_follows_the_true_probability():
    dynamics, _ = run({"outcome": "truth"}, rounds=5)
    pop = dynamics.population
    assert torch.equal(pop.y, pop.y_true)  # the lender records the realised outcome
    truth = dynamics.config.train.truth
    moved = pop.recourse_round >= 1
    p_true = truth.proba(pop.X[moved])
    # Labels of movers are Bernoulli(P(y = 1 | x')): their mean matches the mean true probability.
    n = int(moved.sum())
    assert pop.y[moved].mean().item() == pytest.approx(p_true.mean().item(), abs=4 * math.sqrt(0.25 / n))


def test_model_outcome_records_the_decision_and_tracks_the_truth_beside_it():
    dynamics, frame = run(rounds=5)
    pop = dynamics.population
    moved = pop.recourse_round >= 1
    # Recorded: the model's decision at the counterfactual (1 wherever the search converged, nearly everyone);
    # true: drawn from the truth, so some movers are recorded 1 but truly 0.
    assert pop.y[moved].mean() > 0.9
    assert set(pop.y_true[moved].unique().tolist()) <= {0.0, 1.0}
    assert ((pop.y[moved] == 1) & (pop.y_true[moved] == 0)).any()
    # The truth metrics agree with a recomputation from the final state.
    system = next(s.index for s in dynamics.systems if s.generator == "generic")
    approved = dynamics.stacks[0].classifier.predict(pop.X[system:system + 1].expand(3, -1, -1))[system] == 1
    final = frame[(frame["round"] == 5) & (frame["generator"] == "generic")].set_index("metric")["value"]
    assert final["lender_loss"] == pytest.approx(lender_loss(approved, pop.y_true[system]).item())
    assert final["truth_accuracy"] == pytest.approx(truth_accuracy(approved, pop.y_true[system]).item())
    assert final["approval_rate"] == pytest.approx(approved.float().mean().item())


def test_same_seed_same_draws_with_every_option_on():
    agents = {"outcome": "truth", "compliance": {"distribution": "beta", "mean": 0.6, "concentration": 4},
              "cost_aversion": 0.3, "move_fraction": {"distribution": "uniform", "low": 0.4, "high": 1.0},
              "budget": 1.5, "over_budget": "partial", "choice": "cheapest", "groups": "random",
              "cost_weight_spread": 0.2}
    _, first = run(agents)
    _, second = run(agents)
    assert first.equals(second)
    _, other_seed = run(agents, seed=6)
    assert not first.equals(other_seed)


def test_real_data_gets_an_oracle_truth_when_the_outcome_needs_one():
    from recourse_sim.data.truth import OracleTruth

    data = {"name": "credit_default", "n_samples": 400}
    models = [{"name": "logistic_regression", "epochs": 5, "batch_size": 50}]
    dynamics, frame = run({"outcome": "truth", "groups": "SEX"}, rounds=1, data=data, models=models)
    assert isinstance(dynamics.outcome.truth, OracleTruth)
    assert {"lender_loss[SEX_female]", "truth_accuracy[SEX_male]"} <= set(frame["metric"])
    reference, _ = run(rounds=1, data=data, models=models)
    assert reference.outcome.truth is None  # no truth is fitted where none is needed


def test_group_metrics_add_up_to_the_whole():
    dynamics, frame = run({"groups": "random", "group_share": 0.4})
    group = dynamics.people.group
    sizes = torch.bincount(group).tolist()
    generic = frame[frame["generator"] == "generic"]
    for round_, part in generic.groupby("round"):
        v = part.set_index("metric")["value"]
        if round_ == 0:
            continue  # round 0 has the shift metrics only
        assert v["n_recourse[group_a]"] + v["n_recourse[group_b]"] == v["n_recourse"]
        weighted = (v["approval_rate[group_a]"] * sizes[0] + v["approval_rate[group_b]"] * sizes[1]) / sum(sizes)
        assert weighted == pytest.approx(v["approval_rate"])


def test_terms_at_the_implemented_point_by_hand(overlapping, fitted_lr):
    from recourse_sim.generators.api import make_context

    context = make_context(overlapping, "cpu")
    X, y = overlapping.X.unsqueeze(0), overlapping.y.unsqueeze(0)
    context = __import__("dataclasses").replace(context, data_X=X, data_y=y)
    factual, moved_to = X[:, :4], X[:, 4:8] + 1.0
    log_p = fitted_lr.log_proba_stacked(moved_to)[:1]
    terms = implemented_terms(fitted_lr.select_systems(torch.tensor([0])), context, factual, moved_to, log_p)
    z = context.standardizer.transform
    assert torch.allclose(terms["term_cost"], (z(moved_to) - z(factual)).norm(dim=-1), atol=1e-5)
    centre = z(X[0][y[0] == 1].mean(0))
    assert torch.allclose(terms["term_extcost_gravity"], (z(moved_to) - centre).norm(dim=-1), atol=1e-5)
    assert torch.allclose(terms["term_yloss"], -log_p)


def test_collateral_flips_are_recomputed_from_the_decisions_before_and_after_a_retraining():
    dynamics = RecourseDynamics(agent_scenario(rounds=3).build(), seed=5)
    dynamics.step()
    pop, stack = dynamics.population, dynamics.stacks[0]
    before = stack.classifier.predict(pop.X) == 1  # one stack: every system, in order
    dynamics.step()
    after = stack.classifier.predict(pop.X) == 1
    bystander = pop.recourse_round != 2
    frame = dynamics.results()
    for system in dynamics.systems:
        s = system.index
        rows = frame[(frame["system"] == system.label) & (frame["round"] == 2)].set_index("metric")["value"]
        who = bystander[s]
        expected_rejections = (before[s] & ~after[s] & who).sum().item() / who.sum().item()
        expected_approvals = (~before[s] & after[s] & who).sum().item() / who.sum().item()
        assert rows["collateral_rejections"] == pytest.approx(expected_rejections)
        assert rows["collateral_approvals"] == pytest.approx(expected_approvals)
    # Someone was flipped somewhere: the recomputation is not a comparison of zeros.
    assert (frame[frame["metric"].str.startswith("collateral")]["value"] > 0).any()


def test_hidden_costs_table_pairs_round_means_with_the_control_by_hand():
    import pandas as pd

    from recourse_sim.reporting.hidden_costs import hidden_costs_table

    rows = []
    # generic's collateral rejections per (repetition, round): rep 0 -> 0.2, 0.4; rep 1 -> 0.1, 0.3;
    # the control's: rep 0 -> 0.0, 0.2; rep 1 -> 0.1, 0.1. Round 0 values are ignored (no retraining yet).
    table = {("generic", 0): (0.9, 0.2, 0.4), ("generic", 1): (0.9, 0.1, 0.3),
             ("none", 0): (0.9, 0.0, 0.2), ("none", 1): (0.9, 0.1, 0.1)}
    for (generator, rep), series in table.items():
        for round_, value in enumerate(series):
            rows.append({"system": f"lr/{generator}/rep{rep}", "model": "lr", "generator": generator,
                         "repetition": rep, "round": round_, "metric": "collateral_rejections", "value": value})
    result = hidden_costs_table(pd.DataFrame(rows)).set_index("generator")
    assert result.loc["generic", "collateral_rejections"] == pytest.approx(0.25)  # mean of 0.3 and 0.2
    assert result.loc["none", "collateral_rejections"] == pytest.approx(0.1)
    # Paired differences per repetition: 0.3 - 0.1 = 0.2 and 0.2 - 0.1 = 0.1 -> mean 0.15, t(1) interval.
    cell = result.loc["generic", "collateral_rejections vs control"]
    half = 12.706204736 * 0.05  # t_{0.975, 1} * sd / sqrt(n): sd = 0.0707, n = 2, so sd / sqrt(n) = 0.05
    assert cell.startswith("+0.15 [") and f"{0.15 - half:+.3g}" in cell and f"{0.15 + half:+.3g}" in cell


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("agents, field", [
    ({"compliance": 1.5}, "agents.compliance"),
    ({"compliance": {"distribution": "lognormal", "median": 1, "sigma": 1}}, "agents.compliance.distribution"),
    ({"move_fraction": 0.0}, "agents.move_fraction"),
    ({"budget": -1.0}, "agents.budget"),
    ({"budget": {"distribution": "uniform", "low": 0.0, "high": 2.0}}, "agents.budget"),
    ({"outcome": "causal"}, "agents.outcome"),
    ({"outcome": "truth", "truth": "none"}, "agents.truth"),
    ({"choice": "best"}, "agents.choice"),
    ({"cost_weights": {"x1": -2.0}}, "agents.cost_weights.x1"),
    ({"group_cost_weights": {"a": {"x1": 2.0}}}, "agents.group_cost_weights"),
    ({"complience": 0.5}, "agents.complience"),
])
def test_bad_agent_options_are_refused_naming_the_field(agents, field):
    with pytest.raises(ConfigError) as error:
        agent_scenario(agents)
    assert f" {field}: got" in f" {error.value}"


@pytest.mark.parametrize("agents, data, field", [
    ({"groups": "income"}, {"name": "overlapping", "n_samples": 300}, "agents.groups"),
    ({"cost_weights": {"income": 2.0}}, {"name": "overlapping", "n_samples": 300}, "agents.cost_weights.income"),
    ({"groups": "random", "group_cost_weights": {"women": {"x1": 2.0}}}, {"name": "overlapping", "n_samples": 300},
     "agents.group_cost_weights"),
    ({"truth": "exact"}, {"name": "credit_default", "n_samples": 400}, "agents.truth"),
])
def test_options_the_data_cannot_support_are_refused_before_running(agents, data, field):
    scenario = agent_scenario(agents, data=data)
    with pytest.raises(ConfigError) as error:
        scenario.build()
    assert f" {field}: got" in f" {error.value}"
