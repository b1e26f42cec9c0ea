"""The gradient search (``strategy = "gradient"``), the greedy search (``"greedy"``) and the latent search
(``"latent"``) as one compiled call on the CPU.

Why: a search step is a few hundred floating-point operations per candidate, and the torch loop of
:func:`~recourse_sim.generators.engine.descend` spends them in ~90 dispatched operations per iteration (autograd
included), ~0.7 ms per iteration whatever the batch: at B = 1,000 the loop is launch-bound, not arithmetic-bound.
Here every individual of every system runs its whole search, step after step, inside one numba-compiled function,
with the gradient written out by hand (the chain rule of the torch loop's autograd graph, element by element in
float32). Individuals are independent in the objective, so each runs to its own convergence or cap, without host
syncs.

Individuals run side by side in up to :data:`LANES` lanes: every array of the loop has the lane as its last axis,
so each arithmetic operation is one loop over the lanes, which LLVM turns into vector instructions. A lane whose
individual stops takes the next one of its task (a range of one system's individuals); once nobody waits, the
individuals still searching gather in the first lanes and the loops run over those only, in whole blocks of
:data:`LANE_BLOCK` (a task's tail, in a SaTML round often the whole task, no longer drags empty lanes along).
The network's forward and backward passes run each member on the K copies of every lane side by side (copy k's
lanes at ``[k * span, (k + 1) * span)``): a layer product's loops over lanes run K times as long, and their fixed
cost per loop entry (one per weight row or column and pass of eight) is paid once for all copies. A SaTML round's
searches (``benchmarks/round_search.py``, K = 5, one thread): credit-default ensembles 3.53 -> 3.25 s, MLPs 0.93 ->
0.83 s; California-housing ensembles 2.06 -> 1.80 s, MLPs 0.50 -> 0.39 s; overlapping ensembles 0.092 -> 0.072 s;
the same checksums.

What it covers (``compiled_search.unsupported`` says why a system is not covered; the engine then searches it
in the torch loop):

- models: the package's stacked ReLU MLPs (:class:`~recourse_sim.models.classifier.TorchClassifier`: logistic
  regression, MLPs, deep ensembles with p = mean of member sigmoids, at inference, i.e. without dropout);
- objective: yloss = binary cross-entropy toward y+ = 1 averaged over the K copies, plus per-system weights on
  :class:`~recourse_sim.generators.terms.Distance`, ``GravitationalPull``, ``MADDistance``, ``L1Distance``,
  ``ClassifierLoss``, ``Energy`` and ``DPPDiversity`` (each term class with one setting per search): every
  generator of the SaTML 2023 protocol that searches in feature space (generic, gravitational, ClaPROAR, DiCE,
  Wachter), but not ECCCo's conformal set size or CLUE's entropy;
- constraints: bounds, one-hot groups (straight through, as the torch loop), increase-only, decrease-only and
  immutable features, with torch's sub-gradients of the projection: ``min``/``max`` pass half the gradient at a
  tie, ``where`` none to the replaced value;
- every convergence rule and per-system gamma, step size, tolerance and cap of the torch loop;
- the latent strategy (:class:`~recourse_sim.generators.latent.LatentSpace`: REVISE): descent on the latent code z
  of the package's VAE, whose decoder (``relu(z W1 + b1) W2 + b2``) runs in front of the projection, z moving by
  ``-step_size grad`` without projection or step mask;
- the greedy strategy's single-feature moves (:class:`~recourse_sim.generators.greedy.GreedySpace`: epsilon, the
  cap n per copy and its passes, the moves the constraints allow), with its own tie-breaks: where features tie,
  uniform numbers from a splitmix64 stream per individual, seeded by a hash of the engine generator's state and
  the individual's position (the torch loop draws ``torch.rand`` for every feature at every step, and
  ``GreedySpace.kernel_done`` replays those draws after the kernel).

The random draws (the initial noise, the gravitational centres) are made by the engine in torch, in the torch
loop's order, so both backends start from the same state; they then agree to float32 rounding (sums run in a
different order), which can flip a convergence test that sits exactly on its threshold (see
``tests/test_compiled_search.py``). An individual's result does not depend on its lane, task or thread, and
reruns are bit-identical. Tasks run on the calling thread (:func:`search_all`) or on numba's worker threads
(:func:`search_all_parallel`, where the caller allows more than one thread); either way with subnormal floats
kept (``device.denormals_kept``): worker threads do not inherit the caller's flush-to-zero mode, so one mode
everywhere keeps the result independent of the thread count.

Compiled with ``cache=True`` and ``error_model="numpy"`` (as the training loop); the module is imported lazily
(numba costs ~0.4 s to import), on the first CPU search it serves.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from recourse_sim.compiled_math import exp_nonpositive, log1p_unit
from recourse_sim.compiled_random import splitmix64
from recourse_sim.generators.search_codes import (
    CLASSIFIER_LOSS,
    DECREASE,
    DISTANCE,
    DIVERSITY,
    ENERGY,
    GRAVITATIONAL,
    IMMUTABLE,
    INCREASE,
    L1,
    MAD,
    SMALL_STEP,
    THRESHOLD,
)
from recourse_sim.models.base import LOG_DECISION_THRESHOLD

_F32 = np.float32
_FLOAT32_MAX = _F32(3.4028234663852886e38)
_EPS = _F32(1e-12)  # terms._EPS: the norm's finite gradient at 0
_LOG_HALF = _F32(LOG_DECISION_THRESHOLD)  # as torch compares it with float32 log p
_MOVE_TOLERANCE = 1e-4  # greedy._MOVE_TOLERANCE: a move is allowed when it changes its feature by more than this
#: individuals searched side by side, at most. The lane loops run over the occupied lanes (rounded up to whole
#: :data:`LANE_BLOCK`), so a wide maximum costs small searches nothing. Measured (one thread, same machine, runs
#: alternated): a credit-default round's searches (69 recipients per system; ensembles 4.8 s with a fixed 64 lanes)
#: took 5.6 s with at most 64 lanes, 5.3-5.5 s with 128 and 5.4-5.5 s with 256 (more to allocate per task); the
#: 10-32-1 benchmark MLP at B = 10k 58 / 50 / 47 ns per candidate-step (fixed 64 lanes: 53 ns).
LANES = 128
#: the granule of the lanes an iteration runs: one AVX-512 vector of float32, two AVX2 ones. Loops over a constant
#: 16 or 32 lanes do not vectorise well (LLVM unrolls them first: a fixed 32 lanes searched 3x slower per candidate
#: than 64), so the count is a run-time value, never a small constant.
LANE_BLOCK = 16
# The layer products stay loops over lanes, not BLAS: sgemm through numba's np.dot searched the real-data ensembles
# (29-64-64-1) only ~10 % faster (its packing of small operands costs a third of the product), and OpenBLAS rounds a
# column differently by its position in the product (measured: up to 3e-5 on a 256 x 64 layer), which would make a
# counterfactual depend on its lane, and so on the task split and thread count.
# Which helpers numba inlines (inline="always": their IR copied into every call site and typed again, the bulk of
# the kernel's first compilation): those that hold loops over lanes, which as calls searched 6-24 % slower. The
# scalar helpers (_clamp, _project, _step_of, ...) and _load are left to LLVM, which inlines the small ones itself:
# the same bits and speed, and 6 s less compilation (38 -> 32 s for the first search after installing).


@njit(cache=True)
def _clamp(x: np.float32, lower: np.float32, upper: np.float32, bounded: bool) -> tuple[np.float32, np.float32]:
    """A feature value into its bounds -> (value, d value / d x); torch's ``min``/``max`` give 1/2 at a tie."""
    slope = _F32(1.0)
    if bounded:
        if x > upper:
            x = upper
            slope = _F32(0.0)
        elif x == upper:
            slope *= _F32(0.5)
        if x < lower:
            x = lower
            slope = _F32(0.0)
        elif x == lower:
            slope *= _F32(0.5)
    return x, slope


