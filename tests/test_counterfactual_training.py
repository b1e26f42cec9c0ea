"""Counterfactual Training (recourse_sim.training): the objective by hand, the epoch's counterfactual tuples (targets,
nascent adversarial examples, fallback, protection), equality of the "baseline" objective with conventional
training, an effect on plausibility, determinism, and the scenario key end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from recourse_sim.data import DATASETS, Dataset, FeatureSchema
from recourse_sim.errors import ConfigError
from recourse_sim.experiments.scenario import Scenario
from recourse_sim.generators import SearchSettings, generate_counterfactuals, make_context
from recourse_sim.generators.constraints import FeatureConstraints
from recourse_sim.models import DeepEnsemble, LogisticRegression, MLPClassifier
from recourse_sim.models.custom import ModuleClassifier
from recourse_sim.simulation import RecourseDynamics
from recourse_sim.training import CounterfactualTraining
from recourse_sim.training.counterfactuals import Tuples, ecco_spec, protect_immutable
from recourse_sim.training.parameters import trainable


def blobs(n: int = 120, seed: int = 0, mutability: tuple[str, str] = ("both", "both")) -> Dataset:
    """Two 2-D Gaussian classes at (-1, -1) and (1, 1), standard deviation 0.6, rows alternating by class."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.float32)
    X = (np.where(y[:, None] == 1, 1.0, -1.0) + 0.6 * rng.standard_normal((n, 2))).astype(np.float32)
    return Dataset(torch.tensor(X), torch.tensor(y), FeatureSchema(("x1", "x2"), mutability=mutability))


def trained(data: Dataset, objective: str = "baseline", model=None, **kw) -> CounterfactualTraining:
    model = model or LogisticRegression(epochs=10, batch_size=10, learning_rate=0.02)
    ct = CounterfactualTraining(model, objective=objective, seed=0, device="cpu", **kw)
    return ct.use_search_context(make_context(data)).fit(data.X, data.y)


# ------------------------------------------------------------------------------------------- objective
def test_objective_terms_by_hand_on_a_linear_model():
    """f(x) = x1 - 2 x2 + 0.5; E(x, 1) = -f(x), E(x, 0) = f(x) (the log-odds of class 0 is -f)."""
    data = blobs(20)
    ct = trained(data)
    network = ct.model_.network_
    network.weights[0].copy_(torch.tensor([1.0, -2.0]).view(1, 1, 2, 1))
    network.biases[0].fill_(0.5)

    def t(rows):
        return torch.tensor(rows, dtype=torch.float32).unsqueeze(0)

    tuples = Tuples(
        rows=torch.zeros(1, 2, dtype=torch.long), factual=t([[0, 0], [0, 0]]), target=t([1, 0]),
        x_plus=t([[1, 0], [0, 1]]),  # f = 1.5 (E = -1.5) | f = -1.5 (E = -1.5)
        x_ce=t([[0, 0], [2, 1]]),  # f = 0.5 (E = -0.5) | f = 0.5 (E = 0.5)
        x_ae=t([[0.5, 0], [0, 0.5]]),  # f = 1.0 with y_AE = 0 | f = -0.5 with y_AE = 1
        y_ae=t([0, 1]), converged=torch.ones(1, 2, dtype=torch.bool),
    )
    terms = ct.objective_terms(t([[0, 0]]), t([1]), tuples)  # one batch row: f = 0.5, y = 1
    yloss = math.log1p(math.exp(-0.5))
    div = ((-1.5 - -0.5) + (-1.5 - 0.5)) / 2  # -1.5
    ridge = ((1.5**2 + 0.5**2) + (1.5**2 + 0.5**2)) / 2  # 2.5
    adv = (math.log1p(math.exp(1.0)) + math.log1p(math.exp(0.5))) / 2
    for name, expected in (("yloss", yloss), ("div", div), ("ridge", ridge), ("adv", adv)):
        assert getattr(terms, name).item() == pytest.approx(expected, rel=1e-6), name
    lambdas = {"lambda_clf": 1.0, "lambda_div": 0.5, "lambda_adv": 0.25, "lambda_reg": 0.1}
    expected = {"full": yloss + 0.5 * div + 0.25 * adv + 0.1 * ridge, "cd": yloss + 0.5 * div + 0.1 * ridge,
                "ar": yloss + 0.25 * adv, "baseline": yloss}
    for objective, value in expected.items():
        weights = CounterfactualTraining(LogisticRegression(), objective=objective, **lambdas).weights
        assert terms.loss(weights).item() == pytest.approx(value, rel=1e-6), objective


