"""Model-shift metrics: disagreement, decisiveness, parameter perturbation and the grid for grid PP-MMD.

Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse", IEEE SaTML 2023, §4 and the reference code
AlgorithmicRecourseDynamics.jl v0.1.2 (``src/evaluation/model_shifts.jl``). Where the paper's text and the code
differ (decisiveness, perturbation) the code is the default and the paper's formula is ``definition="paper"``.

Probabilities are the positive-class probabilities of the initial and current models on the same points (all
initial X in the simulation); leading batch dims (e.g. systems) are kept: ``(..., n) -> (...)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from recourse_sim.errors import ConfigError, DataError
from recourse_sim.metrics.mmd import _draw
from recourse_sim.models.base import DECISION_THRESHOLD

__all__ = ["decisiveness", "disagreement", "grid_points", "perturbation"]

_DEFINITIONS = '"code" or "paper"'


def _check_definition(field: str, definition: str) -> None:
    if definition not in ("code", "paper"):
        raise ConfigError(field, definition, _DEFINITIONS)


def _check_probs(p_initial: Tensor, p_current: Tensor) -> None:
    # Guard against silent broadcasting of the individual axis (n vs 1).
    if p_initial.dim() == 0 or p_current.dim() == 0 or p_initial.shape[-1] != p_current.shape[-1]:
        raise DataError(
            f"p_initial and p_current must have the same last (individual) axis, "
            f"got shapes {tuple(p_initial.shape)} and {tuple(p_current.shape)}"
        )


def _float(x: Tensor) -> Tensor:
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def disagreement(p_initial: Tensor, p_current: Tensor, threshold: float = DECISION_THRESHOLD) -> Tensor:
    """Share of points whose predicted label differs between the initial and current model.

    ``Pr(h_0(x) != h_t(x))`` with labels ``1[p >= threshold]``. The reference code takes the argmax of
    ``[p, 1 - p]``, whose first-index tie-break is the same as ``p >= 0.5`` (AlgorithmicRecourseDynamics.jl
    v0.1.2; Altmeyer et al., SaTML 2023).

    Args:
        p_initial: Initial model's positive-class probabilities ``(..., n)``.
        p_current: Current model's probabilities ``(..., n)``; leading dims broadcast.
        threshold: Decision threshold (default :data:`DECISION_THRESHOLD`, 0.5).

    Returns:
        ``(...)`` shares in [0, 1].

    Raises:
        DataError: If the last axes differ in length.
    """
    _check_probs(p_initial, p_current)
    differ = (p_initial >= threshold) != (p_current >= threshold)
    return differ.to(torch.promote_types(_float(p_initial).dtype, _float(p_current).dtype)).mean(-1)


def decisiveness(p_initial: Tensor, p_current: Tensor, definition: str = "code") -> Tensor:
    """Change in the models' distance from the decision boundary.

    - ``"code"`` (default; AlgorithmicRecourseDynamics.jl v0.1.2): ``| ||p_0 - 0.5||_2 - ||p_t - 0.5||_2 |``,
      an unnormalised L2 norm over the points, so it grows with ``sqrt(n)``.
    - ``"paper"`` (Altmeyer et al., SaTML 2023, text): ``mean((p_t - 0.5)^2)``; ``p_initial`` is not used.

    Args:
        p_initial: Initial model's probabilities ``(..., n)``.
        p_current: Current model's probabilities ``(..., n)``.
        definition: ``"code"`` or ``"paper"``.

    Returns:
        ``(...)``.

    Raises:
        ConfigError: For an unknown ``definition`` (field ``decisiveness.definition``).
        DataError: If the last axes differ in length.
    """
    _check_definition("decisiveness.definition", definition)
    _check_probs(p_initial, p_current)
    p_initial, p_current = _float(p_initial), _float(p_current)
    if definition == "paper":
        return (p_current - 0.5).square().mean(-1)
    return (
        torch.linalg.vector_norm(p_initial - 0.5, dim=-1) - torch.linalg.vector_norm(p_current - 0.5, dim=-1)
    ).abs()


def perturbation(
    current: Sequence[Tensor],
    reference: Sequence[Tensor],
    definition: str = "code",
    *,
    stacked: bool = False,
) -> Tensor:
    """Size of the change in model parameters.

    - ``"code"`` (default; AlgorithmicRecourseDynamics.jl v0.1.2): mean over parameter tensors of
      ``||theta_t - theta_ref||_2 / numel(theta)``, with ``theta_ref`` the *initial* model's parameters.
    - ``"paper"`` (Altmeyer et al., SaTML 2023, text): ``sum`` over tensors of ``||theta_t - theta_ref||_2^2``;
      the paper compares consecutive rounds, so pass ``theta_{t-1}`` as ``reference``.

    Parameters are detached: this is a metric, never part of a training graph.

    Args:
        current: Parameter tensors of the current model(s), e.g. ``list(model.parameters())``.
        reference: Matching tensors of the reference model(s), same order and shapes.
        definition: ``"code"`` or ``"paper"``.
        stacked: If True every tensor has a leading system axis ``(S, ...)`` (parameters of S models stacked)
            and the metric is computed per system: norms over all but the first dim, ``numel`` per system.

    Returns:
        A 0-d tensor, or ``(S,)`` when ``stacked``.

    Raises:
        ConfigError: For an unknown ``definition`` (field ``perturbation.definition``).
        DataError: If the sequences are empty, differ in length or pair tensors of different shapes.
    """
    _check_definition("perturbation.definition", definition)
    current, reference = list(current), list(reference)
    if not current or len(current) != len(reference):
        raise DataError(
            f"perturbation needs the same non-zero number of current and reference tensors, "
            f"got {len(current)} and {len(reference)}"
        )
    terms = []
    for i, (cur, ref) in enumerate(zip(current, reference)):
        if cur.shape != ref.shape or (stacked and cur.dim() == 0):
            raise DataError(
                f"perturbation: tensor {i} has shape {tuple(cur.shape)} but its reference has {tuple(ref.shape)}"
                + (" (stacked tensors need a leading system axis)" if stacked else "")
            )
        diff = _float(cur.detach()) - _float(ref.detach())
        if stacked:
            diff = diff.reshape(diff.shape[0], -1)
        sq_norm = diff.square().sum(-1) if stacked else diff.square().sum()
        if definition == "paper":
            terms.append(sq_norm)
        else:
            terms.append(sq_norm.sqrt() / diff.shape[-1] if stacked else sq_norm.sqrt() / diff.numel())
    out = torch.stack(terms)
    return out.sum(0) if definition == "paper" else out.mean(0)


def grid_points(
    X: Tensor,
    n_points: int = 1000,
    steps: int = 100,
    rng: torch.Generator | None = None,
) -> Tensor:
    """Random points on the lattice spanned by the data's feature ranges, for the grid PP-MMD.

    Each coordinate ``j`` of each point is drawn uniformly from ``torch.linspace(min_j, max_j, steps)`` of
    ``X``'s column ``j``, as in AlgorithmicRecourseDynamics.jl v0.1.2 (``rand(range(extrema..., length=100))``;
    Altmeyer et al., SaTML 2023). Defaults: 1,000 points, 100 steps.

    Args:
        X: Data ``(n, d)`` (the initial data in the simulation).
        n_points: Number of points (default 1000).
        steps: Lattice points per feature (default 100).
        rng: Source of the draws; ``None`` uses the global RNG.

    Returns:
        ``(n_points, d)`` on ``X``'s device, in ``X``'s floating dtype.

    Raises:
        DataError: If ``X`` is not a non-empty 2-D tensor.
        ConfigError: If ``n_points < 1`` or ``steps < 1``.
    """
    if X.dim() != 2 or X.shape[0] == 0:
        raise DataError(f"grid_points: X must have shape (n, d) with n >= 1, got {tuple(X.shape)}")
    if n_points < 1:
        raise ConfigError("grid_points.n_points", n_points, "an integer >= 1")
    if steps < 1:
        raise ConfigError("grid_points.steps", steps, "an integer >= 1")
    X = _float(X)
    lo, hi = X.amin(0), X.amax(0)
    # One linspace per feature (d is small) so the values are exactly torch.linspace's.
    lattice = torch.stack([torch.linspace(a, b, steps, dtype=X.dtype, device=X.device) for a, b in zip(lo, hi)])
    idx = _draw(torch.randint, 0, steps, (n_points, X.shape[1]), rng=rng, device=X.device)
    return lattice.gather(1, idx.T).T
