"""The compiled backend of the gradient, greedy and latent searches: which searches it serves, and how one becomes
its arrays.

The engine's ``"gradient"``, ``"greedy"`` and ``"latent"`` strategies run a system here when :func:`unsupported`
(and, for a latent search, :func:`unsupported_vae`) finds nothing to object to (backend ``"auto"`` on the CPU),
else in the torch loop :func:`~recourse_sim.generators.engine.descend`; a gradient or greedy search may do both,
each for its own systems (a latent search's systems share one VAE stack, so they go together). The arithmetic
lives in :mod:`recourse_sim.generators.search_kernel` (numba, imported on first use); this module only checks
and converts, so importing it costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from recourse_sim.device import denormals_kept
from recourse_sim.generators.problem import SearchProblem
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.generators.terms import (
    ClassifierLoss,
    Distance,
    DPPDiversity,
    Energy,
    GravitationalPull,
    L1Distance,
    MADDistance,
    ObjectiveTerm,
)
from recourse_sim.generators.search_codes import (
    CLASSIFIER_LOSS,
    DECREASE,
    DISTANCE,
    DIVERSITY,
    ENERGY,
    FREE,
    GRAVITATIONAL,
    IMMUTABLE,
    INCREASE,
    L1,
    MAD,
    RULES,
)
from recourse_sim.models.classifier import TorchClassifier
from recourse_sim.models.vae import VAE

#: the term classes the kernel differentiates by hand, and their column in its weight matrix
TERM_COLUMNS = {Distance: DISTANCE, GravitationalPull: GRAVITATIONAL, MADDistance: MAD, L1Distance: L1,
                ClassifierLoss: CLASSIFIER_LOSS, Energy: ENERGY, DPPDiversity: DIVERSITY}


def unsupported(problem: SearchProblem, generators: Sequence[GeneratorSpec]) -> list[str | None]:
    """Per system of a gradient search: why the compiled backend cannot search it (None: it can)."""
    common = _unsupported_problem(problem)
    if common is not None:
        return [common] * len(generators)
    chosen: dict[type, ObjectiveTerm] = {}  # the kernel has one weight column, so one setting, per term class
    return [_unsupported_generator(spec, chosen) for spec in generators]


def _unsupported_problem(problem: SearchProblem) -> str | None:
    if problem.factual.device.type != "cpu":
        return f"it runs on the CPU only (the search is on {problem.factual.device})"
    if problem.on_step is not None:
        return "an on_step observer sees every iteration of the torch loop"
    if problem.settings.compile:
        return "search.compile asks for the torch.compile-d step"
    model = problem.model
    if not (isinstance(model, TorchClassifier)
            and type(model).log_proba_stacked is TorchClassifier.log_proba_stacked
            and type(model).logits_stacked is TorchClassifier.logits_stacked):
        return f"the model {type(model).__name__} is not one of the package's stacked ReLU networks"
    return None


def unsupported_vae(vae: VAE) -> str | None:
    """Why the compiled backend cannot decode with ``vae`` in a latent search (None: it can)."""
    if type(vae).decode_stacked is not VAE.decode_stacked:
        return f"the VAE {type(vae).__name__} decodes its own way (the kernel knows VAE.decode_stacked)"
    if vae.device_.type != "cpu":
        return f"it runs on the CPU only (the VAE is on {vae.device_})"
    return None


def decoder_rows(W1: torch.Tensor, b1: torch.Tensor, W2: torch.Tensor, b2: torch.Tensor) -> np.ndarray:
    """One row per system of a VAE decoder's parameters (each (S, ...), as ``VAE.decoder_weights`` gives them) in
    the kernel's layout: [W1 (width, H), b1 (H), W2 (H, d), b2 (d)], row-major."""
    return np.ascontiguousarray(np.concatenate([_array(w).reshape(w.shape[0], -1) for w in (W1, b1, W2, b2)], 1))


def _unsupported_generator(spec: GeneratorSpec, chosen: dict[type, ObjectiveTerm]) -> str | None:
    """Why ``spec`` is not compiled; its terms join ``chosen`` when it is."""
    if spec.yloss != "bce":
        return f"generator {spec.name!r}: yloss {spec.yloss!r} is not compiled (only 'bce')"
    if spec.convergence not in RULES:
        return f"generator {spec.name!r}: convergence {spec.convergence!r} is not compiled"
    for _, term in spec.terms:
        kind = type(term)
        if kind not in TERM_COLUMNS:
            return f"generator {spec.name!r}: the term {kind.__name__} is not compiled"
        if chosen.get(kind, term) != term:
            return f"generator {spec.name!r}: its {kind.__name__} differs from another system's (one per search)"
    chosen.update((type(term), term) for _, term in spec.terms)
    return None


