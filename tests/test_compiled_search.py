"""The compiled gradient search against the torch loop it stands in for, and the searches it leaves to that loop.

The independent truth here is the torch loop (autograd through the same objective) and, through the engine
tests that now run compiled by default, the closed-form counterfactuals of ``test_engine.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from recourse_sim.data import Dataset, FeatureSchema
from recourse_sim.device import denormals_kept, flush_denormals
from recourse_sim.errors import ConfigError
from recourse_sim.generators import GENERATORS, SearchSettings, make_context, search
from recourse_sim.generators import compiled_search
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.generators.terms import Energy, L1Distance
from recourse_sim.models import DeepEnsemble, LogisticRegression, MLPClassifier

# ECCCo without its conformal term (which the kernel does not compile): the energy, L1 cost and the
# small-gradient rule, so that with DiCE's diversity every term class and convergence rule of the kernel is
# exercised below.
ENERGY_SPEC = GeneratorSpec("energy", costs=((0.1, L1Distance()),), extcosts=((0.5, Energy()),),
                            convergence="threshold_and_small_gradient", tolerance=0.01, step_size=0.05)
SPECS = [
    GENERATORS["generic"](),
    GENERATORS["generic"](threshold=0.9),
    GENERATORS["gravitational"](),
    GENERATORS["claproar"](),
    GENERATORS["wachter"](),
    ENERGY_SPEC,
    GENERATORS["dice"](),
]


@pytest.fixture(scope="module")
def constrained() -> Dataset:
    """5-D data whose label depends on every feature, with every kind of constraint the kernel projects onto:
    bounds (with factuals on them, so the projection's ties are hit), increase-only, decrease-only, immutable."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, 5)).astype(np.float32)
    X[:, 0] = np.clip(X[:, 0], -1.0, 1.0)  # many rows sit exactly on the bounds of feature 0
    y = (X @ np.array([1.0, -0.8, 0.6, 0.7, 0.5]) + 0.3 * rng.normal(size=400) > 0.2).astype(np.float32)
    schema = FeatureSchema(
        names=("bounded", "up", "down", "fixed", "free"),
        mutability=("both", "increase", "decrease", "none", "both"),
        lower=(-1.0, -np.inf, -np.inf, -np.inf, -np.inf),
        upper=(1.0, np.inf, np.inf, np.inf, np.inf),
    )
    return Dataset(torch.tensor(X), torch.tensor(y), schema, "constrained")


@pytest.fixture(scope="module")
def categorical() -> Dataset:
    """Two continuous features and a one-hot group of three levels (bounded to [0, 1], as the real data's), the
    label depending on both: the search flips categories through the straight-through projection."""
    rng = np.random.default_rng(8)
    n = 400
    level = rng.integers(0, 3, size=n)
    X = np.zeros((n, 5), np.float32)
    X[:, :2] = rng.normal(size=(n, 2))
    X[np.arange(n), 2 + level] = 1.0
    y = (X[:, 0] - 0.5 * X[:, 1] + np.array([-1.0, 0.2, 1.0])[level] + 0.3 * rng.normal(size=n) > 0)
    schema = FeatureSchema(names=("a", "b", "low", "mid", "high"), mutability=("both", "decrease", "both", "both",
                                                                            "both"),
                           lower=(-np.inf, -np.inf, 0.0, 0.0, 0.0), upper=(np.inf, np.inf, 1.0, 1.0, 1.0),
                           categorical_groups=((2, 3, 4),))
    return Dataset(torch.tensor(X), torch.tensor(y.astype(np.float32)), schema, "categorical")


def _problem(model_type, dataset: Dataset, n: int = 60):
    """One model stack (one system per spec) fitted on ``dataset`` and its predicted negatives as factuals."""
    S = len(SPECS)
    X, y = dataset.X.expand(S, -1, -1).contiguous(), dataset.y.expand(S, -1).contiguous()
    model = model_type(epochs=3, seed=0, device="cpu").fit(X, y)
    negatives = dataset.X[model.predict(X)[0] == 0][:n]
    context = make_context(dataset, "cpu", data_X=X, data_y=y)
    return model, negatives.expand(S, -1, -1).contiguous(), context


def _both(model, factual, context, specs=SPECS, K=5, **kwargs):
    settings = SearchSettings(n_counterfactuals=K)
    return [search(model, factual, specs, context, settings=settings, rng=torch.Generator().manual_seed(11),
                   backend=backend, **kwargs) for backend in ("torch", "compiled")]


@pytest.mark.parametrize("model_type", [LogisticRegression, MLPClassifier, DeepEnsemble])
@pytest.mark.parametrize("K", [1, 5])
def test_compiled_equals_the_torch_loop(model_type, K, constrained):
    """Every term, rule and constraint, per system: the same steps and convergence, counterfactuals equal to
    float32 rounding (the sums run in a different order). A convergence test that sits exactly on its threshold
    could flip; on these 2 x 3 x 7 x 60 searches none does."""
    model, factual, context = _problem(model_type, constrained)
    reference, compiled = _both(model, factual, context, K=K)
    assert torch.equal(reference.steps, compiled.steps)
    assert torch.equal(reference.converged, compiled.converged)
    torch.testing.assert_close(compiled.counterfactuals, reference.counterfactuals, atol=5e-4, rtol=0)
    torch.testing.assert_close(compiled.proba, reference.proba, atol=1e-3, rtol=0)  # p is steep in x
    # the searches did something worth comparing: they moved, some converged, some ran to the cap
    assert (reference.steps > 0).float().mean() > 0.9
    assert reference.converged.any() and (~reference.converged).any()


@pytest.mark.parametrize("K", [1, 5])
def test_one_hot_groups_equal_the_torch_loop(K, categorical):
    """Each move ends on a one-hot vector, so a category flips only when one step lifts another level above the
    hot one: large steps, so that some do."""
    model, factual, context = _problem(MLPClassifier, categorical)
    specs = [*(GENERATORS["generic"](step_size=step) for step in (2.0, 1.0, 0.5, 0.01)),
             GENERATORS["dice"](step_size=1.0), GENERATORS["wachter"](step_size=1.0),
             GENERATORS["claproar"](step_size=0.2)]  # (not gravitational: at such steps it oscillates chaotically)
    reference, compiled = _both(model, factual, context, specs=specs, K=K)
    assert torch.equal(reference.steps, compiled.steps)
    torch.testing.assert_close(compiled.counterfactuals, reference.counterfactuals, atol=5e-4, rtol=0)
    group = compiled.counterfactuals[..., 2:]
    assert torch.equal(group.sum(-1), torch.ones_like(group.sum(-1))) and torch.all((group == 0) | (group == 1))
    flipped = (group != factual[:, :, None, 2:]).any(-1)
    assert flipped.any()  # some searches changed the category: the comparison covers the argmax


def test_constraints_hold_exactly(constrained):
    model, factual, context = _problem(MLPClassifier, constrained)
    _, result = _both(model, factual, context)
    cf = result.counterfactuals
    start = factual.unsqueeze(2)
    assert torch.all(cf[..., 0] >= -1.0) and torch.all(cf[..., 0] <= 1.0)
    assert torch.all(cf[..., 1] >= start[..., 1]) and torch.all(cf[..., 2] <= start[..., 2])
    assert torch.equal(cf[..., 3], start[..., 3].expand_as(cf[..., 3]))


def test_a_subset_of_the_model_stack(constrained):
    """Systems that pick rows of a larger model stack (``systems``) score with those rows' networks."""
    model, factual, context = _problem(MLPClassifier, constrained)
    systems = torch.tensor([5, 0, 3])
    specs = [GENERATORS["generic"]()] * 3
    context = dataclasses.replace(context, data_X=context.data_X[:3], data_y=context.data_y[:3])
    reference, compiled = _both(model, factual[:3], context, specs=specs, systems=systems)
    assert torch.equal(reference.steps, compiled.steps)
    torch.testing.assert_close(compiled.counterfactuals, reference.counterfactuals, atol=5e-4, rtol=0)


def test_reruns_and_thread_counts_give_identical_bits(constrained):
    model, factual, context = _problem(DeepEnsemble, constrained, n=150)
    settings = SearchSettings(n_counterfactuals=3)
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 1, 2):  # 2: the tasks run on numba's worker threads (search_all_parallel)
            torch.set_num_threads(threads)
            results.append(search(model, factual, SPECS, context, settings=settings, backend="compiled",
                                  rng=torch.Generator().manual_seed(3)))
    finally:
        torch.set_num_threads(previous)
    for other in results[1:]:
        for field in ("counterfactuals", "proba", "converged", "steps"):
            assert torch.equal(getattr(results[0], field), getattr(other, field)), field


