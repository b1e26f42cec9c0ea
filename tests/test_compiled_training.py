"""The compiled CPU training loop against the stepwise torch loop it replaces (``StackedMLP.train`` backends).

Tolerance: the two backends do the same float32 arithmetic step by step; they differ only in the order of the
sums over a mini-batch and over a layer's inputs (torch's BLAS vs row/input order), i.e. by float32 rounding
on weights of order 1). Measured max |difference| on the cases below: <= 1.5e-7 after 20-40 steps at lr = 0.02,
1.2e-7 after 1,600 batch-1 steps at lr = 1e-3 (and 4.2e-7 after 8,000 steps, one SaTML retraining round of
800 rows x 10 epochs, checked outside the suite). Asserted: atol 1e-5, rtol 1e-4 —
tight enough to catch any change of the step (a missing bias correction, a wrong batch mean, a skipped last
batch each move weights by >= 1e-3 here), loose enough for rounding to accumulate.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recourse_sim.models import AdamSettings, MLPClassifier, StackedMLP

ATOL, RTOL = 1e-5, 1e-4


def _data(S: int, n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(S, n, d, generator=g)
    y = ((X[..., 0] - 0.5 * X[..., 1] + 0.5 * torch.randn(S, n, generator=g)) > 0).float()
    return X, y


def _train_both(net: StackedMLP, X, y, **kwargs) -> tuple[StackedMLP, StackedMLP]:
    compiled, stepwise = net.clone(), net.clone()
    compiled.train(X, y, rng=torch.Generator().manual_seed(7), backend="compiled", **kwargs)
    stepwise.train(X, y, rng=torch.Generator().manual_seed(7), backend="torch", **kwargs)
    return compiled, stepwise


@pytest.mark.parametrize(
    "hidden,members,batch,shuffle",
    [
        ((), 1, 1, False),  # SaTML logistic regression
        ((), 1, 5, True),  # mini-batches, n = 23 not divisible by 5: the last batch has 3 rows
        ((8,), 1, 1, True),  # SaTML MLP, shuffled
        ((8,), 1, 4, False),
        ((8, 8), 3, 5, True),  # deep ensemble of 3 two-hidden-layer members
        ((6, 5), 2, 23, False),  # full batch
        ((6,), 5, 50, True),  # batch larger than n
    ],
)
def test_compiled_equals_stepwise_torch(hidden, members, batch, shuffle):
    X, y = _data(3, 23, 4)
    net = StackedMLP(3, members, 4, hidden, rng=torch.Generator().manual_seed(1))
    compiled, stepwise = _train_both(net, X, y, epochs=4, batch_size=batch, shuffle=shuffle,
                                     adam=AdamSettings(lr=0.02, beta1=0.8, beta2=0.99, eps=1e-7))
    assert (stepwise.flat - net.flat).abs().max() > 1e-2  # training really moved the weights
    torch.testing.assert_close(compiled.flat, stepwise.flat, atol=ATOL, rtol=RTOL)


def test_compiled_equals_stepwise_torch_satml_scale():
    """Batch-1 default Adam over 2 epochs of 800 rows (1,600 steps), LR and MLP stacks of 2 systems."""
    X, y = _data(2, 800, 2, seed=3)
    for hidden in ((), (32,)):
        net = StackedMLP(2, 1, 2, hidden, rng=torch.Generator().manual_seed(4))
        compiled, stepwise = _train_both(net, X, y, epochs=2)
        torch.testing.assert_close(compiled.flat, stepwise.flat, atol=ATOL, rtol=RTOL)


def test_blas_mini_batches_equal_the_stepwise_torch_loop():
    """Mini-batches of >= ``BLAS_MIN_ROWS`` rows multiply through BLAS (the real-data protocol's batch size 500),
    smaller ones through the compiled loops: one run has both (n = 100 at batch 40: 40, 40, then 20 rows), on
    the real-data architecture (two hidden layers of 64, here an ensemble of 2 members), against the torch loop.
    Swapping a product's operands or transposing the wrong one moves the weights by far more than the tolerance.
    """
    from recourse_sim.models.compiled_training import BLAS_MIN_ROWS

    n, batch = 100, 40
    assert batch >= BLAS_MIN_ROWS > n % batch
    X, y = _data(2, n, 9, seed=2)
    net = StackedMLP(2, 2, 9, (64, 64), rng=torch.Generator().manual_seed(1))
    compiled, stepwise = _train_both(net, X, y, epochs=3, batch_size=batch, shuffle=True,
                                     adam=AdamSettings(lr=0.01))
    assert (stepwise.flat - net.flat).abs().max() > 1e-2
    torch.testing.assert_close(compiled.flat, stepwise.flat, atol=ATOL, rtol=RTOL)


def test_blas_mini_batches_with_dropout_are_bit_identical_across_reruns():
    """The BLAS products run on the calling thread (``device.one_blas_thread``): reruns give the same bits, and
    the BLAS libraries' thread settings are restored afterwards."""
    from threadpoolctl import threadpool_info

    X, y = _data(3, 96, 5, seed=4)
    net = StackedMLP(3, 2, 5, (64, 64), dropout=0.1, rng=torch.Generator().manual_seed(2))

    def trained() -> torch.Tensor:
        run = net.clone()
        run.train(X, y, epochs=2, batch_size=48, rng=torch.Generator().manual_seed(3))
        return run.flat

    def threads() -> dict[str, int]:
        return {library["filepath"]: library["num_threads"] for library in threadpool_info()}

    runs = [trained()]  # the first call loads the BLAS library that numba calls, if nothing did before
    threads_before = threads()
    runs += [trained(), trained()]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    assert not torch.equal(runs[0], net.flat)
    assert threads() == threads_before


def test_compiled_equals_stepwise_with_dropout_set_to_zero_draws_the_same_orders():
    """dropout = 0: the compiled loop consumes exactly the draws of the torch loop (one randperm per epoch)."""
    X, y = _data(2, 30, 3)
    net = StackedMLP(2, 2, 3, (7,), dropout=0.0, rng=torch.Generator().manual_seed(2))
    g_compiled, g_torch = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    compiled, stepwise = net.clone(), net.clone()
    compiled.train(X, y, epochs=3, batch_size=4, shuffle=True, rng=g_compiled, backend="compiled")
    stepwise.train(X, y, epochs=3, batch_size=4, shuffle=True, rng=g_torch, backend="torch")
    torch.testing.assert_close(compiled.flat, stepwise.flat, atol=ATOL, rtol=RTOL)
    assert torch.equal(g_compiled.get_state(), g_torch.get_state())


def test_auto_backend_is_compiled_on_cpu_and_bit_identical_across_reruns():
    X, y = _data(4, 50, 3)
    net = StackedMLP(4, 3, 3, (8, 8), dropout=0.2, rng=torch.Generator().manual_seed(0))
    runs = []
    for backend in ("auto", "compiled", "compiled"):
        trained = net.clone()
        trained.train(X, y, epochs=3, batch_size=2, shuffle=True, rng=torch.Generator().manual_seed(5),
                      backend=backend)
        runs.append(trained.flat)
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[1], runs[2])
    # another seed gives other shuffles and masks
    other = net.clone()
    other.train(X, y, epochs=3, batch_size=2, shuffle=True, rng=torch.Generator().manual_seed(6))
    assert not torch.equal(other.flat, runs[0])


