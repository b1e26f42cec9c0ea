"""Tests against independent truth: each compares the package with a computation that shares none of its code.

Written for issue 17 (the mutants that survived the rest of the suite): Adam against ``torch.optim.Adam`` on a
``torch.nn`` twin, the first counterfactual search step against autograd of the stated objective, atomic writes
against a write that fails halfway, and credit default's SEX columns against the raw CSV read with pandas. Every
test states its margin: wide enough for float32 rounding, far too narrow for the planted bug it must catch.
"""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from recourse_sim.data import DATASETS, real
from recourse_sim.experiments.store import atomic_directory
from recourse_sim.experiments.sweep import atomic_write
from recourse_sim.generators import SearchSettings, generate_counterfactuals
from recourse_sim.models import LogisticRegression, StackedMLP
from recourse_sim.models.network import AdamSettings


# ------------------------------------------------------------------------------------------------- Adam
def _twin(net: StackedMLP, member: int = 0) -> nn.Sequential:
    """A ``torch.nn`` copy of member ``member`` of system 0 (``nn.Linear`` stores W transposed)."""
    layers: list[nn.Module] = []
    for layer, (W, b) in enumerate(zip(net.weights, net.biases)):
        linear = nn.Linear(*W.shape[-2:])
        with torch.no_grad():
            linear.weight.copy_(W[0, member].T)
            linear.bias.copy_(b[0, member, 0])
        layers.append(linear)
        if layer < len(net.weights) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@pytest.mark.parametrize("hidden", [(), (6,)], ids=["logistic", "mlp"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["in_order", "shuffled"])
def test_adam_equals_torch_optim_adam_on_a_twin(hidden, shuffle):
    """The hand-written backprop + Adam of :class:`StackedMLP` against autograd + ``torch.optim.Adam``.

    Twin: ``nn.Linear`` layers holding the same initial weights, the batch-mean BCE-with-logits, Adam with the
    same lr/betas/eps and a fresh state. n = 23 rows at batch size 5 (the last batch has 3 rows, so its mean
    divides by 3), 4 epochs = 20 steps. The shuffled order is drawn from an identically seeded generator
    (one ``randperm(n)`` per epoch, the documented order of draws; dropout is off so nothing else draws).

    Margin: atol 2e-5 on weights of order 1 after 20 steps. float32 rounding differences between the two
    Adam formulas (``sqrt(v / b2)`` vs ``sqrt(v) / sqrt(b2)``) are ~1e-7 per step. lr = 0.02 makes every
    step count: Adam without the second-moment bias correction takes steps ~sqrt(1 / (1 - 0.999^t)) ≈ 7-30x
    too large, and swapped betas change the step by ~lr on the first steps, both > 1e-3 here.
    """
    torch.manual_seed(0)
    n, d, batch, epochs = 23, 3, 5, 4
    X = torch.randn(1, n, d)
    y = (X[0] @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(n) > 0).float().unsqueeze(0)
    settings = AdamSettings(lr=0.02, beta1=0.8, beta2=0.99, eps=1e-7)  # non-default betas: a swap is visible
    net = StackedMLP(1, 1, d, hidden, rng=torch.Generator().manual_seed(1))
    twin = _twin(net)
    net.train(X, y, epochs=epochs, batch_size=batch, adam=settings, shuffle=shuffle,
              rng=torch.Generator().manual_seed(7))

    optimiser = torch.optim.Adam(twin.parameters(), lr=settings.lr, betas=(settings.beta1, settings.beta2),
                                 eps=settings.eps)
    draws = torch.Generator().manual_seed(7)
    steps = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=draws) if shuffle else torch.arange(n)
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            optimiser.zero_grad()
            logits = twin(X[0, rows]).squeeze(-1)
            nn.functional.binary_cross_entropy_with_logits(logits, y[0, rows]).backward()
            optimiser.step()
            steps += 1
    assert steps == 20  # 5 batches per epoch, the last one short

    trained = _twin(net)
    for ours, theirs in zip(trained.parameters(), twin.parameters()):
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
    # The twin really moved: the comparison is not between two untouched initial weights.
    initial = _twin(StackedMLP(1, 1, d, hidden, rng=torch.Generator().manual_seed(1)))
    moved = sum((a - b).abs().sum() for a, b in zip(twin.parameters(), initial.parameters()))
    assert moved > 0.05


