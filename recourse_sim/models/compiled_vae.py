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

The random draws (each epoch's permutation, then every batch's noise, in the torch loop's order) are made by the
caller in torch, so both paths see the same numbers; they agree to float32 rounding (sums run in a different
order; ``tests/test_compiled_vae.py``). The call runs on the calling thread, inside ``VAE._train``'s
``flush_denormals``, one system after the other: reruns are bit-identical.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from recourse_sim.models.compiled_training import row_times_matrix

_F32 = np.float32


@njit(cache=True, error_model="numpy")
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
    o_we = 0
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
    grad = np.zeros(P, np.float32)
    he = np.zeros(h, np.float32)
    mu = np.zeros(L, np.float32)
    ls = np.zeros(L, np.float32)
    sig = np.zeros(L, np.float32)
    z = np.zeros(L, np.float32)
    g = np.zeros(h, np.float32)
    rec = np.zeros(d, np.float32)
    drec = np.zeros(d, np.float32)
    dg = np.zeros(h, np.float32)
    dmu = np.zeros(L, np.float32)
    dls = np.zeros(L, np.float32)
    dhe = np.zeros(h, np.float32)
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
        w = flat[s]
        ms = m[s]
        vs = v[s]
        t = steps_before
        for start in range(0, n, batch_size):
            nb = min(batch_size, n - start)
            inv = one / _F32(nb)
            grad[:] = zero
            for r in range(nb):
                x = X[s, order[start + r]]
                eps_r = noise[s, start + r]
                # ------------------------------------------------------------------------ forward
                row_times_matrix(x, 0, d, w, o_we, he, 0, h)
                for k in range(h):
                    he[k] = max(he[k] + w[o_be + k], zero)
                row_times_matrix(he, 0, h, w, o_wm, mu, 0, L)
                row_times_matrix(he, 0, h, w, o_ws, ls, 0, L)
                for u in range(L):
                    mu[u] = mu[u] + w[o_bm + u]
                    ls[u] = ls[u] + w[o_bs + u]
                    sig[u] = np.exp(ls[u])
                    z[u] = mu[u] + sig[u] * eps_r[u]
                row_times_matrix(z, 0, L, w, o_w1, g, 0, h)
                for k in range(h):
                    g[k] = max(g[k] + w[o_b1 + k], zero)
                row_times_matrix(g, 0, h, w, o_w2, rec, 0, d)  # + b_2 in the backward pass
                # ----------------------------------------------------------------------- backward
                for j in range(d):
                    drec[j] = two * (rec[j] + w[o_b2 + j] - x[j]) * inv
                    grad[o_b2 + j] += drec[j]
                for k in range(h):
                    a = g[k]
                    acc = zero
                    for j in range(d):
                        grad[o_w2 + k * d + j] += a * drec[j]
                        acc += w[o_w2 + k * d + j] * drec[j]
                    dg[k] = acc if a > zero else zero
                    grad[o_b1 + k] += dg[k]
                for u in range(L):
                    a = z[u]
                    acc = zero
                    for k in range(h):
                        grad[o_w1 + u * h + k] += a * dg[k]
                        acc += w[o_w1 + u * h + k] * dg[k]
                    dmu[u] = acc + mu[u] * inv  # KL: d/dmu 0.5 mu^2, over the batch
                    dls[u] = acc * sig[u] * eps_r[u] + (np.exp(two * ls[u]) - one) * inv
                    grad[o_bm + u] += dmu[u]
                    grad[o_bs + u] += dls[u]
                for k in range(h):
                    a = he[k]
                    acc = zero
                    for u in range(L):
                        grad[o_wm + k * L + u] += a * dmu[u]
                        grad[o_ws + k * L + u] += a * dls[u]
                        acc += w[o_wm + k * L + u] * dmu[u] + w[o_ws + k * L + u] * dls[u]
                    dhe[k] = acc if a > zero else zero
                    grad[o_be + k] += dhe[k]
                for i in range(d):
                    a = x[i]
                    for k in range(h):
                        grad[o_we + i * h + k] += a * dhe[k]
            for p in range(o_w1, P):  # decoder weight decay: d/dw decay * w^2
                grad[p] += decay2 * w[p]
            # ------------------------------------------------------------------------------ Adam
            t += 1
            bias1 = 1.0 - beta1**t
            bias2_sqrt = _F32(np.sqrt(1.0 - beta2**t))
            step_size = _F32(-lr / bias1)
            for p in range(P):
                gp = grad[p]
                mp = ms[p] + lerp * (gp - ms[p])
                vp = vs[p] * b2 + sq * gp * gp
                ms[p] = mp
                vs[p] = vp
                w[p] = w[p] + step_size * (mp / (np.sqrt(vp) / bias2_sqrt + eps_f))
        step = t
    return step
