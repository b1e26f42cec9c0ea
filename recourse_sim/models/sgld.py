"""Stochastic gradient Langevin dynamics (SGLD) over stacked systems: the one home for sampling a classifier's
energy. The JEM (:mod:`recourse_sim.models.jem`) trains with it; ECCCo's unfaithfulness metric draws its
conditional samples with :func:`sample_conditional`.

Energies (Grathwohl et al. 2020; ECCCo, Altmeyer et al. AAAI 2024, appendix): with class logits ``f(x)`` in R^K,
``E(x | y) = -f_y(x)`` (class-conditional) and ``E(x) = -logsumexp_y f_y(x)`` (marginal).

Class logits of a binary model. The JEM has two free class logits, as every ECCCo model does (its experiments
build ``output_dim = length(unique(labels))`` = 2 outputs and a softmax; ``experiments/data/data.jl``). The
package's other classifiers have one logit ``l`` (``p = sigmoid(l)``); they are read as ``[-l/2, +l/2]``. Both
this and ``[0, l]`` give ``softmax = (1 - p, p)``; the symmetric split is the one ECCCo's two-output networks
correspond to: cross-entropy's gradients for the two logits are equal and opposite, so a network trained on it
(Glorot weights, zero biases, Adam) learns only ``f_1 - f_0`` while ``f_0 + f_1`` stays at its zero-mean initial
value. ``[0, l]`` would also give class 0 a flat energy (its chains would be pure noise) and make the marginal
energy depend on which class is called 1. For the recourse target y = 1, ``E(x | 1) = -l/2`` is half of the
energy term of the ECCCo generator (``generators.terms.Energy``, ``-l``): the same lowest-energy ranking and the
same minima, half the drift where the gradient is not clipped.

Update: JointEnergyModels.jl v0.1.3's ``ImproperSGLD`` behind ``ClipValue`` (ECCCo appendix, Eq. biased-sgld),

    x <- x - (phi / 2) * clip_{[-c, c]}(grad_x E_bar) + sigma * eps,   eps ~ N(0, I),

with ``phi = 2``, ``sigma = 0.01`` and value clipping ``c = 0.01`` on by default. ``E_bar`` is the mean energy over a
system's chains, as the Julia code computes it (its ``_energy`` averages before differentiating, so each chain
drifts by its own gradient / n); ``reduction="sum"`` gives the JEM reference's per-chain gradient (Grathwohl's
``sgld_lr = 1`` is ``phi / 2 = 1``; that code does not clip: ``clip=None``). Samples are clamped to the prior's
bounds after the chain, not at every step (the Julia sampler clamps once, after ``mcmc_samples``).

Prior: one scalar box ``U(lo, hi)`` for every feature, ``lo = min_d(mean_d - 3 sd_d)``, ``hi = max_d(mean_d + 3 sd_d)``
(ECCCo's ``prior_sampling_space``, ``n_std = 3``; ``sd`` with Bessel's correction, as Julia's ``std``).

Chains start from a :class:`ReplayBuffer` during training (persistent contrastive divergence: 10,000 samples per
system, a chain restarts from the prior with probability 0.05) and from fresh prior draws at inference
(:func:`sample_conditional`; ECCCo builds a new sampler per counterfactual).

Everything is batched over the systems of a stack, ``(S, n, d)``; every random draw comes from the caller's
``torch.Generator``, made on the generator's device and moved to the data's (a CPU generator gives the same
draws on every device).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from recourse_sim.settings import check_fields, require

#: Replay-buffer size per system (JointEnergyModels.jl ``max_len``, Grathwohl et al.'s ``buffer_size``).
BUFFER_CAPACITY = 10_000
#: Probability that a training chain restarts from the prior (``1 - prob_buffer`` = 0.05; JEM's ``reinit_freq``).
REINIT_PROBABILITY = 0.05
#: Width of the prior box in standard deviations (ECCCo's ``prior_sampling_space(n_std=3)``).
PRIOR_STDS = 3.0

Energy = Callable[[torch.Tensor], torch.Tensor]
"""Per-chain energies ``(S, n, d) -> (S, n)``."""


@dataclass(frozen=True)
class SGLDSettings:
    """The ``ImproperSGLD`` rule (see the module docstring): step ``phi``, noise ``sigma``, value clip, reduction."""

    #: phi: the drift is ``phi / 2`` times the (clipped) energy gradient (``ImproperSGLD(2.0, 0.01)``).
    step_size: float = 2.0
    #: sigma: standard deviation of the Gaussian noise added at every step.
    noise: float = 0.01
    #: Value clip of the gradient (JointEnergyModels' ``clip_grads = 1e-2``); None: no clipping.
    clip: float | None = 0.01
    #: "mean": gradient of the mean energy over a system's chains (the Julia code); "sum": per-chain (JEM).
    reduction: Literal["mean", "sum"] = "mean"

    def __post_init__(self) -> None:
        check_fields(self, "sgld")
        require(self.step_size > 0, "sgld.step_size", self.step_size, "a number > 0")
        require(self.noise >= 0, "sgld.noise", self.noise, "a number >= 0")
        require(self.clip is None or self.clip > 0, "sgld.clip", self.clip, "a number > 0, or None")


# ------------------------------------------------------------------------------------------------ energies
def class_logits(model, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable class logits ``(S', N, K)`` of a stacked classifier at ``X`` (S', N, d).

    A model with ``class_logits_stacked`` (the JEM) gives its own; any other gives ``[-l/2, +l/2]`` from its
    ``logits_stacked`` ``l`` (the mean member logit for an ensemble, as ECCCo's energy takes it; see the module
    docstring for why the symmetric split).
    """
    own = getattr(model, "class_logits_stacked", None)
    if own is not None:
        return own(X, systems)
    half = 0.5 * model.logits_stacked(X, systems)
    return torch.stack([-half, half], dim=-1)