def test_stacked_compiled_training_equals_separate_compiled_training_exactly():
    """Pairs are trained independently (in any thread order): a stack equals its systems trained alone,
    bit for bit, without dropout (with dropout a pair's mask stream depends on its index in the stack)."""
    X, y = _data(3, 40, 2)
    stack = StackedMLP(3, 2, 2, (8,), rng=torch.Generator().manual_seed(0))
    alone = [stack.select([s]) for s in range(3)]
    stack.train(X, y, epochs=2, batch_size=3)
    for s, net in enumerate(alone):
        net.train(X[s : s + 1], y[s : s + 1], epochs=2, batch_size=3)
        assert torch.equal(net.flat[0], stack.flat[s])


@pytest.mark.parametrize("rows", [1, 3, 6])
def test_dropout_keep_rate_of_the_compiled_masks(rows):
    """One step on a batch of ``rows`` identical rows with every hidden pre-activation positive: an output
    weight gets a non-zero gradient (and so Adam's first step of -lr * sign) exactly when its hidden unit was
    kept in at least one row. With independent masks per row, the share of moved output weights is
    ``1 - p^rows`` (1 - p for one row); masks repeated across the rows of a batch would give 1 - p. Asserted
    within 4 binomial standard deviations (20,000 draws: +-0.013 for one row at p = 0.3). Masks also differ
    between members and between seeds."""
    S, M, H, p = 4, 5, 1000, 0.3
    net = StackedMLP(S, M, 1, (H,), dropout=p, rng=torch.Generator().manual_seed(0))
    net.weights[0].copy_(net.weights[0].abs() + 0.1)  # x = 1 > 0 and positive weights: every unit active
    X, y = torch.ones(S, rows, 1), torch.zeros(S, rows)

    def moved(seed: int) -> torch.Tensor:
        trained = net.clone()
        trained.train(X, y, epochs=1, batch_size=rows, rng=torch.Generator().manual_seed(seed))
        return (trained.weights[1] != net.weights[1]).squeeze(-1)  # (S, M, H)

    kept = moved(1)
    rate = kept.float().mean().item()
    expected = 1 - p**rows
    sd = (expected * (1 - expected) / kept.numel()) ** 0.5
    assert abs(rate - expected) < 4 * sd
    assert not torch.equal(kept[0, 0], kept[0, 1]) and not torch.equal(kept[0, 0], kept[1, 0])
    assert torch.equal(moved(1), kept) and not torch.equal(moved(2), kept)