def test_tasks_cover_every_individual_once():
    for S, B, threads in ((1, 1000, 2), (7, 130, 2), (3, 5, 4), (2, 0, 2), (4, 300, 1)):
        tasks = compiled_search._tasks(S, B, threads, lanes=64)
        covered = np.zeros((S, B), int)
        for s, first, last in tasks:
            covered[s, first:last] += 1
        assert np.all(covered == 1)


def test_searches_it_does_not_compile_run_the_torch_loop(fitted_mlp_4d, four_d):
    """``auto`` falls back (and ``compiled`` refuses, naming why) for an observer, an entropy yloss, a term the
    kernel lacks and a model that is not one of the package's networks."""
    factual = four_d.X[fitted_mlp_4d.predict(four_d.X) == 0][:8].unsqueeze(0)
    context = make_context(four_d, "cpu")
    cases = {
        "on_step": dict(specs=[GENERATORS["generic"]()], on_step=lambda record: None),
        "yloss": dict(specs=[GENERATORS["generic"]().replace(name="entropic", yloss="entropy")]),
        "ConformalSetSize": dict(specs=[GENERATORS["eccco"]()]),
    }
    for reason, case in cases.items():
        specs = case.pop("specs")
        auto = search(fitted_mlp_4d, factual, specs, context, rng=torch.Generator().manual_seed(0), **case)
        torch_loop = search(fitted_mlp_4d, factual, specs, context, rng=torch.Generator().manual_seed(0),
                            backend="torch", **case)
        assert torch.equal(auto.counterfactuals, torch_loop.counterfactuals), reason
        with pytest.raises(ConfigError, match=reason):
            search(fitted_mlp_4d, factual, specs, context, backend="compiled", **case)
    with pytest.raises(ConfigError, match="search backend.*numba.*one of auto, compiled, torch"):
        search(fitted_mlp_4d, factual, [GENERATORS["generic"]()], context, backend="numba")