# ------------------------------------------------------------------------------------ the epoch's tuples
def test_targets_are_the_class_not_predicted_and_mature_counterfactuals_reach_tau():
    data = blobs(120)
    ct = trained(data, search_threshold=0.75)
    tuples = ct.counterfactual_tuples(data.X, data.y)
    p_factual = ct.proba_positive(tuples.factual[0])
    assert torch.equal(tuples.target[0], (p_factual < 0.5).float())
    assert 0.3 < tuples.target.mean() < 0.7  # both search directions are exercised
    p = ct.proba_positive(tuples.x_ce[0])
    p_target = torch.where(tuples.target[0] == 1, p, 1 - p)
    assert tuples.converged.float().mean() > 0.9
    assert (p_target[tuples.converged[0]] >= 0.75).all()
    assert torch.equal(tuples.y_ae[0], data.y[tuples.rows[0]])  # the adversarial examples keep the TRUE label


def test_nascent_adversarial_example_is_the_last_iterate_within_epsilon():
    data = blobs(120)
    ct = trained(data, epsilon=0.3, search_step_size=0.05)
    paths: dict[int, list[torch.Tensor]] = {}
    S = 1

    def record(step):  # engine layout: system 0 searches toward y = 1, system S toward y = 0
        for half in range(2):
            for column, slot in enumerate(step.index.tolist()):
                paths.setdefault((half, slot), []).append(step.x[half * S, column, 0].clone())

    tuples = ct.counterfactual_tuples(data.X, data.y, observe=record)
    standardize = ct.context_.standardizer.transform
    # Map each tuple to its slot: the factuals of each direction in drawn order.
    slots = {}
    for half, direction in enumerate((1.0, 0.0)):
        for slot, position in enumerate((tuples.target[0] == direction).nonzero().flatten().tolist()):
            slots[position] = (half, slot)
    left_the_ball = moved = 0
    for position in range(tuples.size):
        path = torch.stack(paths[slots[position]])
        start = tuples.factual[0, position]
        distance = (standardize(path) - standardize(start)).abs().amax(-1)
        last = int((distance <= 0.3).nonzero().max())
        assert torch.equal(tuples.x_ae[0, position], path[last])
        assert (standardize(tuples.x_ae[0, position]) - standardize(start)).abs().max() <= 0.3
        left_the_ball += bool((distance[last + 1:] > 0.3).any())
        moved += last > 0
    # the check can fail: many paths take several steps inside the ball and then leave it
    assert left_the_ball > tuples.size // 4 and moved > tuples.size // 4


def test_immature_counterfactuals_fall_back_to_the_positive_sample():
    data = blobs(60)
    ct = trained(data, search_steps=1, search_step_size=1e-3)  # one tiny step: nothing matures
    tuples = ct.counterfactual_tuples(data.X, data.y)
    assert not tuples.converged.any()
    assert torch.equal(tuples.x_ce, tuples.x_plus)
    for x_plus, target in zip(tuples.x_plus[0], tuples.target[0]):  # x+ is a training row of the target class
        row = (data.X == x_plus).all(1).nonzero()[0]
        assert data.y[row].item() == target.item()
    terms = ct.objective_terms(data.X[None, :4], data.y[None, :4], tuples)
    assert terms.div.abs().max().item() == 0.0
    assert terms.ridge.item() > 0  # the ridge of an immature pair still counts

    mixed = trained(data, search_threshold=0.6, search_steps=3).counterfactual_tuples(data.X, data.y)
    assert mixed.converged.any() and not mixed.converged.all()
    immature = ~mixed.converged
    assert torch.equal(mixed.x_ce[immature], mixed.x_plus[immature])
    assert not torch.equal(mixed.x_ce[mixed.converged], mixed.x_plus[mixed.converged])


