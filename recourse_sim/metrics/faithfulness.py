"""Faithful first: plausibility, conformal uncertainty, adversarial robustness and the cost of protected recourse.

The evaluation metrics of Altmeyer et al., "Faithful Model Explanations through Energy-Constrained Conformal
Counterfactuals" (ECCCo, AAAI 2024; reference code ECCCo.jl) and Altmeyer et al., "Counterfactual Training" (CT;
reference code CTExperiments), as pure tensor functions batched over a leading system axis S:

- :func:`mean_implausibility`: the mean L2 distance of each counterfactual to its k = 100 *nearest* target-class
  points (ECCCo.jl ``distance_from_targets_l2``; the paper's text says a random subsample);
- :func:`ip_star`: CT's IP*, the unbiased MMD² between the counterfactuals and target-class data, Gaussian kernel;
- :func:`conformal_threshold`, :func:`set_size`, :func:`uncertainty`: split-conformal prediction sets at the
  counterfactuals (ECCCo: coverage 0.95, score ``1 - p_y(x)``, smooth set size Omega with T = 0.1, kappa = 1);
- :func:`fgsm`, :func:`pgd`, :func:`adversarial_accuracy`: accuracy under L-infinity attacks (CT Sec. 5.8: FGSM,
  and PGD with 40 steps of 0.01);
- :func:`valid_recourse_cost`: validity and the mean L1 cost of the *valid* counterfactuals (CT's cost of
  "just valid" counterfactuals), for the search rerun with protected features made immutable.

Rows that do not count (padding, systems without counterfactuals) are masked as in
:mod:`~recourse_sim.metrics.recourse`; a system with nothing selected gives NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from recourse_sim.errors import DataError
from recourse_sim.metrics.conformal import COVERAGE, KAPPA, TEMPERATURE, conformal_quantile, conformal_set_size
from recourse_sim.metrics.mmd import gaussian_kernel, mmd2_from_sums, offdiag_sum
from recourse_sim.metrics.recourse import (
    IMPLAUSIBILITY_NEIGHBOURS, point_stack, masked_mean, nearest_target_distance, recourse_cost, validity,
)
from recourse_sim.models.base import DECISION_THRESHOLD

__all__ = [
    "IMPLAUSIBILITY_NEIGHBOURS",
    "PGD_STEPS",
    "PGD_STEP_SIZE",
    "adversarial_accuracy",
    "conformal_threshold",
    "fgsm",
    "ip_star",
    "mean_implausibility",
    "unfaithfulness",
    "nearest_target_distance",
    "pgd",
    "set_size",
    "uncertainty",
    "valid_recourse_cost",
]

#: CT's robustness protocol (Sec. 5.8 of the reference notes): PGD takes 40 steps of 0.01.
PGD_STEPS = 40
PGD_STEP_SIZE = 0.01

# Working-set budget of one chunk of pairwise distances or kernel values (bytes).
_CHUNK_BYTES = 64 * 2**20


# ------------------------------------------------------------------------------------------- plausibility
def mean_implausibility(
    points: Tensor,
    reference: Tensor,
    reference_mask: Tensor,
    *,
    mask: Tensor | None = None,
    k: int = IMPLAUSIBILITY_NEIGHBOURS,
    exclude: Tensor | None = None,
) -> Tensor:
    """ECCCo's implausibility per system, ``(S,)``: the mean over the points ``mask`` selects of
    :func:`nearest_target_distance` (lower is more plausible; NaN where ``mask`` selects nothing)."""
    distances = nearest_target_distance(points, reference, reference_mask, k=k, exclude=exclude)
    if mask is not None:
        # A masked-out point may have no finite distance; it must not turn the mean into NaN.
        distances = torch.where(mask.to(torch.bool), distances, torch.zeros((), dtype=distances.dtype,
                                                                              device=distances.device))
    return masked_mean(distances, mask)


def unfaithfulness(points: Tensor, samples: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """ECCCo's unfaithfulness per system, ``(S,)``: the mean over the points ``mask`` selects of their mean L2
    distance to the model's own conditional samples ``samples`` ``(S, k, d)`` (SGLD, the k lowest-energy of the
    chains: :func:`recourse_sim.models.sgld.sample_conditional`). Lower: the counterfactuals lie where the model
    itself places the target class.

    ECCCo.jl's ``distance_from_energy`` sums the distances to its 25 kept samples and divides by the 50 chains (its
    values are half a mean); this is the true mean, twice the reference's values on the same samples.
    """
    points = point_stack(points, "points")
    distances = torch.cdist(points, samples.to(points)).mean(-1)  # (S, m)
    if mask is not None:
        distances = torch.where(mask.to(torch.bool), distances, torch.zeros((), dtype=distances.dtype,
                                                                              device=distances.device))
    return masked_mean(distances, mask)


def ip_star(points: Tensor, reference: Tensor, *, length_scale: float, mask: Tensor | None = None) -> Tensor:
    """CT's IP*: unbiased MMD² between each system's counterfactuals and the reference sample, ``(S,)``, float64.

    ``(sum K_xx - tr K_xx)/(m^2 - m) + (sum K_yy - tr K_yy)/(n^2 - n) - 2 sum K_xy/(m n)`` with the Gaussian kernel
    ``exp(-||x - y||^2 / (2 l^2))`` of :func:`~recourse_sim.metrics.mmd.gaussian_kernel`, over the ``m`` points
    ``mask`` selects: for each system exactly :func:`~recourse_sim.metrics.mmd.mmd2_unbiased` of its selected
    points and the reference. The CT paper states ``l = 0.5``; its code's default (``globals.jl``) is 5.0; the
    length-scale is therefore the caller's to state. NaN where fewer than 2 points are selected.

    Args:
        points: Counterfactuals ``(S, m, d)`` (the caller caps ``m``: the kernel is ``(S, m, m)``).
        reference: Target-class sample ``(n, d)`` shared by every system, or ``(S, n, d)``; ``n >= 2``.
        length_scale: Kernel length-scale ``l`` > 0.
        mask: Optional boolean ``(S, m)``: the points that count.
    """
    points = point_stack(points, "points").double()
    S, m, d = points.shape
    reference = reference.to(points)
    if reference.shape[-2] < 2 or reference.shape[-1] != d:
        raise DataError(f"ip_star: the reference needs >= 2 rows of {d} features, got {tuple(reference.shape)}")
    weights = torch.ones(S, m, dtype=points.dtype, device=points.device) if mask is None else mask.to(points)
    n = reference.shape[-2]
    shared = reference.dim() == 2
    if shared:  # the reference's own term once, not once per system
        yy_shared = offdiag_sum(gaussian_kernel(reference, reference, length_scale))
    chunk = max(1, _CHUNK_BYTES // (2 * (m * m + m * n + (0 if shared else n * n)) * points.element_size()))
    out = torch.empty(S, dtype=points.dtype, device=points.device)
    for start in range(0, S, chunk):
        part, w = points[start:start + chunk], weights[start:start + chunk]
        ref = reference if shared else reference[start:start + chunk]
        K = gaussian_kernel(part, part, length_scale)
        xx = torch.einsum("sm,smn,sn->s", w, K, w) - (w * K.diagonal(dim1=-2, dim2=-1)).sum(-1)
        xy = (gaussian_kernel(part, ref, length_scale).sum(-1) * w).sum(-1)
        yy = yy_shared if shared else offdiag_sum(gaussian_kernel(ref, ref, length_scale))
        count = w.sum(-1)
        value = mmd2_from_sums(xx, yy, xy, count, n)
        out[start:start + chunk] = torch.where(count >= 2, value, torch.full_like(value, float("nan")))
    return out


# ------------------------------------------------------------------------------------ conformal prediction
def _class_proba(p_positive: Tensor) -> Tensor:
    """Binary class probabilities ``[1 - p, p]`` on a last axis."""
    return torch.stack([1.0 - p_positive, p_positive], dim=-1)


def conformal_threshold(p_positive: Tensor, y: Tensor, coverage: float = COVERAGE) -> Tensor:
    """Split-conformal q̂ per system, ``(S,)``: the ``ceil((n + 1) coverage) / n`` empirical quantile of the
    calibration scores ``1 - p_{y_i}(x_i)`` (ConformalPrediction.jl ``qplus``, as ECCCo uses it; coverage 0.95).

    Args:
        p_positive: p(y = 1) at the calibration rows, ``(S, n)``.
        y: Their labels, ``(n,)`` or ``(S, n)``.
        coverage: ``1 - alpha`` (default 0.95, ECCCo's; :mod:`recourse_sim.metrics.conformal`).
    """
    scores = torch.where(y.to(p_positive.device) > 0.5, 1.0 - p_positive, p_positive)
    return conformal_quantile(scores, coverage)


def set_size(p_positive: Tensor, q_hat: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """Mean size of the hard prediction set ``{y : 1 - p_y(x) <= q̂}`` at the points, ``(S,)`` (0, 1 or 2 labels).

    Args:
        p_positive: p(y = 1) at the counterfactuals, ``(S, m)``.
        q_hat: Each system's threshold (:func:`conformal_threshold`), ``(S,)``.
        mask: Optional boolean ``(S, m)``: the points that count.
    """
    members = (1.0 - _class_proba(p_positive)) <= q_hat.view(-1, 1, 1)
    return masked_mean(members.sum(-1).to(p_positive.dtype), mask)


def uncertainty(
    p_positive: Tensor,
    q_hat: Tensor,
    *,
    mask: Tensor | None = None,
    temperature: float = TEMPERATURE,
    kappa: float = KAPPA,
) -> Tensor:
    """ECCCo's uncertainty per system, ``(S,)``: the mean smooth set size Omega at the points.

    ``Omega = max(0, sum_y sigmoid((q̂ - s_y)/T) - kappa)`` (:func:`~recourse_sim.metrics.conformal.conformal_set_size`,
    T = 0.1, kappa = 1: ECCCo's defaults). Unlike ECCCo's search penalty it is not gated on p(y+) >= 0.5: an
    invalid counterfactual's uncertainty counts too.
    """
    omega = conformal_set_size(_class_proba(p_positive), q_hat.view(-1, 1), temperature, kappa)
    return masked_mean(omega, mask)


# ------------------------------------------------------------------------------------ adversarial robustness
def _ascent_sign(model, X: Tensor, y: Tensor) -> Tensor:
    """``sign(grad_x BCE(p(x), y))`` for every row of ``X`` (S, N, d).

    For the binary cross-entropy of the model's own probability, ``grad_x BCE = -(y/p - (1-y)/(1-p)) grad_x p``
    and ``grad_x p = p grad_x log p`` with ``p > 0``, so the sign is that of ``(1 - 2y) grad_x log p``: one
    gradient of ``log_proba_stacked`` (an ensemble's mean probability, never a surrogate logit), without the
    ``log(1 - p)`` that saturates for confident rows.
    """
    with torch.enable_grad():
        x = X.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.log_proba_stacked(x).sum(), x)
    return ((1.0 - 2.0 * y).unsqueeze(-1) * grad).sign()


def _bound(epsilon: float | Tensor, scale: Tensor | None, like: Tensor) -> Tensor:
    """The per-feature L-infinity radius ``epsilon * scale`` (feature units), broadcastable to ``like``."""
    bound = torch.as_tensor(epsilon, dtype=like.dtype, device=like.device)
    return bound if scale is None else bound * scale.to(like)


def fgsm(model, X: Tensor, y: Tensor, epsilon: float | Tensor, *, scale: Tensor | None = None) -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): ``x + epsilon * scale * sign(grad_x BCE)``.

    Args:
        model: A stacked classifier (``log_proba_stacked``) holding ``S`` systems.
        X: Clean rows ``(S, N, d)``; ``y``: their labels ``(S, N)``.
        epsilon: The L-infinity radius, a number or a tensor broadcastable to ``(S, N, 1)`` (one per row).
        scale: Optional ``(d,)`` feature scale: ``epsilon`` is then in standardised units (``epsilon * scale_j``
            in feature j's units).
    """
    return X + _bound(epsilon, scale, X) * _ascent_sign(model, X, y)


def pgd(
    model,
    X: Tensor,
    y: Tensor,
    epsilon: float | Tensor,
    *,
    scale: Tensor | None = None,
    steps: int = PGD_STEPS,
    step_size: float = PGD_STEP_SIZE,
) -> Tensor:
    """Projected gradient descent (Madry et al. 2018) from the clean rows: ``steps`` sign steps of ``step_size``,
    each projected back onto the L-infinity ball of radius ``epsilon`` around ``X`` (CT: 40 steps of 0.01).

    Arguments as in :func:`fgsm`; ``step_size`` is in the units of ``epsilon`` (standardised with ``scale``).
    """
    bound = _bound(epsilon, scale, X)
    step = step_size if scale is None else step_size * scale.to(X)
    x = X
    for _ in range(steps):
        moved = x + step * _ascent_sign(model, x, y)
        x = X + torch.maximum(torch.minimum(moved - X, bound), -bound)
    return x


def adversarial_accuracy(
    model,
    X: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    *,
    attack: str = "fgsm",
    scale: Tensor | None = None,
    steps: int = PGD_STEPS,
    step_size: float = PGD_STEP_SIZE,
) -> Tensor:
    """Accuracy of every system under attack at every radius, ``(E, S)``, in one batched call.

    The ``E`` radii are stacked along the row axis, so one attack of ``(S, E N, d)`` rows serves all systems and
    radii. A row counts as correct where the model's decision at the attacked point (p >= 0.5) equals its label.

    Args:
        model: A stacked classifier holding ``S`` systems.
        X: Clean rows ``(N, d)`` scored by every system (a held-out test set), or ``(S, N, d)``.
        y: Labels ``(N,)`` or ``(S, N)``.
        epsilons: The L-infinity radii (0 gives the clean accuracy).
        attack: ``"fgsm"`` or ``"pgd"``.
        scale, steps, step_size: As in :func:`fgsm` and :func:`pgd`.
    """
    if attack not in ("fgsm", "pgd"):
        raise DataError(f"adversarial_accuracy: attack must be 'fgsm' or 'pgd', got {attack!r}")
    S = model.n_systems
    X = torch.as_tensor(X, dtype=torch.float32)
    X = X.expand(S, -1, -1) if X.dim() == 2 else X
    y = torch.as_tensor(y, dtype=X.dtype, device=X.device).expand(S, -1)
    E, N = len(epsilons), X.shape[1]
    rows, labels = X.repeat(1, E, 1), y.repeat(1, E)
    radius = torch.tensor(list(epsilons), dtype=X.dtype, device=X.device).repeat_interleave(N).view(1, E * N, 1)
    if attack == "fgsm":
        attacked = fgsm(model, rows, labels, radius, scale=scale)
    else:
        attacked = pgd(model, rows, labels, radius, scale=scale, steps=steps, step_size=step_size)
    with torch.no_grad():
        decisions = (model.log_proba_stacked(attacked).exp() >= DECISION_THRESHOLD).to(X.dtype)
    return (decisions == labels).to(X.dtype).view(S, E, N).mean(-1).T


# -------------------------------------------------------------------------------------- protected recourse
def valid_recourse_cost(
    factual: Tensor, counterfactuals: Tensor, proba: Tensor, *, mask: Tensor | None = None, p: float = 1
) -> tuple[Tensor, Tensor]:
    """Mean cost of the *valid* counterfactuals and the share that is valid, both ``(S,)``, over all K copies.

    CT reports the L1 cost (factual -> counterfactual) of valid counterfactuals; ``p`` = 1 by default, in the
    units of ``factual``. Validity is p(y = 1) >= 0.5.

    Args:
        factual: ``(S, B, d)``; ``counterfactuals``: ``(S, B, K, d)``; ``proba``: their p(y = 1), ``(S, B, K)``.
        mask: Optional boolean ``(S, B)``: the individuals that count (padding left out).

    Returns:
        ``(cost, validity)``: cost NaN where no counterfactual is valid, validity NaN where ``mask`` selects none.
    """
    S, B, K, d = counterfactuals.shape
    copies = None if mask is None else mask.to(torch.bool).unsqueeze(-1).expand(S, B, K).reshape(S, B * K)
    flat_proba = proba.reshape(S, B * K)
    valid = flat_proba >= DECISION_THRESHOLD
    counted = valid if copies is None else valid & copies
    cost = recourse_cost(factual.unsqueeze(2).expand(S, B, K, d).reshape(S, B * K, d),
                         counterfactuals.reshape(S, B * K, d), p=p, mask=counted)
    return cost, validity(flat_proba, mask=copies)