def test_a_mixed_search_compiles_the_systems_it_can(constrained):
    """ECCCo (whose conformal term the kernel lacks) among compiled generators: the others still run compiled,
    then ECCCo in the torch loop, from the same random stream in that order."""
    model, factual, context = _problem(MLPClassifier, constrained)
    specs = [GENERATORS["generic"](), GENERATORS["eccco"](), GENERATORS["gravitational"](), GENERATORS["eccco"](),
             GENERATORS["dice"](), GENERATORS["claproar"](), GENERATORS["wachter"]()]
    settings = SearchSettings(n_counterfactuals=3)
    mixed = search(model, factual, specs, context, settings=settings, rng=torch.Generator().manual_seed(4))
    rng = torch.Generator().manual_seed(4)
    by_hand = {}
    for rows, backend in (([0, 2, 4, 5, 6], "compiled"), ([1, 3], "torch")):
        index = torch.tensor(rows)  # the context's data, like the model, is indexed by ``systems``
        part = search(model, factual[index], [specs[i] for i in rows], context, systems=index,
                      settings=settings, rng=rng, backend=backend)
        by_hand.update({s: (part.counterfactuals[r], part.steps[r]) for r, s in enumerate(rows)})
    for s, (counterfactuals, steps) in by_hand.items():
        assert torch.equal(mixed.counterfactuals[s], counterfactuals) and torch.equal(mixed.steps[s], steps), s