def test_protect_immutable_overwrites_the_positive_sample_per_rule():
    schema = FeatureSchema(("free", "fixed", "up", "down", "up2", "down2"),
                           mutability=("both", "none", "increase", "decrease", "increase", "decrease"))
    constraints = FeatureConstraints.from_schema(schema)
    x_cf = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    x_plus = torch.tensor([[5.0, 5.0, -1.0, 1.0, 2.0, -2.0]])
    # free keeps; immutable takes x'; increase-only below x' takes x'; decrease-only above x' takes x';
    # increase-only above x' and decrease-only below x' keep theirs
    assert protect_immutable(x_plus, x_cf, constraints).tolist() == [[5.0, 0.0, 0.0, 0.0, 2.0, -2.0]]

    data = blobs(120, mutability=("none", "both"))
    ct = trained(data)
    tuples = ct.counterfactual_tuples(data.X, data.y)
    assert tuples.converged.any()
    assert torch.equal(tuples.x_plus[..., 0], tuples.x_ce[..., 0])
    mature = tuples.converged
    assert torch.equal(tuples.x_plus[mature][:, 0], tuples.factual[mature][:, 0])  # the search kept it too
    assert not torch.equal(tuples.x_plus[..., 1], tuples.x_ce[..., 1])


# --------------------------------------------------------------------------------------- training
def _module():
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))


@pytest.mark.parametrize("model", [
    MLPClassifier(hidden_sizes=(8,), epochs=3, batch_size=4, retrain_epochs=2, retrain_batch_size=1, shuffle=True),
    DeepEnsemble(n_members=3, hidden_sizes=(8,), epochs=2, batch_size=8, retrain_epochs=1),
    ModuleClassifier(_module, epochs=2, batch_size=8, retrain_epochs=1, shuffle=True),
], ids=["mlp", "ensemble", "module"])
def test_baseline_objective_equals_conventional_training(model):
    """Same seed and settings: the same weights as the model's own fit and refit, within float32 rounding (the
    package's MLPs train through a compiled hand-written gradient, CT through autograd)."""
    data = blobs(64)
    X, y = data.X.expand(2, -1, -1), data.y.expand(2, -1)
    conventional = type(model)(**(model.get_params() | {"seed": 3, "device": "cpu"})).fit(X, y)
    ct = CounterfactualTraining(model, objective="baseline", seed=3, device="cpu").fit(X, y)
    for before, after in zip(conventional.parameters_stacked(), ct.parameters_stacked()):
        torch.testing.assert_close(after, before, atol=2e-6, rtol=0)
    conventional.refit(X, y)
    ct.refit(X, y)
    for before, after in zip(conventional.parameters_stacked(), ct.parameters_stacked()):
        torch.testing.assert_close(after, before, atol=2e-6, rtol=0)
    assert ct.last_training_["ct_epochs"] == 0


@pytest.mark.parametrize("model", [
    MLPClassifier(hidden_sizes=(4,), epochs=1), ModuleClassifier(_module, epochs=1),
    ModuleClassifier(_module, epochs=1, vectorize=False),
], ids=["mlp", "module-vmap", "module-loop"])
def test_a_non_finite_loss_skips_only_its_own_system(model):
    data = blobs(20)
    fitted = type(model)(**(model.get_params() | {"seed": 0, "device": "cpu"})).fit(
        data.X.expand(2, -1, -1), data.y.expand(2, -1))
    before = [p.clone() for p in fitted.parameters_stacked()]
    view = trainable(fitted)
    with view.session(0.01) as session:
        loss = view.member_logits(data.X.expand(2, -1, -1)).mean((1, 2)) * torch.tensor([1.0, float("nan")])
        session.step(loss)
    for old, new in zip(before, fitted.parameters_stacked()):
        assert (new[0] != old[0]).any() and torch.equal(new[1], old[1])


