"""The faithfulness metrics (issue 13): hand-computed cases for each function, and the simulation's rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from recourse_sim.data import Dataset, FeatureSchema
from recourse_sim.errors import ConfigError
from recourse_sim.experiments import Scenario
from recourse_sim.generators.api import make_context
from recourse_sim.metrics.catalogue import METRICS, ROBUSTNESS_ATTACKS, ROBUSTNESS_EPSILONS, robustness_metric
from recourse_sim.metrics.faithfulness import (
    unfaithfulness,
    adversarial_accuracy,
    conformal_threshold,
    fgsm,
    ip_star,
    mean_implausibility,
    nearest_target_distance,
    pgd,
    set_size,
    uncertainty,
    valid_recourse_cost,
)
from recourse_sim.metrics.mmd import mmd2_unbiased
from recourse_sim.metrics.recourse import implausibility
from recourse_sim.simulation import RecourseDynamics
from recourse_sim.simulation.config import MetricSettings
from recourse_sim.simulation.faithfulness import FaithfulnessEvaluator, _protected_columns


def _column(*values: float) -> torch.Tensor:
    """1-D points as (1, m, 1): one system."""
    return torch.tensor(values).view(1, -1, 1)


# ------------------------------------------------------------------------------------------- implausibility
def test_nearest_target_distance_by_hand():
    reference = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    target = torch.tensor([True, True, False, True])  # 2.0 is not of the target class
    # 0.5 -> target rows at distances 0.5, 0.5, 2.5: the 2 nearest average 0.5; with k above the 3 target rows,
    # all three count: 3.5 / 3.
    assert nearest_target_distance(_column(0.5), reference, target, k=2).item() == pytest.approx(0.5)
    assert nearest_target_distance(_column(0.5), reference, target).item() == pytest.approx(3.5 / 3)
    # The point that is row 1 itself: without it, its 2 nearest target rows are 0.0 and 3.0 (distances 1 and 2).
    excluded = nearest_target_distance(_column(1.0), reference, target, k=2, exclude=torch.tensor([[1]]))
    assert excluded.item() == pytest.approx(1.5)
    kept = nearest_target_distance(_column(1.0), reference, target, k=2, exclude=torch.tensor([[-1]]))
    assert kept.item() == pytest.approx(0.5)  # -1 excludes nothing: itself (0) and row 0 (1)


def test_mean_implausibility_is_per_system_and_masked():
    points = torch.tensor([[[0.5], [9.0]], [[4.0], [0.0]]])  # (S=2, m=2, d=1)
    reference = torch.tensor([[[0.0], [1.0]], [[4.0], [6.0]]])  # each system its own target data
    target = torch.ones(2, 2, dtype=torch.bool)
    mask = torch.tensor([[True, False], [True, True]])
    values = mean_implausibility(points, reference, target, mask=mask, k=1)
    # system 0: only 0.5 counts (nearest 0.0 or 1.0: 0.5); system 1: 4.0 -> 0, 0.0 -> 4: mean 2.
    assert values.tolist() == pytest.approx([0.5, 2.0])
    nothing = mean_implausibility(points, reference, target, mask=torch.zeros(2, 2, dtype=torch.bool))
    assert torch.isnan(nothing).all()


def test_nearest_target_distance_equals_the_unstacked_implausibility():
    rng = torch.Generator().manual_seed(0)
    X = torch.randn(300, 3, generator=rng)
    y = (torch.rand(300, generator=rng) > 0.4).float()
    cf = torch.randn(40, 3, generator=rng)
    stacked = nearest_target_distance(cf.unsqueeze(0), X, y == 1)
    assert torch.allclose(stacked[0], implausibility(cf, X, y), atol=1e-5)


# ----------------------------------------------------------------------------------------------------- IP*
def test_ip_star_by_hand():
    # l = 1/sqrt(2): k(x, y) = exp(-(x - y)^2). X = {0, 1}, Y = {0, 2}.
    length_scale = 1 / math.sqrt(2)
    xx = math.exp(-1)  # the one off-diagonal pair of X, both orders, over m^2 - m = 2
    yy = math.exp(-4)
    xy = (1 + math.exp(-4) + math.exp(-1) + math.exp(-1)) / 4
    value = ip_star(_column(0.0, 1.0), torch.tensor([[0.0], [2.0]]), length_scale=length_scale)
    assert value.item() == pytest.approx(xx + yy - 2 * xy, abs=1e-12)


def test_ip_star_masks_padding_and_matches_mmd2_unbiased():
    rng = torch.Generator().manual_seed(1)
    points = torch.randn(3, 6, 2, generator=rng)
    reference = torch.randn(8, 2, generator=rng) + 1
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] + [False] * 5])
    values = ip_star(points, reference, length_scale=0.7, mask=mask)
    for s, count in enumerate((6, 4)):
        expected = mmd2_unbiased(points[s, :count].double(), reference.double(), length_scale=0.7)
        assert values[s].item() == pytest.approx(expected.item(), abs=1e-12)
    assert math.isnan(values[2].item())  # one counterfactual: no unbiased within-sample term


# ---------------------------------------------------------------------------------------- conformal sets
def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_conformal_threshold_set_size_and_uncertainty_by_hand():
    p = torch.tensor([[0.9, 0.8, 0.3, 0.6]])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # scores 1 - p_y: 0.1, 0.2, 0.3, 0.6. ceil(5 * 0.5) = 3 -> the 3rd smallest; ceil(5 * 0.95) = 5 -> capped at 4.
    assert conformal_threshold(p, y, coverage=0.5).item() == pytest.approx(0.3)
    assert conformal_threshold(p, y).item() == pytest.approx(0.6)

    q_hat = torch.tensor([0.3, 0.6, 0.3])
    at = torch.tensor([[0.75], [0.5], [0.5]])  # one counterfactual per system
    # scores at p = 0.75: 0.75 (y=0), 0.25 (y=1) -> {1}; at p = 0.5 both 0.5: q = 0.6 -> both, q = 0.3 -> none.
    assert set_size(at, q_hat).tolist() == [1.0, 2.0, 0.0]
    omega = uncertainty(at, q_hat)
    assert omega[1].item() == pytest.approx(2 * _sigmoid((0.6 - 0.5) / 0.1) - 1, abs=1e-6)
    # An empty hard set counts sum_y (1 - C_y) = 2 (1 - sigmoid(-2)).
    assert omega[2].item() == pytest.approx(2 * (1 - _sigmoid((0.3 - 0.5) / 0.1)) - 1, abs=1e-6)
    assert omega[0].item() == pytest.approx(max(0.0, _sigmoid(-4.5) + _sigmoid(0.5) - 1), abs=1e-6)
    masked = set_size(torch.tensor([[0.75, 0.5]]), torch.tensor([0.6]), mask=torch.tensor([[False, True]]))
    assert masked.item() == 2.0


# -------------------------------------------------------------------------------------------- robustness
class _Linear:
    """p(y=1|x) = sigmoid(w.x + b) per system: the closed form of FGSM is known."""

    def __init__(self, w: list[list[float]], b: list[float]) -> None:
        self.w, self.b = torch.tensor(w), torch.tensor(b)

    @property
    def n_systems(self) -> int:
        return len(self.b)

    def log_proba_stacked(self, X: torch.Tensor, systems=None) -> torch.Tensor:
        return F.logsigmoid((X * self.w.unsqueeze(1)).sum(-1) + self.b.unsqueeze(1))


def test_fgsm_on_a_linear_model_by_hand():
    model = _Linear([[1.0], [1.0]], [0.0, 0.0])
    X = torch.tensor([[-0.3], [-0.05], [0.02], [0.2]])
    y = torch.tensor([0.0, 0.0, 1.0, 1.0])
    # The loss rises toward the other class: negatives move +eps, positives -eps. At eps = 0.1, -0.05 -> 0.05 and
    # 0.02 -> -0.08 flip; at 0.01 none does; at 0.5 all four do.
    accuracy = adversarial_accuracy(model, X, y, (0.0, 0.01, 0.1, 0.5))
    assert accuracy.tolist() == [[1.0, 1.0], [1.0, 1.0], [0.5, 0.5], [0.0, 0.0]]
    attacked = fgsm(model, X.expand(2, -1, -1), y.expand(2, -1), 0.1)
    assert torch.allclose(attacked[0, :, 0], torch.tensor([-0.2, 0.05, -0.08, 0.1]))
    # A feature scale of 2 makes eps = 0.05 a move of 0.1.
    scaled = adversarial_accuracy(model, X, y, (0.05,), scale=torch.tensor([2.0]))
    assert scaled.tolist() == [[0.5, 0.5]]


def test_fgsm_accuracy_matches_the_linear_closed_form_per_system():
    rng = torch.Generator().manual_seed(2)
    model = _Linear([[1.0, -2.0], [0.5, 0.5]], [0.1, -0.2])
    X = torch.randn(200, 2, generator=rng)
    y = (torch.rand(200, generator=rng) > 0.5).float()
    eps, scale = 0.1, torch.tensor([1.5, 0.5])
    accuracy = adversarial_accuracy(model, X, y, (eps,), scale=scale)[0]
    for s in range(2):
        w, b = model.w[s], model.b[s]
        # Worst case of a linear logit in the box |delta_j| <= eps s_j: it moves by eps sum_j |w_j| s_j.
        logit = X @ w + b - (2 * y - 1) * eps * (w.abs() * scale).sum()
        assert accuracy[s].item() == pytest.approx(((logit >= 0).float() == y).float().mean().item())


def test_pgd_reaches_the_box_corner_on_a_linear_model():
    """On a linear model the sign of the gradient never changes, so PGD walks to the FGSM corner once its 40 steps
    of 0.01 cover the radius."""
    model = _Linear([[1.0, -1.0]], [0.0])
    X = torch.tensor([[[0.2, 0.1], [-0.3, 0.4]]])
    y = torch.tensor([[1.0, 0.0]])
    assert torch.allclose(pgd(model, X, y, 0.1), fgsm(model, X, y, 0.1), atol=1e-6)
    short = pgd(model, X, y, 0.1, steps=3)  # 3 steps of 0.01 stop inside the box
    assert torch.allclose((short - X).abs(), torch.full_like(X, 0.03), atol=1e-6)


def test_robust_accuracy_falls_with_epsilon(fitted_lr, fitted_mlp_4d, overlapping, four_d):
    radii = (0.0, 0.05, 0.1, 0.3)
    for model, data in ((fitted_lr, overlapping), (fitted_mlp_4d, four_d)):
        clean = (model.predict(data.X) == data.y).float().mean().item()
        for attack in ROBUSTNESS_ATTACKS:
            accuracy = adversarial_accuracy(model.select_systems([0, 0]), data.X, data.y, radii, attack=attack)
            assert accuracy.shape == (4, 2)
            assert accuracy[0].tolist() == pytest.approx([clean, clean])  # eps = 0 is the clean accuracy
            assert accuracy[-1, 0] < accuracy[0, 0]
            if model is fitted_lr:  # linear: the worst case grows with the box, so accuracy never rises
                assert (accuracy[1:, 0] <= accuracy[:-1, 0]).all()


# ------------------------------------------------------------------------------------ protected recourse
def test_valid_recourse_cost_by_hand():
    factual = torch.zeros(1, 2, 1)
    counterfactuals = torch.tensor([[[[1.0], [3.0]], [[2.0], [5.0]]]])  # (S=1, B=2, K=2, d=1)
    proba = torch.tensor([[[0.6, 0.4], [0.7, 0.9]]])
    cost, valid = valid_recourse_cost(factual, counterfactuals, proba)
    assert cost.item() == pytest.approx((1 + 2 + 5) / 3) and valid.item() == 0.75
    cost, valid = valid_recourse_cost(factual, counterfactuals, proba, mask=torch.tensor([[True, False]]))
    assert cost.item() == 1.0 and valid.item() == 0.5
    cost, valid = valid_recourse_cost(factual, counterfactuals, torch.full_like(proba, 0.1))
    assert math.isnan(cost.item()) and valid.item() == 0.0


def test_protected_features_default_named_and_one_hot_groups():
    free = make_context(_data(FeatureSchema.unconstrained(("x1", "x2"))))
    assert _protected_columns((), free).tolist() == [True, False]  # CT protects "feature 1" of its 2-D data
    assert _protected_columns(("x2",), free).tolist() == [False, True]
    with pytest.raises(ConfigError, match="protected_features"):
        _protected_columns(("age",), free)
    schema = FeatureSchema(("a", "b", "c", "d"), mutability=("both", "none", "both", "both"),
                           categorical_groups=((2, 3),))
    card = make_context(_data(schema))
    assert _protected_columns((), card).tolist() == [False, True, False, False]  # the data card's immutable
    assert _protected_columns(("c",), card).tolist() == [False, False, True, True]  # the whole one-hot group


def _data(schema: FeatureSchema) -> Dataset:
    rng = np.random.default_rng(0)
    d = len(schema.names)
    X = rng.normal(size=(20, d)).astype(np.float32)
    for group in schema.categorical_groups:
        X[:, list(group)] = np.eye(len(group), dtype=np.float32)[rng.integers(0, len(group), 20)]
    return Dataset(torch.tensor(X), torch.tensor(np.arange(20) % 2, dtype=torch.float32), schema)


def test_metric_settings_check_the_new_fields():
    assert MetricSettings(protected_features=["x1"]).protected_features == ("x1",)
    with pytest.raises(ConfigError, match="protected_samples"):
        MetricSettings(protected_samples=0)
    with pytest.raises(ConfigError, match="protected_features"):
        MetricSettings(protected_features=("x1", "x1"))
    with pytest.raises(ConfigError, match="conformal_calibration"):
        MetricSettings(conformal_calibration="test")
    with pytest.raises(ConfigError, match="faithfulness"):
        MetricSettings(faithfulness="yes")


# ---------------------------------------------------------------------------------------------- the runs
FAITHFULNESS = ["implausibility", "implausibility_initial", "ip_star", "unfaithfulness", "set_size", "uncertainty",
                *(robustness_metric(a, e) for a in ROBUSTNESS_ATTACKS for e in ROBUSTNESS_EPSILONS),
                "protected_cost", "protected_validity"]


def _run(rounds: int = 2, **metrics) -> pd.DataFrame:
    scenario = Scenario.from_dict({
        "name": "faithful", "seed": 5, "rounds": rounds, "recourse_share": 0.2,
        "data": {"name": "overlapping", "n_samples": 200},
        "models": [{"name": "logistic_regression", "epochs": 10}],
        "generators": ["generic", "gravitational", "revise", "none"],
        "vae": {"epochs": 2},
        "metrics": {"evaluate_every": 1, "permutations": 10, "mmd_samples": 50, "grid_points": 50, **metrics},
        "device": "cpu",
    })
    return RecourseDynamics(scenario.build(), seed=5).run()


@pytest.fixture(scope="module")
def runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _run(), _run(faithfulness=True, protected_samples=20)


def test_faithfulness_off_adds_nothing_and_on_changes_nothing_else(runs):
    off, on = runs
    assert not set(FAITHFULNESS) & set(off["metric"])
    assert set(FAITHFULNESS) <= set(on["metric"]) <= set(METRICS)
    # Its own random stream and no state touched (not even a latent generator's VAEs): every other row is equal.
    rest = on[~on["metric"].isin(FAITHFULNESS)].reset_index(drop=True)
    pd.testing.assert_frame_equal(rest, off, check_exact=True)


def test_faithfulness_rows_are_in_range(runs):
    _, on = runs
    rows = on[on["metric"].isin(FAITHFULNESS)]
    assert len(rows) == len(FAITHFULNESS) * 4 * 3  # every metric, system and evaluated round (0, 1, 2)
    value = rows.set_index(["generator", "round", "metric"])["value"]
    acting = rows[(rows["generator"] != "none") & (rows["round"] >= 1)].set_index("metric")["value"]
    assert acting.notna().all()  # movers exist from round 1 on; the control has none
    assert value.xs("none", level="generator").loc[(slice(None), "implausibility")].isna().all()
    assert value.xs(0, level="round").loc[(slice(None), "implausibility")].isna().all()  # nobody moved yet
    assert (acting[["implausibility", "implausibility_initial", "unfaithfulness", "protected_cost"]] >= 0).all()
    assert acting["set_size"].between(0, 2).all() and acting["uncertainty"].between(0, 1).all()
    shares = [robustness_metric(a, e) for a in ROBUSTNESS_ATTACKS for e in ROBUSTNESS_EPSILONS]
    assert rows[rows["metric"].isin([*shares, "protected_validity"])]["value"].dropna().between(0, 1).all()
    assert rows[rows["metric"].isin(shares)]["value"].notna().all()  # the control's model is attacked too


def test_each_stack_has_its_own_metric_stream(overlapping):
    """Each model stack's faithfulness noise (SGLD samples, IP*'s subsample, the protected sample) comes from its
    own stream, keyed by the stack's name: another stack's draws, before or in between, leave it as it was (one
    shared stream would hand the second stack's round-0 draws to the first stack's round 1)."""
    def evaluator():
        X, y = overlapping.X, overlapping.y
        return FaithfulnessEvaluator(X, y, X, y, MetricSettings(faithfulness=True), 1.0,
                                     torch.Generator().manual_seed(5))

    alone, shared = evaluator(), evaluator()
    torch.rand(100, generator=shared.stream("mlp"))  # another stack draws first
    first = torch.rand(5, generator=alone.stream("logistic_regression"))
    assert torch.equal(first, torch.rand(5, generator=shared.stream("logistic_regression")))
    torch.rand(7, generator=shared.stream("mlp"))  # ... and in between
    assert torch.equal(torch.rand(5, generator=alone.stream("logistic_regression")),
                       torch.rand(5, generator=shared.stream("logistic_regression")))
    assert not torch.equal(torch.rand(5, generator=evaluator().stream("mlp")), first)  # streams differ by stack
    assert alone.stream("mlp") is alone.stream("mlp")  # one stream per stack for the whole run


def test_in_sample_calibration_is_an_option():
    frame = _run(rounds=1, faithfulness=True, conformal_calibration="in_sample", protected_samples=5)
    sizes = frame[(frame["metric"] == "set_size") & (frame["round"] == 1) & (frame["generator"] != "none")]
    assert len(sizes) == 3 and sizes["value"].between(0, 2).all()


def test_an_unknown_protected_feature_is_refused_before_the_run():
    scenario = Scenario.from_dict({
        "data": {"name": "overlapping", "n_samples": 200}, "models": ["logistic_regression"],
        "generators": ["generic"], "metrics": {"faithfulness": True, "protected_features": ["age"]},
    })
    with pytest.raises(ConfigError, match="metrics.protected_features: got 'age'"):
        scenario.build()  # what run_scenario does before the first round


def test_unfaithfulness_by_hand():
    points = torch.tensor([[[0.0], [2.0]]])
    samples = torch.tensor([[[0.0], [1.0]]])
    # Point 0: (0 + 1) / 2 = 0.5; point 1: (2 + 1) / 2 = 1.5 (the true mean over the kept samples).
    assert unfaithfulness(points, samples).item() == pytest.approx(1.0)
    assert unfaithfulness(points, samples, mask=torch.tensor([[True, False]])).item() == pytest.approx(0.5)
    assert math.isnan(unfaithfulness(points, samples, mask=torch.zeros(1, 2, dtype=torch.bool)).item())