def test_other_models_are_not_compiled(four_d):
    class Tweaked(MLPClassifier):
        def log_proba_stacked(self, X, systems=None):  # a model of its own: the kernel cannot know it
            return super().log_proba_stacked(X, systems) * 0.5

    model = Tweaked(hidden_sizes=(8,), epochs=2, seed=0).fit(four_d.X, four_d.y)
    factual = four_d.X[:4].unsqueeze(0)
    with pytest.raises(ConfigError, match="Tweaked is not one of the package's"):
        search(model, factual, [GENERATORS["generic"]()], make_context(four_d, "cpu"), backend="compiled")


def test_denormals_kept_inside_a_flushing_block():
    """The compiled search keeps subnormal floats on every thread (numba's workers do not inherit the caller's
    flush-to-zero mode), and the engine's flushing comes back after it."""
    tiny = torch.tensor([1e-39])  # below float32's smallest normal number (1.2e-38)
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU has no flush-to-zero mode to switch")
    with flush_denormals():
        assert (tiny * 1.0).item() == 0.0
        with denormals_kept():
            assert (tiny * 1.0).item() == pytest.approx(1e-39, rel=1e-6)
        assert (tiny * 1.0).item() == 0.0
    assert (tiny * 1.0).item() == pytest.approx(1e-39, rel=1e-6)


# ----------------------------------------------------------------------------------------------- greedy
GREEDY_SPECS = [
    GENERATORS["greedy"](),  # the paper's: epsilon 0.1, n 10
    GENERATORS["greedy"](epsilon=0.05, n=2, max_steps=60),  # a small cap: copies use up every feature, new passes
    GENERATORS["greedy"](epsilon=0.3, threshold=0.9),
    GENERATORS["greedy"](epsilon=0.2, n=3).replace(convergence="threshold_and_small_step", tolerance=0.5),
]


@pytest.mark.parametrize("model_type", [LogisticRegression, MLPClassifier, DeepEnsemble])
@pytest.mark.parametrize("K", [1, 3])
def test_compiled_greedy_equals_the_torch_loop(model_type, K, constrained):
    """The greedy moves (one feature per copy and step, the eligible one with the largest |gradient|, blocked
    by bounds, actionability and immutability), caps, passes and stops of the torch loop: the same steps and
    convergence and counterfactuals to float32 rounding, wherever no two features tie (continuous gradients:
    none do here), and the search's generator left in the same state."""
    model, factual, context = _problem(model_type, constrained)
    specs = [*GREEDY_SPECS, GENERATORS["greedy"](epsilon=0.5), GENERATORS["greedy"](n=1), GENERATORS["greedy"]()]
    generators = {backend: torch.Generator().manual_seed(11) for backend in ("torch", "compiled")}
    reference, compiled = (search(model, factual, specs, context, settings=SearchSettings(n_counterfactuals=K),
                                  rng=generators[backend], backend=backend) for backend in ("torch", "compiled"))
    # the kernel then draws the torch loop's tie-break numbers, so later draws are the same too
    assert torch.equal(generators["torch"].get_state(), generators["compiled"].get_state())
    assert torch.equal(reference.steps, compiled.steps)
    assert torch.equal(reference.converged, compiled.converged)
    torch.testing.assert_close(compiled.counterfactuals, reference.counterfactuals, atol=5e-4, rtol=0)
    assert reference.converged.any() and (~reference.converged).any()
    assert (reference.steps > 2 * 4).any()  # n = 1 and n = 2 copies ran past a full pass over the 4 mutable features


@pytest.mark.parametrize("K", [1, 3])
def test_compiled_greedy_flips_one_hot_groups_like_the_torch_loop(K, categorical):
    """A one-hot column may move only when the move wins its group's argmax. The continuous features are
    immutable here, so recourse must change the category; epsilons from below to above what a flip takes."""
    schema = dataclasses.replace(categorical.schema, mutability=("none", "none", "both", "both", "both"))
    categories_only = Dataset(categorical.X, categorical.y, schema, "categories only")
    model, factual, context = _problem(MLPClassifier, categories_only)
    specs = [GENERATORS["greedy"](epsilon=eps, max_steps=40) for eps in (3.0, 2.5, 4.0, 6.0, 1.0, 0.3, 0.1)]
    reference, compiled = _both(model, factual, context, specs=specs, K=K)
    assert torch.equal(reference.steps, compiled.steps)
    torch.testing.assert_close(compiled.counterfactuals, reference.counterfactuals, atol=5e-4, rtol=0)
    group = compiled.counterfactuals[..., 2:]
    assert torch.all((group == 0) | (group == 1)) and torch.equal(group.sum(-1), torch.ones_like(group.sum(-1)))
    assert (group != factual[:, :, None, 2:]).any(-1).any()  # some searches changed the category