def run_kernel(problem: SearchProblem, generators: Sequence[GeneratorSpec],
               terms: Sequence[tuple[ObjectiveTerm, torch.Tensor]], prepared: Sequence[object], state: torch.Tensor,
               step_size: torch.Tensor, greedy: tuple[torch.Tensor, torch.Tensor, int] | None = None,
               decoder: Sequence[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The search of every system of ``problem`` from ``state`` (S, B, K, d), as one compiled call: returns the
    final state, the convergence flags and the step counts (the engine's ``finish`` makes the result).

    ``terms`` are the pooled terms with their per-system weights and ``prepared`` what their ``prepare`` gave;
    ``step_size`` (S, 1, 1, 1) the step per system (``FeatureSpace.step_size``). ``greedy``: the greedy strategy's
    (epsilon, n) per system, (S,) each, and its tie-break seed (``GreedySpace.kernel_settings``), for its single-feature
    moves instead of gradient steps. ``decoder``: a latent search's VAE decoder per system, (W1, b1, W2, b2) with
    (S, ...) each (``LatentSpace.kernel_settings``); ``state`` then holds latent codes (S, B, K, width).
    """
    import numba

    from recourse_sim.generators import search_kernel  # lazy: numba costs ~0.4 s to import

    S, B, _, d = problem.shape
    prepared_by_class = {type(term): value for (term, _), value in zip(terms, prepared)}
    weights = np.zeros((S, len(TERM_COLUMNS)), np.float32)
    for term, weight in terms:
        weights[:, TERM_COLUMNS[type(term)]] = weight.numpy()
    centres = prepared_by_class.get(GravitationalPull)
    centres = np.zeros((S, B, 0), np.float32) if centres is None else _array(centres)
    mad = prepared_by_class.get(MADDistance)
    mad = np.ones(d, np.float32) if mad is None else _array(mad)

    constraints = problem.context.constraints
    kind = np.full(d, FREE, np.int64)
    active = constraints.active
    for name, code, mask in (("increase", INCREASE, constraints.increase_only),
                             ("decrease", DECREASE, constraints.decrease_only),
                             ("none", IMMUTABLE, constraints.immutable)):
        if name in active:
            kind[mask.numpy()] = code
    groups = [group.tolist() for group in constraints.groups]
    group_of = np.full(d, -1, np.int64)
    group_columns = np.zeros((len(groups), max(map(len, groups), default=0)), np.int64)
    for g, columns in enumerate(groups):
        group_of[columns] = g
        group_columns[g, : len(columns)] = columns
    group_sizes = np.array([len(columns) for columns in groups], np.int64)
    standardizer = problem.context.standardizer
    network = problem.model.network_

    if greedy is None:
        greedy_epsilon, greedy_n, tie_seed = np.zeros(S, np.float32), np.zeros(S, np.float32), 0
    else:
        greedy_epsilon, greedy_n, tie_seed = _array(greedy[0]), _array(greedy[1]), greedy[2]
    if decoder is None:
        decoders, hidden_width = np.zeros((S, 0), np.float32), 0
    else:
        decoders, hidden_width = decoder_rows(*decoder), decoder[0].shape[-1]
    work = _array(state).copy()
    converged = np.zeros((S, B), np.bool_)
    steps = np.zeros((S, B), np.int64)
    arguments = (
        work, _array(problem.factual), _array(problem.factual_std), centres, _array(network.flat),
        problem.systems.numpy().astype(np.int64), np.array((network.n_features, *network.hidden, 1), np.int64),
        network.n_members, _array(standardizer.mean), _array(standardizer.scale), _array(constraints.lower),
        _array(constraints.upper), kind, "bounds" in active, group_of, group_columns, group_sizes, mad,
        _array(step_size.view(S)),
        np.array([g.max_steps for g in generators], np.int64), np.array([RULES[g.convergence] for g in generators]),
        np.log(np.array([g.threshold for g in generators])).astype(np.float32),
        np.array([g.tolerance for g in generators], np.float32), weights,
        np.float32(next((term.jitter for term, _ in terms if isinstance(term, DPPDiversity)), 0.0)),
        greedy is not None, greedy_epsilon, greedy_n, np.uint64(tie_seed), decoder is not None, decoders,
        hidden_width, converged, steps,
    )
    threads = min(problem.threads, numba.config.NUMBA_NUM_THREADS)
    with denormals_kept():  # one float mode on every thread: a result does not depend on the thread
        if threads > 1 and S * B > search_kernel.LANES:
            numba.set_num_threads(threads)
            search_kernel.search_all_parallel(_tasks(S, B, threads, search_kernel.LANES), *arguments)
        else:
            search_kernel.search_all(_tasks(S, B, 1, search_kernel.LANES), *arguments)
    return torch.from_numpy(work), torch.from_numpy(converged), torch.from_numpy(steps)


def _tasks(S: int, B: int, threads: int, lanes: int) -> np.ndarray:
    """Rows (system, first, last + 1): one per system on one thread; on several, about two per thread, in whole
    lane widths (a task ends with a tail of part-empty lanes, so fewer, larger tasks waste less)."""
    size = B if threads == 1 else lanes * max(1, math.ceil(S * B / (2 * threads * lanes)))
    rows = [(s, first, min(first + size, B)) for s in range(S) for first in range(0, B, size)]
    return np.array(rows, np.int64).reshape(-1, 3)


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A float32, C-contiguous NumPy view (or copy) of a CPU tensor."""
    return np.ascontiguousarray(tensor.detach().to(torch.float32).numpy())