def conditional_energy(logits: torch.Tensor, target: torch.Tensor | int) -> torch.Tensor:
    """``E(x | y) = -f_y(x)``: class logits ``(..., N, K)`` and labels broadcastable to ``(..., N)`` -> ``(..., N)``."""
    target = torch.as_tensor(target, dtype=torch.long, device=logits.device).expand(logits.shape[:-1])
    return -logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)


def marginal_energy(logits: torch.Tensor) -> torch.Tensor:
    """``E(x) = -logsumexp_y f_y(x)``: class logits ``(..., N, K)`` -> ``(..., N)``."""
    return -torch.logsumexp(logits, dim=-1)


# --------------------------------------------------------------------------------------------------- prior
def prior_bounds(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ECCCo's prior box from data ``X`` (..., n, d): ``lo = min_d(mean_d - 3 sd_d)``, ``hi = max_d(mean_d + 3 sd_d)``,
    each shaped ``(...)`` (one box per system of a stack)."""
    mean, sd = X.mean(-2), X.std(-2)
    return (mean - PRIOR_STDS * sd).amin(-1), (mean + PRIOR_STDS * sd).amax(-1)


def _bounds(bounds, n_systems: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi)`` as floats or ``(S,)`` tensors -> two ``(S, 1, 1)`` tensors on ``device``."""
    low, high = (torch.as_tensor(b, dtype=torch.float32, device=device).expand(n_systems) for b in bounds)
    return low.reshape(-1, 1, 1), high.reshape(-1, 1, 1)


def _draw(kind: Callable, shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``kind`` (torch.rand / torch.randn) drawn on the generator's device, returned on ``device``."""
    return kind(shape, generator=generator, device=generator.device).to(device)


def prior_draws(shape: tuple[int, int, int], bounds, generator: torch.Generator,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """``shape = (S, n, d)`` draws from each system's ``U(lo, hi)``; ``bounds = (lo, hi)``, floats or ``(S,)``."""
    device = torch.device(device)
    low, high = _bounds(bounds, shape[0], device)
    return low + (high - low) * _draw(torch.rand, shape, generator, device)


# ---------------------------------------------------------------------------------------------- the chain
def sgld_chain(energy: Energy, x: torch.Tensor, n_steps: int, bounds, generator: torch.Generator,
               settings: SGLDSettings = SGLDSettings()) -> torch.Tensor:
    """Run ``n_steps`` ImproperSGLD steps from ``x`` (S, n, d) on per-chain energies ``energy`` and clamp the end
    points to each system's prior box ``bounds = (lo, hi)`` (floats or ``(S,)``). Returns detached samples.

    The systems are independent: the energy is reduced per system (mean or sum over its n chains) and the
    reductions summed, so a chain's gradient never depends on another system's chains.
    """
    S, n, _ = x.shape
    scale = 1.0 / n if settings.reduction == "mean" else 1.0
    x = x.detach()
    for _ in range(n_steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(x).sum() * scale, x)
        if settings.clip is not None:
            grad = grad.clamp(-settings.clip, settings.clip)
        noise = _draw(torch.randn, x.shape, generator, x.device)
        x = (x.detach() - 0.5 * settings.step_size * grad).add_(noise, alpha=settings.noise)
    low, high = _bounds(bounds, S, x.device)
    return torch.maximum(torch.minimum(x, high), low)


def sample_conditional(
    model,
    target: torch.Tensor | int,
    n_samples: int,
    n_steps: int,
    bounds,
    generator: torch.Generator,
    systems: torch.Tensor | None = None,
    keep_lowest: int | None = None,
    settings: SGLDSettings = SGLDSettings(),
) -> torch.Tensor:
    """Conditional samples ``x ~ p(x | y = target)`` of a fitted stacked classifier from fresh chains.

    ``n_samples`` chains per system start from the prior ``U(lo, hi)`` (``bounds``: floats or ``(S',)``; see
    :func:`prior_bounds`) and run ``n_steps`` SGLD steps on ``E(x | target)``. ``target``: an int, or labels
    broadcastable to ``(S', n_samples)``. ``systems`` picks which of the model's systems to sample (all if None).
    ``keep_lowest``: return only that many samples per system, those of lowest final energy, lowest first.
    ECCCo's unfaithfulness protocol is 50 chains, 500 steps, keep 25 (``distance_from_energy``).

    Returns ``(S', n_samples or keep_lowest, d)`` on the model's device.
    """
    require(isinstance(n_samples, int) and n_samples >= 1, "n_samples", n_samples, "an integer >= 1")
    require(isinstance(n_steps, int) and n_steps >= 0, "n_steps", n_steps, "an integer >= 0")
    require(keep_lowest is None or (isinstance(keep_lowest, int) and 1 <= keep_lowest <= n_samples),
            "keep_lowest", keep_lowest, f"None or an integer in [1, n_samples = {n_samples}]")
    device = model.device_
    if systems is not None:
        systems = torch.as_tensor(systems, dtype=torch.long, device=device).reshape(-1)
    S = model.n_systems if systems is None else len(systems)
    target = torch.as_tensor(target, dtype=torch.long, device=device).expand(S, n_samples)

    def energy(x: torch.Tensor) -> torch.Tensor:
        return conditional_energy(class_logits(model, x, systems), target)

    start = prior_draws((S, n_samples, model.n_features_in_), bounds, generator, device)
    samples = sgld_chain(energy, start, n_steps, bounds, generator, settings)
    if keep_lowest is None:
        return samples
    with torch.no_grad():
        lowest = energy(samples).topk(keep_lowest, dim=1, largest=False).indices  # sorted: lowest first
    return samples.gather(1, lowest.unsqueeze(-1).expand(-1, -1, samples.shape[-1]))


# ------------------------------------------------------------------------------------------ replay buffer
class ReplayBuffer:
    """Persistent chains for training (PCD): per system, the last ``capacity`` samples and their labels.

    A ring buffer (the Julia sampler prepends and truncates; the same contents without copying 10,000 rows per
    step). Every system of a stack pushes the same number of samples per step, so they share one fill level.
    The Julia sampler seeds its buffer with a batch of prior draws; this one starts empty and chains start from
    the prior until it holds samples (the same start distribution).
    """

    def __init__(self, n_systems: int, n_features: int, capacity: int = BUFFER_CAPACITY,
                 reinit_probability: float = REINIT_PROBABILITY, device: torch.device | str = "cpu") -> None:
        self.x = torch.zeros(n_systems, capacity, n_features, device=device)
        self.y = torch.zeros(n_systems, capacity, dtype=torch.long, device=device)
        self.reinit_probability = reinit_probability
        self.size = 0  # filled slots
        self.head = 0  # the next slot to write

    @property
    def capacity(self) -> int:
        return self.x.shape[1]

    def __len__(self) -> int:
        return self.size

    def starts(self, n: int, bounds, generator: torch.Generator) -> torch.Tensor:
        """``n`` chain starts per system ``(S, n, d)``: a uniformly chosen stored sample, or with probability
        ``reinit_probability`` (always, while empty) a prior draw."""
        S, _, d = self.x.shape
        device = self.x.device
        fresh = prior_draws((S, n, d), bounds, generator, device)
        if self.size == 0:
            return fresh
        pick = (_draw(torch.rand, (S, n), generator, device) * self.size).long().clamp_(max=self.size - 1)
        stored = self.x.gather(1, pick.unsqueeze(-1).expand(-1, -1, d))
        reinit = _draw(torch.rand, (S, n, 1), generator, device) < self.reinit_probability
        return torch.where(reinit, fresh, stored)

    def push(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Store samples ``x`` (S, m, d) drawn for labels ``y`` (S, m), overwriting the oldest when full."""
        m = x.shape[1]
        slots = (self.head + torch.arange(m, device=self.x.device)) % self.capacity
        self.x[:, slots] = x.detach()
        self.y[:, slots] = y
        self.head = (self.head + m) % self.capacity
        self.size = min(self.size + m, self.capacity)

    def recent(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k <= len(self)`` most recent samples ``(S, k, d)`` and labels ``(S, k)``, newest first."""
        slots = (self.head - 1 - torch.arange(k, device=self.x.device)) % self.capacity
        return self.x[:, slots], self.y[:, slots]

    def select(self, systems: torch.Tensor) -> ReplayBuffer:
        """A copy holding the given systems (indices may repeat)."""
        new = object.__new__(ReplayBuffer)
        new.__dict__.update(self.__dict__)
        systems = systems.to(self.x.device)
        new.x, new.y = self.x.index_select(0, systems), self.y.index_select(0, systems)
        return new