@njit(cache=True)
def _actionable(x: np.float32, kind: int, factual: np.float32) -> tuple[np.float32, np.float32]:
    """A feature value onto what its ``kind`` (FREE, INCREASE, DECREASE, IMMUTABLE) allows from the factual ->
    (value, d value / d x); ``max``/``min`` give 1/2 at a tie, ``where`` 0 to the replaced value."""
    slope = _F32(1.0)
    if kind == INCREASE:
        if x < factual:
            x = factual
            slope = _F32(0.0)
        elif x == factual:
            slope *= _F32(0.5)
    elif kind == DECREASE:
        if x > factual:
            x = factual
            slope = _F32(0.0)
        elif x == factual:
            slope *= _F32(0.5)
    elif kind == IMMUTABLE:
        x = factual
        slope = _F32(0.0)
    return x, slope


@njit(cache=True)
def _project(z: np.float32, scale: np.float32, mean: np.float32, lower: np.float32, upper: np.float32, kind: int,
             factual: np.float32, bounded: bool) -> tuple[np.float32, np.float32]:
    """One ungrouped feature's search-space value ``z`` -> (feasible feature value, its derivative): bounds, then
    actionability (see :func:`_project_copy` for features in one-hot groups)."""
    value, slope = _clamp(z * scale + mean, lower, upper, bounded)
    value, more = _actionable(value, kind, factual)
    return value, slope * more


@njit(cache=True, inline="always")
def _project_copy(z: np.ndarray, k: int, x: np.ndarray, slope: np.ndarray,
                  scale: np.ndarray, mean: np.ndarray, lower: np.ndarray, upper: np.ndarray, kind: np.ndarray,
                  bounded: bool, factual: np.ndarray, group_of: np.ndarray, group_columns: np.ndarray,
                  group_sizes: np.ndarray, best_column: np.ndarray, best_value: np.ndarray, span: int) -> None:
    """Copy ``k`` of every lane: ``x[k]`` = the feasible feature-space point of the search-space state ``z[k]``
    and ``slope[k]`` its derivative, feature by feature (the projection's Jacobian is diagonal).
    FeatureConstraints.project's order: bounds, one-hot groups, actionability. A group's columns become the one-hot
    vector of their first maximum; the gradient passes straight through (the torch loop's straight-through
    estimator), so their slope is the bounds' alone, times actionability's. ``best_column`` and ``best_value``
    (lanes,) are scratch.
    """
    d = x.shape[1]
    for j in range(d):
        sc, mu, lo, up, kd = scale[j], mean[j], lower[j], upper[j], kind[j]
        grouped = group_of[j] >= 0
        for lane in range(span):
            value, sl = _clamp(z[k, j, lane] * sc + mu, lo, up, bounded)
            if not grouped:  # a group's columns meet actionability after their one-hot step
                value, more = _actionable(value, kd, factual[j, lane])
                sl *= more
            x[k, j, lane] = value
            slope[k, j, lane] = sl
    for g in range(group_sizes.shape[0]):
        size = group_sizes[g]
        # each lane's first maximum over the group's columns (ties: the first column, as argmax), column by column
        # so that every comparison is one vector instruction over the lanes (a scan per lane does not vectorise)
        first = group_columns[g, 0]
        for lane in range(span):
            best_column[lane] = first
            best_value[lane] = x[k, first, lane]
        for c in range(1, size):
            column = group_columns[g, c]
            for lane in range(span):
                value = x[k, column, lane]
                if value > best_value[lane]:
                    best_value[lane] = value
                    best_column[lane] = column
        for c in range(size):
            column = group_columns[g, c]
            for lane in range(span):
                x[k, column, lane] = _F32(1.0) if column == best_column[lane] else _F32(0.0)
        for c in range(size):
            column = group_columns[g, c]
            for lane in range(span):
                value, more = _actionable(x[k, column, lane], kind[column], factual[column, lane])
                x[k, column, lane] = value
                slope[k, column, lane] *= more


@njit(cache=True)
def _step_of(g: np.float32, step_size: np.float32, fixed: bool) -> tuple[np.float32, np.float32]:
    """(the step ``-step_size g``, the gradient as the convergence test sees it) for one coordinate of the state:
    a NaN step is 0 and an infinite one the largest float (``torch.nan_to_num``); a ``fixed`` (immutable) feature
    takes no step and shows no gradient; a NaN gradient shows as 0."""
    zero = _F32(0.0)
    step = -step_size * g
    if np.isnan(step):
        step = zero
    elif np.isinf(step):
        step = _FLOAT32_MAX if step > zero else -_FLOAT32_MAX
    if fixed:
        step = zero
        g = zero
    elif np.isnan(g):
        g = zero
    return step, g


@njit(cache=True, inline="always")
def _lanes_times_matrix(source: np.ndarray, src: int, n_in: int, weights: np.ndarray, w_at: int, out: np.ndarray,
                        dst: int, n_out: int, span: int) -> None:
    """``out[dst + o] = sum_i source[src + i] W[i, o]`` for every lane (the last axis), ``W`` the row-major
    ``n_in x n_out`` matrix at ``weights[w_at:]``: a layer's forward pass. Eight inputs per pass, then the rest one
    at a time: an output is loaded and stored once per eight products instead of once per product (the loads and
    stores of the outputs bound this loop); every sum runs in input order from 0 (0 + x = x: the bits of assigning
    the first term). Measured on a credit-default round's ensemble searches (``benchmarks/round_search.py``, one
    thread, AVX-512): four inputs per pass 3.84-4.11 s, eight 3.33-3.62 s; sixteen (4.07 s) and two outputs per
    pass of eight inputs (3.95 s) were slower, and a pass of four between the eights and the rest gained nothing
    (3.33-3.40 s either way) for 5.6 s more compilation (inlined at six sites)."""
    for o in range(n_out):
        for lane in range(span):
            out[dst + o, lane] = _F32(0.0)
    i = 0
    while i + 8 <= n_in:
        row = w_at + i * n_out
        for o in range(n_out):
            w0 = weights[row + o]
            w1 = weights[row + n_out + o]
            w2 = weights[row + 2 * n_out + o]
            w3 = weights[row + 3 * n_out + o]
            w4 = weights[row + 4 * n_out + o]
            w5 = weights[row + 5 * n_out + o]
            w6 = weights[row + 6 * n_out + o]
            w7 = weights[row + 7 * n_out + o]
            for lane in range(span):
                acc = out[dst + o, lane]
                acc += source[src + i, lane] * w0
                acc += source[src + i + 1, lane] * w1
                acc += source[src + i + 2, lane] * w2
                acc += source[src + i + 3, lane] * w3
                acc += source[src + i + 4, lane] * w4
                acc += source[src + i + 5, lane] * w5
                acc += source[src + i + 6, lane] * w6
                acc += source[src + i + 7, lane] * w7
                out[dst + o, lane] = acc
        i += 8
    while i < n_in:
        row = w_at + i * n_out
        for o in range(n_out):
            w = weights[row + o]
            for lane in range(span):
                out[dst + o, lane] += source[src + i, lane] * w
        i += 1


