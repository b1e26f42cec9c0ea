"""Tests for recourse_sim.metrics against independent implementations (numpy loops, scipy, scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist as scipy_cdist
from sklearn import metrics as skm
from replay import permutation_splits

from recourse_sim.errors import ConfigError, DataError
from recourse_sim.metrics import (
    METRICS,
    accuracy,
    decisiveness,
    disagreement,
    f1_score,
    gaussian_kernel,
    implausibility,
    grid_points,
    mmd2_unbiased,
    mmd_permutation_test,
    perturbation,
    recourse_cost,
    validity,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mmd2_loops(x: np.ndarray, y: np.ndarray, l: float = 0.5) -> float:
    """Unbiased MMD^2 by explicit double loops (independent of the vectorised code)."""
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * l * l))  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


# ---------------------------------------------------------------- MMD


@pytest.mark.parametrize("shape_x, shape_y", [((7,), (5,)), ((10, 1), (4, 1)), ((6, 3), (9, 3)), ((2, 2), (2, 2))])
@pytest.mark.parametrize("l", [0.5, 1.3])
def test_mmd2_matches_double_loop(shape_x, shape_y, l):
    rng = np.random.default_rng(sum(shape_x) + 10 * sum(shape_y))
    x, y = rng.normal(size=shape_x), rng.normal(0.3, 1.2, size=shape_y)
    got = mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y), length_scale=l)
    assert got.shape == ()
    np.testing.assert_allclose(float(got), _mmd2_loops(x, y, l), rtol=1e-10, atol=1e-12)


def test_mmd2_batched_matches_unbatched():
    x, y = torch.randn(3, 8, 2, dtype=torch.float64), torch.randn(3, 5, 2, dtype=torch.float64)
    got = mmd2_unbiased(x, y)
    assert got.shape == (3,)
    for s in range(3):
        np.testing.assert_allclose(float(got[s]), _mmd2_loops(x[s].numpy(), y[s].numpy()), rtol=1e-10)


@pytest.mark.parametrize("d", [1, 3, 12])
def test_kernel_matches_scipy(d):
    rng = np.random.default_rng(d)
    x, y = rng.normal(size=(9, d)) * 2, rng.normal(size=(6, d)) * 2
    for l in (0.5, 2.0):
        want = np.exp(-scipy_cdist(x, y, "sqeuclidean") / (2 * l * l))
        got = gaussian_kernel(torch.from_numpy(x), torch.from_numpy(y), l)
        assert got.shape == (9, 6)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    # 1-D inputs are scalar samples.
    got = gaussian_kernel(torch.from_numpy(x[:, 0]), torch.from_numpy(y[:, 0]))
    np.testing.assert_allclose(got.numpy(), np.exp(-2 * scipy_cdist(x[:, :1], y[:, :1], "sqeuclidean")), rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_of_distant_points_is_tiny_but_never_subnormal(dtype):
    """Far pairs underflow exp(); the kernel floors them at e * tiny (subnormals make later products slow)."""
    x = torch.zeros(3, 29, dtype=dtype)
    y = torch.full((4, 29), 10.0, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    K = gaussian_kernel(x, y)
    assert torch.all(K >= tiny) and torch.all(K <= 3 * tiny)
    assert torch.all(gaussian_kernel(x, x) == 1)


def test_permutation_test_detects_shift():
    g = _gen(0)
    x, y = torch.randn(200, generator=g), torch.randn(200, generator=g) + 1.0
    res = mmd_permutation_test(x, y, rng=_gen(1))
    assert res.p_value < 0.05
    assert res.mmd2 > 0.05
    assert (res.n_x, res.n_y) == (200, 200)
    np.testing.assert_allclose(res.mmd2, _mmd2_loops(x.double().numpy(), y.double().numpy()), rtol=1e-4)


def test_permutation_test_calibrated_under_null():
    p = []
    for seed in range(40):
        g = _gen(100 + seed)
        x, y = torch.randn(60, 2, generator=g), torch.randn(80, 2, generator=g)
        p.append(mmd_permutation_test(x, y, n_permutations=100, rng=g).p_value)
    p = np.array(p)
    assert p.mean() > 0.25
    assert (p < 0.05).mean() < 0.2


def test_permutation_null_matches_naive_reshuffles():
    """The batched null equals re-splitting the pooled sample and recomputing MMD^2 one permutation at a time."""
    g = _gen(3)
    x, y = torch.randn(15, 2, generator=g, dtype=torch.float64), torch.randn(11, 2, generator=g, dtype=torch.float64)
    res = mmd_permutation_test(x, y, n_permutations=50, rng=_gen(4))
    # Replay the generator: no subsampling happens (both sides under max_samples), then the permutations' splits.
    splits = permutation_splits(_gen(4), 50, 26, 15)
    z = torch.cat([x, y])
    null = [float(mmd2_unbiased(z[x_side], z[y_side])) for x_side, y_side in splits]
    observed = _mmd2_loops(x.numpy(), y.numpy())
    assert res.mmd2 == pytest.approx(observed, rel=1e-10)
    assert res.p_value == pytest.approx(np.mean(np.array(null) >= res.mmd2))


def test_permutation_chunks_match_naive_reshuffles(monkeypatch):
    import recourse_sim.metrics.mmd as mmd_module

    n_x, n_y, N = 9, 7, 16
    fixed, bytes_per_perm = 2 * N * N * 8, N * (8 + 2 * 8 + 16)  # float64 inputs: kernel, per permutation
    monkeypatch.setattr(mmd_module, "_CHUNK_BYTES", fixed + 7 * bytes_per_perm)  # chunks of 7, 7, 6
    g = _gen(13)
    x, y = torch.randn(n_x, 2, generator=g, dtype=torch.float64), torch.randn(n_y, 2, generator=g, dtype=torch.float64)
    res = mmd_permutation_test(x, y, n_permutations=20, rng=_gen(14))
    splits = permutation_splits(_gen(14), 20, N, n_x)  # the chunks continue one stream
    z = torch.cat([x, y])
    null = np.array([float(mmd2_unbiased(z[x_side], z[y_side])) for x_side, y_side in splits])
    assert res.p_value == pytest.approx(np.mean(null >= res.mmd2))
    assert 0 < res.p_value < 1  # a non-trivial comparison


def test_permutation_test_deterministic_and_subsampled():
    g = _gen(5)
    x, y = torch.randn(1500, 2, generator=g), torch.randn(300, 2, generator=g) + 0.1
    a = mmd_permutation_test(x, y, max_samples=250, rng=_gen(6))
    b = mmd_permutation_test(x, y, max_samples=250, rng=_gen(6))
    c = mmd_permutation_test(x, y, max_samples=250, rng=_gen(7))
    assert a == b
    assert a.mmd2 != c.mmd2
    assert (a.n_x, a.n_y) == (250, 250)
    d = mmd_permutation_test(x, y, max_samples=1000, rng=_gen(6))
    assert (d.n_x, d.n_y) == (1000, 300)


def test_identical_samples_give_p_one():
    x = torch.randn(30, 2, generator=_gen(8))
    res = mmd_permutation_test(x, x.clone(), rng=_gen(9))
    assert res.p_value == 1.0


def test_ties_count_towards_p_value():
    # All points equal: every split gives MMD^2 = 0 exactly, and the reference counts null >= observed.
    res = mmd_permutation_test(torch.zeros(10, 2), torch.zeros(12, 2), rng=_gen(10))
    assert res.mmd2 == 0.0
    assert res.p_value == 1.0


@pytest.mark.parametrize(
    "x, y, match",
    [
        (torch.randn(1, 2), torch.randn(5, 2), "at least 2 samples"),
        (torch.randn(5), torch.randn(1), "at least 2 samples"),
        (torch.randn(5, 2), torch.randn(5, 3), "same number of features"),
    ],
)
def test_mmd_bad_input(x, y, match):
    with pytest.raises(DataError, match=match):
        mmd2_unbiased(x, y)
    with pytest.raises(DataError, match=match):
        mmd_permutation_test(x, y)


def test_mmd_bad_config():
    x = torch.randn(5, 2)
    with pytest.raises(ConfigError, match="n_permutations"):
        mmd_permutation_test(x, x, n_permutations=0)
    with pytest.raises(ConfigError, match="length_scale"):
        gaussian_kernel(x, x, length_scale=0.0)


# ---------------------------------------------------------------- model shift


def test_disagreement_and_decisiveness_by_hand():
    p0 = np.array([0.1, 0.5, 0.7, 0.49, 0.9])
    pt = np.array([0.6, 0.4, 0.8, 0.5, 0.2])
    # Labels p >= 0.5: p0 -> 0 1 1 0 1, pt -> 1 0 1 1 0.
    assert float(disagreement(torch.tensor(p0), torch.tensor(pt))) == pytest.approx(4 / 5)
    code = abs(np.sqrt(np.sum((p0 - 0.5) ** 2)) - np.sqrt(np.sum((pt - 0.5) ** 2)))
    paper = np.mean((pt - 0.5) ** 2)
    assert float(decisiveness(torch.tensor(p0), torch.tensor(pt))) == pytest.approx(code)
    assert float(decisiveness(torch.tensor(p0), torch.tensor(pt), "paper")) == pytest.approx(paper)


def test_model_shift_batched():
    rng = np.random.default_rng(0)
    p0, pt = rng.uniform(size=50), rng.uniform(size=(3, 50))
    got_dis = disagreement(torch.tensor(p0), torch.tensor(pt))
    got_dec = decisiveness(torch.tensor(p0), torch.tensor(pt))
    assert got_dis.shape == got_dec.shape == (3,)
    for s in range(3):
        assert float(got_dis[s]) == pytest.approx(np.mean((p0 >= 0.5) != (pt[s] >= 0.5)))
        want = abs(np.linalg.norm(p0 - 0.5) - np.linalg.norm(pt[s] - 0.5))
        assert float(got_dec[s]) == pytest.approx(want)


def test_perturbation_by_hand():
    rng = np.random.default_rng(1)
    ref = [rng.normal(size=(4, 3)), rng.normal(size=(4,)), rng.normal(size=(1, 4))]
    cur = [r + rng.normal(size=r.shape) * 0.1 for r in ref]
    code = np.mean([np.linalg.norm(c - r) / c.size for c, r in zip(cur, ref)])
    paper = np.sum([np.sum((c - r) ** 2) for c, r in zip(cur, ref)])
    tc, tr = [torch.tensor(a) for a in cur], [torch.tensor(a) for a in ref]
    assert float(perturbation(tc, tr)) == pytest.approx(code)
    assert float(perturbation(tc, tr, "paper")) == pytest.approx(paper)
    assert float(perturbation(tr, tr)) == 0.0


@pytest.mark.parametrize("definition", ["code", "paper"])
def test_perturbation_stacked(definition):
    rng = np.random.default_rng(2)
    S = 3
    ref = [rng.normal(size=(S, 2, 5)), rng.normal(size=(S, 5))]
    cur = [r + rng.normal(size=r.shape) for r in ref]
    got = perturbation([torch.tensor(a) for a in cur], [torch.tensor(a) for a in ref], definition, stacked=True)
    assert got.shape == (S,)
    for s in range(S):
        want = perturbation([torch.tensor(a[s]) for a in cur], [torch.tensor(a[s]) for a in ref], definition)
        assert float(got[s]) == pytest.approx(float(want))


def test_model_shift_bad_input():
    p = torch.rand(5)
    with pytest.raises(ConfigError, match="decisiveness.definition"):
        decisiveness(p, p, "median")
    with pytest.raises(ConfigError, match="perturbation.definition"):
        perturbation([p], [p], "l1")
    with pytest.raises(DataError, match="perturbation"):
        perturbation([p], [p, p])
    with pytest.raises(DataError, match="shape"):
        perturbation([torch.rand(2, 3)], [torch.rand(3, 2)])
    with pytest.raises(DataError, match="last"):
        disagreement(torch.rand(5), torch.rand(4))


def test_grid_points_on_lattice():
    g = _gen(11)
    X = torch.cat([torch.randn(50, 1, generator=g) * 3, torch.rand(50, 1, generator=g) + 5], 1).double()
    pts = grid_points(X, n_points=1000, steps=7, rng=_gen(12))
    assert pts.shape == (1000, 2)
    for j in range(2):
        lattice = torch.linspace(X[:, j].min(), X[:, j].max(), 7, dtype=torch.float64)
        assert torch.isin(pts[:, j], lattice).all()
        assert len(torch.unique(pts[:, j])) == 7  # 1000 draws cover all 7 values
        assert X[:, j].min() <= pts[:, j].min() and pts[:, j].max() <= X[:, j].max()
    assert torch.equal(pts, grid_points(X, n_points=1000, steps=7, rng=_gen(12)))
    assert grid_points(X, rng=_gen(0)).shape == (1000, 2)  # defaults


# ---------------------------------------------------------------- performance


@pytest.mark.parametrize("seed", range(5))
def test_f1_and_accuracy_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    y = rng.integers(0, 2, n)
    y_hat = rng.integers(0, 2, (3, n))
    y_hat[0] = 1  # a degenerate prediction: no predicted 0s
    got_macro = f1_score(torch.tensor(y), torch.tensor(y_hat))
    got_bin = f1_score(torch.tensor(y), torch.tensor(y_hat), average="binary")
    got_acc = accuracy(torch.tensor(y), torch.tensor(y_hat))
    assert got_macro.shape == got_bin.shape == got_acc.shape == (3,)
    for s in range(3):
        want = skm.f1_score(y, y_hat[s], labels=[0, 1], average="macro", zero_division=0)
        assert float(got_macro[s]) == pytest.approx(want)
        assert float(got_bin[s]) == pytest.approx(skm.f1_score(y, y_hat[s], zero_division=0))
        assert float(got_acc[s]) == pytest.approx(skm.accuracy_score(y, y_hat[s]))


def test_f1_empty_class_is_zero():
    y = torch.ones(6)
    assert float(f1_score(y, y)) == pytest.approx(0.5)  # class 0: no true, no predicted -> 0
    assert float(f1_score(y, y, "binary")) == 1.0
    assert float(f1_score(torch.zeros(6), torch.zeros(6), "binary")) == 0.0
    with pytest.raises(ConfigError, match="f1_score.average"):
        f1_score(y, y, "micro")


# ---------------------------------------------------------------- recourse


def test_validity_and_cost():
    rng = np.random.default_rng(3)
    p = rng.uniform(size=(2, 6))
    x, x_cf = rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 6, 3))
    got_v = validity(torch.tensor(p))
    got_c = recourse_cost(torch.tensor(x), torch.tensor(x_cf))
    got_c1 = recourse_cost(torch.tensor(x), torch.tensor(x_cf), p=1)
    assert got_v.shape == got_c.shape == (2,)
    np.testing.assert_allclose(got_v.numpy(), (p >= 0.5).mean(1))
    np.testing.assert_allclose(got_c.numpy(), np.linalg.norm(x_cf - x, axis=-1).mean(1))
    np.testing.assert_allclose(got_c1.numpy(), np.abs(x_cf - x).sum(-1).mean(1))
    mask = torch.tensor([[True, False, True, False, False, False], [False] * 6])
    got_m = recourse_cost(torch.tensor(x), torch.tensor(x_cf), mask=mask)
    assert float(got_m[0]) == pytest.approx(np.linalg.norm(x_cf[0, [0, 2]] - x[0, [0, 2]], axis=-1).mean())
    assert torch.isnan(got_m[1])
    with pytest.raises(DataError, match="x_factual"):
        recourse_cost(torch.rand(4, 3), torch.rand(4, 2))


def test_registry_lists_reported_metrics():
    assert {"domain_mmd", "model_mmd_grid_pvalue", "f1_change", "search_steps"} <= set(METRICS)
    assert {f"reliability_lag{k}" for k in (0, 1, 5, 10)} <= set(METRICS)
    # one table: every metric has a description and a figure label (units where it has one)
    assert all(METRICS[name].description and METRICS[name].label for name in METRICS)
    assert METRICS["recourse_cost"].unit == "feature units" and METRICS["f1"].unit is None
    with pytest.raises(ConfigError, match="did you mean 'disagreement'"):
        METRICS["disagrement"]


def test_implausibility_is_mean_distance_to_k_nearest_targets():
    X = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [9.0, 9.0]])
    y = torch.tensor([1.0, 1.0, 1.0, 0.0])
    value = implausibility(torch.tensor([[0.0, 0.0]]), X, y, k=2)
    assert value.shape == (1,) and value[0] == pytest.approx(0.5)
    assert implausibility(torch.zeros(2, 3, 2), X, y, k=100).shape == (2, 3)  # k capped at the 3 targets
