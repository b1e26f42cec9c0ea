"""Bring your own ``torch.nn.Module``: an adapter that gives any binary-classification network the classifier
contract the simulation and the counterfactual engine use.

The package's own classifiers (:class:`~recourse_sim.models.TorchClassifier`) keep the parameters of S
simulated systems in one stacked buffer. :class:`ModuleClassifier` does the same for an arbitrary module:

- ``vectorize=True`` (default): S deep copies of the module are stacked with
  :func:`torch.func.stack_module_state` and evaluated in one call with :func:`torch.func.vmap` over
  :func:`torch.func.functional_call`; one Adam step updates every system. The cost of a step barely grows
  with S (one batched kernel per layer for all systems), but there is a fixed ``vmap`` overhead per call and
  the module must be ``vmap``-compatible: no data-dependent Python control flow on tensor values, no
  ``.item()``/``.tolist()`` inside ``forward``, no operations ``torch.func`` cannot batch (BatchNorm's running
  statistics do work with torch 2.13). Such problems surface at ``fit`` as a :class:`DataError` that suggests
  ``vectorize=False``.
- ``vectorize=False``: a plain Python list of S modules, called one after the other. Works with any module;
  costs S forward/backward passes per optimiser step, so it wins for a single system or very few, and loses
  as S grows (the simulation has S = models' systems x generators x repetitions).

Measured on one CPU thread (torch 2.13, Linear(2,32)-ReLU-Linear(32,1), batch size 1, one Adam step):
vmap 0.62 / 0.61 / 0.65 ms per step for S = 1 / 4 / 16 systems, loop 0.33 / 0.74 / 2.62 ms: the loop wins
below about three systems, vmap beyond.

Both paths minimise the same loss (the sum over systems of each system's mean binary cross-entropy with
logits) with one fresh ``torch.optim.Adam`` per ``fit``/``refit`` call, which is element-wise and therefore
equal to S independent optimisers; their results agree up to floating-point rounding.

The module maps a batch ``(N, d)`` to logits of the good outcome y = 1, shaped ``(N,)`` or ``(N, 1)``, or to
two class logits ``(N, 2)`` (then ``logit = out[:, 1] - out[:, 0]``). Dropout is active during training and
off everywhere else (prediction, counterfactual search, metrics).

>>> import torch.nn as nn
>>> clf = ModuleClassifier(lambda: nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1)),
...                        epochs=20, batch_size=16)
>>> SimulationConfig(train=train, test=test, models={"mine": clf}, generators=...)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from recourse_sim.device import resolve_device
from recourse_sim.errors import ConfigError, DataError
from recourse_sim.models.base import StackedClassifier

ModuleSource = nn.Module | Callable[[], nn.Module]


def _reset_parameters(module: nn.Module) -> None:
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()


class ModuleClassifier(StackedClassifier):
    """A stack of S copies of a user's ``nn.Module`` with the scikit-learn/simulation classifier contract.

    Parameters
    ----------
    module:
        Either a module *factory* (a callable with no arguments returning a fresh ``nn.Module``; each system
        gets its own, built under a seeded RNG so systems start from independent initialisations), or a module
        *instance* (each system gets a deep copy; with ``reinitialize=True`` every copy's layers are reset
        with ``reset_parameters()`` under a seeded RNG, with ``reinitialize=False`` all systems start from the
        instance's weights, e.g. a pre-trained model, and ``epochs=0`` skips initial training).
    epochs, batch_size:
        Initial training (defaults: the SaTML 2023 protocol's 100 epochs at batch size 1, Adam 1e-3).
    learning_rate:
        Adam's learning rate (fresh optimiser state on every ``fit``/``refit``, as in the reference code).
    retrain_epochs, retrain_batch_size:
        Warm-started retraining each round (``refit``), default 10 epochs at batch size 1.
    shuffle:
        Shuffle rows every epoch (the reference code does not).
    vectorize:
        ``True``: ``torch.func`` stacking + ``vmap`` (fast); ``False``: a loop over module copies (works with
        any module). See the module docstring for the trade-off.
    reinitialize:
        Only for a module instance: reset each copy's parameters at ``fit`` (see ``module``).
    device, seed:
        ``"auto"`` picks CUDA when available; ``seed`` makes initialisation, dropout and shuffling reproducible.
    """

    def __init__(
        self,
        module: ModuleSource,
        epochs: int = 100,
        batch_size: int = 1,
        learning_rate: float = 1e-3,
        retrain_epochs: int = 10,
        retrain_batch_size: int = 1,
        shuffle: bool = False,
        vectorize: bool = True,
        reinitialize: bool = True,
        device: str = "auto",
        seed: int | None = None,
        **unknown: object,
    ) -> None:
        if unknown:  # one package error instead of Python's TypeError
            allowed = ", ".join(p for p in inspect.signature(ModuleClassifier.__init__).parameters if p not in (
                "self", "unknown"))
            raise ConfigError("ModuleClassifier", next(iter(unknown)), f"keywords {allowed}")
        self.module = module
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.retrain_epochs = retrain_epochs
        self.retrain_batch_size = retrain_batch_size
        self.shuffle = shuffle
        self.vectorize = vectorize
        self.reinitialize = reinitialize
        self.device = device
        self.seed = seed
        self._check_params()

    def _check_params(self) -> None:
        if not (isinstance(self.module, nn.Module) or callable(self.module)):
            raise ConfigError("model.module", type(self.module).__name__,
                              "a torch.nn.Module or a callable returning a fresh nn.Module")
        for name in ("batch_size", "retrain_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name}", value, "an integer >= 1")
        for name in ("epochs", "retrain_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"model.{name}", value, "an integer >= 0")
        if not self.learning_rate > 0:
            raise ConfigError("model.learning_rate", self.learning_rate, "a number > 0")

    def __repr__(self) -> str:
        name = type(self.module).__name__ if isinstance(self.module, nn.Module) else getattr(
            self.module, "__name__", "factory")
        return f"ModuleClassifier({name}, vectorize={self.vectorize}, epochs={self.epochs})"

    # ------------------------------------------------------------------------------------ construction
    def _build_module(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if isinstance(self.module, nn.Module):
                module = copy.deepcopy(self.module)
                if self.reinitialize:
                    _reset_parameters(module)
            else:
                module = self.module()
                if not isinstance(module, nn.Module):
                    raise ConfigError("model.module", type(module).__name__, "a factory returning an nn.Module")
        return module.to(self.device_)

    def _set_modules(self, modules: list[nn.Module]) -> None:
        if self.vectorize:
            params, buffers = torch.func.stack_module_state(modules)
            self.params_ = params
            self.buffers_ = buffers
            self.base_ = copy.deepcopy(modules[0]).to("meta")
            self.modules_ = None
        else:
            self.modules_ = modules
            self.params_ = self.buffers_ = self.base_ = None
        self._set_training(False)

    def _set_training(self, mode: bool) -> None:
        for module in (self.modules_ if self.modules_ is not None else [self.base_]):
            module.train(mode)

    # ----------------------------------------------------------------------------------------- fitting
    def fit(self, X: torch.Tensor, y: torch.Tensor) -> ModuleClassifier:
        """Build one fresh module per system (X (S, n, d)) or a single one (X (n, d)) and train ``epochs``."""
        X, y, stacked = self._as_stack(X, y)
        self.device_ = resolve_device(self.device)
        self.rng_ = self._new_rng()
        self.stacked_ = stacked
        self.n_features_in_ = X.shape[-1]
        seeds = torch.randint(0, 2**62, (X.shape[0],), generator=self.rng_).tolist()
        self._set_modules([self._build_module(s) for s in seeds])
        self._check_output(X)
        self._train(X, y, self.epochs, self.batch_size)
        return self

    def refit(self, X: torch.Tensor, y: torch.Tensor, epochs: int | None = None) -> ModuleClassifier:
        """Warm-start retraining on the (moved) data: ``retrain_epochs`` with a fresh Adam state."""
        self._check_fitted()
        X, y, _ = self._as_stack(X, y)
        self._train(X, y, self.retrain_epochs if epochs is None else epochs, self.retrain_batch_size)
        return self

    def _trainable(self) -> list[torch.Tensor]:
        if self.modules_ is None:
            return [p for p in self.params_.values() if p.requires_grad]
        return [p for m in self.modules_ for p in m.parameters() if p.requires_grad]

    def _train(self, X: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int) -> None:
        if X.shape[0] != self.n_systems:
            raise DataError(f"model holds {self.n_systems} systems but got data for {X.shape[0]}")
        if epochs == 0:
            return
        X, y = X.to(self.device_), y.to(self.device_)
        trainable = self._trainable()
        optimiser = torch.optim.Adam(trainable, lr=self.learning_rate, foreach=True)  # one kernel per update
        seed = int(torch.randint(0, 2**62, (1,), generator=self.rng_))
        self._set_training(True)
        try:
            self._fit_loop(X, y, epochs, batch_size, optimiser, seed)
        except (RuntimeError, ValueError, NotImplementedError) as error:
            if not self.vectorize:
                raise
            raise DataError(f"ModuleClassifier: training the vmap-stacked module failed: {error} "
                            "(try vectorize=False)") from error
        finally:
            self._set_training(False)

    def _fit_loop(self, X, y, epochs: int, batch_size: int, optimiser, seed: int) -> None:
        n = X.shape[1]
        with torch.random.fork_rng(devices=[] if self.device_.type == "cpu" else [self.device_]):
            torch.manual_seed(seed)  # dropout masks, reproducible per call
            for _ in range(epochs):
                order = torch.randperm(n, generator=self.rng_).to(self.device_) if self.shuffle else None
                for start in range(0, n, batch_size):
                    stop = min(start + batch_size, n)
                    rows = slice(start, stop) if order is None else order[start:stop]
                    logits = self._forward(X[:, rows])
                    # Sum over systems of each system's mean loss: the gradient of system s is its own.
                    loss = F.binary_cross_entropy_with_logits(logits, y[:, rows], reduction="none").mean(1).sum()
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()

    def _check_output(self, X: torch.Tensor) -> None:
        with torch.no_grad():
            probe = X[:, :2].to(self.device_)
            try:
                self._forward(probe)
            except DataError:
                raise
            except Exception as error:  # surface vmap/shape problems once, with a hint
                hint = " (try vectorize=False)" if self.vectorize else ""
                raise DataError(f"ModuleClassifier: calling the module on a ({probe.shape[1]}, "
                                f"{probe.shape[2]}) batch failed: {error}{hint}") from error

    # --------------------------------------------------------------------------------------- inference
    @staticmethod
    def _to_logit(out: torch.Tensor, S: int, N: int) -> torch.Tensor:
        if out.shape == (S, N):
            return out
        if out.shape == (S, N, 1):
            return out.squeeze(-1)
        if out.shape == (S, N, 2):
            return out[..., 1] - out[..., 0]
        raise DataError(f"ModuleClassifier: the module must return (N,), (N, 1) or (N, 2) logits for an (N, d) "
                        f"batch; got {tuple(out.shape[1:])} for N = {N}")

    def _forward(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (S', N) for X (S', N, d); ``systems`` picks which stacked systems score each slice."""
        S, N, _ = X.shape
        if self.modules_ is None:
            params, buffers = self.params_, self.buffers_
            if systems is not None:
                systems = torch.as_tensor(systems, dtype=torch.long, device=X.device)
                params = {k: v.index_select(0, systems) for k, v in params.items()}
                buffers = {k: v.index_select(0, systems) for k, v in buffers.items()}
            base = self.base_

            def call(p, b, x):
                return torch.func.functional_call(base, (p, b), (x,))

            out = torch.func.vmap(call, randomness="different")(params, buffers, X)
        else:
            index = range(S) if systems is None else torch.as_tensor(systems).tolist()
            out = torch.stack([self.modules_[s](X[i]) for i, s in enumerate(index)])
        return self._to_logit(out, S, N)

    @property
    def n_systems(self) -> int:
        self._check_fitted()
        if self.modules_ is not None:
            return len(self.modules_)
        return next(iter(self.params_.values())).shape[0]

    def logits_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable logits of y = 1 for stacked inputs: ``X`` (S', N, d) -> (S', N)."""
        self._check_fitted()
        return self._forward(X, systems)

    def log_proba_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable log p(y=1|x): ``X`` (S', N, d) -> (S', N) (the counterfactual engine's interface)."""
        return F.logsigmoid(self.logits_stacked(X, systems))

    # ------------------------------------------------------------------------------------------ stacks
    def _take_systems(self, new: ModuleClassifier, index: torch.Tensor) -> None:
        if self.modules_ is None:
            index = index.to(self.device_)
            new.params_ = {k: v.detach().index_select(0, index).clone().requires_grad_(v.requires_grad)
                           for k, v in self.params_.items()}
            new.buffers_ = {k: v.index_select(0, index).clone() for k, v in self.buffers_.items()}
        else:
            new.modules_ = [copy.deepcopy(self.modules_[i]) for i in index.tolist()]

    def parameters_stacked(self) -> list[torch.Tensor]:
        """The parameter tensors, each flattened with a leading system axis (S, numel)."""
        self._check_fitted()
        if self.modules_ is None:
            return [p.detach().reshape(p.shape[0], -1) for p in self.params_.values()]
        per_module = [[p.detach().reshape(-1) for p in m.parameters()] for m in self.modules_]
        return [torch.stack(group) for group in zip(*per_module)]

    def modules(self) -> list[nn.Module]:
        """Ordinary ``nn.Module`` copies of every system's current network (e.g. to save or inspect them)."""
        self._check_fitted()
        if self.modules_ is not None:
            return [copy.deepcopy(m) for m in self.modules_]
        out = []
        for s in range(self.n_systems):
            module = copy.deepcopy(self.base_).to_empty(device=self.device_)
            state = {k: v[s].detach().clone() for k, v in {**self.params_, **self.buffers_}.items()}
            module.load_state_dict(state)
            module.eval()
            out.append(module)
        return out
