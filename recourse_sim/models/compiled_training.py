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
  ``v = beta2 v + (1 - beta2) g^2``, ``w += (-lr / (1 - beta1^t)) m / (sqrt(v / (1 - beta2^t)) + eps)``.

Each (system, member) pair has disjoint parameters and its own Adam state, so pairs are trained independently
(``prange`` over pairs when compiled with ``parallel=True``); the result does not depend on how pairs are
scheduled. Mini-batch sums run in row order, so results differ from torch's BLAS-ordered sums only by float32
rounding.

Dropout masks come from a counter-free xorshift-style generator (splitmix64) inside the loop, one stream per
(system, member) pair seeded from one 62-bit seed drawn from the torch generator per call. The masks therefore
differ from the torch step's ``torch.rand`` masks (same distribution, different draws).

The module imports numba lazily (only when CPU training first runs) and compiles with ``cache=True``: the
first call in a fresh environment compiles (a few seconds), later processes load the cached machine code.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_F32 = np.float32


@njit(cache=True, inline="always")
def _splitmix64(state: np.uint64) -> tuple[np.uint64, np.uint64]:
    """Advance a splitmix64 state; returns (new state, 64 random bits)."""
    state = state + np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state, z ^ (z >> np.uint64(31))


@njit(cache=True, error_model="numpy")
def _train_pair(
    w: np.ndarray, X: np.ndarray, y: np.ndarray, orders: np.ndarray, shuffle: bool, sizes: np.ndarray,
    epochs: int, batch_size: int, lr: float, beta1: float, beta2: float, eps: float, dropout: float,
    keep_threshold: np.uint64, stream: np.uint64,
) -> None:
    """Train one member's contiguous parameter vector ``w`` ([W0 (fi x fo), b0 (fo), W1, b1, ...]) in place.

    ``X`` (n, d), ``y`` (n,) are its system's data; ``orders`` (epochs, n) the row order per epoch when
    ``shuffle``. ``keep_threshold``: a unit is kept when the top 24 bits of a draw are >= it (u >= p).
    """
    n = X.shape[0]
    n_layers = sizes.shape[0] - 1
    n_params = w.shape[0]
    B = min(batch_size, n)
    # offsets of every layer's weights/biases in w and of every layer's input activations in acts. Loops index
    # 2-D views of these buffers with range() indices, which LLVM can prove non-negative (numba's wraparound
    # of negative indices would otherwise stop it vectorising the loops over a layer's outputs).
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
    delta = np.zeros(B * widest, np.float32)
    delta_prev = np.zeros(B * widest, np.float32)
    grad = np.zeros(n_params, np.float32)
    w_scaled = np.zeros(n_params, np.float32)
    w_t = np.zeros(largest, np.float32)
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
    step = 0
    for epoch in range(epochs):
        for start in range(0, n, batch_size):
            nb = min(batch_size, n - start)
            for r in range(nb):
                rows[r] = orders[epoch, start + r] if shuffle else start + r
            # ---------------------------------------------------------------------------- forward
            d = sizes[0]
            H0 = acts[: nb * d].reshape((nb, d))
            for r in range(nb):
                xr = X[rows[r]]
                for i in range(d):
                    H0[r, i] = xr[i]
            for layer in range(n_layers):
                fi, fo = sizes[layer], sizes[layer + 1]
                Hin = acts[a_off[layer] : a_off[layer] + nb * fi].reshape((nb, fi))
                Hout = acts[a_off[layer + 1] : a_off[layer + 1] + nb * fo].reshape((nb, fo))
                W = w[w_off[layer] : w_off[layer] + fi * fo].reshape((fi, fo))
                b = w[b_off[layer] : b_off[layer] + fo]
                if use_dropout and layer > 0:  # (h * keep * scale) @ W == (h * keep) @ (scale * W), as in torch
                    Ws = w_scaled[w_off[layer] : w_off[layer] + fi * fo].reshape((fi, fo))
                    for i in range(fi):
                        for j in range(fo):
                            Ws[i, j] = W[i, j] * scale
                    W = Ws
                for r in range(nb):
                    out = Hout[r]
                    for j in range(fo):
                        out[j] = zero
                    for i in range(fi):  # innermost loop over outputs: vectorised; sums run in input order
                        a = Hin[r, i]
                        Wi = W[i]
                        for j in range(fo):
                            out[j] += a * Wi[j]
                    for j in range(fo):
                        out[j] = b[j] + out[j]
                    if layer < n_layers - 1:
                        for j in range(fo):
                            out[j] = max(out[j], zero)
                        if use_dropout:
                            for j in range(fo):
                                state, bits = _splitmix64(state)
                                if (bits >> np.uint64(40)) < keep_threshold:
                                    out[j] = zero
            # ------------------------------------------------------------- backward (batch-mean BCE)
            nb_f = _F32(nb)
            logits = acts[a_off[n_layers] : a_off[n_layers] + nb]
            for r in range(nb):
                delta[r] = (one / (one + np.exp(-logits[r])) - y[rows[r]]) / nb_f
            for layer in range(n_layers - 1, -1, -1):
                fi, fo = sizes[layer], sizes[layer + 1]
                scaled = use_dropout and layer > 0
                Hin = acts[a_off[layer] : a_off[layer] + nb * fi].reshape((nb, fi))
                D = delta[: nb * fo].reshape((nb, fo))
                gW = grad[w_off[layer] : w_off[layer] + fi * fo].reshape((fi, fo))
                gb = grad[b_off[layer] : b_off[layer] + fo]
                for j in range(fo):
                    gb[j] = zero
                for i in range(fi):
                    for j in range(fo):
                        gW[i, j] = zero
                for r in range(nb):  # sums over the batch in row order
                    Dr = D[r]
                    for j in range(fo):
                        gb[j] += Dr[j]
                    for i in range(fi):
                        a = Hin[r, i]
                        gWi = gW[i]
                        for j in range(fo):
                            gWi[j] += a * Dr[j]
                if scaled:
                    for i in range(fi):
                        for j in range(fo):
                            gW[i, j] = gW[i, j] * scale
                if layer > 0:
                    # delta_prev = (delta @ W^T) * relu'(pre) * keep, the gate read from the stored activation;
                    # W^T copied so the loop over inputs is contiguous; sums run in output order
                    source = w_scaled if scaled else w
                    W = source[w_off[layer] : w_off[layer] + fi * fo].reshape((fi, fo))
                    WT = w_t[: fi * fo].reshape((fo, fi))
                    for i in range(fi):
                        for j in range(fo):
                            WT[j, i] = W[i, j]
                    DP = delta_prev[: nb * fi].reshape((nb, fi))
                    for r in range(nb):
                        out = DP[r]
                        for i in range(fi):
                            out[i] = zero
                        for j in range(fo):
                            dj = D[r, j]
                            WTj = WT[j]
                            for i in range(fi):
                                out[i] += dj * WTj[i]
                        Hr = Hin[r]
                        for i in range(fi):
                            if not Hr[i] > zero:
                                out[i] = zero
                    delta, delta_prev = delta_prev, delta
            # ------------------------------------------------------------------------------ Adam
            step += 1
            bias1 = 1.0 - beta1**step
            bias2 = _F32(1.0 - beta2**step)
            step_size = _F32(-lr / bias1)
            for k in range(n_params):
                g = grad[k]
                mk = m[k] + lerp_weight * (g - m[k])
                vk = v[k] * beta2_f + sq_weight * g * g
                m[k] = mk
                v[k] = vk
                w[k] = w[k] + step_size * mk / (np.sqrt(vk / bias2) + eps_f)


