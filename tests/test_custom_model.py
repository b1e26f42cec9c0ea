"""ModuleClassifier: a user's own nn.Module behind the classifier contract, in both stacking modes and in a
simulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from recourse_sim import GENERATORS, generate_counterfactuals
from recourse_sim.errors import ConfigError, DataError
from recourse_sim.models.custom import ModuleClassifier
from recourse_sim.simulation import MetricSettings, RecourseDynamics, SimulationConfig


def small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 1))


class TwoLogits(nn.Module):
    """Returns class logits (N, 2) instead of one logit."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, x):
        return self.linear(x)


def make(vectorize: bool = True, **kw) -> ModuleClassifier:
    params = dict(epochs=5, batch_size=16, retrain_epochs=1, retrain_batch_size=16, seed=0, device="cpu",
                  vectorize=vectorize)
    return ModuleClassifier(kw.pop("module", small_net), **(params | kw))


@pytest.mark.parametrize("vectorize", [True, False])
def test_fit_predict_shapes_single_and_stacked(overlapping, vectorize):
    X, y = overlapping.X, overlapping.y
    single = make(vectorize).fit(X, y)
    assert single.n_systems == 1
    assert single.proba_positive(X).shape == (len(X),)
    assert single.predict_proba(X).shape == (len(X), 2)
    assert (single.predict(X) == y).float().mean() > 0.7
    stacked = make(vectorize).fit(X.expand(3, -1, -1), y.expand(3, -1))
    assert stacked.n_systems == 3
    assert stacked.proba_positive(X).shape == (3, len(X))
    assert stacked.predict(X.expand(3, -1, -1)).shape == (3, len(X))
    assert [p.shape[0] for p in stacked.parameters_stacked()] == [3] * 4
    # independent initialisations: the systems differ even on identical data
    assert not torch.allclose(stacked.parameters_stacked()[0][0], stacked.parameters_stacked()[0][1])


def test_vmap_and_loop_paths_agree(overlapping):
    X, y = overlapping.X.expand(2, -1, -1), overlapping.y.expand(2, -1)
    a = make(True).fit(X, y)
    b = make(False).fit(X, y)
    torch.testing.assert_close(a.proba_positive(overlapping.X), b.proba_positive(overlapping.X), atol=1e-4, rtol=0)
    a.refit(X, y)
    b.refit(X, y)
    torch.testing.assert_close(a.proba_positive(overlapping.X), b.proba_positive(overlapping.X), atol=1e-4, rtol=0)
    for pa, pb in zip(a.parameters_stacked(), b.parameters_stacked()):
        torch.testing.assert_close(pa, pb, atol=1e-4, rtol=0)


def test_same_seed_same_model_and_get_params_round_trip(overlapping):
    a = make().fit(overlapping.X, overlapping.y)
    b = type(a)(**a.get_params()).fit(overlapping.X, overlapping.y)
    assert torch.equal(a.proba_positive(overlapping.X), b.proba_positive(overlapping.X))
    c = make(seed=1).fit(overlapping.X, overlapping.y)
    assert not torch.equal(a.proba_positive(overlapping.X), c.proba_positive(overlapping.X))


@pytest.mark.parametrize("vectorize", [True, False])
def test_log_proba_stacked_is_differentiable_and_selects_systems(overlapping, vectorize):
    X = overlapping.X[:10]
    clf = make(vectorize).fit(overlapping.X.expand(3, -1, -1), overlapping.y.expand(3, -1))
    probe = X.unsqueeze(0).repeat(2, 1, 1).requires_grad_(True)
    log_p = clf.log_proba_stacked(probe, torch.tensor([2, 0]))
    assert log_p.shape == (2, 10)
    (grad,) = torch.autograd.grad(log_p.sum(), probe)
    assert grad.abs().sum() > 0
    full = clf.proba_positive(X)
    torch.testing.assert_close(log_p.detach().exp(), full[[2, 0]])


@pytest.mark.parametrize("vectorize", [True, False])
def test_select_systems_copies_are_independent(overlapping, vectorize):
    X, y = overlapping.X, overlapping.y
    clf = make(vectorize).fit(X.expand(2, -1, -1), y.expand(2, -1))
    fanned = clf.select_systems(torch.tensor([1, 1, 0]))
    assert fanned.n_systems == 3
    before = clf.proba_positive(X).clone()
    torch.testing.assert_close(fanned.proba_positive(X), before[[1, 1, 0]])
    fanned.refit(X.expand(3, -1, -1), 1 - y.expand(3, -1), epochs=3)  # train towards flipped labels
    assert torch.equal(clf.proba_positive(X), before)  # the original is untouched
    assert not torch.allclose(fanned.proba_positive(X)[0], before[1])