def test_compiled_greedy_breaks_ties_at_random_per_individual():
    """Two features with the same weight and scale tie at every step: each step moves one of them, chosen by
    the individual's own draws, so about half of the first moves go to each (200 individuals: 4 binomial
    standard deviations); an individual's draws depend on the seed and its position, not on the lane or thread
    that searches it."""
    values = torch.linspace(-2.0, 2.0, 101)
    X = torch.stack([values, values], 1)  # the same mean and scale in both columns
    data = Dataset(X, (X.sum(1) > 0).float(), FeatureSchema(("a", "b")), "tied")
    model = LogisticRegression(epochs=1, seed=0).fit(X, data.y)
    model.network_.weights[0].copy_(torch.ones_like(model.network_.weights[0]))
    model.network_.biases[0].fill_(-3.0)
    factual = torch.zeros(1, 200, 2)
    context = make_context(data, "cpu")
    spec = GENERATORS["greedy"](max_steps=1)
    settings = SearchSettings(init_noise=0.0)

    def first_moves(threads=1, seed=5):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            result = search(model, factual, [spec], context, settings=settings, backend="compiled",
                            rng=torch.Generator().manual_seed(seed))
        finally:
            torch.set_num_threads(previous)
        moved = (result.counterfactuals[0, :, 0] - factual[0]).abs() > 1e-3  # (B, d); a move is 0.1 sd
        assert torch.equal(moved.sum(-1), torch.ones(moved.shape[0], dtype=torch.long))  # one feature each
        return moved[:, 0]

    picks_a = first_moves()
    assert abs(picks_a.float().mean().item() - 0.5) < 4 * (0.25 / 200) ** 0.5
    assert torch.equal(first_moves(), picks_a)
    assert torch.equal(first_moves(threads=2), picks_a)  # other tasks and lanes (search_all_parallel)
    assert not torch.equal(first_moves(seed=6), picks_a)


# ----------------------------------------------------------------------------------------------- latent
LATENT_SPECS = [
    GENERATORS["revise"](),  # the paper's: lambda 0.1, step 0.05, gamma 0.5
    GENERATORS["revise"](threshold=0.9),
    GENERATORS["revise"](step_size=0.1),  # ten times the default (0.2 oscillated until the cap: see below)
    GENERATORS["revise"](step_size=0.01),
    GENERATORS["revise"](lambda_cost=1.0),
    GENERATORS["revise"]().replace(convergence="threshold_and_small_step", tolerance=0.05),
    GENERATORS["revise"]().replace(convergence="threshold_and_small_gradient", tolerance=0.05),
]