def test_adam_first_step_size_is_lr_per_coordinate():
    """Adam's defining property, from the paper (Kingma & Ba 2015, sec. 2.1): with both bias corrections the
    first update of every parameter with a non-zero gradient is ``-lr * sign(grad)`` (up to eps).

    Margin: 1e-6 relative to lr = 0.01. Without the second-moment correction the first step is lr / sqrt(1 -
    beta2) ≈ 31.6 lr; without the first-moment correction it is 0.1 lr; with swapped betas
    lr * (1 - beta2) / sqrt(1 - beta1) ... ≈ 0.003 lr.
    """
    net = StackedMLP(1, 1, 4, (), rng=torch.Generator().manual_seed(0))
    before = net.flat.clone()
    X, y = torch.randn(1, 8, 4), torch.ones(1, 8)
    grad = net._loss_gradient(X, y.unsqueeze(1).unsqueeze(-1), None)
    net.train(X, y, epochs=1, batch_size=8, adam=AdamSettings(lr=0.01))
    step = net.flat - before
    torch.testing.assert_close(step, -0.01 * grad.sign(), atol=1e-6, rtol=1e-4)


# ------------------------------------------------------------------------------------- search objective
@pytest.fixture(scope="module")
def lr_model():
    data = DATASETS["overlapping"](300, np.random.default_rng(3))
    model = LogisticRegression(epochs=20, seed=0, device="cpu").fit(data.X, data.y)
    negatives = data.X[model.proba_positive(data.X) < 0.2][:6]
    assert len(negatives) == 6
    return data, model, negatives


@pytest.mark.parametrize("rescale", [True, False], ids=["step_times_K", "plain_step"])
def test_first_generic_step_is_gradient_descent_on_yloss_plus_lambda_distance(lr_model, rescale):
    """One step of the generic generator against autograd of the documented objective, on logistic regression.

    Independent truth, written from the docs (engine.py, terms.py, catalogue.py) with the model's weights w, b:
    in the standardised space z = (x - mean) / std (ddof 1, fitted on the reference data) the K copies Z move by
    ``z1 = z0 - step_size * K * grad_Z [ -mean_k log sigmoid(w . x(z_k) + b) + lambda ||Z - z_f||_F ]``.
    The start z0 comes from a 0-step search with the same seed (copies at x + 0.1 N(0, I)); with init noise the
    distance term has a non-zero gradient at z0, so its sign matters.

    With ``rescale_step_by_k=False`` the factor K is dropped (checked too: a wrong factor there is a 2x step).

    Margin: atol 1e-5 in feature units on a step of ~0.05 std. A flipped distance sign changes every copy's
    step by 2 * step_size * K * lambda * (z_k - z_f) / ||Z - z_f|| ≈ 2 * 0.05 * 0.5 / sqrt(5) ≈ 0.02 (lambda 0.5).
    """
    data, model, factual = lr_model
    lam, step_size = 0.5, 0.01
    kwargs = dict(lambda_cost=lam, step_size=step_size, threshold=0.99, seed=4,
                  settings=SearchSettings(rescale_step_by_k=rescale))
    start = generate_counterfactuals(model, factual, "generic", data, max_steps=0, **kwargs)
    one = generate_counterfactuals(model, factual, "generic", data, max_steps=1, **kwargs)
    assert (start.steps == 0).all() and (one.steps == 1).all()

    mean, std = data.X.mean(0), data.X.std(0, unbiased=True)
    w = model.network_.weights[0][0, 0, :, 0].detach()
    b = model.network_.biases[0][0, 0, 0, 0].detach()
    K = start.counterfactuals.shape[1] if rescale else 1  # the step's factor
    z_f = ((factual - mean) / std).unsqueeze(1)
    z0 = ((start.counterfactuals - mean) / std).requires_grad_(True)
    x0 = z0 * std + mean
    yloss = -nn.functional.logsigmoid(x0 @ w + b).mean(-1)  # (B,): mean over the K copies
    distance = ((z0 - z_f) ** 2).sum((-1, -2)).sqrt()        # Frobenius norm over the K-stack
    (grad,) = torch.autograd.grad((yloss + lam * distance).sum(), z0, retain_graph=True)
    expected = (z0 - step_size * K * grad) * std + mean
    torch.testing.assert_close(one.counterfactuals, expected.detach(), atol=1e-5, rtol=0)
    # The distance term mattered: without it the step would differ by far more than the tolerance.
    (grad_y,) = torch.autograd.grad(yloss.sum(), z0)
    assert (step_size * K * (grad - grad_y) * std).abs().max() > 1e-3 / (1 if rescale else 5)