def test_ct_makes_counterfactuals_more_plausible_on_circles():
    """The CT paper's largest effect (Circ: implausibility -59 %): counterfactuals of a CT-trained MLP land closer to
    the target class. Implausibility = mean L1 distance from each counterfactual to its 10 nearest target-class
    training rows; counterfactuals from the same ECCo generator (tau = 0.5, T = 50) for every held-out individual
    the model rejects; the control is the same MLP with the same seed trained on cross-entropy alone."""
    settings = SearchSettings(n_counterfactuals=1, init_noise=0.0)
    test_generator = ecco_spec(0.5, 50, 0.25, 0.001, 0.06).replace(name="ecco-test")
    for seed in range(2):
        data = DATASETS["circles"](300, np.random.default_rng(seed))
        train, test = data.stratified_split(0.3, np.random.default_rng(seed))
        positives = train.X[train.y == 1]
        implausibility = {}
        for objective in ("baseline", "full"):
            model = MLPClassifier(hidden_sizes=(32,), epochs=30, batch_size=10, learning_rate=0.01)
            ct = CounterfactualTraining(model, objective=objective, seed=seed, device="cpu")
            ct.use_search_context(make_context(train)).fit(train.X, train.y)
            assert (ct.predict(test.X) == test.y).float().mean() > 0.95
            rejected = test.X[ct.predict(test.X) == 0]
            result = generate_counterfactuals(ct, rejected, test_generator, train, settings=settings, seed=0)
            assert result.converged.all()
            distance = torch.cdist(result.counterfactuals[:, 0], positives, p=1)
            implausibility[objective] = float(distance.topk(10, largest=False).values.mean())
        assert implausibility["full"] < 0.85 * implausibility["baseline"], implausibility


def test_deterministic_under_a_seed_and_stack_contract():
    data = blobs(60)
    model = MLPClassifier(hidden_sizes=(8,), epochs=2, batch_size=6, retrain_epochs=1, retrain_batch_size=6)
    X, y = data.X.expand(2, -1, -1), data.y.expand(2, -1)

    def run():
        ct = CounterfactualTraining(model, seed=5, device="cpu", n_counterfactuals=20).fit(X, y)
        ct.refit(X, y)
        return ct

    a, b = run(), run()
    assert torch.equal(a.model_.network_.flat, b.model_.network_.flat)
    assert a.last_training_["ct_epochs"] == 1 and a.last_training_["n_counterfactuals"] == 20
    fanned = a.select_systems([1, 1, 0])
    assert fanned.n_systems == 3 and fanned.predict(data.X).shape == (3, 60)
    assert torch.equal(fanned.proba_positive(data.X)[0], a.proba_positive(data.X)[1])
    assert type(a)(**a.get_params()).get_params() == a.get_params()


# ------------------------------------------------------------------------------------------ scenario
TINY = {"rounds": 2, "device": "cpu", "seed": 1, "data": {"name": "overlapping", "n_samples": 100},
        "generators": ["generic"], "metrics": {"permutations": 0, "evaluate_every": 2, "grid_points": 50}}
SMALL_MLP = {"name": "mlp", "hidden_sizes": [8], "epochs": 3, "batch_size": 8, "retrain_epochs": 2,
             "retrain_batch_size": 8}


def test_scenario_training_key_runs_end_to_end():
    scenario = Scenario.from_dict(TINY | {"models": [SMALL_MLP | {"training": "ct"},
                                                     SMALL_MLP | {"training": {"objective": "cd"}}]})
    assert [m.key for m in scenario.models] == ["mlp+ct", "mlp+ct(objective=cd)"]
    dynamics = RecourseDynamics(scenario.build(), seed=scenario.seed)
    results = dynamics.run()
    assert set(results["model"]) == {"mlp+ct", "mlp+ct(objective=cd)"}
    assert results["round"].max() == 2
    for stack in dynamics.stacks:
        assert isinstance(stack.classifier, CounterfactualTraining)
        assert stack.classifier.context_ is dynamics.context  # the simulation's constraints and standardiser
        assert stack.classifier.last_training_["ct_epochs"] == 2  # the last retraining was CT


