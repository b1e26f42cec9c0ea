"""Trainable views of the package's fitted classifiers: the one module that reads a model's parameters.

Counterfactual Training (:mod:`recourse_sim.training.ct`) optimises a classifier's parameters with torch autograd
on an objective the model's own ``fit`` does not know. The models layer trains through its own loops (a
hand-written gradient for :class:`~recourse_sim.models.TorchClassifier`, a ``torch.optim`` loop for
:class:`~recourse_sim.models.custom.ModuleClassifier`) and offers no "trainable parameters" method, so this module
reads what CT needs, and nothing else in the package does:

- ``TorchClassifier``: the :class:`~recourse_sim.models.network.StackedMLP` (``network_``), whose parameters are
  views of one (S, P) buffer ``flat``, and its differentiable ``member_logits`` (with dropout while training, its
  masks drawn from the model's ``rng_`` as its stepwise torch loop draws them);
- ``ModuleClassifier``: its stacked parameters (``params_``, vmap) or module copies (``modules_``, loop), its
  differentiable ``logits_stacked`` and its modules' train/eval mode (dropout).

A :class:`Session` is one training call: a fresh Adam state (the package's models build one per ``fit``/``refit``,
as the reference code builds a new ``Adam()`` each round) and the random state the model's own training call would
draw, so that a CT call with only the classification loss takes the same steps as the model's conventional one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

from recourse_sim.models.base import StackedClassifier
from recourse_sim.models.classifier import TorchClassifier
from recourse_sim.models.custom import ModuleClassifier
from recourse_sim.models.network import AdamSettings

#: The classifiers CT can train (their parameters are torch tensors autograd can reach).
SUPPORTED = (TorchClassifier, ModuleClassifier)


class Session:
    """One training call: ``step(loss)`` takes one optimiser step on the per-system losses (S,).

    Systems have disjoint parameters, so the summed loss gives every system its own gradient. A system whose loss
    is not finite gets no gradient this step (the reference code skips non-finite updates); the other systems are
    unaffected. ``evaluation()`` switches to inference (no dropout, no parameter gradients) for a search.
    """

    def step(self, loss: torch.Tensor) -> None:
        raise NotImplementedError

    def evaluation(self):
        return nullcontext()


class TrainableClassifier:
    """Differentiable member logits ``(S', M, N)`` of a fitted classifier and training sessions on its parameters."""

    n_members: int = 1

    def member_logits(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def session(self, learning_rate: float) -> AbstractContextManager[Session]:
        """A training call with a fresh Adam state at ``learning_rate`` (a context manager yielding a Session)."""
        raise NotImplementedError


def trainable(model: StackedClassifier) -> TrainableClassifier:
    """The trainable view of a fitted ``TorchClassifier`` or ``ModuleClassifier``."""
    if isinstance(model, TorchClassifier):
        return _FlatNetwork(model)
    if isinstance(model, ModuleClassifier):
        return _Modules(model)
    raise TypeError(f"Counterfactual Training cannot train a {type(model).__name__}")


# ------------------------------------------------------------------------------------- TorchClassifier
class _FlatNetwork(TrainableClassifier):
    """A :class:`StackedMLP`: S systems x M members, parameters as views of ``network_.flat``."""

    def __init__(self, model: TorchClassifier) -> None:
        self.network = model.network_
        self.n_members = self.network.n_members
        self.rng = model.rng_
        # In a session and outside its evaluation(): the forward pass trains (dropout masks from the model's rng,
        # as its stepwise torch loop draws them); otherwise it is the inference pass.
        self.training = False

    def member_logits(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        return self.network.member_logits(X, systems, dropout_rng=self.rng if self.training else None)

    @contextmanager
    def session(self, learning_rate: float) -> Iterator[Session]:
        session = _FlatSession(self, AdamSettings(lr=learning_rate))
        session.track(True)
        try:
            yield session
        finally:
            session.track(False)


class _FlatSession(Session):
    """Adam on the flat buffer with :meth:`StackedMLP._adam_step`'s arithmetic (the torch training loop's)."""

    def __init__(self, owner: _FlatNetwork, adam: AdamSettings) -> None:
        self.owner, self.network, self.adam = owner, owner.network, adam
        self.m = torch.zeros_like(self.network.flat)
        self.v = torch.zeros_like(self.network.flat)
        self.t = 0

    def track(self, on: bool) -> None:
        """Let autograd see the parameters (or stop it) and switch dropout on (or off)."""
        self.owner.training = on
        self.network.track_gradients(on)

    def step(self, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss)
        (grad,) = torch.autograd.grad(torch.where(finite, loss, 0.0).sum(), self.network.flat)
        grad = torch.where(finite.view(-1, 1), grad, 0.0)
        self.t += 1
        a = self.adam
        self.m.lerp_(grad, 1.0 - a.beta1)
        self.v.mul_(a.beta2).addcmul_(grad, grad, value=1.0 - a.beta2)
        denom = (self.v / (1.0 - a.beta2**self.t)).sqrt_().add_(a.eps)
        # ``.data``: an update autograd must not see. An in-place write through the tracked buffer would bump the
        # version its views share and turn every later backward pass into a slow AsStrided one.
        self.network.flat.data.addcdiv_(self.m, denom, value=-a.lr / (1.0 - a.beta1**self.t))

    @contextmanager
    def evaluation(self):
        self.track(False)
        try:
            yield
        finally:
            self.track(True)


# ------------------------------------------------------------------------------------ ModuleClassifier
class _Modules(TrainableClassifier):
    """A :class:`ModuleClassifier` (one logit per system, ``M = 1``)."""

    def __init__(self, model: ModuleClassifier) -> None:
        self.model = model

    def member_logits(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.logits_stacked(X, systems).unsqueeze(1)

    def _set_training(self, mode: bool) -> None:
        model = self.model
        for module in (model.modules_ if model.modules_ is not None else [model.base_]):
            module.train(mode)

    @contextmanager
    def session(self, learning_rate: float) -> Iterator[Session]:
        model = self.model
        device = model.device_
        # What ModuleClassifier's own training call draws first: the seed of its dropout masks.
        seed = int(torch.randint(0, 2**62, (1,), generator=model.rng_))
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
            torch.manual_seed(seed)
            self._set_training(True)
            try:
                yield _ModuleSession(self, learning_rate)
            finally:
                self._set_training(False)


class _ModuleSession(Session):
    """``torch.optim.Adam(foreach=True)`` over the trainable parameters, as ``ModuleClassifier`` trains."""

    def __init__(self, owner: _Modules, learning_rate: float) -> None:
        model = owner.model
        self.owner = owner
        if model.modules_ is None:  # vmap: every tensor is stacked along the system axis
            self.groups = None
            self.parameters = [p for p in model.params_.values() if p.requires_grad]
        else:  # one module per system
            self.groups = [[p for p in m.parameters() if p.requires_grad] for m in model.modules_]
            self.parameters = [p for group in self.groups for p in group]
        self.optimiser = torch.optim.Adam(self.parameters, lr=learning_rate, foreach=True)

    def step(self, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss)
        self.optimiser.zero_grad(set_to_none=True)
        torch.where(finite, loss, 0.0).sum().backward()
        if self.groups is None:
            for p in self.parameters:
                if p.grad is not None:
                    p.grad = torch.where(finite.view(-1, *(1,) * (p.dim() - 1)), p.grad, 0.0)
        else:
            for ok, group in zip(finite, self.groups):
                for p in group:
                    if p.grad is not None:
                        p.grad = torch.where(ok, p.grad, 0.0)
        self.optimiser.step()

    @contextmanager
    def evaluation(self):
        self.owner._set_training(False)
        try:
            yield
        finally:
            self.owner._set_training(True)


def ensemble_log_proba(member_logits: torch.Tensor) -> torch.Tensor:
    """log p(y=1) of the ensemble (mean of member sigmoids) from member logits (S, M, N) -> (S, N), as
    :meth:`StackedMLP.log_proba` computes it."""
    member = torch.nn.functional.logsigmoid(member_logits)
    if member.shape[1] == 1:
        return member.squeeze(1)
    return torch.logsumexp(member, dim=1) - math.log(member.shape[1])
