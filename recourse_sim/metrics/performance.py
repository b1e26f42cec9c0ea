"""Classification performance on the untouched test set: accuracy and F1.

Altmeyer et al., "Endogenous Macrodynamics in Algorithmic Recourse", IEEE SaTML 2023, report the change in F1
from round 0. The reference code AlgorithmicRecourseDynamics.jl v0.1.2 scores 0/1 labels (threshold 0.5) with
MLJ's ``MulticlassFScore()``, whose default averaging is the macro mean over both classes; ``average="macro"``
is therefore the default.

Labels are 0/1 (bool, integer or float); ``y_pred`` may carry leading batch dims ``(..., n)`` that broadcast
against ``y_true`` ``(n,)``; results have shape ``(...)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recourse_sim.errors import ConfigError, DataError

__all__ = ["accuracy", "f1_score"]


def _check_labels(y_true: Tensor, y_pred: Tensor) -> None:
    if y_true.dim() == 0 or y_pred.dim() == 0 or y_true.shape[-1] != y_pred.shape[-1]:
        raise DataError(
            f"y_true and y_pred must have the same last (individual) axis, "
            f"got shapes {tuple(y_true.shape)} and {tuple(y_pred.shape)}"
        )


def accuracy(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """Share of correct labels, ``mean(y_pred == y_true)`` over the last axis.

    Args:
        y_true: True 0/1 labels ``(n,)`` or ``(..., n)``.
        y_pred: Predicted 0/1 labels ``(..., n)``.

    Returns:
        ``(...)`` in the default float dtype.

    Raises:
        DataError: If the last axes differ in length.
    """
    _check_labels(y_true, y_pred)
    return (y_pred.bool() == y_true.bool()).to(torch.get_default_dtype()).mean(-1)


def _f1_of_class(true_pos: Tensor, pred_pos: Tensor) -> Tensor:
    """F1 = 2 tp / (2 tp + fp + fn) of the class whose membership masks are given; 0 when undefined."""
    tp = (true_pos & pred_pos).sum(-1)
    denom = true_pos.sum(-1) + pred_pos.sum(-1)  # = 2 tp + fp + fn
    dtype = torch.get_default_dtype()
    # scikit-learn's zero_division=0: a class with no true and no predicted members scores 0.
    return torch.where(denom > 0, 2 * tp.to(dtype) / denom.clamp_min(1).to(dtype), torch.zeros((), dtype=dtype))


def f1_score(y_true: Tensor, y_pred: Tensor, average: str = "macro") -> Tensor:
    """Binary-label F1 score.

    - ``"macro"`` (default): mean of the F1 of class 0 and of class 1, MLJ's ``MulticlassFScore()`` default as
      used by AlgorithmicRecourseDynamics.jl v0.1.2 (Altmeyer et al., SaTML 2023). Both classes always count,
      i.e. scikit-learn's ``f1_score(..., labels=[0, 1], average="macro", zero_division=0)``.
    - ``"binary"``: F1 of class 1 (scikit-learn's ``average="binary"``, ``zero_division=0``).

    Args:
        y_true: True 0/1 labels ``(n,)`` or ``(..., n)``.
        y_pred: Predicted 0/1 labels ``(..., n)``.
        average: ``"macro"`` or ``"binary"``.

    Returns:
        ``(...)`` in the default float dtype.

    Raises:
        ConfigError: For an unknown ``average`` (field ``f1_score.average``).
        DataError: If the last axes differ in length.
    """
    if average not in ("macro", "binary"):
        raise ConfigError("f1_score.average", average, '"macro" or "binary"')
    _check_labels(y_true, y_pred)
    t, p = y_true.bool(), y_pred.bool()
    t, p = torch.broadcast_tensors(t, p)
    f1_pos = _f1_of_class(t, p)
    if average == "binary":
        return f1_pos
    return (f1_pos + _f1_of_class(~t, ~p)) / 2