@njit(cache=True, inline="always")
def _matrix_times_lanes(weights: np.ndarray, w_at: int, n_in: int, n_out: int, upper: np.ndarray,
                        lower: np.ndarray, span: int) -> None:
    """``lower[i] = sum_o W[i, o] upper[o]`` for every lane, ``W`` the row-major ``n_in x n_out`` matrix at
    ``weights[w_at:]``: a layer's backward pass, from d / d outputs (``upper``) to d / d inputs (``lower``). Eight
    outputs per pass, then the rest one at a time, as :func:`_lanes_times_matrix`; every sum runs in output order
    from 0."""
    for i in range(n_in):
        row = w_at + i * n_out
        for lane in range(span):
            lower[i, lane] = _F32(0.0)
        o = 0
        while o + 8 <= n_out:
            w0 = weights[row + o]
            w1 = weights[row + o + 1]
            w2 = weights[row + o + 2]
            w3 = weights[row + o + 3]
            w4 = weights[row + o + 4]
            w5 = weights[row + o + 5]
            w6 = weights[row + o + 6]
            w7 = weights[row + o + 7]
            for lane in range(span):
                acc = lower[i, lane]
                acc += w0 * upper[o, lane]
                acc += w1 * upper[o + 1, lane]
                acc += w2 * upper[o + 2, lane]
                acc += w3 * upper[o + 3, lane]
                acc += w4 * upper[o + 4, lane]
                acc += w5 * upper[o + 5, lane]
                acc += w6 * upper[o + 6, lane]
                acc += w7 * upper[o + 7, lane]
                lower[i, lane] = acc
            o += 8
        while o < n_out:
            w = weights[row + o]
            for lane in range(span):
                lower[i, lane] += w * upper[o, lane]
            o += 1


@njit(cache=True, inline="always")
def _decode(k: int, latent: np.ndarray, decoder: np.ndarray, units: np.ndarray, decoded: np.ndarray,
            span: int) -> None:
    """Copy ``k`` of every lane through a system's VAE decoder (``VAE.decode_stacked``): ``units[k]`` = relu(z @ W1
    + b1), ``decoded[k]`` = units @ W2 + b2, sums in input order. ``decoder``: [W1 (width, H), b1 (H), W2 (H, d),
    b2 (d)], row-major (``compiled_search.decoder_rows``)."""
    width, H, d = latent.shape[1], units.shape[1], decoded.shape[1]
    b1 = width * H
    w2 = b1 + H
    b2 = w2 + H * d
    hidden = units[k]
    _lanes_times_matrix(latent[k], 0, width, decoder, 0, hidden, 0, H, span)
    for h in range(H):
        bias = decoder[b1 + h]
        for lane in range(span):
            hidden[h, lane] = max(hidden[h, lane] + bias, _F32(0.0))
    out = decoded[k]
    _lanes_times_matrix(hidden, 0, H, decoder, w2, out, 0, d, span)
    for j in range(d):
        bias = decoder[b2 + j]
        for lane in range(span):
            out[j, lane] += bias


@njit(cache=True, inline="always")
def _latent_steps(grad: np.ndarray, slope: np.ndarray, scale: np.ndarray, step_size: np.float32, decoder: np.ndarray,
                  units: np.ndarray, back: np.ndarray, latent_grad: np.ndarray, delta: np.ndarray,
                  largest_step: np.ndarray, largest_gradient: np.ndarray, span: int) -> None:
    """LatentSpace.step for every copy and lane: the gradient through the projection and the decoder to z (every
    coordinate of z moves: no step mask), the step, and each lane's largest step and gradient. Inlined: as a
    compiled call per iteration (with :func:`_decode` one per copy) REVISE searched 24 % slower at B = 10k, for
    2 s less compilation."""
    K, d = grad.shape[0], grad.shape[1]
    for k in range(K):
        for j in range(d):
            sc = scale[j]
            for lane in range(span):  # d / d decoded: x = project(decoded * scale + mean)
                grad[k, j, lane] = grad[k, j, lane] * slope[k, j, lane] * sc
        _decoder_backward(k, grad, decoder, units, back, latent_grad, span)
        for j in range(latent_grad.shape[1]):
            for lane in range(span):
                step, g = _step_of(latent_grad[k, j, lane], step_size, False)
                delta[k, j, lane] = step
                largest_step[lane] = max(largest_step[lane], abs(step))
                largest_gradient[lane] = max(largest_gradient[lane], min(abs(g), _FLOAT32_MAX))


@njit(cache=True, inline="always")
def _decoder_backward(k: int, grad: np.ndarray, decoder: np.ndarray, units: np.ndarray, back: np.ndarray,
                      latent_grad: np.ndarray, span: int) -> None:
    """``latent_grad[k]`` = d objective / d z of copy ``k`` from ``grad[k]`` = d objective / d decoded, through
    :func:`_decode`'s layers (the ReLU gate read from the stored units, as torch: result > 0); ``back`` (H, lanes)
    is scratch."""
    width, H = latent_grad.shape[1], units.shape[1]
    _matrix_times_lanes(decoder, width * H + H, H, grad.shape[1], grad[k], back, span)  # through W2
    for h in range(H):
        for lane in range(span):
            if not units[k, h, lane] > _F32(0.0):
                back[h, lane] = _F32(0.0)
    _matrix_times_lanes(decoder, 0, width, H, back, latent_grad[k], span)  # through W1


@njit(cache=True)
def _log_sigmoid_and_slope(z: np.float32) -> tuple[np.float32, np.float32]:
    """(log sigmoid(z), its derivative 1 - sigmoid(z)) from one exponential, without cancellation; with the
    vectorisable exp and log1p of :mod:`~recourse_sim.compiled_math` (the C library's would be a call per lane)."""
    e = exp_nonpositive(-abs(z))
    return min(z, _F32(0.0)) - log1p_unit(e), (e if z > _F32(0.0) else _F32(1.0)) / (_F32(1.0) + e)


