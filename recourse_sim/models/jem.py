"""Joint Energy Models (Grathwohl et al. 2020) as trained for ECCCo (Altmeyer et al., AAAI 2024), stacked over
systems.

A JEM is a classifier whose class logits ``f(x)`` also define an energy, ``E(x | y) = -f_y(x)``
(:mod:`recourse_sim.models.sgld`). ECCCo trains it with JointEnergyModels.jl v0.1.3's loss

    L = a1 * CE(f(x), y) + a2 * (E_bar(x) - E_bar(x_hat)) + a3 * (E_bar(x)^2 + E_bar(x_hat)^2),   a = (1, 1, 0.1),

where ``x_hat`` are conditional SGLD samples (``y_hat ~ U{0, 1}``, then ``x ~ p(x | y_hat)``) from a persistent
replay buffer. Each optimiser step runs ``sgld_steps`` steps on ``sgld_samples`` new chains, stores them in the
buffer and compares the mini-batch with its ``|batch|`` most recent samples (v0.1.3's ``get_samples``; while the
buffer is smaller, the energy terms use as many rows of the batch, the cross-entropy all of them). Where this
follows the code rather than the paper, or neither:

- ``E_bar`` is a batch mean, and the ridge squares the *means* (the Julia ``_energy`` averages over the batch
  before ``.^2``), not each sample's energy. Squaring each sample's energy (Du & Mordatch 2019's regulariser) was
  tried: it holds every energy near 0 and flattens the landscape, so that on the linearly separable blobs fresh
  500-step chains ended no closer to their class than the prior's draws (0.5-1.2 times their mean distance over
  three seeds, against 0.08-0.71 with squared means);
- each sample's energy uses its own label: the Julia loss uses the first mini-batch label for all of them;
- chains start from ECCCo's data-derived prior ``U(lo, hi)`` (recomputed from the data at every ``fit``/``refit``)
  instead of the ``N(0, 1)`` its ``prepare_data`` gives the training sampler, which suits standardised features
  only; the package's synthetic features are not standardised.

Hyperparameters. ECCCo's tabular row (California Housing, GMSC, German Credit; also Moons) of
``table_ebm_params.tex``: 30 SGLD steps and 10 samples per optimiser step, ``a3 = 0.1``; it is the cheapest row
and fits tabular data. ECCCo's network: 3 x 32 hidden units with swish (``TuningBuilder``, Flux's Glorot-uniform
weights and zero biases), Adam(1e-3), 100 epochs, batch size ``min(round(n / 10), 128)`` (``prepare_data``; 80 for
its 800 training rows). Mini-batches in row order, as MLJFlux's fixed batches (the package's data come shuffled).
Retraining each simulation round (``refit``) keeps the buffer (the chains persist) and runs ``retrain_epochs`` = 10,
the package's warm-start protocol.

Training is autograd over stacked parameter tensors ``(S, fan_in, fan_out)`` evaluated with batched matrix
products: the :class:`~recourse_sim.models.custom.ModuleClassifier` approach without ``torch.func``; a plain MLP
needs no ``functional_call``, and the ~31 forward/backward passes per optimiser step (30 of them SGLD steps) would
pay ``vmap``'s fixed per-call cost each time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F

from recourse_sim.device import resolve_device
from recourse_sim.errors import ConfigError, DataError
from recourse_sim.models.base import StackedClassifier
from recourse_sim.models.sgld import ReplayBuffer, conditional_energy, prior_bounds, sgld_chain
from recourse_sim.settings import check_keywords, parameter_names

#: ECCCo's batch-size rule: a tenth of the rows, at most 128 (``experiments/data/data.jl``, ``prepare_data``).
BATCH_FRACTION, MAX_BATCH = 10, 128
N_CLASSES = 2


def eccco_batch_size(n_rows: int) -> int:
    """``min(round(n / 10), 128)``, at least 1 (Julia's ``round`` also rounds half to even)."""
    return max(1, min(round(n_rows / BATCH_FRACTION), MAX_BATCH))


def _forward(params: Sequence[torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """Class logits ``(S, N, 2)`` of stacked swish MLPs ``params = [W0, b0, W1, b1, ...]`` at ``X`` (S, N, d)."""
    h = X
    last = len(params) // 2 - 1
    for layer in range(last + 1):
        h = torch.baddbmm(params[2 * layer + 1], h, params[2 * layer])
        if layer < last:
            h = F.silu(h)  # swish, ECCCo's activation
    return h


class JEMClassifier(StackedClassifier):
    """A (stack of) JEM(s): swish MLPs with two class logits trained on classification and energy (see the module
    docstring). ``p(y = 1 | x) = softmax(f(x))_1``; ``logits_stacked`` is ``f_1 - f_0`` (its log-odds, as
    ECCCo's binary models report theirs) and ``class_logits_stacked`` the two logits the energy uses.

    Parameters
    ----------
    hidden_sizes:
        Hidden layer widths (ECCCo: 3 x 32).
    epochs, batch_size:
        Initial training: 100 epochs; ``batch_size=None`` is ECCCo's ``min(round(n / 10), 128)``.
    learning_rate:
        Adam's learning rate (fresh optimiser state at every ``fit``/``refit``).
    retrain_epochs, retrain_batch_size:
        Warm-started retraining each round (``refit``): 10 epochs; None: ECCCo's rule for the batch size.
    sgld_steps, sgld_samples:
        SGLD steps per optimiser step and new chains per step (ECCCo's tabular setting: 30 and 10).
    alpha:
        Weights ``(a1, a2, a3)`` of cross-entropy, energy difference and energy ridge (ECCCo: 1, 1, 0.1).
    shuffle:
        Shuffle rows every epoch (MLJFlux's batches are fixed).
    device, seed:
        ``"auto"`` picks CUDA when available; ``seed`` makes weights, chains and shuffling reproducible.
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (32, 32, 32),
        epochs: int = 100,
        batch_size: int | None = None,
        learning_rate: float = 1e-3,
        retrain_epochs: int = 10,
        retrain_batch_size: int | None = None,
        sgld_steps: int = 30,
        sgld_samples: int = 10,
        alpha: Sequence[float] = (1.0, 1.0, 0.1),
        shuffle: bool = False,
        device: str = "auto",
        seed: int | None = None,
        **unknown: object,
    ) -> None:
        if unknown:  # one package error instead of Python's TypeError
            raise ConfigError(type(self).__name__, next(iter(unknown)),
                              f"keywords {', '.join(parameter_names(JEMClassifier))}")
        self.hidden_sizes = tuple(hidden_sizes)
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.retrain_epochs = retrain_epochs
        self.retrain_batch_size = retrain_batch_size
        self.sgld_steps = sgld_steps
        self.sgld_samples = sgld_samples
        self.alpha = tuple(alpha)
        self.shuffle = shuffle
        self.device = device
        self.seed = seed
        self._check_params()

    def _check_params(self) -> None:
        check_keywords("model", JEMClassifier, self.get_params())
        for name in ("epochs", "retrain_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name}", getattr(self, name), "an integer >= 0")
        for name in ("batch_size", "retrain_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"model.{name}", getattr(self, name), "an integer >= 1, or None (ECCCo's rule)")
        for name in ("sgld_steps", "sgld_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}", getattr(self, name), "an integer >= 1")
        if any(h < 1 for h in self.hidden_sizes):
            raise ConfigError("model.hidden_sizes", list(self.hidden_sizes), "a list of integers >= 1")
        if not self.learning_rate > 0:
            raise ConfigError("model.learning_rate", self.learning_rate, "a number > 0")
        if len(self.alpha) != 3 or any(a < 0 for a in self.alpha) or self.alpha[0] == 0:
            raise ConfigError("model.alpha", list(self.alpha),
                              "three weights >= 0 (cross-entropy, energy difference, ridge), the first > 0")

    # ----------------------------------------------------------------------------------------- fitting
    def fit(self, X: torch.Tensor, y: torch.Tensor) -> JEMClassifier:
        """Fresh weights and an empty replay buffer per system, then ``epochs`` of JEM training."""
        X, y, stacked = self._as_stack(X, y)
        S, _, d = X.shape
        self.device_ = resolve_device(self.device)
        self.rng_ = self._new_rng(self.device_)
        self.params_ = self._initial_parameters(S, d)
        self.buffer_ = ReplayBuffer(S, d, device=self.device_)
        self.n_features_in_ = d
        self.stacked_ = stacked
        self._train(X, y, self.epochs, self.batch_size)
        return self

    def refit(self, X: torch.Tensor, y: torch.Tensor, epochs: int | None = None) -> JEMClassifier:
        """Warm-start retraining on the (moved) data: ``retrain_epochs`` with a fresh Adam state; the replay
        buffer carries over (the chains persist across rounds)."""
        self._check_fitted()
        X, y, _ = self._as_stack(X, y)
        self._train(X, y, self.retrain_epochs if epochs is None else epochs, self.retrain_batch_size)
        return self

    def _initial_parameters(self, S: int, d: int) -> list[torch.Tensor]:
        """Glorot-uniform weights and zero biases (Flux's ``Dense``), drawn on the CPU so a seed gives the same
        initial weights on every device."""
        init_rng = self._new_rng()
        sizes = (d, *self.hidden_sizes, N_CLASSES)
        params = []
        for fan_in, fan_out in pairwise(sizes):
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            W = torch.empty(S, fan_in, fan_out).uniform_(-bound, bound, generator=init_rng)
            params += [W.to(self.device_), torch.zeros(S, 1, fan_out, device=self.device_)]
        return params

    def _train(self, X: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int | None) -> None:
        S, n, _ = X.shape
        if S != self.n_systems:
            raise DataError(f"model holds {self.n_systems} systems but got data for {S}")
        X, y = X.to(self.device_), y.to(self.device_).long()
        self.prior_bounds_ = prior_bounds(X)  # the chains' box follows the (moving) data
        if epochs == 0:
            return
        batch = batch_size or eccco_batch_size(n)
        params = [p.requires_grad_(True) for p in self.params_]
        optimiser = torch.optim.Adam(params, lr=self.learning_rate, foreach=True)
        try:
            for _ in range(epochs):
                order = torch.randperm(n, generator=self.rng_, device=self.device_) if self.shuffle else None
                for start in range(0, n, batch):
                    rows = slice(start, min(start + batch, n)) if order is None else order[start:start + batch]
                    loss = self._loss(params, X[:, rows], y[:, rows]).sum()  # systems have disjoint parameters
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
        finally:
            for p in params:
                p.requires_grad_(False)

    def _loss(self, params: list[torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """One optimiser step's JEM loss per system ``(S,)``: draw and store new chains, then compare the batch
        with the most recent buffer samples."""
        S, B, _ = xb.shape
        frozen = [p.detach() for p in params]
        labels = torch.randint(0, N_CLASSES, (S, self.sgld_samples), generator=self.rng_, device=self.device_)
        starts = self.buffer_.starts(self.sgld_samples, self.prior_bounds_, self.rng_)

        def energy(x: torch.Tensor) -> torch.Tensor:
            return conditional_energy(_forward(frozen, x), labels)

        self.buffer_.push(sgld_chain(energy, starts, self.sgld_steps, self.prior_bounds_, self.rng_), labels)
        k = min(B, len(self.buffer_))
        x_hat, y_hat = self.buffer_.recent(k)
        logits = _forward(params, torch.cat([xb, x_hat], dim=1))  # one pass for data and samples
        data, sampled = logits[:, :B], logits[:, B:]
        cross_entropy = F.cross_entropy(data.transpose(1, 2), yb, reduction="none").mean(1)
        if k < B:  # the buffer is still smaller than a batch: as many batch rows, drawn with replacement (v0.1.3)
            rows = torch.randint(0, B, (k,), generator=self.rng_, device=self.device_)
            data, yb = data[:, rows], yb[:, rows]
        e_data = conditional_energy(data, yb).mean(1)
        e_sampled = conditional_energy(sampled, y_hat).mean(1)
        a1, a2, a3 = self.alpha
        return a1 * cross_entropy + a2 * (e_data - e_sampled) + a3 * (e_data.square() + e_sampled.square())

    # ---------------------------------------------------------------------------------------- inference
    @property
    def n_systems(self) -> int:
        self._check_fitted()
        return self.params_[0].shape[0]

    def class_logits_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable class logits ``(S', N, 2)`` for stacked inputs ``X`` (S', N, d); ``systems`` picks which
        of the model's systems score each slice (all, in order, if None)."""
        self._check_fitted()
        params = self.params_
        if systems is not None:
            systems = torch.as_tensor(systems, dtype=torch.long, device=self.device_)
            params = [p.index_select(0, systems) for p in params]
        return _forward(params, X)

    def logits_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable log-odds ``f_1 - f_0`` of y = 1: ``X`` (S', N, d) -> (S', N)."""
        logits = self.class_logits_stacked(X, systems)
        return logits[..., 1] - logits[..., 0]

    def log_proba_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable log p(y=1|x): ``X`` (S', N, d) -> (S', N) (the counterfactual engine's interface)."""
        return F.logsigmoid(self.logits_stacked(X, systems))

    # ------------------------------------------------------------------------------------------- stacks
    def _take_systems(self, new: JEMClassifier, index: torch.Tensor) -> None:
        index = index.to(self.device_)
        new.params_ = [p.index_select(0, index) for p in self.params_]
        new.buffer_ = self.buffer_.select(index)
        new.prior_bounds_ = tuple(b.index_select(0, index) for b in self.prior_bounds_)

    def parameters_stacked(self) -> list[torch.Tensor]:
        """The parameter tensors, each flattened with a leading system axis (S, numel)."""
        self._check_fitted()
        return [p.reshape(p.shape[0], -1) for p in self.params_]
