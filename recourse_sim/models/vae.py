"""A variational autoencoder for latent-space counterfactual search (REVISE, CLUE), stacked over systems.

Architecture and training follow CounterfactualExplanations.jl v0.1.5 (``src/generative_models/vae.jl``), as
used by Altmeyer et al. (SaTML 2023):

- encoder ``Dense(d, 32, relu)`` with two heads ``Dense(32, latent)`` for the mean and ``log sigma``;
- decoder ``Dense(latent, 32, relu) -> Dense(32, d)``;
- loss = squared reconstruction error summed over features and averaged over the batch, + KL(q(z|x) || N(0, I))
  averaged over the batch, + ``0.01 * sum of squared decoder parameters`` (all of ``Flux.params(decoder)``:
  weights and biases);
- Adam(1e-3), batch 50, shuffled; 100 epochs (the paper uses 250 on real data: pass ``epochs=250``);
  ``refit`` continues for 10 epochs with a fresh optimiser (the per-round ``retrain!``);
- latent dimension 2 on the 2-D synthetic data and 8 on real data: ``latent_dim=None`` picks ``min(8, d)``,
  which gives exactly those values on the paper's datasets.

Like the classifiers, ``fit`` takes one dataset ``X`` (n, d) or a stack ``X`` (S, n, d); a stack trains S
independent VAEs in lock-step (one batched matmul per layer, element-wise Adam, so one stacked step equals S
separate steps). The search engine works in the standardised space, so the VAE is trained on standardised data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from recourse_sim.cores import split_over_threads
from recourse_sim.device import flush_denormals, one_blas_thread, resolve_device
from recourse_sim.errors import ConfigError, DataError
from recourse_sim.models.base import StackedEstimator
from recourse_sim.settings import check_keywords

_ENCODER = ("enc_W", "enc_b", "mu_W", "mu_b", "logsigma_W", "logsigma_b")
_DECODER = ("dec_W1", "dec_b1", "dec_W2", "dec_b2")


class VAE(StackedEstimator):
    """Stacked Gaussian VAE with the scikit-learn-style contract: params in ``__init__``, ``fit(X) -> self``."""

    _fitted_attribute = "params_"

    def __init__(
        self,
        hidden_size: int = 32,
        latent_dim: int | None = None,
        epochs: int = 100,
        batch_size: int = 50,
        learning_rate: float = 1e-3,
        decoder_weight_decay: float = 0.01,
        retrain_epochs: int = 10,
        shuffle: bool = True,
        device: str = "auto",
        seed: int | None = None,
    ) -> None:
        self.hidden_size = hidden_size
        self.latent_dim = latent_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.decoder_weight_decay = decoder_weight_decay
        self.retrain_epochs = retrain_epochs
        self.shuffle = shuffle
        self.device = device
        self.seed = seed
        self._check_params()

    def _check_params(self) -> None:
        check_keywords("vae", VAE, self.get_params())
        for name in ("hidden_size", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"vae.{name}", value, "an integer >= 1")
        for name in ("epochs", "retrain_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"vae.{name}", value, "an integer >= 0")
        if self.latent_dim is not None and (not isinstance(self.latent_dim, int) or self.latent_dim < 1):
            raise ConfigError("vae.latent_dim", self.latent_dim, "an integer >= 1 or None (min(8, d))")
        if not self.learning_rate > 0:
            raise ConfigError("vae.learning_rate", self.learning_rate, "a number > 0")
        if not self.decoder_weight_decay >= 0:
            raise ConfigError("vae.decoder_weight_decay", self.decoder_weight_decay, "a number >= 0")

    # ----------------------------------------------------------------------------------------- fitting
    def fit(self, X: torch.Tensor, backend: str = "auto") -> VAE:
        """Fresh Glorot-uniform weights (zero biases, Flux's ``Dense`` defaults), then ``epochs`` of training
        (``backend``: see :meth:`refit`)."""
        X, stacked = self._as_stack(X)
        self.device_ = resolve_device(self.device)
        self.rng_ = self._new_rng(self.device_)
        init = self._new_rng()  # initial weights are drawn on CPU (the same on every device)
        S, _, d = X.shape
        self.stacked_ = stacked
        self.n_features_in_ = d
        self.latent_dim_ = self.latent_dim or min(8, d)
        h, L = self.hidden_size, self.latent_dim_
        shapes = {"enc": (d, h), "mu": (h, L), "logsigma": (h, L), "dec1": (L, h), "dec2": (h, d)}
        params = {}
        for key, (fan_in, fan_out) in shapes.items():
            prefix = {"dec1": "dec_W1", "dec2": "dec_W2"}.get(key, f"{key}_W")
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            # Drawn on CPU so a seed gives the same initial weights on every device.
            params[prefix] = torch.empty(S, fan_in, fan_out).uniform_(-bound, bound, generator=init)
            params[prefix.replace("_W", "_b")] = torch.zeros(S, 1, fan_out)
        self.params_ = {k: v.to(self.device_) for k, v in params.items()}
        self._train(X, self.epochs, backend)
        return self

    def refit(self, X: torch.Tensor, epochs: int | None = None, backend: str = "auto") -> VAE:
        """Warm-start training on the current data: ``retrain_epochs`` (10) with a fresh Adam state.

        ``backend``: ``"compiled"`` trains each epoch as one numba-compiled call (CPU only,
        :mod:`recourse_sim.models.compiled_vae`), ``"torch"`` as torch steps with autograd and ``torch.optim.Adam``
        (every device; the reference), ``"auto"`` compiled on the CPU. Both draw the same random numbers and agree
        to float32 rounding.
        """
        self._check_fitted()
        X, _ = self._as_stack(X)
        self._train(X, self.retrain_epochs if epochs is None else epochs, backend)
        return self

    @flush_denormals()
    def _train(self, X: torch.Tensor, epochs: int, backend: str = "auto") -> None:
        if X.shape[0] != self.n_systems or X.shape[-1] != self.n_features_in_:
            raise DataError(
                f"VAE holds {self.n_systems} system(s) of {self.n_features_in_} features; got data of shape "
                f"{tuple(X.shape)}"
            )
        if backend not in ("auto", "compiled", "torch"):
            raise ConfigError("vae backend", backend, "one of auto, compiled, torch")
        if backend == "auto":
            backend = "compiled" if self.device_.type == "cpu" else "torch"
        X = X.to(self.device_)
        if backend == "compiled":
            self._train_compiled(X, epochs)
            return
        n = X.shape[1]
        params = [p.requires_grad_(True) for p in self.params_.values()]
        # foreach: one multi-tensor kernel per Adam update instead of one per parameter tensor (the same
        # arithmetic, bit-identical here; 1.9x faster training at batch 50, where launches dominate)
        optimiser = torch.optim.Adam(params, lr=self.learning_rate, foreach=True)
        for _ in range(epochs):
            order = (torch.randperm(n, generator=self.rng_, device=self.device_) if self.shuffle
                     else torch.arange(n, device=self.device_))
            for start in range(0, n, self.batch_size):
                xb = X[:, order[start : start + self.batch_size]]
                optimiser.zero_grad(set_to_none=True)
                self.loss(xb).sum().backward()
                optimiser.step()
        for p in params:
            p.requires_grad_(False)

    def _train_compiled(self, X: torch.Tensor, epochs: int) -> None:
        """:meth:`_train` as one compiled call per epoch, with the torch loop's draws in its order: each epoch's
        permutation, then every batch's reparameterisation noise."""
        if self.device_.type != "cpu":
            raise ConfigError("vae backend", "compiled", '"auto" or "torch" here: it runs on the CPU only')
        from recourse_sim.models.compiled_vae import train_epoch  # lazy: numba costs ~0.4 s to import

        S, n, d = X.shape
        if epochs < 1 or n == 0:
            return
        tensors = list(self.params_.values())
        flat = torch.cat([p.reshape(S, -1) for p in tensors], 1).numpy()
        m, v = np.zeros_like(flat), np.zeros_like(flat)
        data = X.detach().to(torch.float32).contiguous().numpy()
        beta1, beta2, eps = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults, which the torch loop uses
        batches = (n + self.batch_size - 1) // self.batch_size

        def systems_epoch(order: np.ndarray, noise: np.ndarray, step: int):  # noqa: ANN202
            """One epoch of the systems ``first .. end - 1`` after ``step`` Adam steps: systems are independent, so
            with several cores (recourse_sim.cores) ranges of them train on several threads, with the same bits."""
            return lambda first, end: train_epoch(
                flat[first:end], m[first:end], v[first:end], data[first:end], order, noise[first:end], d,
                self.hidden_size, self.latent_dim_, self.batch_size, step, self.learning_rate, beta1, beta2, eps,
                self.decoder_weight_decay)

        with one_blas_thread():  # batches of >= compiled_training.BLAS_MIN_ROWS rows multiply through BLAS
            for epoch in range(epochs):
                order = (torch.randperm(n, generator=self.rng_) if self.shuffle else torch.arange(n))
                noise = torch.cat([torch.randn((S, min(self.batch_size, n - start), self.latent_dim_),
                                               generator=self.rng_) for start in range(0, n, self.batch_size)], 1)
                split_over_threads(S, systems_epoch(order.numpy(), noise.numpy(), epoch * batches),
                                   mode=flush_denormals)
        trained = torch.from_numpy(flat).split([p[0].numel() for p in tensors], 1)
        for p, new in zip(tensors, trained):
            p.copy_(new.view_as(p))

    def loss(self, X: torch.Tensor) -> torch.Tensor:
        """Per-system negative ELBO + decoder weight decay on a batch ``X`` (S, n, d) -> (S,)."""
        mu, log_sigma = self.encode_stacked(X)
        noise = torch.randn(mu.shape, generator=self.rng_, device=mu.device)
        reconstruction = self.decode_stacked(mu + log_sigma.exp() * noise)
        nll = (reconstruction - X).pow(2).sum(-1).mean(-1)
        kl = 0.5 * (torch.exp(2 * log_sigma) + mu.pow(2) - 1.0 - 2 * log_sigma).sum(-1).mean(-1)
        decay = sum(self.params_[k].pow(2).flatten(1).sum(1) for k in _DECODER)
        return nll + kl + self.decoder_weight_decay * decay

    @staticmethod
    def _as_stack(X: torch.Tensor) -> tuple[torch.Tensor, bool]:
        X = torch.as_tensor(X, dtype=torch.float32)
        if X.ndim not in (2, 3) or X.shape[-2] < 1:
            raise DataError(f"VAE.fit expects X (n, d) or (S, n, d); got shape {tuple(X.shape)}")
        if not torch.isfinite(X).all():
            raise DataError("VAE.fit: X contains NaN or inf")
        return (X, True) if X.ndim == 3 else (X.unsqueeze(0), False)

    # ---------------------------------------------------------------------------------------- inference
    @property
    def n_systems(self) -> int:
        self._check_fitted()
        return self.params_["enc_W"].shape[0]

    def _weights(self, names: Sequence[str], systems: torch.Tensor | None) -> list[torch.Tensor]:
        ws = [self.params_[k] for k in names]
        return ws if systems is None else [w.index_select(0, systems) for w in ws]

    def encode_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable ``(mu, log sigma)`` of q(z|x): ``X`` (S', N, d) -> two (S', N, latent)."""
        W, b, Wm, bm, Ws, bs = self._weights(_ENCODER, systems)
        h = torch.relu(torch.matmul(X, W) + b)
        return torch.matmul(h, Wm) + bm, torch.matmul(h, Ws) + bs

    def decode_stacked(self, Z: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable decoder: ``Z`` (S', N, latent) -> (S', N, d)."""
        W1, b1, W2, b2 = self.decoder_weights(systems)
        return torch.matmul(torch.relu(torch.matmul(Z, W1) + b1), W2) + b2

    def decoder_weights(self, systems: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The decoder's ``[W1 (S', latent, hidden), b1 (S', 1, hidden), W2 (S', hidden, d), b2 (S', 1, d)]`` of
        the selected systems (all: None): :meth:`decode_stacked` is ``relu(Z W1 + b1) W2 + b2``."""
        return self._weights(_DECODER, systems)

    def _unstacked_call(self, fn, X: torch.Tensor):
        self._check_fitted()
        X = torch.as_tensor(X, dtype=torch.float32, device=self.device_)
        single = X.ndim == 2
        if single:
            X = X.unsqueeze(0).expand(self.n_systems, -1, -1)
        with torch.no_grad():
            out = fn(X)
        squeeze = single and not self.stacked_
        if isinstance(out, tuple):
            return tuple(o.squeeze(0) for o in out) if squeeze else out
        return out.squeeze(0) if squeeze else out

    def encode(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log sigma)`` of q(z|x); (n, latent) each for a single VAE, (S, n, latent) for a stack."""
        return self._unstacked_call(self.encode_stacked, X)

    def decode(self, Z: torch.Tensor) -> torch.Tensor:
        """Reconstructions (n, d) for a single VAE, (S, n, d) for a stack (``Z`` (n, latent) or (S, n, latent))."""
        return self._unstacked_call(self.decode_stacked, Z)

    def _take_systems(self, new: VAE, index: torch.Tensor) -> None:
        index = index.to(self.device_)
        new.params_ = {k: v.index_select(0, index).clone() for k, v in self.params_.items()}
