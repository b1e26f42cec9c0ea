"""Classifiers: the scikit-learn contract, stacked training equals separate training, hand-written gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recourse_sim.errors import ConfigError, DataError
from recourse_sim.models import MODELS, DeepEnsemble, LogisticRegression, MLPClassifier, StackedMLP


def test_hand_written_gradient_equals_autograd():
    net = StackedMLP(3, 2, 4, (5, 6), rng=torch.Generator().manual_seed(1))
    X, y = torch.randn(3, 7, 4), (torch.rand(3, 7) > 0.5).float()
    grad = net._loss_gradient(X, y.unsqueeze(1).unsqueeze(-1), None)
    flat = net.flat.clone().requires_grad_(True)
    twin = net.clone()
    twin.flat = flat
    twin._bind_views()
    logits = twin.member_logits(X)
    loss = F.binary_cross_entropy_with_logits(logits, y.unsqueeze(1).expand_as(logits), reduction="none").mean(-1).sum()
    loss.backward()
    torch.testing.assert_close(grad, flat.grad, atol=1e-6, rtol=1e-5)


def test_hand_written_dropout_gradient_equals_autograd_with_the_same_masks():
    """Inverted dropout after each hidden layer: keep where u >= p, u ~ U[0, 1) drawn layer by layer from the
    training generator, kept activations scaled by 1 / (1 - p)."""
    p = 0.3
    net = StackedMLP(3, 2, 4, (5, 6), dropout=p, rng=torch.Generator().manual_seed(1))
    X, y = torch.randn(3, 7, 4), (torch.rand(3, 7) > 0.5).float()
    grad = net._loss_gradient(X, y.unsqueeze(1).unsqueeze(-1), torch.Generator().manual_seed(5))
    draws = torch.Generator().manual_seed(5)
    flat = net.flat.clone().requires_grad_(True)
    twin = net.clone()
    twin.flat = flat
    twin._bind_views()
    h = X.unsqueeze(1)
    for layer, (W, b) in enumerate(zip(twin.weights, twin.biases)):
        h = torch.matmul(h, W) + b
        if layer < len(twin.weights) - 1:
            keep = torch.rand(h.shape, generator=draws) >= p
            h = torch.relu(h) * keep / (1 - p)
    logits = h.squeeze(-1)
    loss = F.binary_cross_entropy_with_logits(logits, y.unsqueeze(1).expand_as(logits), reduction="none").mean(-1).sum()
    loss.backward()
    torch.testing.assert_close(grad, flat.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("systems_per_chunk", [1, 2])
@pytest.mark.parametrize("systems", [None, [4, 0, 2]])
def test_inference_in_chunks_of_systems_gives_the_bits_of_one_pass(monkeypatch, systems_per_chunk, systems):
    """Without autograd, ``member_logits`` runs a few systems at a time (large inputs); the logits are those of
    the one-pass (autograd) forward bit for bit, and those of each member computed alone."""
    from recourse_sim.models import network

    S, M, n, d, hidden = 5, 3, 11, 4, (6, 7)
    net = StackedMLP(S, M, d, hidden, rng=torch.Generator().manual_seed(2))
    chosen = None if systems is None else torch.tensor(systems)
    X = torch.randn(S if systems is None else len(systems), n, d, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # no rows: one (empty) pass
        assert net.member_logits(X[:, :0], chosen).shape == (X.shape[0], M, 0)
    one_pass = net.member_logits(X, chosen).detach()
    monkeypatch.setattr(network, "_CHUNK_BYTES", systems_per_chunk * M * n * max(hidden) * 4)
    with torch.no_grad():
        chunked = net.member_logits(X, chosen)
    assert torch.equal(chunked, one_pass)
    for row, s in enumerate(range(S) if systems is None else systems):
        for m in range(M):
            h = X[row]
            for layer, (W, b) in enumerate(zip(net.weights, net.biases)):
                h = h @ W[s, m] + b[s, m]
                h = torch.relu(h) if layer < len(hidden) else h
            torch.testing.assert_close(chunked[row, m], h.squeeze(-1))


@pytest.mark.parametrize("hidden,members", [((), 1), ((8,), 1), ((8, 8), 3)])
def test_stacked_training_equals_separate_training(hidden, members):
    """One stacked step updates S systems exactly as S separate trainings from the same initial weights."""
    X, y = torch.randn(3, 40, 2), (torch.rand(3, 40) > 0.5).float()
    stack = StackedMLP(3, members, 2, hidden, rng=torch.Generator().manual_seed(0))
    alone = [stack.select([s]) for s in range(3)]
    stack.train(X, y, epochs=2, batch_size=4)
    for s, net in enumerate(alone):
        net.train(X[s : s + 1], y[s : s + 1], epochs=2, batch_size=4)
        torch.testing.assert_close(net.flat[0], stack.flat[s], atol=1e-6, rtol=1e-5)


def test_sklearn_contract_and_learning():
    """The scikit-learn contract, and learning judged on held-out data against scikit-learn's own
    ``LogisticRegression`` (lbfgs, the exact optimum of the same model family) as the independent baseline.

    Data: 2-D Gaussian inputs labelled by a known line with 5 % label noise, 600 training and 2,000 test
    rows. Margins: test accuracy within 2 points of sklearn's (both ~0.93; 2 points = 40 test rows, far more
    than Adam's residual gap after 20 epochs, far less than a sign or class-column error, which scores ~0.07),
    and the learned decision direction within ~8 degrees of sklearn's (cosine > 0.99).
    """
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    rng = np.random.default_rng(11)
    X = rng.normal(size=(2600, 2)).astype(np.float32)
    y = (X @ np.array([1.5, -1.0]) + 0.4 > 0).astype(np.float32)
    flip = rng.random(len(y)) < 0.05
    y[flip] = 1 - y[flip]
    X_train, y_train, X_test, y_test = X[:600], y[:600], X[600:], y[600:]

    model = LogisticRegression(epochs=20, seed=0, device="cpu")
    assert not hasattr(model, "network_")
    assert model.fit(torch.tensor(X_train), torch.tensor(y_train)) is model
    assert model.get_params()["epochs"] == 20
    proba = model.predict_proba(torch.tensor(X_test))
    assert proba.shape == (len(X_test), 2)
    torch.testing.assert_close(proba.sum(1), torch.ones(len(X_test)))
    torch.testing.assert_close(proba[:, 1], model.proba_positive(torch.tensor(X_test)))  # column 1 = p(y = 1)
    ours = (model.predict(torch.tensor(X_test)).numpy() == y_test).mean()

    reference = SkLogisticRegression(C=1e4).fit(X_train, y_train)
    theirs = reference.score(X_test, y_test)
    assert theirs > 0.9  # the baseline itself is sound
    assert ours >= theirs - 0.02, (ours, theirs)
    w = model.network_.weights[0][0, 0, :, 0].numpy()
    cosine = w @ reference.coef_[0] / (np.linalg.norm(w) * np.linalg.norm(reference.coef_[0]))
    assert cosine > 0.99, cosine


def test_refit_is_a_warm_start(overlapping):
    model = MLPClassifier(epochs=5, retrain_epochs=1, seed=0, device="cpu").fit(overlapping.X, overlapping.y)
    before = model.network_.flat.clone()
    flipped = 1 - overlapping.y
    model.refit(overlapping.X, flipped)
    change = (model.network_.flat - before).norm()
    assert 0 < change < before.norm()  # moved from, not replaced by, the previous weights


def test_same_seed_same_model(overlapping):
    a = MLPClassifier(epochs=2, seed=3, device="cpu").fit(overlapping.X, overlapping.y)
    b = MLPClassifier(epochs=2, seed=3, device="cpu").fit(overlapping.X, overlapping.y)
    assert torch.equal(a.network_.flat, b.network_.flat)


def test_deep_ensemble_probability_is_mean_of_member_sigmoids(overlapping):
    model = DeepEnsemble(epochs=2, seed=0, device="cpu").fit(overlapping.X, overlapping.y)
    members = torch.sigmoid(model.network_.member_logits(overlapping.X.unsqueeze(0)))[0]
    assert members.shape[0] == 5
    torch.testing.assert_close(model.proba_positive(overlapping.X), members.mean(0))


def test_stacked_fit_answers_per_system(overlapping):
    X = torch.stack([overlapping.X, overlapping.X + 1])
    y = torch.stack([overlapping.y, overlapping.y])
    model = MLPClassifier(epochs=2, seed=0, device="cpu").fit(X, y)
    assert model.n_systems == 2
    assert model.proba_positive(overlapping.X).shape == (2, overlapping.n_samples)
    picked = model.select_systems([1, 1, 0])
    torch.testing.assert_close(picked.proba_positive(overlapping.X)[2], model.proba_positive(overlapping.X)[0])


@pytest.mark.parametrize("param,value", [("epochs", 0), ("dropout", 1.0), ("hidden_sizes", (0,)), ("learning_rate", -1.0)])
def test_bad_hyperparameters_are_named(param, value):
    with pytest.raises(ConfigError, match=f"model.{param}"):
        MLPClassifier(**{param: value})


def test_bad_shapes_and_nan_are_refused(overlapping):
    model = MLPClassifier(epochs=1, device="cpu")
    with pytest.raises(DataError, match="fit expects"):
        model.fit(overlapping.X, overlapping.y[:-1])
    X = overlapping.X.clone()
    X[0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        model.fit(X, overlapping.y)


def test_registry_names():
    assert set(MODELS) >= {"logistic_regression", "mlp", "deep_ensemble"}
