"""One compiled call per epoch of :class:`~recourse_sim.models.vae.VAE` training on the CPU.

Why: REVISE's VAEs are refitted every round (10 epochs at batch 50: 160 Adam steps per round on the synthetic
data), and each torch step of the stacked VAE, autograd and a foreach Adam included, is ~2 ms of dispatch for a
few hundred thousand multiply-adds: in a SaTML experiment on synthetic data, VAE training took a quarter of the
run (20 s of 78 s in a profile of moons). Here every batch of an epoch, for every stacked system, runs in one
numba-compiled function with the gradient of ``VAE.loss`` written out by hand, in float32:

- forward: ``h = relu(x W_e + b_e)``, ``mu = h W_mu + b_mu``, ``log sigma = h W_s + b_s``,
  ``z = mu + exp(log sigma) * noise``, ``g = relu(z W_1 + b_1)``, ``x' = g W_2 + b_2``;
- loss per system: ``mean_batch sum_j (x'_j - x_j)^2 + mean_batch 0.5 sum_l (exp(2 log sigma) + mu^2 - 1 -
  2 log sigma) + decay * (sum of squared decoder parameters)``;
- its gradient by the chain rule (``d/d log sigma = dz * sigma * noise + exp(2 log sigma) - 1`` per row and
  latent unit, over the batch size; ``2 decay w`` for the decoder parameters);
- Adam as ``torch.optim.Adam`` (foreach) computes it: ``m += (1 - beta1) (g - m)``, ``v = beta2 v + (1 - beta2)
  g^2``, ``w += (-lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``, the bias corrections in float64.

A batch's rows go through each layer together, by the helpers of :mod:`~recourse_sim.models.compiled_training`:
batches of ``BLAS_MIN_ROWS`` rows or more (the protocol's 50) through BLAS, on the calling thread
(``device.one_blas_thread``); smaller ones four rows per pass over a weight matrix, with every sum in the order
of one row at a time. 10 epochs of the 15 VAEs of a credit-default cell (d = 29, 4,000 rows): 0.75 s with the
loops, 0.60 s with BLAS. The flat buffers are indexed unsigned (``compiled_training.unsigned_index``: numba wraps
negative signed indices around, a select per access that kept the loops over a row from vectorising) and the
batch's rows copied from a flat view of ``X``: an epoch of those 15 VAEs 42-43 -> 29-31 ms (one thread, AVX-512),
the same bits.

The random draws (each epoch's permutation, then every batch's noise, in the torch loop's order) are made by the
caller in torch, so both paths see the same numbers; they agree to float32 rounding (sums run in a different
order; ``tests/test_compiled_vae.py``). A call trains its systems one after the other, inside
``VAE._train``'s ``flush_denormals``; systems are independent, so the caller may train ranges of them on several
threads (``nogil``; :mod:`recourse_sim.cores`), each in the same float mode: reruns are bit-identical, on any
number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from recourse_sim.models.compiled_training import add_outer_products, rows_times_matrix
from recourse_sim.models.compiled_training import unsigned_index as _u  # no wraparound selects: loops vectorise

_F32 = np.float32


# The layer products and gradient sums as calls of their own: the shared helpers are inlined into the caller's
# code (for batch-1 training, where a call would cost more than the product); inlined at the eleven call sites
# below, the first compilation of train_epoch took 18 s, through these two 5 s. A call per product of a 50-row
# batch costs nothing measurable (10 epochs of a credit-default cell's 15 VAEs: 0.58 s before, 0.56-0.57 s after).
@njit(cache=True)
def _batch_times_matrix(x: np.ndarray, n_rows: int, n_in: int, matrix: np.ndarray, m_at: int, out: np.ndarray,
                        n_out: int) -> None:
    """``out[rows] = x[rows] @ M`` (:func:`~recourse_sim.models.compiled_training.rows_times_matrix`, BLAS allowed)
    for the batch's rows at the start of ``x`` and ``out``."""
    rows_times_matrix(x, 0, n_rows, n_in, matrix, m_at, out, 0, n_out, True)


@njit(cache=True)
def _add_batch_gradient(acts: np.ndarray, n_in: int, deltas: np.ndarray, n_out: int, n_rows: int, grad: np.ndarray,
                        g_at: int) -> None:
    """``G += A^T delta`` over the batch's rows (:func:`~recourse_sim.models.compiled_training.add_outer_products`,
    BLAS allowed), ``A`` and ``delta`` at the start of their buffers."""
    add_outer_products(acts, 0, n_in, deltas, 0, n_out, n_rows, grad, g_at, True)