def test_entropy_yloss_is_the_predictive_entropy():
    """CLUE's yloss (``engine.yloss`` with ``entropy`` set) against the binary entropy written out with numpy:
    ``-p log p - (1 - p) log(1 - p)``, averaged over the K copies; rows without the flag get ``-mean log p``.
    Margin: 1e-6 (float32 on values of order 0.1-0.7)."""
    from recourse_sim.generators.engine import yloss

    p = np.array([[[0.1, 0.5, 0.9], [0.3, 0.7, 0.99]], [[0.2, 0.4, 0.6], [0.05, 0.5, 0.95]]])
    log_p = torch.tensor(np.log(p), dtype=torch.float32)
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p)).mean(-1)
    bce = -np.log(p).mean(-1)
    got = yloss(log_p, torch.tensor([[True], [False]]))
    np.testing.assert_allclose(got.numpy(), np.stack([entropy[0], bce[1]]), atol=1e-6)


def test_grid_points_accepts_a_single_step():
    """``steps = 1`` is a valid lattice (every point at the lower corner of the data's box); only ``steps < 1``
    is refused. Margin: exact."""
    from recourse_sim.metrics.model_shift import grid_points

    X = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    points = grid_points(X, n_points=4, steps=1, rng=torch.Generator().manual_seed(0))
    assert points.shape == (4, 2)
    assert torch.equal(points, X.amin(0).expand(4, 2))


def test_larger_lambda_gives_strictly_shorter_moves(lr_model):
    """Cost of recourse falls as its weight rises: 30 steps from the factual itself (no init noise), gamma =
    0.99 so nobody converges and every individual takes all 30 steps; the mean distance moved per individual
    is strictly decreasing in lambda = 0, 0.1, 0.3, 0.6.

    Margin: each decrease must be > 1 % of the lambda = 0 move (the decreases here are ~10-40 %); with the
    distance sign flipped the distances increase instead.
    """
    data, model, factual = lr_model
    settings = SearchSettings(init_noise=0.0)
    moves = []
    for lam in (0.0, 0.1, 0.3, 0.6):
        result = generate_counterfactuals(model, factual, "generic", data, settings=settings, lambda_cost=lam,
                                          threshold=0.99, max_steps=30, seed=0)
        assert not result.converged.any()
        moves.append((result.counterfactuals - factual.unsqueeze(1)).norm(dim=-1).mean(-1))
    moves = torch.stack(moves)  # (lambda, B)
    assert (moves[:-1] - moves[1:] > 0.01 * moves[0]).all(), moves


# ------------------------------------------------------------------------------------------ atomic writes
class _HalfwayFailure(RuntimeError):
    pass


def test_atomic_write_failing_halfway_leaves_the_old_file_byte_identical(tmp_path):
    """``sweep.atomic_write``: the writer writes half the new content (and flushes it) then raises; the old
    file must be byte-identical and no temporary left behind. Margin: exact bytes. An in-place write
    (``open(path, "wb")``) would have truncated the file and left the half-written bytes."""
    path = tmp_path / "manifest.json"
    old = b'{"cells": ["done", "done"]}\n' * 100
    path.write_bytes(old)

    def write_half_then_fail(handle):
        handle.write(b'{"cells": [')
        handle.flush()
        raise _HalfwayFailure("disk went away")

    with pytest.raises(_HalfwayFailure):
        atomic_write(path, write_half_then_fail)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    # And a successful write does replace the content.
    atomic_write(path, lambda handle: handle.write(b"new"))
    assert path.read_bytes() == b"new"


