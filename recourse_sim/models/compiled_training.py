"""One compiled call for a whole training run of a :class:`~recourse_sim.models.network.StackedMLP` on the CPU.

Why: the SaTML protocol trains at batch size 1, so a step is a few hundred floating-point operations and the
stepwise torch loop spends ~100 us per step dispatching kernels. Here all epochs, all mini-batches and all
``S x M`` stacked systems x members run inside one numba-compiled function, with the arithmetic of the torch
step (``StackedMLP._loss_gradient`` and ``StackedMLP._adam_step``) written out element by element in float32:

- forward: ``pre = b + h @ W`` per layer, ReLU after each hidden layer, one logit; inverted dropout after each
  hidden layer (keep with probability ``1 - p``, the ``1 / (1 - p)`` scale folded into the next layer's weights
  as in the torch step);
- gradient of the batch-mean BCE with logits: ``delta = (sigmoid(logit) - y) / batch``, back-propagated through
  the stored post-ReLU (post-dropout) activations;
- Adam with both bias corrections, fresh moments per call: ``m += (1 - beta1) (g - m)``,
  ``v = beta2 v + (1 - beta2) g^2``, ``w += (-lr / (1 - beta1^t)) m / (sqrt(v / (1 - beta2^t)) + eps)``, the
  bias corrections in float64 as in the torch step (``beta^t`` as a running product: within 1e-12 of ``pow``).

Compiled with ``error_model="numpy"`` (IEEE division, no ZeroDivisionError checks, which would stop LLVM
vectorising the Adam update) and without ``fastmath`` (no reassociated sums, no approximate division).

Each (system, member) pair has disjoint parameters and its own Adam state, so pairs are trained one after the
other, each to the end of the call. Batch-1 and small mini-batch sums run in row order, so results differ from
torch's BLAS-ordered sums only by float32 rounding.

Mini-batches of :data:`BLAS_MIN_ROWS` rows or more (the real-data protocol trains at batch size 500) multiply
through BLAS (sgemm, called by numba's ``np.dot`` on views of the buffers; :func:`rows_times_matrix`,
:func:`add_outer_products`), on the calling thread only (``device.one_blas_thread``, held by the callers): a
500-row batch through a 64 x 64 layer ran at 79 GFLOP/s in sgemm against 22 GFLOP/s in the loops below. Measured
on one real-data retraining round of credit default (29-64-64-1, dropout 0.1, 4,000 rows x 10 epochs at batch 500,
S = 40 systems, the SaTML cell's stacks): 9.40 -> 5.68 s for the 5-member ensembles, 1.86 -> 1.13 s for the MLPs.
BLAS sums in its own order, so these weights differ from the loops' in the last bits (and from machine to
machine, as torch's do); reruns on one machine stay bit-identical. Smaller batches go through the loops four rows
at a time: each weight loaded serves four rows and each gradient element is stored once per four products, with
every sum in the same order as one row at a time.

Several threads: the entry points release the GIL and train a range of pairs, so the caller
(``StackedMLP._train_compiled``) splits the pairs over the threads :mod:`recourse_sim.cores` allows: the caller's
cores in a standalone run, a worker's part of them in a sweep, more once the executor lends an idle worker's (two
threads: 1.95x for a credit-default-shaped round of 40 five-member ensembles, 4,000 rows x 29 features, 10 epochs at
batch 500, 3.76 -> 1.93 s). Each thread sets its own ``flush_denormals`` mode and multiplies through BLAS on itself,
so a pair's weights are the same bits on any thread and any number of threads. Not numba's ``parallel=True``: its
worker threads do not take the calling thread's FTZ/DAZ mode, so subnormals would be treated by where a pair ran.

Dropout masks come from splitmix64 (:mod:`recourse_sim.compiled_random`) inside the loop (a Weyl-sequence
counter passed through two xor-shift-multiply rounds: a few integer operations per draw, instead of the torch
step's ``torch.rand`` per layer per step, 30 % of real-data training time), one stream per (system, member)
pair, seeded from one 62-bit seed drawn from the torch generator per call. A unit is kept when its 24 bits ``k`` satisfy
``k / 2^24 >= p``; a mini-batch's units, in row-major order, take them in pairs from consecutive draws (bits 40-63
for the first, 16-39 for the second: two units per draw, 1.18 -> 1.05 s for the real-data MLP round of
``benchmarks/retraining.py``, with the mask written as a select rather than a branch). The masks therefore differ
from the torch step's (same keep probability, different draws).

The module is imported lazily (only when CPU training first runs: numba costs ~0.3-0.5 s to import) and its
functions compile with ``cache=True``: the first call in a fresh environment compiles them (~9 s for the batch-1
entry point on an idle 2-core machine; :func:`train_stack_through_blas` compiles when a mini-batch model first
trains), later processes load the cached machine code from ``__pycache__`` (or numba's
user-wide cache directory where the package is read-only) in well under a second.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from recourse_sim.compiled_random import splitmix64

_F32 = np.float32
_LOW_24 = np.uint64(0xFFFFFF)


@njit(cache=True)
def unsigned_index(index: int) -> np.uint64:
    """``index`` (>= 0) as an unsigned integer: numba then indexes without the wraparound of negative indices (a
    select per access, which stops LLVM vectorising a loop over a row). Also used by the compiled VAE."""
    return np.uint64(index)


_u = unsigned_index  # short, for the dense index expressions of the loops below


# Products of at least BLAS_MIN_ROWS rows go through BLAS (sgemm, by numba's np.dot): the real-data protocol's
# mini-batches of 500 rows (a real-data retraining round 1.6x faster, see the module docstring) and the VAE's of 50.
# Smaller ones (the synthetic protocol's batch size 1) keep the loops, where a BLAS call costs more than the product.
# So do products with very few inputs, where BLAS's tiles run mostly empty (measured per call, one thread, 50 and
# 500 rows: x @ W with 2 inputs 0.26 / 2.6 us in the loops, 0.55 / 3.3 us in BLAS; with 8 inputs BLAS wins at 500
# rows, 11 against 23 us; a gradient A^T delta with 2 or 8 inputs 1.0 / 8.9 us against 1.7 / 13 us in BLAS, with 29
# or more BLAS is ahead). The rule depends on shapes only, so a run's arithmetic never depends on timing.
BLAS_MIN_ROWS = 32
BLAS_MIN_INPUTS = 4  # of x @ W
BLAS_MIN_GRADIENT_INPUTS = 16  # of A^T delta


@njit(cache=True)
def _through_blas(blas_allowed: bool, n_rows: int, n_in: int, min_inputs: int) -> bool:
    """The rule above: does a product of ``n_rows`` rows with ``n_in`` inputs go through BLAS? (A call LLVM
    inlines; with ``blas_allowed`` a constant False, it folds to False.)"""
    return blas_allowed and n_rows >= BLAS_MIN_ROWS and n_in >= min_inputs


@njit(cache=True, inline="always")
def matrix_view(buffer: np.ndarray, at: int, rows: int, cols: int) -> np.ndarray:
    """The row-major ``rows x cols`` matrix stored at ``buffer[at:]``, as a 2-D view (for BLAS)."""
    return buffer[at:at + rows * cols].reshape((rows, cols))


# The BLAS calls are functions of their own, not inlined: inlined, their views and calls sat in the batch-1 loops'
# body and slowed batch-1 training by 38 % (an MLP stack of 35 systems, 8,000 steps: 60 -> 83 ms), though never run.
@njit(cache=True)
def _blas_rows_times_matrix(x: np.ndarray, x_at: int, n_rows: int, n_in: int, matrix: np.ndarray, m_at: int,
                            out: np.ndarray, out_at: int, n_out: int) -> None:
    np.dot(matrix_view(x, x_at, n_rows, n_in), matrix_view(matrix, m_at, n_in, n_out),
           matrix_view(out, out_at, n_rows, n_out))


@njit(cache=True)
def _blas_add_outer_products(acts: np.ndarray, a_at: int, n_in: int, deltas: np.ndarray, d_at: int, n_out: int,
                             n_rows: int, grad: np.ndarray, g_at: int) -> None:
    G = matrix_view(grad, g_at, n_in, n_out)
    G += np.dot(matrix_view(acts, a_at, n_rows, n_in).T, matrix_view(deltas, d_at, n_rows, n_out))


@njit(cache=True, inline="always")
def row_times_matrix(
    x: np.ndarray, x_at: int, n_in: int, matrix: np.ndarray, m_at: int, out: np.ndarray, out_at: int, n_out: int,
) -> None:
    """``out[out_at:out_at + n_out] = x[x_at:x_at + n_in] @ M`` for the row-major ``n_in x n_out`` matrix ``M`` at
    ``matrix[m_at:]``; the innermost loop runs over outputs (vectorised) and the sums in input order, the first
    term assigned (0 + x = x). Serves the forward pass (activations x W) and the backward pass (delta x W^T), and the
    forward pass of the compiled VAE (:mod:`~recourse_sim.models.compiled_vae`)."""
    a = x[_u(x_at)]
    for k in range(n_out):
        out[_u(out_at + k)] = a * matrix[_u(m_at + k)]
    for i in range(1, n_in):
        a = x[_u(x_at + i)]
        row = m_at + i * n_out
        for k in range(n_out):
            out[_u(out_at + k)] += a * matrix[_u(row + k)]


@njit(cache=True, inline="always")
def _four_rows_times_matrix(
    x: np.ndarray, x_at: int, n_in: int, matrix: np.ndarray, m_at: int, out: np.ndarray, out_at: int, n_out: int,
) -> None:
    """:func:`row_times_matrix` for four consecutive rows of ``x`` (stride ``n_in``) into four consecutive rows of
    ``out`` (stride ``n_out``): each loaded vector of ``M`` serves four rows, which more than doubles the
    mini-batch throughput of the 64-unit layers (one load and one multiply-add per output element instead of
    a load, a multiply-add and a store per row). Every output keeps its sum in input order: the same bits."""
    o1 = out_at + n_out
    o2 = o1 + n_out
    o3 = o2 + n_out
    for i in range(n_in):
        a0 = x[_u(x_at + i)]
        a1 = x[_u(x_at + n_in + i)]
        a2 = x[_u(x_at + 2 * n_in + i)]
        a3 = x[_u(x_at + 3 * n_in + i)]
        row = m_at + i * n_out
        if i == 0:  # the first term assigned (0 + x = x), as in row_times_matrix
            for k in range(n_out):
                w = matrix[_u(row + k)]
                out[_u(out_at + k)] = a0 * w
                out[_u(o1 + k)] = a1 * w
                out[_u(o2 + k)] = a2 * w
                out[_u(o3 + k)] = a3 * w
        else:
            for k in range(n_out):
                w = matrix[_u(row + k)]
                out[_u(out_at + k)] += a0 * w
                out[_u(o1 + k)] += a1 * w
                out[_u(o2 + k)] += a2 * w
                out[_u(o3 + k)] += a3 * w


@njit(cache=True, inline="always")
def rows_times_matrix(
    x: np.ndarray, x_at: int, n_rows: int, n_in: int, matrix: np.ndarray, m_at: int, out: np.ndarray, out_at: int,
    n_out: int, blas_allowed: bool,
) -> None:
    """``out[rows] = x[rows] @ M`` for ``n_rows`` consecutive rows: through BLAS from :data:`BLAS_MIN_ROWS` rows and
    :data:`BLAS_MIN_INPUTS` inputs on (``out`` must not overlap ``x`` or ``M``), else four rows at a time, then one
    at a time."""
    if _through_blas(blas_allowed, n_rows, n_in, BLAS_MIN_INPUTS):
        _blas_rows_times_matrix(x, x_at, n_rows, n_in, matrix, m_at, out, out_at, n_out)
        return
    r = 0
    while r + 4 <= n_rows:
        _four_rows_times_matrix(x, x_at + r * n_in, n_in, matrix, m_at, out, out_at + r * n_out, n_out)
        r += 4
    while r < n_rows:
        row_times_matrix(x, x_at + r * n_in, n_in, matrix, m_at, out, out_at + r * n_out, n_out)
        r += 1


@njit(cache=True, inline="always")
def add_outer_products(
    acts: np.ndarray, a_at: int, n_in: int, deltas: np.ndarray, d_at: int, n_out: int, n_rows: int,
    grad: np.ndarray, g_at: int, blas_allowed: bool,
) -> None:
    """``G += sum_r outer(a_r, delta_r)`` over ``n_rows`` rows (``a`` rows of ``n_in`` at ``acts[a_at:]``, delta rows
    of ``n_out`` at ``deltas[d_at:]``, ``G`` row-major ``n_in x n_out`` at ``grad[g_at:]``), the rows added in row
    order. From :data:`BLAS_MIN_ROWS` rows and :data:`BLAS_MIN_GRADIENT_INPUTS` inputs on, ``A^T delta`` through BLAS
    is added instead (its own order of sums).
    Below, four rows per pass: each gradient element is loaded and stored once per four products, in the same
    order of additions as one row at a time (the same bits)."""
    if _through_blas(blas_allowed, n_rows, n_in, BLAS_MIN_GRADIENT_INPUTS):
        _blas_add_outer_products(acts, a_at, n_in, deltas, d_at, n_out, n_rows, grad, g_at)
        return
    r = 0
    while r + 4 <= n_rows:
        d0 = d_at + r * n_out
        d1 = d0 + n_out
        d2 = d1 + n_out
        d3 = d2 + n_out
        for i in range(n_in):
            a0 = acts[_u(a_at + r * n_in + i)]
            a1 = acts[_u(a_at + (r + 1) * n_in + i)]
            a2 = acts[_u(a_at + (r + 2) * n_in + i)]
            a3 = acts[_u(a_at + (r + 3) * n_in + i)]
            row = g_at + i * n_out
            for j in range(n_out):
                g = grad[_u(row + j)]
                g += a0 * deltas[_u(d0 + j)]
                g += a1 * deltas[_u(d1 + j)]
                g += a2 * deltas[_u(d2 + j)]
                g += a3 * deltas[_u(d3 + j)]
                grad[_u(row + j)] = g
        r += 4
    while r < n_rows:
        for i in range(n_in):
            a = acts[_u(a_at + r * n_in + i)]
            row = g_at + i * n_out
            for j in range(n_out):
                grad[_u(row + j)] += a * deltas[_u(d_at + r * n_out + j)]
        r += 1


@njit(cache=True, error_model="numpy")
def _train_pair(
    w: np.ndarray, X: np.ndarray, y: np.ndarray, orders: np.ndarray, shuffle: bool, sizes: np.ndarray,
    epochs: int, batch_size: int, lr: float, beta1: float, beta2: float, eps: float, dropout: float,
    keep_threshold: np.uint64, stream: np.uint64, blas_allowed: bool,
) -> None:
    """Train one member's contiguous parameter vector ``w`` ([W0 (fi x fo), b0 (fo), W1, b1, ...]) in place.

    ``X`` (n, d), ``y`` (n,) are its system's data; ``orders`` (epochs, n) the row order per epoch when
    ``shuffle``. ``keep_threshold``: a unit is kept when its 24 bits of a draw are >= it (u >= p).
    ``blas_allowed``: whether products may go through BLAS, a constant of each entry point (False in
    :func:`train_stack`, True in :func:`train_stack_through_blas`).
    """
    n = X.shape[0]
    n_layers = sizes.shape[0] - 1
    n_params = w.shape[0]
    B = min(batch_size, n)
    # X row by row through X[row, i] compiled to a copy with two signed indices (wrapped if negative) per element,
    # 5 % of a real-data training step (500 rows x 29 features); the flat view copies each row as one run
    data = X.reshape(n * sizes[0])
    # Offsets of every layer's weights/biases in w and of every layer's input activations in acts. Hot loops
    # index these flat buffers through _u (a no-op cast to unsigned): numba wraps negative signed indices
    # around, a select per access that stops LLVM vectorising the loops over a layer's outputs. (2-D views
    # would avoid that too, but each view costs an atomic reference-count increment and decrement.)
    w_off = np.empty(n_layers, np.int64)
    b_off = np.empty(n_layers, np.int64)
    a_off = np.empty(n_layers + 1, np.int64)
    offset = 0
    a_total = 0
    widest = 1
    largest = 1
    for layer in range(n_layers):
        fi, fo = sizes[layer], sizes[layer + 1]
        w_off[layer] = offset
        b_off[layer] = offset + fi * fo
        offset += fi * fo + fo
        a_off[layer] = a_total
        a_total += B * fi
        widest = max(widest, fi)
        largest = max(largest, fi * fo)
    a_off[n_layers] = a_total  # the logits
    acts = np.zeros(a_total + B, np.float32)
    # the delta of a layer's outputs and of its inputs alternate between the two halves of deltas
    deltas = np.zeros(2 * B * widest, np.float32)
    grad = np.zeros(n_params, np.float32)
    # one array, parts chosen by offset: the parameters, (with dropout) the weights scaled by 1 / (1 - p), and
    # room for one layer's transposed weights
    params = np.zeros(2 * n_params + largest, np.float32)
    transposed = 2 * n_params
    for k in range(n_params):  # element by element: a slice assignment compiles numba's shape-mismatch error (2 s)
        params[k] = w[k]
    m = np.zeros(n_params, np.float32)
    v = np.zeros(n_params, np.float32)
    rows = np.empty(B, np.int64)

    one = _F32(1.0)
    zero = _F32(0.0)
    use_dropout = dropout > 0.0
    scale = _F32(1.0 / (1.0 - dropout))  # as the torch step: a float64 scale, rounded once
    lerp_weight = _F32(1.0 - beta1)
    beta2_f = _F32(beta2)
    sq_weight = _F32(1.0 - beta2)
    eps_f = _F32(eps)
    state = stream
    beta1_t = 1.0
    beta2_t = 1.0
    d = sizes[0]
    for epoch in range(epochs):
        for start in range(0, n, batch_size):
            nb = min(batch_size, n - start)
            for r in range(nb):
                rows[r] = orders[epoch, start + r] if shuffle else start + r
            # ---------------------------------------------------------------------------- forward
            for r in range(nb):  # the batch's rows, through the flat view: a contiguous copy of d floats each
                at = rows[r] * d
                for i in range(d):
                    acts[_u(r * d + i)] = data[_u(at + i)]
            for layer in range(n_layers):
                fi, fo = sizes[layer], sizes[layer + 1]
                src, dst = a_off[layer], a_off[layer + 1]
                wo, bo = w_off[layer], b_off[layer]
                if use_dropout and layer > 0:  # (h * keep * scale) @ W == (h * keep) @ (scale * W), as in torch
                    for k in range(fi * fo):
                        params[_u(n_params + wo + k)] = params[_u(wo + k)] * scale
                    wo += n_params
                if fo == 1 and not _through_blas(blas_allowed, nb, fi, BLAS_MIN_INPUTS):  # the logit, in the loops
                    for r in range(nb):
                        acc = zero
                        for i in range(fi):
                            acc += acts[_u(src + r * fi + i)] * params[_u(wo + i)]
                        acts[_u(dst + r)] = acc
                else:  # innermost loop over outputs: vectorised; sums run in input order (first term: 0 + x = x)
                    rows_times_matrix(acts, src, nb, fi, params, wo, acts, dst, fo, blas_allowed)
                hidden = layer < n_layers - 1
                for r in range(nb):
                    out = dst + r * fo
                    if hidden:
                        for j in range(fo):
                            acts[_u(out + j)] = max(params[_u(bo + j)] + acts[_u(out + j)], zero)
                    else:
                        for j in range(fo):
                            acts[_u(out + j)] = params[_u(bo + j)] + acts[_u(out + j)]
                if hidden and use_dropout:  # the batch's units in row-major order, two per 64-bit draw
                    units = nb * fo
                    for pair in range(units // 2):
                        state, bits = splitmix64(state)
                        at = dst + 2 * pair
                        high = acts[_u(at)]
                        low = acts[_u(at + 1)]
                        acts[_u(at)] = zero if (bits >> np.uint64(40)) < keep_threshold else high
                        acts[_u(at + 1)] = zero if ((bits >> np.uint64(16)) & _LOW_24) < keep_threshold else low
                    if units % 2:
                        state, bits = splitmix64(state)
                        if (bits >> np.uint64(40)) < keep_threshold:
                            acts[_u(dst + units - 1)] = zero
            # ------------------------------------------------------------- backward (batch-mean BCE)
            nb_f = _F32(nb)
            last = a_off[n_layers]
            # offsets of this layer's delta and of the previous layer's; np.int64(0), not the literal 0, which
            # numba would also compile the BLAS helpers for
            here, there = np.int64(0), B * widest
            for r in range(nb):
                deltas[r] = (one / (one + np.exp(-acts[_u(last + r)])) - y[rows[r]]) / nb_f
            for layer in range(n_layers - 1, -1, -1):
                fi, fo = sizes[layer], sizes[layer + 1]
                src = a_off[layer]
                wo, bo = w_off[layer], b_off[layer]
                scaled = use_dropout and layer > 0
                for k in range(fi * fo + fo):
                    grad[_u(wo + k)] = zero
                for r in range(nb):  # sums over the batch in row order
                    for j in range(fo):
                        grad[_u(bo + j)] += deltas[_u(here + r * fo + j)]
                if fo == 1:  # the output layer: one loop over inputs (the same sums)
                    for r in range(nb):
                        dr = deltas[_u(here + r)]
                        for i in range(fi):
                            grad[_u(wo + i)] += acts[_u(src + r * fi + i)] * dr
                else:
                    add_outer_products(acts, src, fi, deltas, here, fo, nb, grad, wo, blas_allowed)
                if scaled:
                    for k in range(fi * fo):
                        grad[_u(wo + k)] = grad[_u(wo + k)] * scale
                if layer > 0:
                    # delta_prev = (delta @ W^T) * relu'(pre) * keep, the gate read from the stored activation;
                    # W^T copied so the loop over inputs is contiguous; sums run in output order
                    # (first term: 0 + x = x; with one output W^T is W itself)
                    source = wo + n_params if scaled else wo
                    if fo > 1:
                        for i in range(fi):
                            for j in range(fo):
                                params[_u(transposed + j * fi + i)] = params[_u(source + i * fo + j)]
                        source = transposed
                    rows_times_matrix(deltas, here, nb, fo, params, source, deltas, there, fi, blas_allowed)
                    for r in range(nb):
                        out = there + r * fi
                        for i in range(fi):
                            if not acts[_u(src + r * fi + i)] > zero:
                                deltas[_u(out + i)] = zero
                    here, there = there, here
            # ------------------------------------------------------------------------------ Adam
            beta1_t *= beta1  # beta^t by running products in float64: within 1e-12 of pow(), far below float32
            beta2_t *= beta2
            bias1 = 1.0 - beta1_t
            bias2 = _F32(1.0 - beta2_t)
            step_size = _F32(-lr / bias1)
            for k in range(n_params):
                g = grad[k]
                mk = m[k] + lerp_weight * (g - m[k])
                vk = v[k] * beta2_f + sq_weight * g * g
                m[k] = mk
                v[k] = vk
                params[k] = params[k] + step_size * mk / (np.sqrt(vk / bias2) + eps_f)
    for k in range(n_params):
        w[k] = params[k]


@njit(cache=True, error_model="numpy", inline="always")
def _train_stack(
    flat: np.ndarray, X: np.ndarray, y: np.ndarray, orders: np.ndarray, shuffle: bool, sizes: np.ndarray,
    n_members: int, epochs: int, batch_size: int, lr: float, beta1: float, beta2: float, eps: float,
    dropout: float, seed: np.uint64, first_pair: int, end_pair: int, blas_allowed: bool,
) -> None:
    """Train the (system, member) pairs ``first_pair <= s * M + member < end_pair`` of the stacked parameter buffer
    ``flat`` (S, P) in place.

    ``flat`` holds per system, layer by layer, the weights of all members (M, fi, fo) then their biases
    (M, 1, fo) (the layout of ``StackedMLP.flat``); each pair's parameters are gathered into one contiguous
    vector, trained by :func:`_train_pair` and scattered back. A pair's result depends on its index only (its data,
    its dropout stream), never on the range it was trained in: calls on disjoint ranges may run on several threads.
    """
    M = n_members
    n_layers = sizes.shape[0] - 1
    per_member = 0
    for layer in range(n_layers):
        per_member += sizes[layer] * sizes[layer + 1] + sizes[layer + 1]
    keep_threshold = np.uint64(np.ceil(dropout * 16777216.0))  # u = bits / 2^24 >= p  <=>  bits >= ceil(p 2^24)
    for pair in range(first_pair, end_pair):
        s = pair // M
        member = pair % M
        w = np.empty(per_member, np.float32)
        src = 0
        dst = 0
        for layer in range(n_layers):
            fi, fo = sizes[layer], sizes[layer + 1]
            for k in range(fi * fo):
                w[dst + k] = flat[s, src + member * fi * fo + k]
            src += M * fi * fo
            dst += fi * fo
            for k in range(fo):
                w[dst + k] = flat[s, src + member * fo + k]
            src += M * fo
            dst += fo
        # one independent stream per pair: splitmix64 of (seed, pair) decorrelates neighbouring pairs
        stream, _ = splitmix64(seed ^ (np.uint64(pair) * np.uint64(0xD1B54A32D192ED03)))
        _train_pair(w, X[s], y[s], orders, shuffle, sizes, epochs, batch_size, lr, beta1, beta2, eps, dropout,
                    keep_threshold, stream, blas_allowed)
        src = 0
        dst = 0
        for layer in range(n_layers):
            fi, fo = sizes[layer], sizes[layer + 1]
            for k in range(fi * fo):
                flat[s, src + member * fi * fo + k] = w[dst + k]
            src += M * fi * fo
            dst += fi * fo
            for k in range(fo):
                flat[s, src + member * fo + k] = w[dst + k]
            src += M * fo
            dst += fo


# The entry points release the GIL (nogil): the caller may train disjoint ranges of pairs on several threads.
@njit(cache=True, error_model="numpy", nogil=True)
def train_stack(
    flat: np.ndarray, X: np.ndarray, y: np.ndarray, orders: np.ndarray, shuffle: bool, sizes: np.ndarray,
    n_members: int, epochs: int, batch_size: int, lr: float, beta1: float, beta2: float, eps: float,
    dropout: float, seed: np.uint64, first_pair: int, end_pair: int,
) -> None:
    """Train the (system, member) pairs ``first_pair`` to ``end_pair - 1`` of the stacked parameter buffer ``flat``
    (S, P) in place (:func:`_train_stack`), every product in the loops: for batches of fewer than
    :data:`BLAS_MIN_ROWS` rows (the synthetic protocol's batch size 1).

    A function of its own, whose constant ``blas_allowed = False`` LLVM folds into the loops, which then run without
    the BLAS branches of :func:`train_stack_through_blas`: with one entry point and ``blas_allowed`` a run-time
    argument those branches (never taken) stayed in the loops, and batch-1 training ran 8-12 % slower (an MLP stack
    of 35 systems, 8,000 steps: 59 -> 63-67 ms).
    """
    _train_stack(flat, X, y, orders, shuffle, sizes, n_members, epochs, batch_size, lr, beta1, beta2, eps, dropout,
                 seed, first_pair, end_pair, False)


@njit(cache=True, error_model="numpy", nogil=True)
def train_stack_through_blas(
    flat: np.ndarray, X: np.ndarray, y: np.ndarray, orders: np.ndarray, shuffle: bool, sizes: np.ndarray,
    n_members: int, epochs: int, batch_size: int, lr: float, beta1: float, beta2: float, eps: float,
    dropout: float, seed: np.uint64, first_pair: int, end_pair: int,
) -> None:
    """:func:`train_stack` for mini-batches of :data:`BLAS_MIN_ROWS` rows or more (the real-data protocol's 500):
    their products go through BLAS where the shape rule says it wins. Call it inside ``device.one_blas_thread``."""
    _train_stack(flat, X, y, orders, shuffle, sizes, n_members, epochs, batch_size, lr, beta1, beta2, eps, dropout,
                 seed, first_pair, end_pair, True)
