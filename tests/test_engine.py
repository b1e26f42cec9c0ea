"""The batched search engine against closed-form solutions and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recourse_sim.data import Dataset, FeatureSchema
from recourse_sim.generators import GENERATORS, SearchSettings, generate_counterfactuals, make_context, search


def _negatives(model, dataset: Dataset, n: int) -> torch.Tensor:
    return dataset.X[model.predict(dataset.X) == 0][:n]


@pytest.mark.parametrize("threshold", [0.5, 0.75, 0.9])
def test_generic_on_logistic_regression_matches_closed_form(fitted_lr, overlapping, threshold):
    """With one copy and no init noise, generic search on a linear model moves along w and stops on the
    first iterate past the gamma level set: x* = x + (logit(gamma) - w.x - b) / ||w||^2 w."""
    w = fitted_lr.network_.weights[0].reshape(-1)
    b = fitted_lr.network_.biases[0].reshape(())
    factual = _negatives(fitted_lr, overlapping, 30)
    spec = GENERATORS["generic"](threshold=threshold, max_steps=5000)
    result = generate_counterfactuals(
        fitted_lr, factual, spec, overlapping, standardize=False,
        settings=SearchSettings(n_counterfactuals=1, init_noise=0.0),
    )
    cf = result.counterfactuals[:, 0]
    assert result.converged.all()
    move = cf - factual
    cosine = torch.nn.functional.cosine_similarity(move, w.expand_as(move), dim=1)
    assert torch.all(cosine > 1 - 1e-5)
    target_logit = math.log(threshold / (1 - threshold))
    closed_form = factual + ((target_logit - factual @ w - b) / w.dot(w)).unsqueeze(1) * w
    # The search overshoots the level set by at most one step: step_size * |gradient| <= 0.01 * (||w|| + lambda).
    one_step = 0.01 * (w.norm() + 0.1)
    assert torch.all((cf - closed_form).norm(dim=1) <= one_step + 1e-5)
    assert torch.all(result.proba[:, 0] >= threshold)


def test_converged_means_every_copy_reached_threshold(fitted_lr, overlapping):
    factual = _negatives(fitted_lr, overlapping, 40)
    result = generate_counterfactuals(fitted_lr, factual, "generic", overlapping, threshold=0.8, max_steps=44)
    assert result.converged.any() and (~result.converged).any()  # the cap binds for some, not all
    assert torch.all(result.proba[result.converged] >= 0.8)
    assert torch.all(result.steps[~result.converged] == 44)
    assert torch.all(result.steps <= 44)


@pytest.mark.parametrize("name,params", [("generic", {}), ("wachter", {}), ("claproar", {}), ("generic", {"threshold": 0.9})])
def test_batched_equals_looped(fitted_mlp_4d, four_d, name, params):
    """Each row of a batched call equals the same row searched alone (rows are independent problems)."""
    factual = _negatives(fitted_mlp_4d, four_d, 12)
    settings = SearchSettings(init_noise=0.0)
    batched = generate_counterfactuals(fitted_mlp_4d, factual, name, four_d, settings=settings, **params)
    for i in range(len(factual)):
        alone = generate_counterfactuals(fitted_mlp_4d, factual[i : i + 1], name, four_d, settings=settings, **params)
        torch.testing.assert_close(batched.counterfactuals[i], alone.counterfactuals[0], atol=1e-5, rtol=0)
        assert batched.steps[i] == alone.steps[0]


def test_systems_with_different_generators_share_one_call(fitted_mlp_4d, four_d):
    """Pooling systems with different generators in one call gives each system its own generator's result."""
    factual = _negatives(fitted_mlp_4d, four_d, 16)
    names = ["generic", "claproar", "wachter"]
    stacked = fitted_mlp_4d.select_systems([0, 0, 0])
    context = make_context(four_d, "cpu", data_X=four_d.X.expand(3, -1, -1), data_y=four_d.y.expand(3, -1))
    settings = SearchSettings(init_noise=0.0)
    pooled = search(stacked, factual.expand(3, -1, -1), [GENERATORS[n]() for n in names], context, settings=settings)
    for s, name in enumerate(names):
        alone = generate_counterfactuals(fitted_mlp_4d, factual, name, four_d, settings=settings)
        torch.testing.assert_close(pooled.counterfactuals[s], alone.counterfactuals, atol=1e-5, rtol=0)


def test_same_seed_same_counterfactuals(fitted_mlp_4d, four_d):
    factual = _negatives(fitted_mlp_4d, four_d, 20)
    first = generate_counterfactuals(fitted_mlp_4d, factual, "gravitational", four_d, seed=7)
    second = generate_counterfactuals(fitted_mlp_4d, factual, "gravitational", four_d, seed=7)
    other = generate_counterfactuals(fitted_mlp_4d, factual, "gravitational", four_d, seed=8)
    assert torch.equal(first.counterfactuals, second.counterfactuals)
    assert not torch.equal(first.counterfactuals, other.counterfactuals)


def test_mitigations_move_deeper_than_generic(fitted_mlp_4d, four_d):
    factual = _negatives(fitted_mlp_4d, four_d, 40)
    p = {n: generate_counterfactuals(fitted_mlp_4d, factual, n, four_d).proba.mean() for n in
         ("generic", "gravitational", "claproar")}
    assert p["gravitational"] > p["generic"] and p["claproar"] > p["generic"]