@njit(cache=True, parallel=True, error_model="numpy")
def train_stack(
    flat: np.ndarray, X: np.ndarray, y: np.ndarray, orders: np.ndarray, shuffle: bool, sizes: np.ndarray,
    n_members: int, epochs: int, batch_size: int, lr: float, beta1: float, beta2: float, eps: float,
    dropout: float, seed: np.uint64,
) -> None:
    """Train every (system, member) pair of the stacked parameter buffer ``flat`` (S, P) in place.

    ``flat`` holds per system, layer by layer, the weights of all members (M, fi, fo) then their biases
    (M, 1, fo) (the layout of ``StackedMLP.flat``); each pair's parameters are gathered into one contiguous
    vector, trained by :func:`_train_pair` and scattered back.
    """
    S = flat.shape[0]
    M = n_members
    n_layers = sizes.shape[0] - 1
    per_member = 0
    for layer in range(n_layers):
        per_member += sizes[layer] * sizes[layer + 1] + sizes[layer + 1]
    keep_threshold = np.uint64(np.ceil(dropout * 16777216.0))  # u = bits / 2^24 >= p  <=>  bits >= ceil(p 2^24)
    for pair in prange(S * M):
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
        stream, _ = _splitmix64(seed ^ (np.uint64(pair) * np.uint64(0xD1B54A32D192ED03)))
        _train_pair(w, X[s], y[s], orders, shuffle, sizes, epochs, batch_size, lr, beta1, beta2, eps, dropout,
                    keep_threshold, stream)
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