@njit(cache=True, error_model="numpy", nogil=True)  # nogil: the caller may train disjoint systems on several threads
def train_epoch(
    flat: np.ndarray, m: np.ndarray, v: np.ndarray, X: np.ndarray, order: np.ndarray, noise: np.ndarray,
    d: int, hidden: int, latent: int, batch_size: int, step: int, lr: float, beta1: float, beta2: float,
    eps: float, decay: float,
) -> int:
    """One epoch for every system: ``flat`` (S, P) parameters, ``m``/``v`` (S, P) Adam moments, updated in place.

    ``flat`` holds per system, in ``VAE.params_`` order: W_e (d, h), b_e (h), W_mu (h, L), b_mu (L), W_s (h, L),
    b_s (L), W_1 (L, h), b_1 (h), W_2 (h, d), b_2 (d), each row-major. ``X`` (S, n, d) the data, ``order`` (n,)
    this epoch's row order, ``noise`` (S, n, L) the reparameterisation noise of the rows in that order. ``step``
    is the number of Adam steps taken before; returns the number after.
    """
    S, n, _ = X.shape
    h, L = hidden, latent  # loops: i over features, k over hidden units, u over latent units
    # offsets in a system's parameter vector
    origin = np.int64(0)  # offset 0, not the literal 0, for which numba would compile the helpers above again
    o_we = origin
    o_be = o_we + d * h
    o_wm = o_be + h
    o_bm = o_wm + h * L
    o_ws = o_bm + L
    o_bs = o_ws + h * L
    o_w1 = o_bs + L
    o_b1 = o_w1 + L * h
    o_w2 = o_b1 + h
    o_b2 = o_w2 + h * d
    P = o_b2 + d
    if flat.shape[1] != P or m.shape[1] != P or v.shape[1] != P:  # the copies below read and write P per system
        raise ValueError("train_epoch: flat, m and v need one column per parameter of the d/hidden/latent sizes")
    B = min(batch_size, n)
    data = X.reshape(S * n * d)
    grad = np.zeros(P, np.float32)
    # The batch's rows side by side, row-major (row r of a layer at [r * width:]): every layer is one product of
    # the batch's rows with a weight matrix (compiled_training.rows_times_matrix), and every gradient a sum over
    # the rows (add_outer_products): through BLAS where its shape rule says so, else in row order.
    xb = np.zeros(B * d, np.float32)
    he = np.zeros(B * h, np.float32)
    mu = np.zeros(B * L, np.float32)
    ls = np.zeros(B * L, np.float32)
    sig = np.zeros(B * L, np.float32)
    z = np.zeros(B * L, np.float32)
    g = np.zeros(B * h, np.float32)
    rec = np.zeros(B * d, np.float32)
    drec = np.zeros(B * d, np.float32)
    dg = np.zeros(B * h, np.float32)
    dz = np.zeros(B * L, np.float32)
    dmu = np.zeros(B * L, np.float32)
    dls = np.zeros(B * L, np.float32)
    dhe = np.zeros(B * h, np.float32)
    # the system's parameters (a local copy: products then know their output never aliases the weights) and the
    # transposed weights of the backward products, so those too run over contiguous outputs
    w = np.zeros(P, np.float32)
    w2_t = np.zeros(d * h, np.float32)
    w1_t = np.zeros(h * L, np.float32)
    wm_t = np.zeros(L * h, np.float32)
    ws_t = np.zeros(L * h, np.float32)
    zero = _F32(0.0)
    one = _F32(1.0)
    two = _F32(2.0)
    decay2 = _F32(2.0 * decay)
    lerp = _F32(1.0 - beta1)
    b2 = _F32(beta2)
    sq = _F32(1.0 - beta2)
    eps_f = _F32(eps)
    steps_before = step
    for s in range(S):
        for k in range(w.shape[0]):  # element by element: a slice assignment compiles numba's shape-mismatch error
            w[_u(k)] = flat[s, k]
        ms = m[s]
        vs = v[s]
        t = steps_before
        for start in range(0, n, batch_size):
            nb = min(batch_size, n - start)
            inv = one / _F32(nb)
            grad[:] = zero
            # ---------------------------------------------------------------------------- forward
            for r in range(nb):  # through the flat view: each row one contiguous copy (see compiled_training)
                at = (s * n + order[start + r]) * d
                for i in range(d):
                    xb[_u(r * d + i)] = data[_u(at + i)]
            _batch_times_matrix(xb, nb, d, w, o_we, he, h)
            for r in range(nb):
                for k in range(h):
                    he[_u(r * h + k)] = max(he[_u(r * h + k)] + w[_u(o_be + k)], zero)
            _batch_times_matrix(he, nb, h, w, o_wm, mu, L)
            _batch_times_matrix(he, nb, h, w, o_ws, ls, L)
            for r in range(nb):
                for u in range(L):
                    q = r * L + u
                    mu[_u(q)] = mu[_u(q)] + w[_u(o_bm + u)]
                    ls[_u(q)] = ls[_u(q)] + w[_u(o_bs + u)]
                    sig[_u(q)] = np.exp(ls[_u(q)])
                    z[_u(q)] = mu[_u(q)] + sig[_u(q)] * noise[s, start + r, u]
            _batch_times_matrix(z, nb, L, w, o_w1, g, h)
            for r in range(nb):
                for k in range(h):
                    g[_u(r * h + k)] = max(g[_u(r * h + k)] + w[_u(o_b1 + k)], zero)
            _batch_times_matrix(g, nb, h, w, o_w2, rec, d)  # + b_2 in the backward pass
            # --------------------------------------------------------------------------- backward
            for k in range(h):
                for j in range(d):
                    w2_t[_u(j * h + k)] = w[_u(o_w2 + k * d + j)]
            for u in range(L):
                for k in range(h):
                    w1_t[_u(k * L + u)] = w[_u(o_w1 + u * h + k)]
                    wm_t[_u(u * h + k)] = w[_u(o_wm + k * L + u)]
                    ws_t[_u(u * h + k)] = w[_u(o_ws + k * L + u)]
            for r in range(nb):
                for j in range(d):
                    drec[_u(r * d + j)] = two * (rec[_u(r * d + j)] + w[_u(o_b2 + j)] - xb[_u(r * d + j)]) * inv
                    grad[_u(o_b2 + j)] += drec[_u(r * d + j)]
            _add_batch_gradient(g, h, drec, d, nb, grad, o_w2)
            _batch_times_matrix(drec, nb, d, w2_t, origin, dg, h)  # d loss / d g = drec W_2^T
            for r in range(nb):
                for k in range(h):
                    if not g[_u(r * h + k)] > zero:
                        dg[_u(r * h + k)] = zero
                    grad[_u(o_b1 + k)] += dg[_u(r * h + k)]
            _add_batch_gradient(z, L, dg, h, nb, grad, o_w1)
            _batch_times_matrix(dg, nb, h, w1_t, origin, dz, L)  # d loss / d z = dg W_1^T
            for r in range(nb):
                for u in range(L):
                    q = r * L + u
                    dmu[_u(q)] = dz[_u(q)] + mu[_u(q)] * inv  # KL: d/dmu 0.5 mu^2, over the batch
                    dls[_u(q)] = dz[_u(q)] * sig[_u(q)] * noise[s, start + r, u] + (np.exp(two * ls[_u(q)]) - one) * inv
                    grad[_u(o_bm + u)] += dmu[_u(q)]
                    grad[_u(o_bs + u)] += dls[_u(q)]
            _add_batch_gradient(he, h, dmu, L, nb, grad, o_wm)
            _add_batch_gradient(he, h, dls, L, nb, grad, o_ws)
            for r in range(nb):  # d loss / d he = sum_u (W_mu[:, u] dmu_u + W_s[:, u] dls_u), in latent order
                for k in range(h):
                    dhe[_u(r * h + k)] = zero
                for u in range(L):
                    a_mu, a_ls = dmu[_u(r * L + u)], dls[_u(r * L + u)]
                    for k in range(h):
                        dhe[_u(r * h + k)] += wm_t[_u(u * h + k)] * a_mu + ws_t[_u(u * h + k)] * a_ls
                for k in range(h):
                    if not he[_u(r * h + k)] > zero:
                        dhe[_u(r * h + k)] = zero
                    grad[_u(o_be + k)] += dhe[_u(r * h + k)]
            _add_batch_gradient(xb, d, dhe, h, nb, grad, o_we)
            for p in range(o_w1, P):  # decoder weight decay: d/dw decay * w^2
                grad[_u(p)] += decay2 * w[_u(p)]
            # ------------------------------------------------------------------------------ Adam
            t += 1
            bias1 = 1.0 - beta1**t
            bias2_sqrt = _F32(np.sqrt(1.0 - beta2**t))
            step_size = _F32(-lr / bias1)
            for p in range(P):
                gp = grad[_u(p)]
                mp = ms[_u(p)] + lerp * (gp - ms[_u(p)])
                vp = vs[_u(p)] * b2 + sq * gp * gp
                ms[_u(p)] = mp
                vs[_u(p)] = vp
                w[_u(p)] = w[_u(p)] + step_size * (mp / (np.sqrt(vp) / bias2_sqrt + eps_f))
        for k in range(w.shape[0]):
            flat[s, k] = w[_u(k)]
        step = t
    return step