@njit(cache=True, error_model="numpy")
def _search_range(
    s: int, first: int, last: int, work: np.ndarray, factual: np.ndarray, factual_std: np.ndarray,
    centres: np.ndarray, flat: np.ndarray, model_rows: np.ndarray, sizes: np.ndarray, n_members: int,
    mean: np.ndarray, scale: np.ndarray, lower: np.ndarray, upper: np.ndarray, kind: np.ndarray, bounded: bool,
    group_of: np.ndarray, group_columns: np.ndarray, group_sizes: np.ndarray, mad: np.ndarray,
    step_size: np.ndarray, caps: np.ndarray, rules: np.ndarray, log_thresholds: np.ndarray, tolerances: np.ndarray,
    weights: np.ndarray, jitter: np.float32, greedy: bool, greedy_epsilon: np.ndarray, greedy_n: np.ndarray,
    tie_seed: np.uint64, latent: bool, decoders: np.ndarray, hidden_width: int, converged: np.ndarray,
    steps: np.ndarray,
) -> None:
    """Search individuals ``first`` to ``last - 1`` of system ``s`` (see :func:`search_all` for the arrays).

    They run in up to :data:`LANES` lanes; every array of the loop has the lane as its last axis, so each
    operation is one vector instruction over the lanes. A lane whose individual stops (converged or at the cap)
    writes it back and takes the next one; once none is left to take, the last occupied lanes move into the free
    ones and the loops run over ``span`` lanes, the occupied ones rounded up to a whole :data:`LANE_BLOCK`. An
    individual's arithmetic is its lane's alone, so where it runs does not change a bit.
    """
    K, d = work.shape[2], factual.shape[2]
    width = work.shape[3]  # of the search space: d, or the latent code's width
    M = n_members
    n_layers = sizes.shape[0] - 1
    w_off = np.empty(n_layers, np.int64)
    b_off = np.empty(n_layers, np.int64)
    a_off = np.empty(n_layers + 1, np.int64)
    offset = 0
    units = 0
    widest = 1
    for layer in range(n_layers):
        fi, fo = sizes[layer], sizes[layer + 1]
        w_off[layer] = offset
        b_off[layer] = offset + M * fi * fo
        offset += M * (fi * fo + fo)
        a_off[layer] = units
        units += fi
        widest = max(widest, fi)
    a_off[n_layers] = units  # the logit follows every layer's inputs
    L = LANES
    zero = _F32(0.0)
    inv_k = _F32(1.0) / _F32(K)
    inv_m = _F32(1.0) / _F32(M)
    log_m = _F32(math.log(M))
    # the lanes' state: the individual each holds (-1: none), its iteration, its search-space copies and data
    who = np.full(L, -1, np.int64)
    t_lane = np.zeros(L, np.int64)
    lane_work = np.zeros((K, width, L), np.float32)
    lane_factual = np.zeros((d, L), np.float32)
    lane_factual_std = np.zeros((d, L), np.float32)
    lane_centre = np.zeros((d, L), np.float32)
    # one iteration's values, per lane
    x = np.zeros((K, d, L), np.float32)
    x_std = np.zeros((K, d, L), np.float32)
    slope = np.zeros((K, d, L), np.float32)
    grad = np.zeros((K, d, L), np.float32)
    delta = np.zeros((K, width, L), np.float32)
    # a latent search's decoded state, the decoder's hidden units and the gradients at both
    decoded = np.zeros((K, d if latent else 0, L), np.float32)
    decoder_units = np.zeros((K, hidden_width, L), np.float32)
    decoder_back = np.zeros((hidden_width, L), np.float32)
    latent_grad = np.zeros((K, width if latent else 0, L), np.float32)
    unprojected = decoded if latent else lane_work  # what the projection makes feasible
    # the networks' lanes: per member, every layer's inputs and the logit of the K copies side by side (copy k at
    # [k * span, (k + 1) * span)): the loops over lanes of the layer products then run K times as long, and
    # their fixed cost per loop (one per weight row or column and pass of eight) is paid once for all copies
    acts = np.zeros((M, units + 1, K * L), np.float32)
    logits = np.zeros((K, M, L), np.float32)
    log_p = np.zeros((K, L), np.float32)
    slopes = np.zeros((K, M, L), np.float32)  # d log p / d z_m
    member_log_p = np.zeros((M, L), np.float32)
    seeds = np.zeros((K, M, L), np.float32)
    back = np.zeros((2, widest, K * L), np.float32)  # d / d a layer's outputs and inputs, on the networks' lanes
    best_column = np.zeros(L, np.int64)  # _project_copy's scratch
    best_value = np.zeros(L, np.float32)
    all_valid = np.zeros(L, np.bool_)
    at_threshold = np.zeros(L, np.bool_)
    d_log_p = np.zeros(L, np.float32)
    norm_dist = np.zeros(L, np.float32)
    norm_grav = np.zeros(L, np.float32)
    largest_step = np.zeros(L, np.float32)
    largest_gradient = np.zeros(L, np.float32)
    kern = np.zeros((K, K), np.float32)  # DiCE's kernel matrix of one lane, its inverse and distances
    inverse = np.zeros((K, K), np.float32)
    dist = np.zeros((K, K), np.float32)
    has_centre = centres.shape[2] == d
    grouped = group_sizes.shape[0] > 0
    # the greedy strategy's state per copy: changes per feature, the cap n, the passes, and a tie-break stream
    counts = np.zeros((K, d, L), np.float32)
    cap_now = np.zeros((K, L), np.float32)
    passes = np.zeros((K, L), np.float32)
    ties = np.zeros(L, np.uint64)
    eligible = np.zeros(d, np.bool_)
    # counted, not assigned False then or-ed: numba would also type (and compile) _greedy_steps for the literal False
    n_mutable = 0
    for j in range(d):
        n_mutable += kind[j] != IMMUTABLE
    any_mutable = n_mutable > 0
    params = flat[model_rows[s]]
    decoder = decoders[s]
    step_s, cap, rule = step_size[s], caps[s], rules[s]
    log_threshold, tolerance = log_thresholds[s], tolerances[s]
    w_dist, w_grav, w_mad = weights[s, DISTANCE], weights[s, GRAVITATIONAL], weights[s, MAD]
    w_l1, w_clf, w_energy = weights[s, L1], weights[s, CLASSIFIER_LOSS], weights[s, ENERGY]
    w_diversity = weights[s, DIVERSITY]
    upcoming = first
    live = 0
    for lane in range(L):
        who[lane] = -1
        if upcoming < last:
            _load(lane, upcoming, s, work, factual, factual_std, centres, has_centre, lane_work, lane_factual,
                  lane_factual_std, lane_centre)
            if greedy:
                ties[lane] = _greedy_reset(lane, s, upcoming, greedy_n[s], tie_seed, counts, cap_now, passes)
            who[lane] = upcoming
            t_lane[lane] = 0
            upcoming += 1
            live += 1
    span = _lanes_for(live)
    while live > 0:
        # ------------------------------------------------------------ candidates and the forward pass
        if latent:
            for k in range(K):
                _decode(k, lane_work, decoder, decoder_units, decoded, span)
        if grouped:
            for k in range(K):
                _project_copy(unprojected, k, x, slope, scale, mean, lower, upper, kind, bounded, lane_factual,
                              group_of, group_columns, group_sizes, best_column, best_value, span)
                for j in range(d):
                    sc, mu = scale[j], mean[j]
                    for lane in range(span):
                        x_std[k, j, lane] = (x[k, j, lane] - mu) / sc
        else:  # one fused pass per feature (the common case: a tenth of the step's time less)
            for k in range(K):
                for j in range(d):
                    sc, mu, lo, up, kd = scale[j], mean[j], lower[j], upper[j], kind[j]
                    for lane in range(span):
                        value, sl = _project(unprojected[k, j, lane], sc, mu, lo, up, kd, lane_factual[j, lane],
                                             bounded)
                        x[k, j, lane] = value
                        slope[k, j, lane] = sl
                        x_std[k, j, lane] = (value - mu) / sc
        # every member's network on the K copies side by side: copy k's lanes at [k * span, (k + 1) * span) of the
        # network's lanes, so each loop over lanes runs K times as long (see ``acts``)
        copies_span = K * span
        for m in range(M):
            for j in range(d):
                for k in range(K):
                    for lane in range(span):
                        acts[m, j, k * span + lane] = x[k, j, lane]
            for layer in range(n_layers):
                fi, fo = sizes[layer], sizes[layer + 1]
                src, dst = a_off[layer], a_off[layer + 1]
                wo, bo = w_off[layer] + m * fi * fo, b_off[layer] + m * fo
                _lanes_times_matrix(acts[m], src, fi, params, wo, acts[m], dst, fo, copies_span)
                hidden = layer < n_layers - 1
                for o in range(fo):
                    bias = params[bo + o]
                    for lane in range(copies_span):
                        value = acts[m, dst + o, lane] + bias
                        acts[m, dst + o, lane] = max(value, zero) if hidden else value
            for k in range(K):
                for lane in range(span):
                    logits[k, m, lane] = acts[m, units, k * span + lane]
        for k in range(K):
            if M == 1:
                for lane in range(span):
                    log_p[k, lane], slopes[k, 0, lane] = _log_sigmoid_and_slope(logits[k, 0, lane])
            else:  # log mean_m sigmoid(z_m) = logsumexp_m log sigmoid(z_m) - log M
                for m in range(M):
                    for lane in range(span):
                        member_log_p[m, lane], slopes[k, m, lane] = _log_sigmoid_and_slope(logits[k, m, lane])
                for lane in range(span):
                    top = member_log_p[0, lane]
                    for m in range(1, M):
                        top = max(top, member_log_p[m, lane])
                    total = zero
                    for m in range(M):
                        total += exp_nonpositive(member_log_p[m, lane] - top)
                    log_p[k, lane] = top + np.log(total) - log_m
                for m in range(M):  # d log p / d z_m = sigmoid(z_m) (1 - sigmoid(z_m)) / (M p)
                    for lane in range(span):
                        slopes[k, m, lane] *= exp_nonpositive(member_log_p[m, lane] - log_m - log_p[k, lane])
        for lane in range(span):
            all_valid[lane] = True
            at_threshold[lane] = True
        for k in range(K):
            for lane in range(span):
                all_valid[lane] = all_valid[lane] and log_p[k, lane] >= _LOG_HALF
                at_threshold[lane] = at_threshold[lane] and log_p[k, lane] >= log_threshold
        # ---------------------------------------- d objective / d logit of every (copy, member): the seeds
        for lane in range(span):  # yloss -mean_k log p_k, plus ClassifierLoss (the same) once all copies are valid
            d_log_p[lane] = -inv_k - (w_clf * inv_k if all_valid[lane] else zero)
        for k in range(K):
            for m in range(M):
                for lane in range(span):  # Energy: -mean_k mean_m z_km
                    seeds[k, m, lane] = d_log_p[lane] * slopes[k, m, lane] - w_energy * inv_k * inv_m
        # ------------------------------------------ the terms on the standardised candidates: d / d x_std
        for lane in range(span):
            norm_dist[lane] = zero
            norm_grav[lane] = zero
        if w_dist != zero or w_grav != zero:
            for k in range(K):
                for j in range(d):
                    for lane in range(span):
                        diff = x_std[k, j, lane] - lane_factual_std[j, lane]
                        norm_dist[lane] += diff * diff
                        pull = x_std[k, j, lane] - lane_centre[j, lane]
                        norm_grav[lane] += pull * pull
            for lane in range(span):
                norm_dist[lane] = np.sqrt(norm_dist[lane] + _EPS)
                norm_grav[lane] = np.sqrt(norm_grav[lane] + _EPS)
        for k in range(K):
            for j in range(d):
                sc, md = scale[j], mad[j]
                for lane in range(span):
                    diff = x_std[k, j, lane] - lane_factual_std[j, lane]
                    sign = _F32(1.0) if diff > zero else (_F32(-1.0) if diff < zero else zero)
                    g = w_dist * (diff / norm_dist[lane]) if w_dist != zero else zero
                    if w_grav != zero:
                        g += w_grav * ((x_std[k, j, lane] - lane_centre[j, lane]) / norm_grav[lane])
                    if w_mad != zero:
                        g += w_mad * (sign / md)
                    if w_l1 != zero:
                        g += w_l1 * sign
                    grad[k, j, lane] = g / sc  # x_std = (x - mean) / scale
        if w_diversity != zero and K > 1:
            for lane in range(span):
                if who[lane] < 0:  # scalar work per lane: skip the empty ones
                    continue
                _add_diversity_gradient(x_std, lane, w_diversity, jitter, scale, grad, kern, inverse, dist)
        # ------------------------------------------------------ backward through the network to x
        for m in range(M):  # the K copies side by side, as in the forward pass; grad sums the members in order
            layer = n_layers - 1  # the output layer: one logit, d z / d h = its weight column
            fi = sizes[layer]
            wo = w_off[layer] + m * fi
            for i in range(fi):
                w = params[wo + i]
                for k in range(K):
                    for lane in range(span):
                        back[0, i, k * span + lane] = seeds[k, m, lane] * w
            here = 0
            for layer in range(n_layers - 2, -1, -1):
                fi, fo = sizes[layer], sizes[layer + 1]
                out = a_off[layer + 1]
                wo = w_off[layer] + m * fi * fo
                there = 1 - here
                for o in range(fo):  # the ReLU gate, read from the stored activation (torch: result > 0)
                    for lane in range(copies_span):
                        back[here, o, lane] = back[here, o, lane] if acts[m, out + o, lane] > zero else zero
                _matrix_times_lanes(params, wo, fi, fo, back[here], back[there], copies_span)
                here = there
            for k in range(K):
                for j in range(d):
                    for lane in range(span):
                        grad[k, j, lane] += back[here, j, k * span + lane]
        # ------------------------------------------------ d / d work, the step and the convergence test
        for lane in range(span):
            largest_step[lane] = zero
            largest_gradient[lane] = zero
        if latent:
            _latent_steps(grad, slope, scale, step_s, decoder, decoder_units, decoder_back, latent_grad, delta,
                          largest_step, largest_gradient, span)
        else:
            for k in range(K):
                for j in range(d):
                    sc = scale[j]
                    fixed = kind[j] == IMMUTABLE  # no step (FeatureSpace.step_mask), no gradient in the test
                    for lane in range(span):  # x = project(work * scale + mean)
                        step, g = _step_of(grad[k, j, lane] * slope[k, j, lane] * sc, step_s, fixed)
                        delta[k, j, lane] = step
                        largest_step[lane] = max(largest_step[lane], abs(step))
                        largest_gradient[lane] = max(largest_gradient[lane], min(abs(g), _FLOAT32_MAX))
        if greedy:
            _greedy_steps(who, grad, slope, lane_work, lane_factual, greedy_epsilon[s], counts, cap_now, passes, ties,
                          any_mutable, eligible, scale, mean, lower, upper, kind, bounded, group_of, group_columns,
                          group_sizes, delta, largest_step, span)
        # ------------------------------- stopped lanes hand their individual back; the others move on
        for lane in range(span):
            b = who[lane]
            if b < 0:
                continue
            if rule == THRESHOLD:
                hit = at_threshold[lane]
            elif rule == SMALL_STEP:
                hit = all_valid[lane] and largest_step[lane] < tolerance
            else:  # SMALL_GRADIENT
                hit = at_threshold[lane] and largest_gradient[lane] < tolerance
            if hit or t_lane[lane] >= cap:
                for k in range(K):
                    for j in range(width):
                        work[s, b, k, j] = lane_work[k, j, lane]
                converged[s, b] = hit
                steps[s, b] = t_lane[lane]
                who[lane] = -1
                live -= 1
        if greedy:  # the moves of the individuals that go on (GreedySpace.move)
            _count_moves(who, delta, counts, span)
        if latent:  # SearchSpace.move: z + delta, unprojected (the decoded candidates are projected)
            for k in range(K):
                for j in range(width):
                    for lane in range(span):
                        lane_work[k, j, lane] += delta[k, j, lane]
        elif grouped:  # the move (delta, x and slope serve as scratch: this iteration is done with them)
            for k in range(K):
                for j in range(d):
                    for lane in range(span):
                        delta[k, j, lane] += lane_work[k, j, lane]
                _project_copy(delta, k, x, slope, scale, mean, lower, upper, kind, bounded, lane_factual, group_of,
                              group_columns, group_sizes, best_column, best_value, span)
                for j in range(d):
                    sc, mu = scale[j], mean[j]
                    for lane in range(span):
                        lane_work[k, j, lane] = (x[k, j, lane] - mu) / sc
        else:
            for k in range(K):
                for j in range(d):
                    sc, mu, lo, up, kd = scale[j], mean[j], lower[j], upper[j], kind[j]
                    for lane in range(span):
                        value, _ = _project(lane_work[k, j, lane] + delta[k, j, lane], sc, mu, lo, up, kd,
                                            lane_factual[j, lane], bounded)
                        lane_work[k, j, lane] = (value - mu) / sc
        for lane in range(span):
            t_lane[lane] += 1
            if who[lane] < 0 and upcoming < last:
                _load(lane, upcoming, s, work, factual, factual_std, centres, has_centre, lane_work,
                      lane_factual, lane_factual_std, lane_centre)
                if greedy:
                    ties[lane] = _greedy_reset(lane, s, upcoming, greedy_n[s], tie_seed, counts, cap_now, passes)
                who[lane] = upcoming
                t_lane[lane] = 0
                upcoming += 1
                live += 1
        if upcoming >= last and 0 < live <= span - LANE_BLOCK:  # nobody waits: gather the rest, run fewer lanes
            span = _gather_lanes(live, span, who, t_lane, lane_work, lane_factual, lane_factual_std, lane_centre,
                                 counts, cap_now, passes, ties)


