"""Every registered model (and a user's own module) honours the stacked-estimator contract of models/base.py,
in the spirit of scikit-learn's ``check_estimator``: the checks below run over the whole registry, so a model
added to ``MODELS`` is checked without a new test."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recourse_sim.errors import DataError
from recourse_sim.models import MODELS
from recourse_sim.models.base import DECISION_THRESHOLD, NotFittedError, StackedClassifier, StackedEstimator
from recourse_sim.models.custom import ModuleClassifier
from recourse_sim.models.vae import VAE

FAST = dict(epochs=3, batch_size=8, retrain_epochs=1, retrain_batch_size=8, device="cpu", seed=3)


def _module_classifier(**params):
    return ModuleClassifier(lambda: nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)), **params)


FACTORIES = {name: MODELS[name] for name in MODELS} | {"module": _module_classifier}


@pytest.fixture(params=sorted(FACTORIES))
def make(request):
    return lambda **extra: FACTORIES[request.param](**(FAST | extra))


@pytest.fixture(scope="module")
def data():
    rng = torch.Generator().manual_seed(0)
    X = torch.randn(60, 2, generator=rng)
    y = (X[:, 0] + 0.3 * torch.randn(60, generator=rng) > 0).float()
    return X, y


def test_is_a_stacked_classifier_with_round_trip_params(make):
    model = make()
    assert isinstance(model, StackedClassifier)
    params = model.get_params()
    assert params["seed"] == 3 and params["epochs"] == 3
    clone = type(model)(**params)
    assert clone.get_params().keys() == params.keys()
    assert all(clone.get_params()[k] is params[k] or clone.get_params()[k] == params[k] for k in params)


def test_unfitted_use_is_refused(make, data):
    with pytest.raises(NotFittedError):
        make().proba_positive(data[0])
    with pytest.raises(NotFittedError):
        make().select_systems([0])


def test_fit_returns_self_and_answers_in_the_documented_shapes(make, data):
    X, y = data
    model = make()
    assert model.fit(X, y) is model
    assert model.n_systems == 1
    p = model.proba_positive(X)
    assert p.shape == (60,) and bool(((p > 0) & (p < 1)).all())
    assert model.predict_proba(X).shape == (60, 2)
    torch.testing.assert_close(model.predict_proba(X).sum(-1), torch.ones(60))
    assert torch.equal(model.predict(X), (p >= DECISION_THRESHOLD).float())
    stacked = make().fit(X.expand(3, -1, -1), y.expand(3, -1))
    assert stacked.n_systems == 3 and stacked.proba_positive(X).shape == (3, 60)


def test_the_same_seed_gives_the_same_model_and_another_seed_another(make, data):
    X, y = data
    a, b, c = make().fit(X, y), make().fit(X, y), make(seed=4).fit(X, y)
    assert torch.equal(a.proba_positive(X), b.proba_positive(X))
    assert not torch.equal(a.proba_positive(X), c.proba_positive(X))


def test_logits_are_differentiable_and_agree_with_the_probabilities(make, data):
    X, y = data
    model = make().fit(X.expand(2, -1, -1), y.expand(2, -1))
    x = X[:5].expand(2, -1, -1).clone().requires_grad_(True)
    log_p = model.log_proba_stacked(x)
    (grad,) = torch.autograd.grad(log_p.sum(), x)
    assert grad.shape == x.shape and bool(grad.abs().sum() > 0)
    logit = model.logits_stacked(x)
    assert logit.shape == (2, 5)
    # one member: the logit is the log-odds of p; several: the mean member logit, on the same side of 0.5
    p = log_p.exp()
    if getattr(model, "n_members", 1) == 1:
        torch.testing.assert_close(torch.sigmoid(logit), p, atol=1e-5, rtol=0)
    assert torch.equal(logit.detach() > 0, p.detach() > 0.5) or getattr(model, "n_members", 1) > 1


def test_select_systems_takes_copies_in_the_given_order(make, data):
    X, y = data
    stacked = make().fit(X.expand(2, -1, -1) + torch.tensor([[[0.0, 0.0]], [[0.5, 0.0]]]), y.expand(2, -1))
    p = stacked.proba_positive(X)
    swapped = stacked.select_systems([1, 0, 1])
    torch.testing.assert_close(swapped.proba_positive(X), p[[1, 0, 1]])
    swapped.refit(X.expand(3, -1, -1), y.expand(3, -1), epochs=1)  # a copy: the original does not move
    torch.testing.assert_close(stacked.proba_positive(X), p)
    # scoring with chosen systems only (one system's view of a plot grid) equals picking them from the stack
    torch.testing.assert_close(stacked.proba_positive(X, systems=[1]), p[[1]])
    single = make().fit(X, y)
    torch.testing.assert_close(single.proba_positive(X, systems=[0]), single.proba_positive(X).unsqueeze(0))


def test_refit_warm_starts_from_the_current_parameters(make, data):
    X, y = data
    model = make().fit(X, y)
    before = model.proba_positive(X)
    model.refit(X, y, epochs=0)
    torch.testing.assert_close(model.proba_positive(X), before)
    model.refit(X, 1.0 - y, epochs=2)
    assert not torch.equal(model.proba_positive(X), before)


def test_bad_training_data_is_refused(make, data):
    X, y = data
    with pytest.raises(DataError):
        make().fit(X, y[:-1])
    with pytest.raises(DataError):
        make().fit(torch.full_like(X, float("nan")), y)
    with pytest.raises(DataError):
        make().fit(X, y * 2)


def test_the_vae_shares_the_estimator_base():
    X = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    vae = VAE(epochs=2, batch_size=10, seed=0, device="cpu")
    assert isinstance(vae, StackedEstimator)
    assert type(vae)(**vae.get_params()).get_params() == vae.get_params()
    with pytest.raises(NotFittedError):
        vae.select_systems([0])
    vae.fit(X.expand(2, -1, -1))
    picked = vae.select_systems([1, 1])
    z = torch.randn(2, 4, vae.latent_dim_)
    torch.testing.assert_close(picked.decode_stacked(z), vae.decode_stacked(z, torch.tensor([1, 1])))
