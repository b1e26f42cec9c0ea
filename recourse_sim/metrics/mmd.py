"""Maximum mean discrepancy (MMD) with a Gaussian kernel and a batched permutation test.

Follows Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse", IEEE SaTML 2023, as coded in
AlgorithmicRecourseDynamics.jl v0.1.2 (``src/evaluation/mmd.jl``, itself taken from IPMeasures.jl):

- kernel ``with_lengthscale(GaussianKernel(), 0.5)``: ``k(x, y) = exp(-||x - y||^2 / (2 l^2))``, ``l = 0.5``;
- unbiased within-sample terms: ``MMD^2 = (sum K_xx - tr K_xx)/(m^2 - m) + (sum K_yy - tr K_yy)/(n^2 - n)
  - 2 sum K_xy/(m n)`` with ``m = |X|``, ``n = |Y|`` (can be negative);
- at most ``max_samples`` (1,000) rows per side, each side subsampled independently without replacement;
- null distribution by pooling, shuffling and re-splitting at ``|X|``; ``p = mean(null >= observed)``.

Samples are rows: ``X`` has shape ``(n, d)``; a 1-D tensor ``(n,)`` is read as ``n`` scalar samples ``(n, 1)``
(the model-shift MMD compares 1-D predicted probabilities).

How the permutation test is computed (all exact up to float rounding):

- every split of the pooled sample is a 0/1 indicator ``a`` of the X side, and the three kernel sums of a split
  are quadratic forms in ``a`` (see :func:`_kernel_statistics`), so all permutations (and the observed split)
  are evaluated as one batched product with the pooled kernel matrix, for several systems at once
  (:func:`mmd_permutation_tests`);
- the permutations' X sides come from one compiled call per test on the CPU (partial Fisher-Yates shuffles on a
  splitmix64 stream seeded from the caller's generator, :class:`_Splits`), from ``torch.randperm`` on a GPU;
- for 1-D samples the Gaussian kernel has an exact low-rank form: with ``u = (x - c)/l`` around the centre ``c``
  of the pooled sample, ``k(x, y) = sum_k phi_k(x) phi_k(y)`` with ``phi_k(x) = exp(-u^2/2) u^k / sqrt(k!)``
  (the Taylor series of ``exp(u v)``). Truncated where the remainder is below float64 resolution (19 terms
  for probabilities at ``l = 0.5``), the kernel sums of a split cost ``O(N R)`` instead of ``O(N^2)``
  (:func:`_taylor_features`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from recourse_sim.errors import ConfigError, DataError

__all__ = [
    "MMDTest",
    "gaussian_kernel",
    "median_length_scale",
    "mmd2_unbiased",
    "mmd_permutation_test",
    "mmd_permutation_tests",
]

# Working-set budget of one batch (systems x permutations) of the permutation test (bytes).
_CHUNK_BYTES = 200 * 2**20
# Up to this many features the squared distances are summed feature by feature (exact zeros on the diagonal,
# no cancellation); above it the matmul form ``|x|^2 + |y|^2 - 2 x.y`` (clamped at 0) is much faster.
_EXACT_CDIST_MAX_DIM = 4
# a^T K a over the lower block triangle of K: at most this many blocks, of at least this many rows.
_MAX_BLOCKS, _MIN_BLOCK = 8, 256
# Most Taylor terms of the 1-D low-rank kernel; beyond it (a pooled range above ~7 length-scales) the test uses
# the kernel matrix.
_MAX_RANK = 64
# Two splits whose float64 low-rank statistics differ by less than this count as a tie (null >= observed). The
# statistic is a combination of kernel means in [0, 1]; its float64 rounding error is ~1e-14.
_LOW_RANK_TIE = 1e-12


def _as_samples(X: Tensor, name: str) -> Tensor:
    """Return ``X`` as floating ``(..., n, d)``; 1-D ``(n,)`` becomes ``(n, 1)``."""
    if not isinstance(X, Tensor):
        raise DataError(f"{name}: expected a torch.Tensor, got {type(X).__name__}")
    if X.dim() == 0:
        raise DataError(f"{name}: expected samples of shape (n,) or (..., n, d), got a scalar")
    if X.dim() == 1:
        X = X.unsqueeze(-1)
    return X if X.is_floating_point() else X.to(torch.get_default_dtype())


def _check_length_scale(length_scale: float) -> None:
    if not length_scale > 0:
        raise ConfigError("length_scale", length_scale, "a positive number")


def _draw(fn, *args, rng: torch.Generator | None, device: torch.device, **kwargs) -> Tensor:
    """Call a torch sampler on ``rng``'s device, then move the draw to ``device``.

    Drawing on the generator's own device makes results depend only on the generator (a CPU generator gives
    the same subsamples and permutations for CPU and CUDA inputs).
    """
    if rng is None:
        return fn(*args, device=device, **kwargs)
    return fn(*args, generator=rng, device=rng.device, **kwargs).to(device)


def _kernel_exponent(X: Tensor, Y: Tensor, length_scale: float, out: Tensor | None = None) -> Tensor:
    """``-||x - y||^2 / (2 l^2)`` for every pair of rows, ``(..., n, m)`` (written into ``out`` when given); ``X``,
    ``Y`` of one floating dtype.

    Up to ``_EXACT_CDIST_MAX_DIM`` features, summed feature by feature; above, as one product of the augmented
    rows ``[2c x, -c |x|^2, 1] . [y, 1, -c |y|^2]`` with ``c = 1 / (2 l^2)`` (what ``torch.cdist``'s matmul mode
    does), which can exceed 0 by rounding: :func:`_floored_exp` clamps it.
    """
    c = 0.5 / length_scale**2
    if X.shape[-1] <= _EXACT_CDIST_MAX_DIM:
        sq = torch.sub(X[..., :, 0, None], Y[..., None, :, 0], out=out).square_()
        for f in range(1, X.shape[-1]):
            sq.add_((X[..., :, f, None] - Y[..., None, :, f]).square_())
        return sq.mul_(-c)
    X_aug = torch.cat([X * (2 * c), X.square().sum(-1, keepdim=True).mul_(-c), torch.ones_like(X[..., :1])], -1)
    Y_aug = torch.cat([Y, torch.ones_like(Y[..., :1]), Y.square().sum(-1, keepdim=True).mul_(-c)], -1)
    return torch.matmul(X_aug, Y_aug.transpose(-1, -2), out=out)


def _floored_exp(exponent: Tensor) -> Tensor:
    """The kernel values ``exp(exponent)`` in place, the exponent clamped to ``[log(tiny) + 1, 0]``.

    On CPU, exp() of an argument whose result underflows takes a slow path, and subnormal kernel values slow
    every product with the kernel after it (measured on a 2,000 x 2,000 kernel in 29 dimensions, where most
    pairs are that far apart: the permutation test took 580 ms, 52 ms with the floor). The exponent is
    therefore floored at log(tiny) + 1: the smallest kernel value is e * tiny (3.2e-38 in float32) instead of
    0 or a subnormal, a difference below any MMD's resolution.
    """
    floor = math.log(torch.finfo(exponent.dtype).tiny) + 1.0
    return exponent.clamp_(min=floor, max=0).exp_()


def gaussian_kernel(X: Tensor, Y: Tensor, length_scale: float = 0.5) -> Tensor:
    """Gaussian (RBF) kernel matrix ``k(x, y) = exp(-||x - y||^2 / (2 l^2))``.

    The reference code's ``with_lengthscale(GaussianKernel(), 0.5)`` (AlgorithmicRecourseDynamics.jl v0.1.2;
    Altmeyer et al., SaTML 2023), i.e. ``exp(-2 ||x - y||^2)`` at the default.

    Args:
        X: Samples ``(..., n, d)``, or ``(n,)`` read as ``(n, 1)``.
        Y: Samples ``(..., m, d)``, or ``(m,)``; leading dims broadcast against ``X``'s.
        length_scale: Kernel length-scale ``l`` (default 0.5).

    Returns:
        Kernel matrix ``(..., n, m)`` in the promoted floating dtype of the inputs.

    Raises:
        DataError: If the feature dimensions differ.
        ConfigError: If ``length_scale`` is not positive.
    """
    _check_length_scale(length_scale)
    X, Y = _as_samples(X, "X"), _as_samples(Y, "Y")
    if X.shape[-1] != Y.shape[-1]:
        raise DataError(f"X and Y must have the same number of features, got {X.shape[-1]} and {Y.shape[-1]}")
    dtype = torch.promote_types(X.dtype, Y.dtype)
    X, Y = X.to(dtype), Y.to(dtype)
    return _floored_exp(_kernel_exponent(X, Y, length_scale))


def median_length_scale(X: Tensor, max_samples: int = 1000, rng: torch.Generator | None = None) -> float:
    """The median heuristic: the median Euclidean distance between distinct rows of ``X`` (Gretton et al.,
    JMLR 2012), on at most ``max_samples`` rows drawn without replacement (from ``rng``).

    In 8-29 standardised dimensions typical distances are 4-8, so the paper's fixed ``l = 0.5`` puts almost
    every off-diagonal kernel value near 0 and the test loses its power; the median keeps the kernel's
    exponent of order one. Computed from a fixed reference sample (not from the two samples being compared),
    the length-scale does not depend on the permutation, so the permutation test stays exact.
    """
    X = _as_samples(X, "X")
    if X.dim() != 2 or X.shape[0] < 2:
        raise DataError(f"median_length_scale needs at least 2 samples (n, d), got shape {tuple(X.shape)}")
    X = _subsample(X, max_samples, rng).double()
    distances = torch.pdist(X)
    positive = distances[distances > 0]
    if positive.numel() == 0:
        raise DataError("median_length_scale: every sample is identical; no length-scale can be estimated")
    return float(positive.median())


def _check_pair(X: Tensor, Y: Tensor) -> None:
    if X.shape[-2] < 2 or Y.shape[-2] < 2:
        raise DataError(
            f"MMD needs at least 2 samples on each side (unbiased within-sample terms), "
            f"got {X.shape[-2]} in X and {Y.shape[-2]} in Y"
        )
    if X.shape[-1] != Y.shape[-1]:
        raise DataError(f"X and Y must have the same number of features, got {X.shape[-1]} and {Y.shape[-1]}")


def offdiag_sum(K: Tensor) -> Tensor:
    """``sum K - tr K`` over the last two axes: a kernel matrix's off-diagonal sum, the unbiased MMD's within-sample
    terms (also CT's IP*, :func:`~recourse_sim.metrics.faithfulness.ip_star`)."""
    # sum K - tr K rather than masking: exactly the reference's estimator, whatever rounding the diagonal has.
    return K.sum((-2, -1)) - K.diagonal(dim1=-2, dim2=-1).sum(-1)


def mmd2_unbiased(X: Tensor, Y: Tensor, length_scale: float = 0.5) -> Tensor:
    """Unbiased squared MMD with a Gaussian kernel.

    ``(sum K_xx - tr K_xx)/(m^2 - m) + (sum K_yy - tr K_yy)/(n^2 - n) - 2 sum K_xy/(m n)``, ``m = |X|``,
    ``n = |Y|``, as in AlgorithmicRecourseDynamics.jl v0.1.2 (Altmeyer et al., SaTML 2023). The estimate can
    be slightly negative when the distributions agree.

    Args:
        X: Samples ``(..., m, d)``, or ``(m,)`` read as ``(m, 1)``. For a batch of 1-D samples pass
            ``(..., m, 1)``.
        Y: Samples ``(..., n, d)``, or ``(n,)``.
        length_scale: Gaussian kernel length-scale (default 0.5).

    Returns:
        ``(...)``: a 0-d tensor for unbatched inputs.

    Raises:
        DataError: If either side has fewer than 2 samples or the feature dimensions differ.
    """
    X, Y = _as_samples(X, "X"), _as_samples(Y, "Y")
    _check_pair(X, Y)
    m, n = X.shape[-2], Y.shape[-2]
    xx = offdiag_sum(gaussian_kernel(X, X, length_scale)) / (m * m - m)
    yy = offdiag_sum(gaussian_kernel(Y, Y, length_scale)) / (n * n - n)
    xy = gaussian_kernel(X, Y, length_scale).sum((-2, -1)) / (m * n)
    return xx + yy - 2 * xy


@dataclass(frozen=True)
class MMDTest:
    """Result of :func:`mmd_permutation_test`.

    Attributes:
        mmd2: Observed unbiased MMD^2 on the (subsampled) samples.
        p_value: Share of permutation statistics ``>=`` the observed one.
        n_x: Rows of ``X`` used after subsampling.
        n_y: Rows of ``Y`` used after subsampling.
    """

    mmd2: float
    p_value: float
    n_x: int
    n_y: int


def _subsample(X: Tensor, k: int, rng: torch.Generator | None) -> Tensor:
    if X.shape[0] <= k:
        return X
    idx = _draw(torch.randperm, X.shape[0], rng=rng, device=X.device)[:k]
    return X[idx]


class _Splits:
    """The X sides of one test's uniform random re-splits (``n_x`` of the ``N`` pooled rows each), drawn in chunks:
    ``mark(A)`` sets the next ``len(A)`` of them as 0/1 indicator rows, and the chunks of one test are the rows of
    a single draw.

    On the CPU they come from one stream seeded by one draw from ``rng`` when the test starts
    (:class:`~recourse_sim.compiled_random.PermutationStream`: partial Fisher-Yates shuffles in one compiled call
    per chunk, written straight into the indicators); one ``torch.randperm`` per permutation cost ~12 us each,
    2.7 s of a SaTML experiment's 216,590, and the indicators' scatter 0.9 s more. On other devices (a CUDA generator, or inputs there with ``rng=None``): the first ``n_x`` entries of one
    ``torch.randperm(N)`` per permutation, on ``rng``'s device; the first ``ahead`` of them are drawn when the test
    starts, so that with several tests in one batch each test's draws stay together, as in one call per test."""

    compiled_on = ("cpu",)  # device types whose draws come from the compiled stream

    def __init__(self, N: int, n_x: int, rng: torch.Generator | None, device: torch.device, ahead: int) -> None:
        self.N, self.n_x, self.rng, self.device = N, n_x, rng, device
        self.where = device if rng is None else rng.device
        self.stream, self.drawn = None, []
        if self.where.type in self.compiled_on:
            from recourse_sim.compiled_random import PermutationStream  # lazy: numba costs ~0.3 s to import

            self.stream = PermutationStream(N, n_x, rng)
        else:
            self.drawn = [self._randperm() for _ in range(ahead)]

    def _randperm(self) -> Tensor:
        return torch.randperm(self.N, generator=self.rng, device=self.where)[:self.n_x]

    def mark(self, A: Tensor) -> None:
        """Set the X sides of the next ``len(A)`` permutations to 1 in the zero-filled indicators ``A`` (Q, N)."""
        if self.stream is not None:
            if A.device.type == "cpu" and A.dtype in (torch.float32, torch.float64):
                self.stream.mark(A.numpy())  # written in place: no index tensor, no scatter
            else:  # drawn on the CPU for inputs elsewhere (or in another dtype), then copied
                marks = torch.zeros(A.shape, dtype=torch.float64)
                self.stream.mark(marks.numpy())
                A.copy_(marks)
            return
        Q = A.shape[0]
        ready, self.drawn = self.drawn[:Q], self.drawn[Q:]
        side = torch.stack(ready + [self._randperm() for _ in range(Q - len(ready))]).to(self.device)
        A.scatter_(-1, side, 1.0)


def mmd2_from_sums(xx: Tensor, yy: Tensor, xy: Tensor, n_x, n_y) -> Tensor:
    """Unbiased MMD^2 from the kernel sums: off-diagonal ``xx`` and ``yy`` (:func:`offdiag_sum`) and the cross sum
    ``xy`` of samples of sizes ``n_x`` and ``n_y`` (numbers or tensors)."""
    return xx / (n_x * n_x - n_x) + yy / (n_y * n_y - n_y) - 2 * xy / (n_x * n_y)


class _KernelRows:
    """Rows ``lo:hi`` of each system's pooled kernel matrix ``gaussian_kernel(Z, Z, l)``, ``(S, hi - lo, N)``,
    computed when asked into one reused buffer by :func:`gaussian_kernel`'s own :func:`_kernel_exponent` and
    :func:`_floored_exp` (bit for bit the whole matrix's rows up to 4 features; above, BLAS may round a block's
    product in the last bits).

    Why: the whole ``(S, N, N)`` matrix of a batch (~90 MB at N = 1,500 in float64) was written once and read
    twice, and each new allocation of that size paid its page faults again; a block of rows is used
    (:func:`_kernel_statistics`) while it is still in cache. Measured on random data shaped like the SaTML domain
    test (a reference of 500 rows, 1,000 positives, 100 permutations, 40 systems, one thread): 1.1-1.2 s ->
    0.74-0.95 s in 8 features; one evaluation of California housing's 120 systems 4.3 -> 2.9 s.
    """

    def __init__(self, Z: Tensor, length_scale: float, most_rows: int) -> None:
        self.Z, self.length_scale = Z, length_scale
        S, N, _ = Z.shape
        self.buffer = torch.empty(S * most_rows * N, dtype=Z.dtype, device=Z.device)

    def __call__(self, lo: int, hi: int) -> Tensor:
        S, N, _ = self.Z.shape
        out = self.buffer[:S * (hi - lo) * N].view(S, hi - lo, N)
        return _floored_exp(_kernel_exponent(self.Z[..., lo:hi, :], self.Z, self.length_scale, out=out))


def _row_blocks(N: int) -> list[tuple[int, int]]:
    """The block rows of :func:`_kernel_statistics`: at most ``_MAX_BLOCKS`` of at least ``_MIN_BLOCK`` rows."""
    blocks = max(1, min(_MAX_BLOCKS, N // _MIN_BLOCK))
    bounds = [N * i // blocks for i in range(blocks + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _kernel_statistics(A: Tensor, kernel_rows: Callable[[int, int], Tensor], n_x: int) -> Tensor:
    """Unbiased MMD^2 of every split ``A`` (``(S, Q, N)`` 0/1 indicators of the X side) of the pooled kernels,
    ``(S, Q)``; ``kernel_rows(lo, hi)`` gives rows ``lo:hi`` of the ``(S, N, N)`` kernel matrices (valid until the
    next call).

    With ``a`` the indicator, ``r = K 1`` and ``S = 1^T K 1``: ``sum K_xx = a^T K a``, ``sum K_xy = a.r - a^T K a``
    and ``sum K_yy = S - 2 a.r + a^T K a``, so products of the indicators with ``K`` serve all Q splits. ``K``
    is symmetric, so ``a^T K a`` is taken over its lower block triangle (off-diagonal blocks twice): with B
    blocks about ``(B + 1) / 2B`` of the full ``(Q, N) @ (N, N)`` product. The products run in ``K``'s dtype;
    the reductions run in float64 because ``sum K_yy`` is a difference of large sums.
    """
    N = A.shape[-1]
    n_y = N - n_x
    row_sums = torch.empty(A.shape[0], N, 1, dtype=torch.float64, device=A.device)  # (S, N, 1)
    diag = torch.empty_like(row_sums)
    q = torch.zeros(A.shape[:-1], dtype=torch.float64, device=A.device)  # a^T K a
    for lo, hi in _row_blocks(N):
        rows = kernel_rows(lo, hi)
        row_sums[:, lo:hi, 0] = rows.sum(-1, dtype=torch.float64)
        diag[:, lo:hi, 0] = rows[..., lo:hi].diagonal(dim1=-2, dim2=-1)
        part = (A[..., lo:hi] @ rows[..., :hi]).double()  # block row i, blocks j <= i
        part[..., :lo] *= 2
        q += part.mul_(A[..., :hi]).sum(-1)
    total = row_sums.sum((-2, -1)).unsqueeze(-1)  # (S, 1)
    A = A.double()
    a_r = (A @ row_sums).squeeze(-1)
    a_diag = (A @ diag).squeeze(-1)
    xx = q - a_diag
    yy = total - 2 * a_r + q - (diag.sum((-2, -1)).unsqueeze(-1) - a_diag)
    xy = a_r - q
    return mmd2_from_sums(xx, yy, xy, n_x, n_y)


def _taylor_rank(T: float) -> int | None:
    """Fewest Taylor terms ``R`` of ``exp(t)`` with ``|t| <= T`` whose remainder ``<= T^R / R! e^T`` is below
    float64 resolution (2^-53), or None if more than ``_MAX_RANK`` are needed."""
    if not T <= _MAX_RANK:  # T^R / R! e^T stays above 1 up to R = T: no rank within the cap (also NaN, inf)
        return None
    term = math.exp(T)
    for R in range(1, _MAX_RANK + 1):
        term *= T / R
        if term <= 2.0**-53:
            return R
    return None


def _spread(x: Tensor, y: Tensor, length_scale: float) -> float:
    """``T = (range / 2l)^2`` of the pooled 1-D sample: the bound on ``|u u'|`` in :func:`_taylor_features`."""
    lo, hi = min(float(x.min()), float(y.min())), max(float(x.max()), float(y.max()))
    return ((hi - lo) / (2 * length_scale)) ** 2


def _taylor_features(Z: Tensor, length_scale: float) -> Tensor:
    """Exact low-rank features of the 1-D Gaussian kernel, ``(S, N, R)`` float64 with ``Phi Phi^T = K``.

    ``Z`` is ``(S, N)``. With ``u = (z - c)/l`` around each system's centre ``c`` (the midpoint of its range),
    ``k(z, z') = exp(-u^2/2) exp(-u'^2/2) exp(u u')`` and ``exp(u u') = sum_k (u u')^k / k!``, so
    ``phi_k(z) = exp(-u^2/2) u^k / sqrt(k!)``. With ``|u u'| <= T = (range / 2l)^2`` the series is cut after
    :func:`_taylor_rank` ``(T)`` terms, where each kernel value is off by less than 2^-53 (float64 rounding;
    probabilities at ``l = 0.5`` have ``T <= 1``: 19 terms). The caller checks that ``T`` needs at most
    ``_MAX_RANK`` terms.
    """
    Z = Z.double()
    lo, hi = Z.amin(-1, keepdim=True), Z.amax(-1, keepdim=True)
    u = (Z - (lo + hi) / 2) / length_scale
    R = _taylor_rank(float(((hi - lo) / (2 * length_scale)).square().max()))
    k = torch.arange(1, R, dtype=torch.float64, device=Z.device)
    steps = torch.cat([(-0.5 * u.square()).exp_().unsqueeze(-1), u.unsqueeze(-1) / k.sqrt()], dim=-1)
    return steps.cumprod(-1)  # exp(-u^2/2) prod_{j<=k} u / sqrt(j) = exp(-u^2/2) u^k / sqrt(k!)


def _low_rank_statistics(A: Tensor, Phi: Tensor, n_x: int) -> Tensor:
    """Unbiased MMD^2 of every split ``A`` (``(S, Q, N)`` float64 0/1 indicators of the X side) from the
    low-rank features ``Phi`` (``(S, N, R)``): with ``U = Phi^T a`` and ``V = Phi^T (1 - a)``, ``sum K_xx =
    |U|^2``, ``sum K_yy = |V|^2``, ``sum K_xy = U.V`` and ``tr K = sum_i |phi(z_i)|^2``."""
    n_y = Phi.shape[-2] - n_x
    diag = Phi.square().sum(-1, keepdim=True)  # (S, N, 1)
    sums = A @ torch.cat([Phi, diag], dim=-1)  # one pass over the indicators: (S, Q, R + 1)
    U, a_diag = sums[..., :-1], sums[..., -1]
    V = Phi.sum(-2, keepdim=True) - U
    xx = U.square().sum(-1) - a_diag
    yy = V.square().sum(-1) - (diag.sum((-2, -1)).unsqueeze(-1) - a_diag)
    xy = (U * V).sum(-1)
    return mmd2_from_sums(xx, yy, xy, n_x, n_y)


def _as_systems(X, name: str) -> list[Tensor]:
    """A batch of samples: ``(S, m)`` (1-D samples), ``(S, m, d)`` or a sequence of ``(m_s,)``/``(m_s, d)``."""
    if isinstance(X, Tensor):
        if X.dim() not in (2, 3):
            raise DataError(f"{name}: expected a batch (S, m) or (S, m, d), got shape {tuple(X.shape)}")
        X = X.unsqueeze(-1) if X.dim() == 2 else X
        X = X if X.is_floating_point() else X.to(torch.get_default_dtype())
        return list(X.unbind(0))
    out = []
    for s, x in enumerate(X):
        x = _as_samples(x, f"{name}[{s}]")
        if x.dim() != 2:
            raise DataError(f"{name}[{s}]: expected samples (m,) or (m, d), got shape {tuple(x.shape)}")
        out.append(x)
    return out


def mmd_permutation_tests(
    X,
    Y,
    *,
    n_permutations: int = 100,
    length_scale: float = 0.5,
    max_samples: int = 1000,
    rng: torch.Generator | None = None,
) -> list[MMDTest]:
    """:func:`mmd_permutation_test` for many pairs (systems) at once.

    Equal to ``[mmd_permutation_test(X[s], Y[s], ..., rng=rng) for s in range(S)]``: the same draws from ``rng``
    in the same order (per system: X's subsample, Y's subsample, then the permutations), so the same p-values
    (statistics equal to float rounding). Consecutive systems whose samples have the same sizes after
    subsampling are evaluated together, in batches of about 200 MB.

    Args:
        X: ``(S, m)`` 1-D samples, ``(S, m, d)``, or a sequence of S tensors ``(m_s,)`` / ``(m_s, d)``.
        Y: The same for the other side, ``S`` pairs in all.
        n_permutations, length_scale, max_samples, rng: As in :func:`mmd_permutation_test`.

    Returns:
        One :class:`MMDTest` per system.

    Raises:
        DataError: If the batches differ in length, a side has fewer than 2 samples, or features or devices
            differ.
        ConfigError: If ``n_permutations < 1``, ``max_samples < 2`` or ``length_scale <= 0``.
    """
    if n_permutations < 1:
        raise ConfigError("n_permutations", n_permutations, "an integer >= 1")
    if max_samples < 2:
        raise ConfigError("max_samples", max_samples, "an integer >= 2")
    _check_length_scale(length_scale)
    Xs, Ys = _as_systems(X, "X"), _as_systems(Y, "Y")
    if len(Xs) != len(Ys):
        raise DataError(f"X and Y must hold the same number of systems, got {len(Xs)} and {len(Ys)}")
    for x, y in zip(Xs, Ys):
        _check_pair(x, y)
        if x.device != y.device:
            raise DataError(f"X and Y must be on the same device, got {x.device} and {y.device}")
    results: list[MMDTest] = []
    start = 0
    while start < len(Xs):
        sizes = _capped_sizes(Xs[start], Ys[start], max_samples)
        stop = start + 1
        while stop < len(Xs) and _capped_sizes(Xs[stop], Ys[stop], max_samples) == sizes:
            stop += 1
        results += _tests_of_equal_size(Xs[start:stop], Ys[start:stop], n_permutations, length_scale,
                                        max_samples, rng)
        start = stop
    return results


def _capped_sizes(x: Tensor, y: Tensor, max_samples: int) -> tuple[int, int, int, torch.device]:
    return min(x.shape[0], max_samples), min(y.shape[0], max_samples), x.shape[1], x.device


def _tests_of_equal_size(
    Xs: list[Tensor], Ys: list[Tensor], P: int, length_scale: float, max_samples: int, rng
) -> list[MMDTest]:
    n_x, n_y, d, device = _capped_sizes(Xs[0], Ys[0], max_samples)
    N = n_x + n_y
    dtype = Xs[0].dtype
    for t in Xs + Ys:
        dtype = torch.promote_types(dtype, t.dtype)
    # 1-D samples use the low-rank form when their range allows it; a subsample's range is within its sample's,
    # so the check on the full samples holds for every draw.
    low_rank = d == 1 and all(_taylor_rank(_spread(x, y, length_scale)) is not None for x, y in zip(Xs, Ys))
    size = 8 if low_rank else torch.tensor([], dtype=dtype).element_size()
    # Bytes per system: pooled kernel (twice, as when it was held whole: a few systems per batch keep the kernel
    # rows' buffer in cache; larger batches measured no faster) or features, and per permutation the drawn
    # indices (int64), the indicator and the product in the working dtype and two float64 copies.
    fixed = 3 * N * (_MAX_RANK + 2) * 8 if low_rank else 2 * N * N * size
    per_perm = N * (8 + 2 * size + 16)
    per_system = fixed + (P + 1) * per_perm
    systems = max(1, _CHUNK_BYTES // per_system)
    # One system whose permutations do not fit: its permutations are drawn and evaluated in chunks.
    chunk = P if per_system <= _CHUNK_BYTES else max(1, (_CHUNK_BYTES - fixed) // per_perm)

    results = []
    for first in range(0, len(Xs), systems):
        Z, sides = [], []
        for x, y in zip(Xs[first:first + systems], Ys[first:first + systems]):
            x, y = _subsample(x, max_samples, rng), _subsample(y, max_samples, rng)
            Z.append(torch.cat([x.to(dtype), y.to(dtype)]))
            sides.append(_Splits(N, n_x, rng, device, ahead=chunk))
        Z = torch.stack(Z)  # (S, N, d)
        if low_rank:
            Phi = _taylor_features(Z.squeeze(-1), length_scale)
            stat_dtype, tie = torch.float64, _LOW_RANK_TIE
            statistics = lambda A: _low_rank_statistics(A, Phi, n_x)  # noqa: E731
        else:
            kernel_rows = _KernelRows(Z, length_scale, most_rows=max(hi - lo for lo, hi in _row_blocks(N)))
            stat_dtype, tie = Z.dtype, 0.0
            statistics = lambda A: _kernel_statistics(A, kernel_rows, n_x)  # noqa: E731

        S = Z.shape[0]
        observed = None
        n_ge = torch.zeros(S, dtype=torch.int64, device=device)
        for done in range(0, P, chunk):
            Q = min(chunk, P - done)
            # Row 0 of the first chunk is the observed split, so it goes through the same arithmetic as the null.
            lead = 1 if observed is None else 0
            A = torch.zeros(S, lead + Q, N, dtype=stat_dtype, device=device)
            for s, splits in enumerate(sides):
                splits.mark(A[s, lead:])
            if lead:
                A[:, 0, :n_x] = 1
            stats = statistics(A)
            if lead:
                observed, stats = stats[:, :1], stats[:, 1:]
            n_ge += (stats >= observed - tie).sum(-1)
        results += [MMDTest(mmd2=float(o), p_value=float(c) / P, n_x=n_x, n_y=n_y)
                    for o, c in zip(observed[:, 0].tolist(), n_ge.tolist())]
    return results


def mmd_permutation_test(
    X: Tensor,
    Y: Tensor,
    *,
    n_permutations: int = 100,
    length_scale: float = 0.5,
    max_samples: int = 1000,
    rng: torch.Generator | None = None,
) -> MMDTest:
    """Unbiased MMD^2 between ``X`` and ``Y`` with a permutation p-value.

    Reference-code semantics (AlgorithmicRecourseDynamics.jl v0.1.2 ``mmd``/``mmd_null_dist``; Altmeyer et
    al., SaTML 2023): each side is subsampled independently, without replacement, to at most ``max_samples``
    rows; the null pools both sides, shuffles and re-splits at ``n_x``; ``p = mean(null >= observed)`` (no +1
    correction, so ``p = 0`` is possible). The reference caps *both* sides at ``min(|X|, max_samples)``; here
    each side is capped at ``max_samples`` on its own, which differs only when ``|X| < max_samples < |Y|``.

    Each permutation is a uniform random re-split of the pooled sample (:class:`_Splits`). All permutations are
    evaluated as batched quadratic forms of their X-side indicators (in chunks of about 200 MB): with the pooled
    kernel matrix, or for 1-D samples with its exact low-rank (Taylor) form in float64, where statistics within
    1e-12 of the observed one count as ties (``>=``). Use :func:`mmd_permutation_tests` for many pairs at once.

    Args:
        X: Samples ``(m, d)`` or ``(m,)``.
        Y: Samples ``(n, d)`` or ``(n,)``.
        n_permutations: Size of the null sample (default 100, as in the paper's tables).
        length_scale: Gaussian kernel length-scale (default 0.5).
        max_samples: Cap on the rows used per side (default 1000).
        rng: Source of the subsamples and permutations; results are deterministic for a given generator
            state. ``None`` uses torch's global RNG on the inputs' device.

    Returns:
        An :class:`MMDTest`.

    Raises:
        DataError: If the inputs are batched, either side has fewer than 2 samples or feature dimensions differ.
        ConfigError: If ``n_permutations < 1``, ``max_samples < 2`` or ``length_scale <= 0``.
    """
    X, Y = _as_samples(X, "X"), _as_samples(Y, "Y")
    if X.dim() != 2 or Y.dim() != 2:
        raise DataError(
            f"mmd_permutation_test takes unbatched samples (n,) or (n, d), "
            f"got X {tuple(X.shape)} and Y {tuple(Y.shape)}"
        )
    return mmd_permutation_tests([X], [Y], n_permutations=n_permutations, length_scale=length_scale,
                                 max_samples=max_samples, rng=rng)[0]