@pytest.mark.parametrize(("training", "field"), [
    ("cta", "models.0.training"),
    (3, "models.0.training"),
    ({"lambda_dv": 1.0}, "models.0.training.lambda_dv"),
    ({"lambda_div": -1.0}, "models.0.training.lambda_div"),
    ({"objective": "all"}, "models.0.training.objective"),
    ({"n_counterfactuals": "5"}, "models.0.training.n_counterfactuals"),
    ({"burn_in": 1.5}, "models.0.training.burn_in"),
    ({"seed": 1}, "models.0.training.seed"),
])
def test_bad_training_values_are_refused_naming_the_field(training, field):
    with pytest.raises(ConfigError) as error:
        Scenario.from_dict(TINY | {"models": [{"name": "mlp", "training": training}]})
    assert error.value.field == f"scenario: {field}"


def test_the_training_forward_pass_is_inverted_dropout():
    """With ``dropout_rng`` the forward pass drops each hidden unit with probability p and scales the rest by
    1 / (1 - p): the output layer is linear, so the mean over many masks is the inference logit; without it there
    is no dropout."""
    data = blobs(8)
    network = MLPClassifier(hidden_sizes=(16,), dropout=0.5, epochs=1, seed=0, device="cpu").fit(
        data.X, data.y).network_
    X = data.X.unsqueeze(0)
    inference = network.member_logits(X)
    assert torch.equal(network.member_logits(X, dropout_rng=None), inference)
    rng = torch.Generator().manual_seed(0)
    draws = torch.stack([network.member_logits(X, dropout_rng=rng) for _ in range(4000)])
    assert not torch.equal(draws[0], draws[1])
    torch.testing.assert_close(draws.mean(0), inference, atol=0.05 * float(inference.abs().max()), rtol=0)
    # one hidden unit's contribution is 0 or doubled: the spread of a draw matches Var = sum_j (a_j w_j)^2 p/(1-p)
    hidden = torch.relu(X @ network.weights[0][0, 0] + network.biases[0][0, 0])  # (1, n, 16)
    variance = ((hidden * network.weights[1][0, 0].view(1, 1, 16)) ** 2).sum(-1)  # p / (1 - p) = 1
    torch.testing.assert_close(draws.var(0).squeeze(1), variance, rtol=0.15, atol=1e-6)


def test_ct_with_dropout_trains_as_the_models_stepwise_loop(monkeypatch):
    """The baseline objective on an MLP with dropout takes the stepwise torch loop's steps: the same masks (drawn
    from the model's stream in the same order) and the same gradients, within float32 rounding. The search runs
    without dropout; the full objective trains deterministically under a seed."""
    from recourse_sim.models.network import StackedMLP

    torch_loop = StackedMLP.train
    monkeypatch.setattr(StackedMLP, "train", lambda self, *a, **k: torch_loop(self, *a, **k | {"backend": "torch"}))
    data = blobs(48)
    X, y = data.X.expand(2, -1, -1), data.y.expand(2, -1)
    model = MLPClassifier(hidden_sizes=(8, 8), dropout=0.3, epochs=3, batch_size=6, retrain_epochs=1,
                          retrain_batch_size=6, shuffle=True)
    conventional = MLPClassifier(**(model.get_params() | {"seed": 3, "device": "cpu"})).fit(X, y).refit(X, y)
    ct = CounterfactualTraining(model, objective="baseline", seed=3, device="cpu").fit(X, y).refit(X, y)
    for before, after in zip(conventional.parameters_stacked(), ct.parameters_stacked()):
        torch.testing.assert_close(after, before, atol=2e-6, rtol=0)
    without = MLPClassifier(**(model.get_params() | {"dropout": 0.0, "seed": 3, "device": "cpu"})).fit(X, y)
    assert not torch.allclose(without.parameters_stacked()[0], conventional.parameters_stacked()[0])

    def full():
        return CounterfactualTraining(model, seed=5, device="cpu", n_counterfactuals=12).fit(X, y)

    a, b = full(), full()
    assert torch.equal(a.model_.network_.flat, b.model_.network_.flat) and a.last_training_["ct_epochs"] == 3
    view = trainable(a.model_)
    with view.session(0.01) as session:
        assert not torch.equal(view.member_logits(X), view.member_logits(X))  # training: fresh masks
        with session.evaluation():  # the epoch's search: the inference pass
            assert torch.equal(view.member_logits(X), a.model_.network_.member_logits(X))