def test_dropout_units_that_share_a_draw_are_independent():
    """The compiled loop takes two units' masks from each 64-bit draw (bits 40-63 and 16-39): neighbouring units
    must still drop independently, both with probability p^2 (the same bits for both would give p). 1,001 units
    per member, so the last takes a draw of its own: within 4 binomial standard deviations over 40 x 5 x 500
    pairs, and the drop rate of the last units alone (200 of them) too."""
    S, M, H, p = 40, 5, 1001, 0.3
    net = StackedMLP(S, M, 1, (H,), dropout=p, rng=torch.Generator().manual_seed(0))
    net.weights[0].copy_(net.weights[0].abs() + 0.1)
    trained = net.clone()
    trained.train(torch.ones(S, 1, 1), torch.zeros(S, 1), epochs=1, batch_size=1, rng=torch.Generator().manual_seed(4))
    dropped = (trained.weights[1] == net.weights[1]).squeeze(-1)  # (S, M, H): one row, so dropped = not moved
    both = (dropped[..., 0:H - 1:2] & dropped[..., 1:H:2]).float()
    sd = (p * p * (1 - p * p) / both.numel()) ** 0.5
    assert abs(both.mean().item() - p * p) < 4 * sd
    assert abs(dropped.float().mean().item() - p) < 4 * (p * (1 - p) / dropped.numel()) ** 0.5
    last = dropped[..., -1].float()
    assert abs(last.mean().item() - p) < 4 * (p * (1 - p) / last.numel()) ** 0.5


def test_dropout_training_learns_like_the_torch_loop():
    """With dropout the masks differ from the torch loop's, so the weights differ; the learning must not:
    the training loss (evaluated without dropout) falls, by an amount within 25 % of the torch loop's fall."""
    X, y = _data(3, 200, 2, seed=1)
    net = StackedMLP(3, 2, 2, (16, 16), dropout=0.3, rng=torch.Generator().manual_seed(3))

    def loss(model: StackedMLP) -> torch.Tensor:
        logits = model.member_logits(X)
        return F.binary_cross_entropy_with_logits(logits, y.unsqueeze(1).expand_as(logits))

    compiled, stepwise = _train_both(net, X, y, epochs=5, batch_size=4, shuffle=True,
                                     adam=AdamSettings(lr=0.01))
    start, fall_compiled, fall_torch = loss(net), loss(net) - loss(compiled), loss(net) - loss(stepwise)
    assert fall_torch > 0.1 * start
    assert abs(fall_compiled - fall_torch) < 0.25 * fall_torch
    assert not torch.allclose(compiled.flat, stepwise.flat, atol=1e-3)  # different masks, as documented


def test_classifier_trains_with_the_compiled_loop_on_cpu():
    """``fit`` and ``refit`` go through the compiled loop on the CPU and match a stepwise-trained twin."""
    X, y = _data(1, 120, 2, seed=5)
    model = MLPClassifier(hidden_sizes=(8,), epochs=3, retrain_epochs=2, device="cpu", seed=0).fit(X[0], y[0])
    twin = StackedMLP(1, 1, 2, (8,), rng=torch.Generator().manual_seed(0))
    twin.train(X, y, 3, backend="torch", rng=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.network_.flat, twin.flat, atol=ATOL, rtol=RTOL)
    model.refit(X[0], y[0])
    twin.train(X, y, 2, backend="torch")
    torch.testing.assert_close(model.network_.flat, twin.flat, atol=ATOL, rtol=RTOL)