@pytest.mark.parametrize("model_type", [LogisticRegression, MLPClassifier, DeepEnsemble])
@pytest.mark.parametrize("K", [1, 3])
def test_compiled_latent_search_equals_the_torch_loop(model_type, K, constrained):
    """REVISE's descent on z through the VAE decoder, the projection onto every kind of constraint and every
    convergence rule: the same steps and convergence, counterfactuals to float32 rounding, and the same draws
    (the VAE's seed and the encoder samples), so the generator ends in the same state. (Steps large enough to
    oscillate until the cap amplify the rounding: with a step of 0.2, one logistic-regression counterfactual
    ended 1.3e-3 from the torch loop's on an AVX-512 CPU, whose torch kernels round differently; with 0.1 the
    largest difference here is 3e-6.)"""
    model, factual, context = _problem(model_type, constrained)
    generators = {backend: torch.Generator().manual_seed(11) for backend in ("torch", "compiled")}
    reference, compiled = (search(model, factual, LATENT_SPECS, context, rng=generators[backend], backend=backend,
                                  settings=SearchSettings(n_counterfactuals=K)) for backend in ("torch", "compiled"))
    assert torch.equal(generators["torch"].get_state(), generators["compiled"].get_state())
    assert torch.equal(reference.steps, compiled.steps)
    assert torch.equal(reference.converged, compiled.converged)
    torch.testing.assert_close(compiled.counterfactuals, reference.counterfactuals, atol=5e-4, rtol=0)
    torch.testing.assert_close(compiled.proba, reference.proba, atol=1e-3, rtol=0)
    assert (reference.steps > 0).float().mean() > 0.5  # (some encoder samples decode to valid points at once)
    assert reference.converged.any() and (~reference.converged).any()
    start = factual.unsqueeze(2)  # the decoded points are feasible: bounds, actionability, immutability
    cf = compiled.counterfactuals
    assert torch.all(cf[..., 0].abs() <= 1.0) and torch.all(cf[..., 1] >= start[..., 1])
    assert torch.all(cf[..., 2] <= start[..., 2]) and torch.equal(cf[..., 3], start[..., 3].expand_as(cf[..., 3]))


def test_compiled_latent_search_flips_one_hot_groups_like_the_torch_loop(categorical):
    """Decoded points pass the straight-through one-hot projection, as in the torch loop."""
    model, factual, context = _problem(MLPClassifier, categorical)
    specs = [GENERATORS["revise"](step_size=step) for step in (0.2, 0.1, 0.05)]
    reference, compiled = _both(model, factual[: len(specs)], context, specs=specs, K=3)
    assert torch.equal(reference.steps, compiled.steps)
    torch.testing.assert_close(compiled.counterfactuals, reference.counterfactuals, atol=5e-4, rtol=0)
    group = compiled.counterfactuals[..., 2:]
    assert torch.all((group == 0) | (group == 1)) and torch.equal(group.sum(-1), torch.ones_like(group.sum(-1)))
    assert (group != factual[: len(specs), :, None, 2:]).any(-1).any()


def test_compiled_latent_search_with_a_given_vae_stack(constrained):
    """A fitted VAE stack in the context serves systems by their index in the model stack (``systems``)."""
    from recourse_sim.models.vae import VAE

    model, factual, context = _problem(MLPClassifier, constrained)
    vae = VAE(epochs=5, seed=2, device="cpu").fit(context.standardizer.transform(context.data_X))
    context = dataclasses.replace(context, vae=vae)
    systems = torch.tensor([4, 1, 6])
    reference, compiled = _both(model, factual[:3], context, specs=LATENT_SPECS[:3], K=2, systems=systems)
    assert torch.equal(reference.steps, compiled.steps)
    torch.testing.assert_close(compiled.counterfactuals, reference.counterfactuals, atol=5e-4, rtol=0)


def test_latent_searches_the_kernel_cannot_serve_run_the_torch_loop_together(constrained):
    """CLUE's entropy yloss is not compiled: REVISE beside it runs in the torch loop too (the systems share one
    VAE stack), and ``compiled`` refuses, naming why, before training a VAE; so does a VAE that decodes its own
    way."""
    from recourse_sim.models.vae import VAE

    model, factual, context = _problem(MLPClassifier, constrained, n=10)
    specs = [GENERATORS["revise"](), GENERATORS["clue"]()]
    factual = factual[:2]
    auto, torch_loop = (search(model, factual, specs, context, rng=torch.Generator().manual_seed(0), backend=backend)
                        for backend in ("auto", "torch"))
    assert torch.equal(auto.counterfactuals, torch_loop.counterfactuals)
    with pytest.raises(ConfigError, match="yloss 'entropy'"):
        search(model, factual, specs, context, backend="compiled")

    class Shifted(VAE):
        def decode_stacked(self, Z, systems=None):
            return super().decode_stacked(Z, systems) + 0.1

    vae = Shifted(epochs=2, seed=0, device="cpu").fit(context.standardizer.transform(context.data_X[:1]))
    own = dataclasses.replace(context, vae=vae)
    specs = [GENERATORS["revise"]()] * 2
    auto, torch_loop = (search(model, factual, specs, own, rng=torch.Generator().manual_seed(0), backend=backend)
                        for backend in ("auto", "torch"))
    assert torch.equal(auto.counterfactuals, torch_loop.counterfactuals)
    with pytest.raises(ConfigError, match="Shifted decodes its own way"):
        search(model, factual, specs, own, backend="compiled")


