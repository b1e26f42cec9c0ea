"""What every stacked estimator shares: the classifiers (built-in and custom) and the VAE.

A stacked estimator follows the scikit-learn contract (parameters in ``__init__``, ``get_params``, ``fit``
returns ``self``) over a stack of S independent systems: ``fit(X (S, n, d))`` keeps S parameter sets.
:class:`StackedEstimator` holds what they all do the same way: ``get_params`` read from the signature, the seeded
random generator of a fit (``rng_``), the fitted check, ``n_systems`` and ``select_systems`` (a subclass says how
to take its state's systems in :meth:`StackedEstimator._take_systems`).

:class:`StackedClassifier` adds the inference methods on top of one differentiable method a subclass provides,
``log_proba_stacked(X (S', N, d), systems) -> (S', N)``; ``logits_stacked`` defaults to its log-odds (a model with
several members overrides it with the mean member logit, as ECCCo's energy expects).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from recourse_sim.errors import DataError, RecourseSimError
from recourse_sim.settings import parameter_names

#: A classifier approves (predicts the good outcome y = 1) where p(y=1|x) >= 0.5: the reference code's ``round(p)``.
#: Validity of a counterfactual means this too; a generator's own threshold gamma may ask for more.
DECISION_THRESHOLD = 0.5
#: Its log, for comparisons in the log-probability space the search works in.
LOG_DECISION_THRESHOLD = math.log(DECISION_THRESHOLD)


class NotFittedError(RecourseSimError, RuntimeError):
    """A model was used before ``fit`` (a package error, and a RuntimeError as scikit-learn's is)."""


class StackedEstimator:
    """The scikit-learn style base of every stacked model (see the module docstring).

    A subclass sets ``device_``, ``stacked_`` and its fitted state in ``fit`` (``rng_`` from :meth:`_new_rng`),
    and implements ``n_systems`` and :meth:`_take_systems`.
    """

    #: The attribute ``fit`` sets last-but-surely; its absence means "not fitted".
    _fitted_attribute = "stacked_"

    def get_params(self) -> dict:
        """Every constructor argument (the simulation rebuilds models with ``type(m)(**m.get_params())``)."""
        return {name: getattr(self, name) for name in parameter_names(type(self))}

    def _new_rng(self, device: torch.device | str = "cpu") -> torch.Generator:
        """A torch generator on ``device`` seeded with ``seed`` (fresh entropy when ``seed`` is None)."""
        rng = torch.Generator(device=device)
        if self.seed is None:
            rng.seed()
        else:
            rng.manual_seed(self.seed)
        return rng

    def _check_fitted(self) -> None:
        if not hasattr(self, self._fitted_attribute):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit first")

    @property
    def n_systems(self) -> int:
        raise NotImplementedError

    def _take_systems(self, new: StackedEstimator, index: torch.Tensor) -> None:
        """Give ``new`` (a shallow copy of ``self``) copies of the state of systems ``index``."""
        raise NotImplementedError

    def select_systems(self, systems: torch.Tensor | Sequence[int]) -> StackedEstimator:
        """A fitted copy holding the given systems (indices may repeat, e.g. to fan one model out); its random
        generator continues from this one's state."""
        self._check_fitted()
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        self._take_systems(new, torch.as_tensor(systems, dtype=torch.long).reshape(-1))
        new.stacked_ = True
        new.rng_ = torch.Generator(device=self.rng_.device)
        new.rng_.set_state(self.rng_.get_state())
        return new


class StackedClassifier(StackedEstimator):
    """``proba_positive``, ``predict_proba``, ``predict``, ``logits`` and ``logits_stacked`` on top of
    ``log_proba_stacked``."""

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

    def proba_positive(self, X: torch.Tensor, systems: Sequence[int] | None = None) -> torch.Tensor:
        """p(y=1|x): (n,) for a single model, (S, n) for a stack (X (n, d) is scored by every system).

        ``systems`` scores with only those systems of the stack, (S', n): one system's view of a large grid costs
        one system's forward pass, not the whole stack's.
        """
        self._check_fitted()
        X = torch.as_tensor(X, dtype=torch.float32, device=self.device_)
        if X.shape[-1] != self.n_features_in_:
            raise DataError(f"X has {X.shape[-1]} features; the model was fitted on {self.n_features_in_}")
        chosen = None if systems is None else torch.as_tensor(systems, dtype=torch.long, device=self.device_)
        if X.ndim == 2:
            X = X.unsqueeze(0).expand(self.n_systems if chosen is None else len(chosen), -1, -1)
        with torch.no_grad():
            p = self.log_proba_stacked(X, chosen).exp()
        return p if self.stacked_ or chosen is not None else p.squeeze(0)

    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        """scikit-learn layout: (..., n, 2) with columns p(y=0), p(y=1)."""
        p = self.proba_positive(X)
        return torch.stack([1.0 - p, p], dim=-1)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Labels at :data:`DECISION_THRESHOLD` (the reference code's ``round(p)``), as float 0/1."""
        return (self.proba_positive(X) >= DECISION_THRESHOLD).float()

    def log_proba_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def logits_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable logit of y = 1 for stacked inputs ``X`` (S', N, d) -> (S', N): the log-odds of p."""
        log_p = self.log_proba_stacked(X, systems)
        return log_p - torch.log1p(-log_p.exp().clamp(max=1 - 1e-6))

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """log-odds of the (ensemble-mean) probability."""
        p = self.proba_positive(X).clamp(1e-7, 1 - 1e-7)
        return torch.log(p) - torch.log1p(-p)
