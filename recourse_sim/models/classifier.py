"""Torch classifiers with the scikit-learn contract, stacked over independent systems.

``fit(X, y)`` accepts one dataset ``X`` (n, d) or a stack of S datasets ``X`` (S, n, d) (one per simulated
system); a model fitted on a stack keeps S independent parameter sets and answers with a leading system axis.
Defaults follow the SaTML 2023 reference code (AlgorithmicRecourseDynamics.jl v0.1.2): 100 initial epochs,
Adam(1e-3), BCE with logits, batch size 1 without shuffling, warm-started retraining for 10 epochs with a fresh
optimiser (``refit``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recourse_sim.device import resolve_device
from recourse_sim.errors import ConfigError, DataError
from recourse_sim.models.base import StackedClassifier
from recourse_sim.models.network import AdamSettings, StackedMLP
from recourse_sim.settings import check_keywords, parameter_names


class TorchClassifier(StackedClassifier):
    """A (stack of) ReLU MLP(s) / ensembles with one logit output; ``p(y=1|x)`` is the good outcome."""

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (32,),
        n_members: int = 1,
        dropout: float = 0.0,
        epochs: int = 100,
        batch_size: int = 1,
        learning_rate: float = 1e-3,
        retrain_epochs: int = 10,
        retrain_batch_size: int = 1,
        shuffle: bool = False,
        device: str = "auto",
        seed: int | None = None,
        **unknown: object,
    ) -> None:
        if unknown:  # one package error instead of Python's TypeError
            raise ConfigError(type(self).__name__, next(iter(unknown)), f"keywords {', '.join(parameter_names(TorchClassifier))}")
        self.hidden_sizes = tuple(hidden_sizes)
        self.n_members = n_members
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.retrain_epochs = retrain_epochs
        self.retrain_batch_size = retrain_batch_size
        self.shuffle = shuffle
        self.device = device
        self.seed = seed
        self._check_params()

    def _check_params(self) -> None:
        check_keywords("model", TorchClassifier, self.get_params())
        positive = {"n_members": self.n_members, "epochs": self.epochs, "batch_size": self.batch_size,
                    "retrain_batch_size": self.retrain_batch_size}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name}", value, "an integer >= 1")
        if not isinstance(self.retrain_epochs, int) or self.retrain_epochs < 0:
            raise ConfigError("model.retrain_epochs", self.retrain_epochs, "an integer >= 0")
        if any(not isinstance(h, int) or h < 1 for h in self.hidden_sizes):
            raise ConfigError("model.hidden_sizes", list(self.hidden_sizes), "a list of integers >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("model.dropout", self.dropout, "a probability in [0, 1)")
        if not self.learning_rate > 0:
            raise ConfigError("model.learning_rate", self.learning_rate, "a number > 0")

    # ----------------------------------------------------------------------------------------- fitting
    def fit(self, X: torch.Tensor, y: torch.Tensor) -> TorchClassifier:
        """Initialise fresh weights and train for ``epochs`` with mini-batches of ``batch_size``."""
        X, y, stacked = self._as_stack(X, y)
        self.device_ = resolve_device(self.device)
        self.rng_ = self._new_rng(self.device_)
        init_rng = self._new_rng()  # initial weights are drawn on CPU (the same on every device)
        self.stacked_ = stacked
        self.n_features_in_ = X.shape[-1]
        self.network_ = StackedMLP(
            X.shape[0], self.n_members, self.n_features_in_, self.hidden_sizes, self.dropout,
            device=self.device_, rng=init_rng,
        )
        self._train(X, y, self.epochs, self.batch_size)
        return self

    def refit(self, X: torch.Tensor, y: torch.Tensor, epochs: int | None = None) -> TorchClassifier:
        """Warm-start retraining on the (moved) data: ``retrain_epochs`` with a fresh Adam state."""
        self._check_fitted()
        X, y, _ = self._as_stack(X, y)
        self._train(X, y, self.retrain_epochs if epochs is None else epochs, self.retrain_batch_size)
        return self

    def _train(self, X: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int) -> None:
        if X.shape[0] != self.network_.n_systems:
            raise DataError(f"model holds {self.network_.n_systems} systems but got data for {X.shape[0]}")
        self.network_.train(
            X.to(self.device_), y.to(self.device_), epochs, batch_size, AdamSettings(lr=self.learning_rate),
            shuffle=self.shuffle, rng=self.rng_,
        )

    # ---------------------------------------------------------------------------------------- inference
    @property
    def n_systems(self) -> int:
        self._check_fitted()
        return self.network_.n_systems

    def log_proba_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable log p(y=1|x) for stacked inputs: ``X`` (S', N, d) -> (S', N).

        ``systems`` (S',) picks which of the model's systems score each slice of ``X`` (all, in order, if None).
        This is the interface the counterfactual search engine uses.
        """
        return self.network_.log_proba(X, systems)

    def logits_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable mean member logit of y = 1 (the logit itself for a single network): (S', N, d) -> (S', N)."""
        return self.network_.member_logits(X, systems).mean(1)

    # ------------------------------------------------------------------------------------------- stacks
    def _take_systems(self, new: TorchClassifier, index: torch.Tensor) -> None:
        new.network_ = self.network_.select(index)

    def parameters_stacked(self) -> list[torch.Tensor]:
        """The parameter tensors, each with a leading system axis (S, ...)."""
        self._check_fitted()
        return [p.reshape(p.shape[0], -1) for p in self.network_.parameters]


class LogisticRegression(TorchClassifier):
    """``Linear(d, 1)`` with a sigmoid: the SaTML 2023 logistic regression."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("hidden_sizes", ())
        super().__init__(**kwargs)


class MLPClassifier(TorchClassifier):
    """ReLU MLP; default ``Linear(d, 32)-ReLU-Linear(32, 1)`` (SaTML 2023, synthetic data).

    The real-data variant of the paper is ``hidden_sizes=(64, 64), dropout=0.1, batch_size=500``.
    """


class DeepEnsemble(TorchClassifier):
    """Five MLPs trained independently; p(y=1|x) = mean of the member sigmoids (Lakshminarayanan et al. 2017)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("n_members", 5)
        super().__init__(**kwargs)
