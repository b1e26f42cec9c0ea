"""What every stacked classifier shares: input checks and the scikit-learn style inference methods.

A subclass provides ``log_proba_stacked(X (S', N, d), systems) -> (S', N)`` (differentiable), ``n_systems``,
``device_``, ``n_features_in_`` and ``stacked_`` (fitted on a stack (S, n, d) rather than one (n, d) set).
"""

from __future__ import annotations

import torch

from recourse_sim.errors import DataError, RecourseSimError


class NotFittedError(RecourseSimError, RuntimeError):
    """A model was used before ``fit`` (a package error, and a RuntimeError as scikit-learn's is)."""


class StackedClassifierMixin:
    """``proba_positive``, ``predict_proba``, ``predict`` and ``logits`` on top of ``log_proba_stacked``."""

    @staticmethod
    def _as_stack(X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Validate training data; return it with a leading system axis and whether it had one."""
        X = torch.as_tensor(X, dtype=torch.float32)
        y = torch.as_tensor(y, dtype=torch.float32)
        if X.ndim not in (2, 3) or y.shape != X.shape[:-1]:
            raise DataError(
                f"fit expects X (n, d) with y (n,) or X (S, n, d) with y (S, n); got X {tuple(X.shape)}, "
                f"y {tuple(y.shape)}"
            )
        if not torch.isfinite(X).all():
            raise DataError("fit: X contains NaN or inf")
        if not ((y == 0) | (y == 1)).all():
            values = torch.unique(y).tolist()
            raise DataError(f"fit: y must hold binary labels 0/1 (1 = the good outcome); got values "
                            f"{values[:10]}{' ...' if len(values) > 10 else ''}")
        return (X, y, True) if X.ndim == 3 else (X.unsqueeze(0), y.unsqueeze(0), False)

    def _check_fitted(self) -> None:
        if not hasattr(self, "stacked_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(X, y) first")

    def proba_positive(self, X: torch.Tensor) -> torch.Tensor:
        """p(y=1|x): (n,) for a single model, (S, n) for a stack (X (n, d) is scored by every system)."""
        self._check_fitted()
        X = torch.as_tensor(X, dtype=torch.float32, device=self.device_)
        if X.shape[-1] != self.n_features_in_:
            raise DataError(f"X has {X.shape[-1]} features; the model was fitted on {self.n_features_in_}")
        if X.ndim == 2:
            X = X.unsqueeze(0).expand(self.n_systems, -1, -1)
        with torch.no_grad():
            p = self.log_proba_stacked(X).exp()
        return p if self.stacked_ else p.squeeze(0)

    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        """scikit-learn layout: (..., n, 2) with columns p(y=0), p(y=1)."""
        p = self.proba_positive(X)
        return torch.stack([1.0 - p, p], dim=-1)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Labels at the 0.5 threshold (the reference code's ``round(p)``), as float 0/1."""
        return (self.proba_positive(X) >= 0.5).float()

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """log-odds of the (ensemble-mean) probability."""
        p = self.proba_positive(X).clamp(1e-7, 1 - 1e-7)
        return torch.log(p) - torch.log1p(-p)