def test_two_class_logits_and_pretrained_module(overlapping):
    """A module returning two class logits (N, 2): p(y = 1) must be softmax(out)[:, 1], computed here with
    ``torch.softmax`` on a pretrained module with known weights (``epochs=0, reinitialize=False``). Column 1 is
    the good outcome; a swapped difference (``out[:, 0] - out[:, 1]``) would give 1 - p, off by |1 - 2p| (up to
    0.9 on these points) against a tolerance of float32 rounding (assert_close's 1.3e-6 relative)."""
    two = TwoLogits().eval()
    with torch.no_grad():
        two.linear.weight.copy_(torch.tensor([[1.0, -0.5], [-2.0, 1.5]]))
        two.linear.bias.copy_(torch.tensor([0.3, -0.2]))
    pretrained = ModuleClassifier(two, epochs=0, reinitialize=False, device="cpu").fit(overlapping.X, overlapping.y)
    with torch.no_grad():
        expected = torch.softmax(two(overlapping.X), dim=-1)[:, 1]
    assert (expected - 0.5).abs().max() > 0.4  # points on both sides, far from 1/2: a swap is visible
    torch.testing.assert_close(pretrained.proba_positive(overlapping.X), expected)
    torch.testing.assert_close(pretrained.predict(overlapping.X), (expected >= 0.5).float())
    # Trained from scratch it learns the labels (the overlapping blobs: > 85 % for any linear rule worth its
    # name; a classifier that learned the wrong class as positive scores < 15 %).
    clf = make(module=TwoLogits, epochs=20).fit(overlapping.X, overlapping.y)
    assert clf.proba_positive(overlapping.X).shape == (len(overlapping.X),)
    assert (clf.predict(overlapping.X) == overlapping.y).float().mean() > 0.85
    module = small_net().eval()
    kept = ModuleClassifier(module, epochs=0, reinitialize=False, device="cpu").fit(overlapping.X, overlapping.y)
    with torch.no_grad():
        expected = torch.sigmoid(module(overlapping.X)).squeeze(-1)
    torch.testing.assert_close(kept.proba_positive(overlapping.X), expected)
    assert isinstance(kept.modules()[0], nn.Module)


def test_bad_inputs_are_refused(overlapping):
    with pytest.raises(ConfigError, match="module"):
        ModuleClassifier(42)
    with pytest.raises(ConfigError, match="batch_size"):
        ModuleClassifier(small_net, batch_size=0)
    wide = lambda: nn.Sequential(nn.Linear(2, 3))  # noqa: E731 - three outputs is not a binary logit
    with pytest.raises(DataError, match="logits"):
        ModuleClassifier(wide, epochs=1, device="cpu").fit(overlapping.X, overlapping.y)
    with pytest.raises(RuntimeError, match="not fitted"):
        make().proba_positive(overlapping.X)


def test_batchnorm_module_in_loop_mode(overlapping):
    bn = lambda: nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))  # noqa: E731
    stacked_X, stacked_y = overlapping.X.expand(2, -1, -1), overlapping.y.expand(2, -1)
    clf = make(False, module=bn, epochs=1, batch_size=64).fit(stacked_X, stacked_y)
    assert clf.modules_[0][1].num_batches_tracked > 0
    assert clf.proba_positive(overlapping.X).shape == (2, len(overlapping.X))


def test_counterfactuals_for_a_custom_module(overlapping):
    clf = make(epochs=10).fit(overlapping.X, overlapping.y)
    rejected = overlapping.X[clf.predict(overlapping.X) == 0][:4]
    for name in ("generic", "eccco"):  # eccco uses logits_stacked for its energy term
        result = generate_counterfactuals(clf, rejected, name, overlapping, seed=0)
        assert result.counterfactuals.shape == (4, 5, 2)
        assert result.proba.mean() > clf.proba_positive(rejected).mean()


@pytest.mark.parametrize("vectorize", [True, False])
def test_runs_in_a_simulation(overlapping, vectorize):
    train, test = overlapping.stratified_split(0.2, np.random.default_rng(0))

    def config():
        return SimulationConfig(
            train=train, test=test, models={"mine": make(vectorize)},
            generators={"generic": GENERATORS["generic"](), "claproar": GENERATORS["claproar"]()},
            rounds=2, repetitions=2, recourse_share=0.1,
            metrics=MetricSettings(evaluate_every=1, permutations=0, grid_points=50), device="cpu",
        )

    dynamics = RecourseDynamics(config(), seed=5)
    frame = dynamics.run()
    assert dynamics.round == 2 and len(dynamics.systems) == 4
    assert set(frame["model"]) == {"mine"}
    assert {"domain_mmd", "model_mmd", "disagreement", "validity"} <= set(frame["metric"])
    assert (dynamics.population.recourse_round >= 0).any()
    again = RecourseDynamics(config(), seed=5).run()
    assert frame["value"].equals(again["value"])  # deterministic for a seed