_MUTABILITY = st.sampled_from(["both", "increase", "decrease", "none"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mutability=st.lists(_MUTABILITY, min_size=4, max_size=4),
    widths=st.lists(st.floats(0.0, 2.0), min_size=8, max_size=8),
    generator=st.sampled_from(["generic", "wachter", "gravitational", "claproar"]),
    seed=st.integers(0, 2**16),
)
def test_constraints_never_violated(fitted_mlp_4d, four_d, mutability, widths, generator, seed):
    """Immutable features never change, increase-only never decrease, decrease-only never increase, bounds
    always hold — for every copy of every individual, whatever the generator."""
    factual = _negatives(fitted_mlp_4d, four_d, 25)
    lower = (factual.min(0).values - torch.tensor(widths[:4])).tolist()
    upper = (factual.max(0).values + torch.tensor(widths[4:])).tolist()
    schema = FeatureSchema(four_d.schema.names, tuple(mutability), tuple(lower), tuple(upper))
    data = Dataset(four_d.X.clamp(torch.tensor(lower), torch.tensor(upper)), four_d.y, schema, "constrained")
    result = generate_counterfactuals(fitted_mlp_4d, factual, generator, data, seed=seed)
    cf, x = result.counterfactuals, factual.unsqueeze(1)
    for j, m in enumerate(mutability):
        if m == "none":
            assert torch.equal(cf[..., j], x[..., j].expand_as(cf[..., j]))
        if m == "increase":
            assert torch.all(cf[..., j] >= x[..., j])
        if m == "decrease":
            assert torch.all(cf[..., j] <= x[..., j])
    assert torch.all(cf >= torch.tensor(lower)) and torch.all(cf <= torch.tensor(upper))


def test_one_hot_groups_stay_valid(four_d):
    """A categorical group is a valid one-hot row in every counterfactual."""
    rng = np.random.default_rng(3)
    category = rng.integers(0, 3, size=300)
    onehot = np.eye(3, dtype=np.float32)[category]
    X = np.concatenate([four_d.X.numpy()[:, :2], onehot], axis=1)
    y = ((X[:, 0] + X[:, 4] * 2 - X[:, 2]) > 0.5).astype(np.float32)
    schema = FeatureSchema(("a", "b", "c0", "c1", "c2"), categorical_groups=((2, 3, 4),), lower=(-9, -9, 0, 0, 0),
                           upper=(9, 9, 1, 1, 1))
    data = Dataset(torch.tensor(X), torch.tensor(y), schema, "categorical")
    from recourse_sim.models import MLPClassifier

    model = MLPClassifier(hidden_sizes=(16,), epochs=20, batch_size=16, seed=0, device="cpu").fit(data.X, data.y)
    result = generate_counterfactuals(model, _negatives(model, data, 30), "generic", data)
    group = result.counterfactuals[..., 2:]
    assert torch.all((group == 0) | (group == 1))
    assert torch.all(group.sum(-1) == 1)


def test_project_each_equals_projecting_one_trial_per_feature():
    """The greedy search's shortcut: feature j's landing point when it alone moves, against the definition
    (project d trial points, trial j moving feature j only, and read feature j). Two one-hot groups, bounds,
    monotone and immutable features; moved values on a coarse lattice so argmax ties occur."""
    from recourse_sim.generators.constraints import FeatureConstraints

    schema = FeatureSchema(
        ("a", "inc", "dec", "fixed", "g0", "g1", "g2", "h0", "h1"),
        mutability=("both", "increase", "decrease", "none", "both", "both", "both", "none", "none"),
        lower=(-1, -9, -9, -9, 0, 0, 0, 0, 0), upper=(1, 9, 9, 9, 1, 1, 1, 1, 1),
        categorical_groups=((4, 5, 6), (7, 8)),
    )
    constraints = FeatureConstraints.from_schema(schema)
    generator = torch.Generator().manual_seed(0)
    lattice = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0])
    factual = constraints.project(lattice[torch.randint(0, 5, (400, 9), generator=generator)], torch.zeros(9))
    x = constraints.project(lattice[torch.randint(0, 5, (400, 9), generator=generator)], factual)
    moved = lattice[torch.randint(0, 5, (400, 9), generator=generator)]
    trials = x.unsqueeze(-2) + torch.diag_embed(moved - x)  # (n, d, d): row j has feature j moved
    expected = torch.diagonal(constraints.project(trials, factual.unsqueeze(-2)), dim1=-2, dim2=-1)
    torch.testing.assert_close(constraints.project_each(x, moved, factual), expected, rtol=0, atol=0)


def test_factuals_outside_bounds_are_refused(fitted_mlp_4d, four_d):
    schema = FeatureSchema(four_d.schema.names, lower=(0.0, -9, -9, -9), upper=(9, 9, 9, 9))
    from recourse_sim.errors import DataError

    with pytest.raises(DataError, match="'a'.*outside its bounds"):
        generate_counterfactuals(fitted_mlp_4d, torch.full((2, 4), -1.0), "generic",
                                 Dataset(four_d.X.abs(), four_d.y, schema, "bounded"))


def test_unknown_generator_name_suggests_the_closest(fitted_lr, overlapping):
    from recourse_sim.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'claproar'"):
        generate_counterfactuals(fitted_lr, overlapping.X[:2], "claproer", overlapping)