def test_zero_epochs_is_a_no_op_and_unknown_backend_is_refused():
    X, y = _data(1, 5, 2)
    net = StackedMLP(1, 1, 2, (3,), rng=torch.Generator().manual_seed(0))
    before = net.flat.clone()
    net.train(X, y, epochs=0)
    assert torch.equal(net.flat, before)
    with pytest.raises(ValueError, match="backend"):
        net.train(X, y, epochs=1, backend="cuda-graphs")


@pytest.mark.parametrize("n_rows, n_in, n_out", [(0, 3, 5), (1, 4, 8), (4, 1, 64), (7, 6, 5), (9, 64, 64)])
def test_blocked_products_keep_the_sums_in_input_and_row_order(n_rows, n_in, n_out):
    """The mini-batch products of the compiled loop (four rows per pass) give the bits of sums taken one term
    at a time in float32: ``x @ M`` summed over inputs in order (first term assigned), and ``G + sum_r
    outer(a_r, delta_r)`` added row by row. Rounding-order changes would show as inequality here."""
    from recourse_sim.models.compiled_training import add_outer_products, rows_times_matrix

    rng = np.random.default_rng(n_rows * 100 + n_in)
    x = rng.standard_normal((n_rows, n_in)).astype(np.float32)
    M = rng.standard_normal((n_in, n_out)).astype(np.float32)
    buffer = np.concatenate([x.ravel(), np.full(n_rows * n_out, np.nan, np.float32)])  # in and out share it
    rows_times_matrix(buffer, 0, n_rows, n_in, M.ravel(), 0, buffer, n_rows * n_in, n_out, False)
    expected = x[:, :1] * M[0]
    for i in range(1, n_in):
        expected = expected + x[:, i : i + 1] * M[i]
    assert np.array_equal(buffer[n_rows * n_in :].reshape(n_rows, n_out), expected)

    delta = rng.standard_normal((n_rows, n_out)).astype(np.float32)
    G = rng.standard_normal((n_in, n_out)).astype(np.float32)
    grad = G.ravel().copy()
    add_outer_products(x.ravel(), 0, n_in, delta.ravel(), 0, n_out, n_rows, grad, 0, False)
    for r in range(n_rows):
        G = G + x[r][:, None] * delta[r][None, :]
    assert np.array_equal(grad.reshape(n_in, n_out), G)


@pytest.mark.parametrize("n_rows, n_in, n_out", [(32, 4, 3), (50, 16, 1), (500, 64, 64), (40, 2, 32), (40, 8, 5),
                                                 (50, 29, 32)])
def test_products_through_blas_or_the_loops_equal_float64(n_rows, n_in, n_out):
    """Whichever path the shape rule picks (BLAS from ``BLAS_MIN_ROWS`` rows and enough inputs, else the loops),
    ``x @ M`` and ``G + A^T delta`` on views inside larger buffers equal float64 products to float32 rounding:
    a transposed operand or a wrong offset would be off by O(1)."""
    from recourse_sim.models.compiled_training import add_outer_products, rows_times_matrix

    rng = np.random.default_rng(n_rows + n_in + n_out)
    x = rng.standard_normal((n_rows, n_in)).astype(np.float32)
    M = rng.standard_normal((n_in, n_out)).astype(np.float32)
    buffer = np.concatenate([np.ones(3, np.float32), x.ravel(), np.full(n_rows * n_out + 2, np.nan, np.float32)])
    weights = np.concatenate([np.ones(5, np.float32), M.ravel()])
    rows_times_matrix(buffer, 3, n_rows, n_in, weights, 5, buffer, 3 + n_rows * n_in, n_out, True)
    product = buffer[3 + n_rows * n_in : 3 + n_rows * n_in + n_rows * n_out].reshape(n_rows, n_out)
    np.testing.assert_allclose(product, x.astype(np.float64) @ M, rtol=1e-4, atol=1e-4)
    assert np.isnan(buffer[-2:]).all()  # nothing written past the product

    delta = rng.standard_normal((n_rows, n_out)).astype(np.float32)
    G = rng.standard_normal((n_in, n_out)).astype(np.float32)
    grad = np.concatenate([np.zeros(7, np.float32), G.ravel()])
    add_outer_products(buffer, 3, n_in, np.concatenate([np.ones(1, np.float32), delta.ravel()]), 1, n_out, n_rows,
                       grad, 7, True)
    np.testing.assert_allclose(grad[7:].reshape(n_in, n_out), G + x.astype(np.float64).T @ delta, rtol=1e-4,
                               atol=1e-3)
    assert np.array_equal(grad[:7], np.zeros(7, np.float32))
