"""The fast MMD permutation test (issue 12, item 2): compiled permutation draws, the exact low-rank form for 1-D
samples, one batched pass over permutations and systems. Checked against a hand-written reference of the
estimator and of the permutation null, and for validity (size and power) of the p-values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from replay import permutation_splits

import recourse_sim.metrics.mmd as mmd_module
from recourse_sim.metrics.mmd import (
    _taylor_features,
    _taylor_rank,
    gaussian_kernel,
    mmd_permutation_test,
    mmd_permutation_tests,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_mmd2(x: np.ndarray, y: np.ndarray, l: float) -> float:
    """The unbiased estimator as written in the reference code, in float64 numpy (independent of the package)."""
    x, y = x.reshape(len(x), -1).astype(np.float64), y.reshape(len(y), -1).astype(np.float64)

    def k(a, b):
        return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * l * l))

    m, n = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * m - m) + (kyy.sum() - np.trace(kyy)) / (n * n - n)
            - 2 * k(x, y).sum() / (m * n))


def _reference_test(x: torch.Tensor, y: torch.Tensor, P: int, l: float, seed: int, tie: float = 0.0
                    ) -> tuple[float, float]:
    """Replay of the test's draws (no subsampling: both sides under max_samples): the permutations' splits of the
    pooled sample (``replay.permutation_splits``); ``p = mean(null >= observed)``, with
    splits within ``tie`` of the observed one counted as ties (exactly tied splits differ by rounding here)."""
    z = torch.cat([x, y]).double().numpy()
    n_x = len(x)
    observed = _reference_mmd2(z[:n_x], z[n_x:], l)
    null = [_reference_mmd2(z[x_side], z[y_side], l) for x_side, y_side in permutation_splits(_gen(seed), P, len(z), n_x)]
    return observed, float(np.mean(np.array(null) >= observed - tie))


# ------------------------------------------------------------------------------- the statistic is unchanged
@pytest.mark.parametrize("d, m, n, l", [(1, 40, 55, 0.5), (1, 64, 64, 0.2), (2, 33, 47, 0.5), (29, 50, 40, 3.0),
                                        (5, 300, 310, 1.5)])  # N >= 512: a^T K a over 2 blocks
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_statistic_and_p_value_equal_the_reference(d, m, n, l, dtype):
    g = _gen(d * 1000 + m)
    x, y = torch.rand(m, d, generator=g, dtype=dtype), torch.rand(n, d, generator=g, dtype=dtype) ** 1.3
    if d == 1:
        x, y = x[:, 0], y[:, 0]  # predicted probabilities: (n,)
    res = mmd_permutation_test(x, y, n_permutations=60, length_scale=l, rng=_gen(7))
    observed, p_value = _reference_test(x, y, 60, l, seed=7)
    # float64: to rounding. float32 inputs: the kernel path computes the kernel in float32 (as before); the 1-D
    # low-rank path always runs in float64.
    tol = 1e-12 if dtype == torch.float64 or d == 1 else 2e-6
    assert res.mmd2 == pytest.approx(observed, abs=tol)
    assert res.p_value == pytest.approx(p_value)
    assert (res.n_x, res.n_y) == (m, n)


@pytest.mark.parametrize("blocks", [2, 3, 8])
def test_block_triangular_quadratic_form_equals_the_full_product(blocks, monkeypatch):
    g = _gen(90 + blocks)
    x, y = torch.randn(45, 3, generator=g, dtype=torch.float64), torch.randn(38, 3, generator=g, dtype=torch.float64)
    monkeypatch.setattr(mmd_module, "_MAX_BLOCKS", 1)
    full = mmd_permutation_test(x, y, n_permutations=50, rng=_gen(5))
    monkeypatch.setattr(mmd_module, "_MAX_BLOCKS", blocks)
    monkeypatch.setattr(mmd_module, "_MIN_BLOCK", 4)
    blocked = mmd_permutation_test(x, y, n_permutations=50, rng=_gen(5))
    assert blocked.p_value == full.p_value and 0 < full.p_value < 1
    assert blocked.mmd2 == pytest.approx(full.mmd2, abs=1e-14)


@pytest.mark.parametrize("d", [2, 8, 29])  # the feature-by-feature and the product forms of the exponent
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_rows_are_the_rows_of_the_whole_kernel(d, dtype):
    Z = torch.randn(3, 1100, d, generator=_gen(d), dtype=dtype) * 2  # 3 systems; far pairs reach the exp floor
    whole = gaussian_kernel(Z, Z, 0.8)
    blocks = mmd_module._row_blocks(1100)
    assert len(blocks) == 4 and blocks[-1][1] == 1100
    rows = mmd_module._KernelRows(Z, 0.8, most_rows=max(hi - lo for lo, hi in blocks))
    for lo, hi in blocks:
        got = rows(lo, hi)
        if d <= mmd_module._EXACT_CDIST_MAX_DIM:  # summed feature by feature: the same operations on each entry
            assert torch.equal(got, whole[:, lo:hi])
        else:  # one product: BLAS may round a block's rows differently (its edge kernels; exponents of ~200 here)
            eps = torch.finfo(dtype).eps
            torch.testing.assert_close(got, whole[:, lo:hi], rtol=1e3 * eps, atol=1e3 * eps)


@pytest.mark.parametrize("T", [0.0, 0.01, 0.25, 1.0, 4.0, 9.0, 11.5])
def test_taylor_features_reproduce_the_kernel(T):
    """Phi Phi^T equals the Gaussian kernel to float64 rounding up to the largest spread with a rank."""
    R = _taylor_rank(T)
    l = 0.5
    z = torch.linspace(0, 2 * l * math.sqrt(T), 301, dtype=torch.float64)[torch.randperm(301, generator=_gen(0))]
    Phi = _taylor_features(z.unsqueeze(0), l)[0]
    assert Phi.shape == (301, R)
    K = gaussian_kernel(z, z, l)
    assert torch.allclose(Phi @ Phi.T, K, rtol=0, atol=2e-15 * max(R, 1))


def test_probabilities_need_19_terms_and_wide_1d_samples_use_the_kernel():
    assert _taylor_rank(1.0) == 19  # range 1 at l = 0.5
    assert _taylor_rank(14.0) is None
    g = _gen(3)
    x, y = (torch.randn(k, generator=g, dtype=torch.float64) * 10 for k in (50, 60))
    res = mmd_permutation_test(x, y, n_permutations=30, rng=_gen(4))  # range ~ 50 length-scales: kernel path
    observed, p_value = _reference_test(x, y, 30, 0.5, seed=4)
    assert res.mmd2 == pytest.approx(observed, abs=1e-12)
    assert res.p_value == pytest.approx(p_value)


# ------------------------------------------------------------------------- batching: the same tests as a loop
@pytest.mark.parametrize("d", [1, 3])
def test_batched_tests_equal_one_call_per_system(d, monkeypatch):
    g = _gen(11)
    X, Y = torch.rand(7, 120, d, generator=g), torch.rand(7, 150, d, generator=g) * 1.1
    loop_rng = _gen(12)
    loop = [mmd_permutation_test(X[s].squeeze(-1), Y[s].squeeze(-1), n_permutations=40, max_samples=100,
                                 rng=loop_rng) for s in range(7)]
    batched = mmd_permutation_tests(X.squeeze(-1) if d == 1 else X, Y.squeeze(-1) if d == 1 else Y,
                                    n_permutations=40, max_samples=100, rng=_gen(12))
    # Small chunks: systems split over several batches, and (d > 1) permutations of one system over chunks.
    N = 200
    # 1-D: two systems per batch (features + 41 indicator rows each); 3-D float32: one system, 9 permutations.
    budget = 2 * (3 * N * 66 * 8 + 41 * N * 40) + 1 if d == 1 else 2 * N * N * 4 + 9 * N * 32
    monkeypatch.setattr(mmd_module, "_CHUNK_BYTES", budget)
    chunked = mmd_permutation_tests(X.squeeze(-1) if d == 1 else X, Y.squeeze(-1) if d == 1 else Y,
                                    n_permutations=40, max_samples=100, rng=_gen(12))
    for a, b, c in zip(loop, batched, chunked):
        assert (a.p_value, a.n_x, a.n_y) == (b.p_value, b.n_x, b.n_y) == (c.p_value, c.n_x, c.n_y) == (
            a.p_value, 100, 100)
        assert b.mmd2 == pytest.approx(a.mmd2, abs=1e-12 if d == 1 else 1e-6)
        assert c.mmd2 == pytest.approx(a.mmd2, abs=1e-12 if d == 1 else 1e-6)
    assert len({t.p_value for t in loop}) > 1  # the systems' draws differ


def test_randperm_draws_of_other_devices_keep_each_systems_draws_together(monkeypatch):
    """Off the CPU each permutation is one ``torch.randperm`` on the generator's device; the batched and chunked
    tests draw them in the order of one call per system (run here on the CPU with the compiled stream off)."""
    monkeypatch.setattr(mmd_module._Splits, "compiled_on", ())
    g = _gen(31)
    X, Y = torch.rand(5, 40, 2, generator=g), torch.rand(5, 50, 2, generator=g) * 1.1
    loop_rng = _gen(32)
    loop = [mmd_permutation_test(X[s], Y[s], n_permutations=30, max_samples=35, rng=loop_rng) for s in range(5)]
    batched = mmd_permutation_tests(X, Y, n_permutations=30, max_samples=35, rng=_gen(32))
    monkeypatch.setattr(mmd_module, "_CHUNK_BYTES", 2 * 70 * 70 * 4 + 9 * 70 * 32)  # one system, 9 permutations
    chunked = mmd_permutation_tests(X, Y, n_permutations=30, max_samples=35, rng=_gen(32))
    assert [t.p_value for t in loop] == [t.p_value for t in batched] == [t.p_value for t in chunked]
    assert len({t.p_value for t in loop}) > 1
    # The first system replayed: its two subsamples, then one randperm of the pooled sample per permutation.
    replay = _gen(32)
    x, y = X[0][torch.randperm(40, generator=replay)[:35]], Y[0][torch.randperm(50, generator=replay)[:35]]
    z = torch.cat([x, y]).double().numpy()
    null = [_reference_mmd2(z[perm[:35]], z[perm[35:]], 0.5)
            for perm in (torch.randperm(70, generator=replay).numpy() for _ in range(30))]
    assert loop[0].p_value == pytest.approx(np.mean(np.array(null) >= loop[0].mmd2 - 1e-6))


def test_indicators_in_another_dtype_get_the_same_draws():
    """The compiled stream writes float32/float64 CPU indicators in place and anything else through a copy."""
    rows = {}
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        A = torch.zeros(6, 40, dtype=dtype)
        mmd_module._Splits(40, 17, _gen(3), torch.device("cpu"), ahead=6).mark(A)
        rows[dtype] = A.double()
    assert (rows[torch.float64].sum(-1) == 17).all()
    assert torch.equal(rows[torch.float64], rows[torch.float32]) and torch.equal(rows[torch.float64], rows[torch.bfloat16])


def test_batched_tests_take_samples_of_different_sizes():
    g = _gen(21)
    xs = [torch.randn(k, 2, generator=g, dtype=torch.float64) for k in (30, 30, 45, 30)]
    ys = [torch.randn(k, 2, generator=g, dtype=torch.float64) + 0.3 for k in (40, 40, 40, 25)]
    loop_rng = _gen(22)
    loop = [mmd_permutation_test(x, y, n_permutations=25, rng=loop_rng) for x, y in zip(xs, ys)]
    batched = mmd_permutation_tests(xs, ys, n_permutations=25, rng=_gen(22))
    assert [(t.p_value, t.n_x, t.n_y) for t in batched] == [(t.p_value, t.n_x, t.n_y) for t in loop]
    assert [t.mmd2 for t in batched] == pytest.approx([t.mmd2 for t in loop], abs=1e-14)


def test_deterministic_under_a_seed_and_subsampled():
    g = _gen(31)
    x, y = torch.rand(1500, generator=g), torch.rand(1200, generator=g)
    a = mmd_permutation_test(x, y, rng=_gen(32))
    assert a == mmd_permutation_test(x, y, rng=_gen(32))
    assert a != mmd_permutation_test(x, y, rng=_gen(33))
    assert (a.n_x, a.n_y) == (1000, 1000)


# ---------------------------------------------------------------------------- p-value convention and validity
def test_p_value_convention_ties_count():
    """p = #{null >= observed} / P (no +1): identical samples and constant samples give p = 1, and every
    p-value is a multiple of 1/P."""
    x = torch.rand(80, generator=_gen(41))
    assert mmd_permutation_test(x, x.clone(), rng=_gen(42)).p_value == 1.0
    constant = mmd_permutation_test(torch.full((30,), 0.3), torch.full((40,), 0.3), rng=_gen(43))
    assert constant.mmd2 == pytest.approx(0.0, abs=1e-12) and constant.p_value == 1.0
    # Two values only: a split's statistic depends only on how many 1s land on each side, so many splits tie
    # exactly (in the low-rank path they differ by rounding and count through the 1e-12 tie tolerance).
    x, y = torch.tensor([0.0] * 15 + [1.0] * 9), torch.tensor([0.0] * 9 + [1.0] * 15)
    res = mmd_permutation_test(x, y, n_permutations=37, rng=_gen(44))
    observed, p_value = _reference_test(x, y, 37, 0.5, seed=44, tie=1e-12)
    assert res.p_value == pytest.approx(p_value) and abs(res.p_value * 37 - round(res.p_value * 37)) < 1e-9
    assert 0 < res.p_value < 1


#: Under H0 the share of 200 tests with p < 0.05 must lie in the central 99.8 % of Binomial(200, 0.05):
#: 2 to 21 rejections (measured: 8 in 1-D, 11 in 2-D; a p-value without +1 is valid up to its 1/P resolution).
_LO, _HI = (int(stats.binom.ppf(q, 200, 0.05)) for q in (0.001, 0.999))


@pytest.mark.parametrize("d", [1, 2])
def test_false_positive_rate_under_the_null_is_alpha(d):
    g = _gen(50 + d)
    if d == 1:  # probability-like samples, as in the model-shift test
        X, Y = torch.rand(200, 150, generator=g).square(), torch.rand(200, 150, generator=g).square()
    else:
        X, Y = torch.randn(200, 80, 2, generator=g), torch.randn(200, 90, 2, generator=g)
    p = np.array([t.p_value for t in mmd_permutation_tests(X, Y, n_permutations=100, rng=_gen(60 + d))])
    assert _LO <= (p < 0.05).sum() <= _HI
    assert p.mean() == pytest.approx(0.5, abs=0.06)  # ~ uniform


@pytest.mark.parametrize("d", [1, 2])
def test_power_under_a_clear_shift(d):
    g = _gen(70 + d)
    if d == 1:
        X, Y = torch.rand(50, 200, generator=g), torch.rand(50, 200, generator=g).sqrt()  # mean 0.5 vs 0.67
    else:
        X, Y = torch.randn(50, 100, 2, generator=g), torch.randn(50, 100, 2, generator=g) + 0.7
    p = np.array([t.p_value for t in mmd_permutation_tests(X, Y, n_permutations=100, rng=_gen(80 + d))])
    assert (p < 0.05).mean() >= 0.95


def test_rng_keyword():
    with pytest.raises(TypeError):
        mmd_permutation_test(torch.rand(5), torch.rand(5), generator=_gen(0))  # renamed: rng
