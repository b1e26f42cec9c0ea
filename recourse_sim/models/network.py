"""Stacked multilayer perceptrons: the parameters of S independent systems x M ensemble members in one tensor.

Why stacked: the SaTML 2023 protocol retrains every system each round for 10 epochs at batch size 1 (8,000
sequential optimiser steps per round on the synthetic data). Stepping S systems one by one costs 8,000 x S
tiny steps; stepping the stack costs 8,000 batched ones (DESIGN.md, "Where the time goes").

Why hand-written backpropagation and Adam for training: at batch size 1 the cost of a step is the number of
kernel launches, not arithmetic. Autograd plus ``torch.optim.Adam`` costs several times more launches than
the explicit chain rule below on one flat parameter buffer. On the CPU even that loop is launch-bound (~100 us
per step), so by default a whole training call runs as one compiled loop with the same arithmetic
(:mod:`recourse_sim.models.compiled_training`); the torch loop stays as the GPU path and the reference. The
counterfactual search, which needs gradients with respect to the *inputs* of arbitrary objective terms, uses
autograd through :meth:`StackedMLP.member_logits`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from recourse_sim.cores import split_over_threads
from recourse_sim.device import flush_denormals, one_blas_thread


# Inference activations per chunk of systems: below glibc's largest dynamic mmap threshold (32 MiB), so freed
# blocks go back to the heap and are reused rather than unmapped and faulted in again.
_CHUNK_BYTES = 8 * 2**20


@dataclass(frozen=True)
class AdamSettings:
    """Adam with Flux 0.13 defaults (lr 1e-3, betas (0.9, 0.999), eps 1e-8) as used by the reference code."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