def test_parquet_serialisation_failing_halfway_leaves_the_old_cell_file(tmp_path, monkeypatch):
    """The cell table goes through ``atomic_write(path, lambda h: frame.to_parquet(h))``: a serialiser that
    dies after writing the Parquet magic leaves the previous file readable and byte-identical."""
    path = tmp_path / "cell.parquet"
    frame = pd.DataFrame({"value": [1.0, 2.0, 3.0]})
    frame.to_parquet(path, index=False)
    old = path.read_bytes()

    def broken(handle):
        handle.write(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, broken)
    assert path.read_bytes() == old
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame)


def test_atomic_directory_failing_halfway_leaves_the_old_directory_byte_identical(tmp_path):
    """``store.atomic_directory`` (run outputs): an error after some files were written into the staging
    directory leaves the previous run directory untouched, file for file and byte for byte, and no staging
    directory behind. A successful second write replaces it completely (no stale file survives)."""
    out = tmp_path / "run"
    with atomic_directory(out) as staging:
        (staging / "results.csv").write_text("round,value\n0,1.0\n")
        (staging / "old_only.txt").write_text("from the first run")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    with pytest.raises(_HalfwayFailure), atomic_directory(out) as staging:
        (staging / "results.csv").write_text("round,value\n0,")
        raise _HalfwayFailure("serialisation failed")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    with atomic_directory(out) as staging:
        (staging / "results.csv").write_text("round,value\n0,2.0\n")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {"results.csv": b"round,value\n0,2.0\n"}


# ----------------------------------------------------------------------------------- credit default SEX
@pytest.fixture(scope="module")
def raw_credit() -> pd.DataFrame:
    """The shipped CSV read with pandas alone (codes per data/files/credit_default.md: SEX 1 male, 2 female)."""
    source = resources.files("recourse_sim.data") / "files" / "credit_default.csv.gz"
    with resources.as_file(source) as path, gzip.open(Path(path)) as handle:
        return pd.read_csv(handle)


@pytest.mark.parametrize("constraints", [True, False])
def test_credit_default_sex_columns_match_the_raw_codes(raw_credit, constraints):
    """Totals of SEX_male / SEX_female in the full loaded data (n_samples=None: every row, in a random order)
    against the raw codes, split by the target so the columns' alignment with the rows is checked too, plus
    the mean standardised AGE of each sex recomputed from the raw file (z-score with ddof 1 over all rows).

    Margin: counts exact; mean age 1e-4 standard deviations (the men are ~0.2 sd older: a swap moves it by
    ~0.2). The data card says 11,888 men and 18,112 women.
    """
    data = real.credit_default(None, np.random.default_rng(0), constraints=constraints)
    names = data.schema.names
    male = data.X[:, names.index("SEX_male")].numpy()
    female = data.X[:, names.index("SEX_female")].numpy()
    y = data.y.numpy()
    raw_male = raw_credit["SEX"].to_numpy() == 1
    raw_female = raw_credit["SEX"].to_numpy() == 2
    assert raw_male.sum() == 11_888 and raw_female.sum() == 18_112  # the data card's totals
    raw_good = 1 - raw_credit["defaulted"].to_numpy()  # the loader flips the target: 1 = no default
    for ours, theirs in ((male, raw_male), (female, raw_female)):
        assert int(ours.sum()) == int(theirs.sum())
        assert int(ours[y == 1].sum()) == int(theirs[raw_good == 1].sum())
    age = raw_credit["AGE"].to_numpy(dtype=float)
    z_age = (age - age.mean()) / age.std(ddof=1)
    ours_age = data.X[:, names.index("AGE")].numpy().astype(float)
    assert abs(ours_age[male == 1].mean() - z_age[raw_male].mean()) < 1e-4
    assert abs(ours_age[female == 1].mean() - z_age[raw_female].mean()) < 1e-4