@njit(cache=True)
def _lanes_for(live: int) -> int:
    """The lanes an iteration runs for ``live`` individuals gathered in the first lanes: whole blocks."""
    return min(LANES, (live + LANE_BLOCK - 1) // LANE_BLOCK * LANE_BLOCK)


@njit(cache=True)
def _gather_lanes(live: int, span: int, who: np.ndarray, t_lane: np.ndarray, lane_work: np.ndarray,
                  lane_factual: np.ndarray, lane_factual_std: np.ndarray, lane_centre: np.ndarray, counts: np.ndarray,
                  cap_now: np.ndarray, passes: np.ndarray, ties: np.ndarray) -> int:
    """Move the ``live`` individuals of the first ``span`` lanes into the lowest lanes (each empty lane, lowest
    first, takes the individual of the highest occupied one) and return the lanes the next iterations run."""
    top = span - 1
    for lane in range(span):
        if who[lane] >= 0:
            continue
        while top > lane and who[top] < 0:
            top -= 1
        if top <= lane:
            break
        _move_lane(top, lane, who, t_lane, lane_work, lane_factual, lane_factual_std, lane_centre, counts, cap_now,
                   passes, ties)
    return _lanes_for(live)


@njit(cache=True)
def _move_lane(source: int, target: int, who: np.ndarray, t_lane: np.ndarray, lane_work: np.ndarray,
               lane_factual: np.ndarray, lane_factual_std: np.ndarray, lane_centre: np.ndarray, counts: np.ndarray,
               cap_now: np.ndarray, passes: np.ndarray, ties: np.ndarray) -> None:
    """Move the individual in lane ``source`` (its search state, data and greedy state) to the empty lane
    ``target``; an iteration's other arrays are recomputed from these."""
    who[target], t_lane[target], ties[target] = who[source], t_lane[source], ties[source]
    who[source] = -1
    for k in range(lane_work.shape[0]):
        for j in range(lane_work.shape[1]):
            lane_work[k, j, target] = lane_work[k, j, source]
        for j in range(counts.shape[1]):
            counts[k, j, target] = counts[k, j, source]
        cap_now[k, target] = cap_now[k, source]
        passes[k, target] = passes[k, source]
    for j in range(lane_factual.shape[0]):
        lane_factual[j, target] = lane_factual[j, source]
        lane_factual_std[j, target] = lane_factual_std[j, source]
        lane_centre[j, target] = lane_centre[j, source]


@njit(cache=True)
def _greedy_steps(who: np.ndarray, grad: np.ndarray, slope: np.ndarray, lane_work: np.ndarray, factual: np.ndarray,
                  epsilon: np.float32, counts: np.ndarray, cap_now: np.ndarray, passes: np.ndarray, ties: np.ndarray,
                  any_mutable: bool, eligible: np.ndarray, scale: np.ndarray, mean: np.ndarray, lower: np.ndarray,
                  upper: np.ndarray, kind: np.ndarray, bounded: bool, group_of: np.ndarray,
                  group_columns: np.ndarray, group_sizes: np.ndarray, delta: np.ndarray,
                  largest_step: np.ndarray, span: int) -> None:
    """The greedy step of every copy of every occupied lane (:func:`_greedy_move`), and each lane's largest step.
    Kept out of :func:`_search_range`, whose gradient path then compiles as it did without greedy."""
    K, d = grad.shape[0], grad.shape[1]
    for lane in range(span):
        if who[lane] < 0:
            continue
        largest_step[lane] = _F32(0.0)
        for k in range(K):
            ties[lane] = _greedy_move(k, lane, grad, slope, lane_work, factual, epsilon, counts, cap_now, passes,
                                      ties[lane], any_mutable, eligible, scale, mean, lower, upper, kind, bounded,
                                      group_of, group_columns, group_sizes, delta)
            for j in range(d):
                largest_step[lane] = max(largest_step[lane], abs(delta[k, j, lane]))


@njit(cache=True)
def _count_moves(who: np.ndarray, delta: np.ndarray, counts: np.ndarray, span: int) -> None:
    """GreedySpace.move's count: +1 for every feature a copy of an occupied lane moves."""
    K, d = delta.shape[0], delta.shape[1]
    for lane in range(span):
        if who[lane] >= 0:
            for k in range(K):
                for j in range(d):
                    if delta[k, j, lane] != _F32(0.0):
                        counts[k, j, lane] += _F32(1.0)


@njit(cache=True)
def _greedy_reset(lane: int, s: int, b: int, n: np.float32, tie_seed: np.uint64, counts: np.ndarray,
                  cap_now: np.ndarray, passes: np.ndarray) -> np.uint64:
    """A fresh greedy state for individual ``b`` of system ``s`` in ``lane``: no changes yet, cap ``n``, no pass;
    returns its tie-break stream, which depends on (seed, system, individual) only, not on the lane."""
    for k in range(counts.shape[0]):
        cap_now[k, lane] = n
        passes[k, lane] = _F32(0.0)
        for j in range(counts.shape[1]):
            counts[k, j, lane] = _F32(0.0)
    mixed = np.uint64(tie_seed) ^ (np.uint64(s) * np.uint64(0xD1B54A32D192ED03) + np.uint64(b))
    stream, _ = splitmix64(mixed)
    return stream


@njit(cache=True, inline="always")
def _greedy_allowed(k: int, j: int, lane: int, move: np.float32, lane_work: np.ndarray, factual: np.ndarray,
                    scale: np.ndarray, mean: np.ndarray, lower: np.ndarray, upper: np.ndarray, kind: np.ndarray,
                    bounded: bool, group_of: np.ndarray, group_columns: np.ndarray,
                    group_sizes: np.ndarray) -> bool:
    """GreedySpace.allowed_moves for feature ``j`` of copy ``k``: does moving it alone by ``move`` change it by
    more than 1e-4 (search space) once projected (FeatureConstraints.project_each)? A one-hot column lands hot
    when its moved value wins its group's argmax against the other columns (ties: the earlier column)."""
    if move == _F32(0.0) or kind[j] == IMMUTABLE:
        return False
    z = lane_work[k, j, lane]
    sc, mu = scale[j], mean[j]
    g = group_of[j]
    if g < 0:
        landed, _ = _project(z + move, sc, mu, lower[j], upper[j], kind[j], factual[j, lane], bounded)
    else:
        moved, _ = _clamp((z + move) * sc + mu, lower[j], upper[j], bounded)
        rival = -np.inf
        rival_at = group_sizes[g]
        mine = 0
        for c in range(group_sizes[g]):
            column = group_columns[g, c]
            if column == j:
                mine = c
                continue
            value, _ = _clamp(lane_work[k, column, lane] * scale[column] + mean[column], lower[column],
                              upper[column], bounded)
            if value > rival:  # the first maximum
                rival = value
                rival_at = c
        wins = moved > rival or (moved == rival and mine < rival_at)
        landed, _ = _actionable(_F32(1.0) if wins else _F32(0.0), kind[j], factual[j, lane])
    return abs((landed - mu) / sc - z) > _F32(_MOVE_TOLERANCE)


@njit(cache=True, inline="always")
def _greedy_move(k: int, lane: int, grad: np.ndarray, slope: np.ndarray, lane_work: np.ndarray,
                 factual: np.ndarray, epsilon: np.float32, counts: np.ndarray, cap_now: np.ndarray, passes: np.ndarray,
                 stream: np.uint64, any_mutable: bool, eligible: np.ndarray, scale: np.ndarray, mean: np.ndarray,
                 lower: np.ndarray, upper: np.ndarray, kind: np.ndarray, bounded: bool, group_of: np.ndarray,
                 group_columns: np.ndarray, group_sizes: np.ndarray, delta: np.ndarray) -> np.uint64:
    """GreedySpace.step for copy ``k`` of ``lane``: ``delta[k, :, lane]`` becomes ``-epsilon sign(g_j)`` on the one
    eligible feature with the largest |g_j|, zero elsewhere; ``g`` = d objective / d work as GreedySpace.step
    sees it (``grad`` times the projection's slope and the scale, ``torch.nan_to_num``-ed, not masked). ``grad``
    keeps g afterwards. Ties go to the tied feature with the largest uniform draw from the individual's stream
    (the torch loop draws its own); returns the stream's new state."""
    d = grad.shape[1]
    zero = _F32(0.0)
    for j in range(d):
        g = grad[k, j, lane] * slope[k, j, lane] * scale[j]  # as the gradient step's, x = project(work * s + m)
        grad[k, j, lane] = zero if np.isnan(g) else max(min(g, _FLOAT32_MAX), -_FLOAT32_MAX)
    if any_mutable:  # all mutable features used up: a new pass with a larger cap
        used_up = True
        for j in range(d):
            if kind[j] != IMMUTABLE and counts[k, j, lane] < cap_now[k, lane]:
                used_up = False
        if used_up:
            passes[k, lane] += _F32(1.0)
            cap_now[k, lane] = cap_now[k, lane] + cap_now[k, lane] / max(passes[k, lane], _F32(1.0))
    best = _F32(-1.0)
    for j in range(d):
        g = grad[k, j, lane]
        move = -epsilon * (_F32(1.0) if g > zero else (_F32(-1.0) if g < zero else zero))
        eligible[j] = counts[k, j, lane] < cap_now[k, lane] and _greedy_allowed(
            k, j, lane, move, lane_work, factual, scale, mean, lower, upper, kind, bounded, group_of,
            group_columns, group_sizes)
        if eligible[j]:
            best = max(best, abs(g))
        delta[k, j, lane] = zero
    pick = -1
    tied = 0
    for j in range(d):
        if eligible[j] and abs(grad[k, j, lane]) == best:
            tied += 1
            pick = j
    if tied > 1:  # the largest of one draw per tied feature (the first on equal draws)
        top = -1.0
        for j in range(d):
            if eligible[j] and abs(grad[k, j, lane]) == best:
                stream, bits = splitmix64(stream)
                if float(bits >> np.uint64(11)) > top:
                    top = float(bits >> np.uint64(11))
                    pick = j
    if pick >= 0:
        g = grad[k, pick, lane]
        delta[k, pick, lane] = -epsilon * (_F32(1.0) if g > zero else _F32(-1.0))
    return stream


@njit(cache=True, error_model="numpy")
def search_all(tasks: np.ndarray, *arguments) -> None:
    """Every task, one after the other on the calling thread.

    ``tasks`` (n, 3): rows (system s, first individual, last individual + 1) that cover every individual once;
    ``arguments``: the rest of :func:`_search_range`'s, in its order. ``work`` (S, B, K, d): the initial
    search-space copies, moved in place; ``converged``/``steps`` (S, B) written. ``flat[model_rows[s]]`` are system
    s's network parameters (``StackedMLP.flat``'s layout: per layer the weights of all members (M, fi, fo), then
    their biases (M, 1, fo)); ``centres`` (S, B, d) the gravitational centres (or (S, B, 0) unused); ``group_of``
    (d,) each feature's one-hot group (-1: none), ``group_columns`` (G, widest) every group's columns (padded) and
    ``group_sizes`` (G,); per-system settings are (S,) arrays, ``weights`` (S, 7) (search_codes' columns);
    ``jitter`` DiCE's diagonal jitter. A ``latent`` search's ``work`` (S, B, K, width) holds latent codes:
    ``decoders`` (S, P) are each system's VAE decoder (:func:`_decode`'s layout) with ``hidden_width`` units;
    otherwise ``decoders`` is (S, 0) and unused.
    """
    for task in range(tasks.shape[0]):
        _search_range(tasks[task, 0], tasks[task, 1], tasks[task, 2], *arguments)


@njit(cache=True, error_model="numpy", parallel=True)
def search_all_parallel(tasks: np.ndarray, *arguments) -> None:
    """:func:`search_all` with the tasks on numba's worker threads. Tasks write disjoint individuals, and an
    individual's result does not depend on its lane or task, so the result is :func:`search_all`'s (given the
    same denormal mode on every thread)."""
    for task in prange(tasks.shape[0]):
        _search_range(tasks[task, 0], tasks[task, 1], tasks[task, 2], *arguments)


@njit(cache=True)
def _add_diversity_gradient(x_std: np.ndarray, lane: int, weight: np.float32, jitter: np.float32, scale: np.ndarray,
                            grad: np.ndarray, kern: np.ndarray, inverse: np.ndarray, dist: np.ndarray) -> None:
    """Add d/dx of DiCE's ``-weight det(Kern)`` for one lane's K copies to ``grad`` (K, d, lanes).

    ``Kern_ij = 1 / (1 + dist_ij) + jitter [i = j]`` with ``dist_ij = sqrt(||x_i - x_j||^2 + eps)`` in the search
    space (terms.DPPDiversity). ``d det / d Kern = det Kern^-T``; ``d Kern_ij / d dist_ij = -1 / (1 + dist_ij)^2``;
    ``d dist_ij / d x_i = (x_i - x_j) / dist_ij``, and entry (j, i) moves x_i the same way as (i, j).
    """
    K, d = x_std.shape[0], x_std.shape[1]
    for i in range(K):
        for j in range(K):
            total = _F32(0.0)
            for f in range(d):
                diff = x_std[i, f, lane] - x_std[j, f, lane]
                total += diff * diff
            dist[i, j] = np.sqrt(total + _EPS)
            kern[i, j] = _F32(1.0) / (_F32(1.0) + dist[i, j]) + (jitter if i == j else _F32(0.0))
    det = _invert(kern, inverse)
    for i in range(K):
        for j in range(K):
            if i == j:
                continue
            slope = _F32(1.0) + dist[i, j]
            # d(-weight det)/d Kern_ij + the same for (j, i), times d Kern / d dist, over dist_ij
            coef = -weight * det * (inverse[j, i] + inverse[i, j]) * (-_F32(1.0) / (slope * slope)) / dist[i, j]
            for f in range(d):
                grad[i, f, lane] += coef * (x_std[i, f, lane] - x_std[j, f, lane]) / scale[f]


@njit(cache=True)
def _invert(matrix: np.ndarray, inverse: np.ndarray) -> np.float32:
    """det(matrix) and its inverse (written to ``inverse``) by Gauss-Jordan elimination with partial pivoting
    (``matrix`` is overwritten); a singular matrix gives det 0 and leaves ``inverse`` unusable (the term then has
    no gradient, as det 0 * anything)."""
    K = matrix.shape[0]
    for i in range(K):
        for j in range(K):
            inverse[i, j] = _F32(1.0) if i == j else _F32(0.0)
    det = _F32(1.0)
    for col in range(K):
        pivot = col
        for row in range(col + 1, K):
            if abs(matrix[row, col]) > abs(matrix[pivot, col]):
                pivot = row
        if matrix[pivot, col] == _F32(0.0):
            return _F32(0.0)
        if pivot != col:
            det = -det
            for j in range(K):
                matrix[col, j], matrix[pivot, j] = matrix[pivot, j], matrix[col, j]
                inverse[col, j], inverse[pivot, j] = inverse[pivot, j], inverse[col, j]
        head = matrix[col, col]
        det *= head
        for j in range(K):
            matrix[col, j] /= head
            inverse[col, j] /= head
        for row in range(K):
            if row != col:
                factor = matrix[row, col]
                for j in range(K):
                    matrix[row, j] -= factor * matrix[col, j]
                    inverse[row, j] -= factor * inverse[col, j]
    return det


@njit(cache=True)
def _load(lane: int, b: int, s: int, work: np.ndarray, factual: np.ndarray, factual_std: np.ndarray,
          centres: np.ndarray, has_centre: bool, lane_work: np.ndarray, lane_factual: np.ndarray,
          lane_factual_std: np.ndarray, lane_centre: np.ndarray) -> None:
    """Put individual ``b`` of system ``s`` into ``lane``."""
    K, width, d = work.shape[2], work.shape[3], factual.shape[2]
    for k in range(K):
        for j in range(width):
            lane_work[k, j, lane] = work[s, b, k, j]
    for j in range(d):
        lane_factual[j, lane] = factual[s, b, j]
        lane_factual_std[j, lane] = factual_std[s, b, j]
        lane_centre[j, lane] = centres[s, b, j] if has_centre else _F32(0.0)