class StackedMLP:
    """``S x M`` ReLU MLPs mapping ``d`` features to one logit, stored as views of one flat buffer.

    ``hidden=()`` is logistic regression (``Linear(d, 1)``). Weights are Glorot-uniform and biases zero
    (Flux's ``Dense`` defaults, as in the reference code). ``dropout`` is applied after every hidden layer
    during training only.
    """

    def __init__(
        self,
        n_systems: int,
        n_members: int,
        n_features: int,
        hidden: Sequence[int] = (),
        dropout: float = 0.0,
        device: torch.device | str = "cpu",
        rng: torch.Generator | None = None,
    ) -> None:
        self.n_systems, self.n_members, self.n_features = n_systems, n_members, n_features
        self.hidden, self.dropout = tuple(hidden), float(dropout)
        sizes = (n_features, *self.hidden, 1)
        self._shapes = [((fi, fo), (1, fo)) for fi, fo in zip(sizes[:-1], sizes[1:])]
        per_system = n_members * sum(fi * fo + fo for fi, fo in zip(sizes[:-1], sizes[1:]))
        self.flat = torch.zeros(n_systems, per_system, device=device)
        self._bind_views()
        for W in self.weights:
            fan_in, fan_out = W.shape[-2:]
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            # Draw on CPU so a seed gives the same initial weights on every device.
            W.copy_(torch.empty(W.shape).uniform_(-bound, bound, generator=rng))

    def track_gradients(self, on: bool) -> None:
        """Let autograd see the flat parameter buffer (or stop it), for training on an objective of one's own
        (Counterfactual Training). The views are rebound after the switch: views made before it would not carry
        gradients (made when the buffer did not require them) or would keep building graphs (after)."""
        self.flat.requires_grad_(on)
        self._bind_views()

    def _bind_views(self) -> None:
        """Expose ``weights[l]`` (S, M, fan_in, fan_out) and ``biases[l]`` (S, M, 1, fan_out) as views."""
        S, M = self.n_systems, self.n_members
        self.weights, self.biases = [], []
        offset = 0
        for w_shape, b_shape in self._shapes:
            for shape, out in ((w_shape, self.weights), (b_shape, self.biases)):
                size = M * shape[0] * shape[1]
                out.append(self.flat[:, offset : offset + size].view(S, M, *shape))
                offset += size

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [p for pair in zip(self.weights, self.biases) for p in pair]

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def clone(self) -> StackedMLP:
        return self.select(torch.arange(self.n_systems, device=self.device))

    def select(self, systems: torch.Tensor | Sequence[int]) -> StackedMLP:
        """A new stack holding copies of the given systems (indices may repeat: used to fan out)."""
        systems = torch.as_tensor(systems, dtype=torch.long, device=self.device)
        new = object.__new__(StackedMLP)
        new.__dict__.update(self.__dict__)
        new.n_systems = int(systems.numel())
        new.flat = self.flat.index_select(0, systems).clone()
        new._bind_views()
        return new

    def to(self, device: torch.device | str) -> StackedMLP:
        new = self.clone()
        new.flat = new.flat.to(device)
        new._bind_views()
        return new

    # ----------------------------------------------------------------- inference (autograd-friendly)
    def member_logits(
        self, X: torch.Tensor, systems: torch.Tensor | None = None, dropout_rng: torch.Generator | None = None
    ) -> torch.Tensor:
        """Logits of every member: ``X`` (S, n, d) -> (S, M, n). ``systems`` selects a subset of the stack.

        ``dropout_rng``: the training forward pass, with inverted dropout after every hidden layer (keep with
        probability ``1 - dropout``, scaled by ``1 / (1 - dropout)``; the masks of :meth:`_keep_mask`, drawn from
        it); None, the inference pass (no dropout). Differentiable either way (Counterfactual Training uses it).
        """
        weights, biases = self.weights, self.biases
        if systems is not None:
            weights = [W.index_select(0, systems) for W in weights]
            biases = [b.index_select(0, systems) for b in biases]
        drop = dropout_rng is not None and self.dropout > 0
        per_system = self.n_members * X.shape[-2] * max(self.hidden, default=1) * X.element_size()
        chunk = max(1, _CHUNK_BYTES // max(per_system, 1))  # (no rows: one pass)
        if drop or torch.is_grad_enabled() or chunk >= X.shape[0] or X.device.type != "cpu":
            return self._forward(X, weights, biases, dropout_rng if drop else None)
        # CPU inference on many rows: a few systems at a time, so each layer's (chunk, M, n, width) activations are
        # small enough for malloc to reuse one block instead of mapping (and page-faulting) fresh memory
        # for every layer (35 real-data ensembles x 5,000 rows: 0.48 -> 0.21 s, and 0.99 s before the in-place
        # bias and ReLU). Each system's products are the same batched-matmul entries as in one call: the same bits.
        out = X.new_empty(X.shape[0], self.n_members, X.shape[-2])
        for start in range(0, X.shape[0], chunk):
            part = slice(start, start + chunk)
            out[part] = self._forward(X[part], [W[part] for W in weights], [b[part] for b in biases], None)
        return out

    def _forward(self, X: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor],
                 dropout_rng: torch.Generator | None) -> torch.Tensor:
        """:meth:`member_logits` on the given stacked layers; dropout masks drawn from ``dropout_rng`` unless None."""
        h = X.unsqueeze(1)
        last = len(weights) - 1
        for layer, (W, b) in enumerate(zip(weights, biases)):
            # bias and ReLU in place: no second (S, M, n, width) tensor per layer (autograd-safe: matmul's
            # backward needs its inputs, not its output; ReLU's needs its output)
            h = torch.matmul(h, W).add_(b)
            if layer < last:
                h = h.relu_()
                if dropout_rng is not None:
                    h = h * (self._keep_mask(h, dropout_rng) / (1.0 - self.dropout))
        return h.squeeze(-1)

    def log_proba(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        """log p(y = 1 | x) with the ensemble probability = mean of member sigmoids: (S, n, d) -> (S, n)."""
        member = F.logsigmoid(self.member_logits(X, systems))
        if self.n_members == 1:
            return member.squeeze(1)
        return torch.logsumexp(member, dim=1) - math.log(self.n_members)

    def proba(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        return self.log_proba(X, systems).exp()

    # ----------------------------------------------------------------- training (explicit gradients)
    @flush_denormals()
    def train(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        epochs: int,
        batch_size: int = 1,
        adam: AdamSettings = AdamSettings(),
        shuffle: bool = False,
        rng: torch.Generator | None = None,
        backend: str = "auto",
    ) -> None:
        """Minimise the mean binary cross-entropy with logits of every member on its system's data.

        ``X`` (S, n, d), ``y`` (S, n). A fresh Adam state is created on every call (the reference code builds
        a new ``Adam()`` each round); batches are taken in row order unless ``shuffle``, in which case each
        epoch's order is ``torch.randperm(n, generator=rng)``. Members and systems have disjoint parameters and
        Adam is element-wise, so one stacked step equals S x M separate steps.

        ``backend``: ``"compiled"`` runs the whole call (all epochs, rows, systems and members) as one
        numba-compiled loop (:mod:`recourse_sim.models.compiled_training`; CPU only); ``"torch"`` is the
        stepwise loop of torch ops below (one step per mini-batch); ``"auto"`` picks compiled on the CPU and
        torch elsewhere. The GPU path is the stepwise torch loop (no CUDA graph capture: it was not testable on a
        GPU when written).

        The two backends do the same float32 arithmetic and agree to float32 rounding (sums over a mini-batch
        run in a different order; ``tests/test_compiled_training.py`` checks the final weights). Without
        dropout they consume the same draws from ``rng`` (the per-epoch permutations), so a seed gives the same
        batch orders. With dropout they do not draw the same masks: the torch loop draws ``torch.rand`` for every
        hidden layer of every step, the compiled loop draws one seed per call from ``rng`` (after the
        permutations) and generates the masks with splitmix64 streams, one per (system, member); the masks have
        the same distribution (keep with probability ``1 - p``) but different values, so dropout-trained weights
        differ between backends. Either backend is bit-identical across reruns under one seed.
        """
        if backend not in ("auto", "compiled", "torch"):
            raise ValueError(f'backend must be "auto", "compiled" or "torch", not {backend!r}')
        if backend == "auto":
            backend = "compiled" if self.device.type == "cpu" else "torch"
        if backend == "compiled":
            self._train_compiled(X, y, epochs, batch_size, adam, shuffle, rng)
            return
        S, n, _ = X.shape
        m = torch.zeros_like(self.flat)
        v = torch.zeros_like(self.flat)
        step = 0
        y = y.unsqueeze(1).unsqueeze(-1)  # (S, 1, n, 1): broadcast over members
        for _ in range(epochs):
            order = None
            if shuffle:
                order = torch.randperm(n, generator=rng, device=X.device)
            for start in range(0, n, batch_size):
                rows = slice(start, min(start + batch_size, n))
                if order is None:
                    xb, yb = X[:, rows], y[:, :, rows]
                else:
                    idx = order[rows]
                    xb, yb = X[:, idx], y[:, :, idx]
                grad = self._loss_gradient(xb, yb, rng)
                step += 1
                self._adam_step(grad, m, v, step, adam)

    def _train_compiled(
        self, X: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, adam: AdamSettings, shuffle: bool,
        rng: torch.Generator | None,
    ) -> None:
        """:meth:`train` as one compiled call on CPU tensors (numba works on their memory in place)."""
        if self.device.type != "cpu" or X.device.type != "cpu":
            raise ValueError("the compiled training backend runs on the CPU only")
        S, n, d = X.shape
        if epochs < 1 or n == 0:
            return
        # lazy: numba costs ~0.5 s to import
        from recourse_sim.models.compiled_training import BLAS_MIN_ROWS, train_stack, train_stack_through_blas

        if shuffle:  # the same draws, in the same order, as the torch loop
            orders = torch.stack([torch.randperm(n, generator=rng) for _ in range(epochs)]).numpy()
        else:
            orders = np.zeros((0, 0), dtype=np.int64)
        seed = 0
        if self.dropout > 0:
            seed = int(torch.randint(0, 2**62, (1,), generator=rng))
        sizes = np.array((self.n_features, *self.hidden, 1), dtype=np.int64)
        flat = self.flat.detach()
        flat = flat if flat.is_contiguous() else flat.contiguous()
        # mini-batches of >= BLAS_MIN_ROWS rows multiply through BLAS; smaller ones run loops compiled without it
        train = train_stack_through_blas if batch_size >= BLAS_MIN_ROWS else train_stack
        arguments = (
            flat.numpy(), X.detach().to(torch.float32).contiguous().numpy(),
            y.detach().to(torch.float32).contiguous().numpy(), orders, bool(shuffle), sizes, self.n_members,
            int(epochs), int(batch_size), float(adam.lr), float(adam.beta1), float(adam.beta2), float(adam.eps),
            float(self.dropout), np.uint64(seed),
        )
        # (system, member) pairs are independent: with several cores (recourse_sim.cores) they train on several
        # threads, each flushing subnormals as this one does; the weights are the same bits on any number
        with one_blas_thread():
            split_over_threads(S * self.n_members, lambda first, end: train(*arguments, first, end),
                               mode=flush_denormals)
        if flat.data_ptr() != self.flat.data_ptr():
            self.flat.copy_(flat)

    def _loss_gradient(self, xb: torch.Tensor, yb: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
        """Gradient of the batch-mean BCE-with-logits for every member, flattened like ``self.flat``.

        Written for few passes over the (S*M, n, hidden) activations, which dominate the cost of retraining
        the real-data ensembles: the bias add is fused into ``baddbmm``; ReLU and dropout are applied in place
        as float multiplications (comparisons to bool masks and bool-to-float casts cost several times more on
        CPU); inverted dropout's ``1 / (1 - p)`` is folded into the next layer's small weight matrix; and the
        backward gate ``relu'(pre) * keep`` is read back from the stored activation (:func:`_positive`).
        """
        S, M = self.n_systems, self.n_members
        n = xb.shape[1]
        scale = 1.0 / (1.0 - self.dropout)
        h = xb.unsqueeze(1).expand(S, M, n, xb.shape[-1]).reshape(S * M, n, -1)
        inputs, weights = [], []
        last = len(self.weights) - 1
        for layer, (W, b) in enumerate(zip(self.weights, self.biases)):
            W = W.reshape(S * M, *W.shape[-2:])
            if layer > 0 and self.dropout > 0:
                W = W * scale  # (h * keep * scale) @ W == (h * keep) @ (scale * W)
            inputs.append(h)
            weights.append(W)
            h = torch.baddbmm(b.reshape(S * M, 1, -1), h, W)
            if layer < last:
                h.relu_()
                if self.dropout > 0:
                    h.mul_(self._keep_mask(h, rng))
        # d BCE / d logit = sigmoid(logit) - y, averaged over the batch.
        delta = (torch.sigmoid(h).view(S, M, n, 1) - yb).div_(n).reshape(S * M, n, 1)
        grads: list[torch.Tensor] = []
        for layer in range(last, -1, -1):
            a = inputs[layer]
            grads.append(delta.sum(1).reshape(S, -1))
            grad_W = torch.bmm(a.transpose(1, 2), delta)
            if layer > 0 and self.dropout > 0:
                grad_W.mul_(scale)
            grads.append(grad_W.reshape(S, -1))
            if layer > 0:
                delta = torch.bmm(delta, weights[layer].transpose(1, 2)).mul_(_positive(a))
        grads.reverse()  # now [W0, b0, W1, b1, ...] in flat-buffer order
        return torch.cat(grads, dim=1)

    def _keep_mask(self, like: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
        """Dropout's keep indicator shaped like ``like``, as floats in {0, 1}: ``u >= p`` for ``u ~ U[0, 1)``
        drawn from ``rng``, computed as ``floor(u + 1 - p)`` in place (no bool mask)."""
        u = torch.rand(like.shape, generator=rng, device=like.device)
        return u.add_(1.0 - self.dropout).floor_()

    def _adam_step(self, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: int, adam: AdamSettings) -> None:
        m.lerp_(grad, 1.0 - adam.beta1)
        v.mul_(adam.beta2).addcmul_(grad, grad, value=1.0 - adam.beta2)
        bias1 = 1.0 - adam.beta1**step
        bias2 = 1.0 - adam.beta2**step
        denom = (v / bias2).sqrt_().add_(adam.eps)
        self.flat.addcdiv_(m, denom, value=-adam.lr / bias1)


def _positive(a: torch.Tensor) -> torch.Tensor:
    """``1[a > 0]`` as floats for ``a >= 0`` (post-ReLU activations): ``ceil(min(a, 1))``, in float arithmetic,
    about 4x faster on CPU than ``(a > 0).float()``."""
    return torch.clamp(a, max=1.0).ceil_()