# ------------------------------------------------------------------------------------------------ lanes
def _in_shared_lanes_and_alone(model, factual, specs, context, settings, monkeypatch):
    """The compiled search as the kernel runs it (up to ``LANES`` individuals of a system side by side), then with
    every individual its own task (one lane block, never moved), both from the same generator state."""

    def searched():
        return search(model, factual, specs, context, settings=settings, rng=torch.Generator().manual_seed(5),
                      backend="compiled")

    shared = searched()
    with monkeypatch.context() as patched:
        patched.setattr(compiled_search, "_tasks", lambda S, B, threads, lanes: np.array(
            [(s, b, b + 1) for s in range(S) for b in range(B)]))
        alone = searched()
    return shared, alone


def _assert_same_bits(shared, alone):
    for field in ("counterfactuals", "proba", "converged", "steps"):
        assert torch.equal(getattr(shared, field), getattr(alone, field)), field


@pytest.mark.parametrize("strategy", ["gradient", "greedy", "latent"])
def test_an_individuals_result_does_not_depend_on_who_shares_its_lanes(strategy, constrained, monkeypatch):
    """The kernel searches up to ``LANES`` individuals side by side, gives a freed lane the next one, and once
    nobody waits gathers the rest into the first lanes and runs fewer lanes, in whole blocks of ``LANE_BLOCK``.
    Searched that way, every individual's counterfactuals, steps and convergence are bit for bit those of a search
    where it is its own task: its search state, data, gravitational centre and greedy state (changes, caps,
    passes) travel with it."""
    from recourse_sim.generators import search_kernel

    specs = {"gradient": SPECS, "greedy": GREEDY_SPECS, "latent": LATENT_SPECS}[strategy]
    model, factual, context = _problem(MLPClassifier, constrained, n=search_kernel.LANES + 40)
    shared, alone = _in_shared_lanes_and_alone(model, factual[: len(specs)], specs, context,
                                               SearchSettings(n_counterfactuals=3), monkeypatch)
    assert shared.steps.shape[1] > search_kernel.LANES  # freed lanes are refilled, then the tail is gathered
    steps = shared.steps.float()
    assert (steps.max(1).values - steps.min(1).values > 10).sum() >= 2  # systems whose individuals stop apart
    _assert_same_bits(shared, alone)


def test_greedy_tie_breaks_travel_with_the_individual_between_lanes(monkeypatch):
    """Two features tie at every greedy step (the same weight and scale), so each step's pick comes from the
    individual's own tie-break stream; individuals start at different distances from the boundary, stop apart
    and are gathered into other lanes, and their moves are still those they make alone."""
    from recourse_sim.generators import search_kernel

    values = torch.linspace(-2.0, 2.0, 101)
    X = torch.stack([values, values], 1)
    data = Dataset(X, (X.sum(1) > 0).float(), FeatureSchema(("a", "b")), "tied")
    model = LogisticRegression(epochs=1, seed=0).fit(X, data.y)
    model.network_.weights[0].copy_(torch.ones_like(model.network_.weights[0]))
    model.network_.biases[0].fill_(-3.0)
    start = torch.linspace(-2.0, 1.0, search_kernel.LANES + 72)
    factual = torch.stack([start, start], 1).unsqueeze(0)
    shared, alone = _in_shared_lanes_and_alone(model, factual, [GENERATORS["greedy"]()], make_context(data, "cpu"),
                                               SearchSettings(init_noise=0.0), monkeypatch)
    assert shared.steps.max() - shared.steps.min() > 10
    _assert_same_bits(shared, alone)
