"""The named generators. Each factory returns a :class:`GeneratorSpec` with the paper-era defaults of
CounterfactualExplanations.jl v0.1.5 as used by Altmeyer et al. (SaTML 2023); every one accepts the decision
threshold gamma and the search's step size and iteration cap.

Every factory is wrapped by :func:`_checked`: a keyword of the wrong type (``threshold = "0.9"``), a
non-finite number (``step_size = inf``) or an unknown keyword is refused with one :class:`ConfigError` naming
the generator, the keyword, the value and what is allowed; range errors raised by the spec or a term are
prefixed with the generator's name. A Python call and a scenario file therefore get the same message."""

from __future__ import annotations

import functools
import inspect
import math
import types
import typing
from collections.abc import Callable

from recourse_sim.errors import ConfigError
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.generators.terms import (
    ClassifierLoss, ConformalSetSize, Distance, DPPDiversity, Energy, GravitationalPull, L1Distance, MADDistance,
)

STEP_SIZE = 0.01  # Descent(0.01) in the reference code
MAX_STEPS = 100  # T = 100 iterations


def _check_type(generator: str, key: str, value: object, annotation: object) -> None:
    """``float``: a finite real number (an integer is fine); ``int``: an integer; ``X | None``: also None."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    options = typing.get_args(annotation) if union else (annotation,)
    if value is None and type(None) in options:
        return
    field = f"generator[{generator}].{key}"
    if float in options:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = "; write it without quotes" if isinstance(value, str) else ""
            raise ConfigError(field, value, f"a number (got {type(value).__name__}{hint})")
        if not math.isfinite(value):
            raise ConfigError(field, value, "a finite number")
    elif int in options and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(field, value, f"an integer (got {type(value).__name__})")


def _checked(factory: Callable[..., GeneratorSpec]) -> Callable[..., GeneratorSpec]:
    """The factory with its keywords checked against its signature (see the module docstring)."""
    signature = inspect.signature(factory)
    hints = typing.get_type_hints(factory)
    name = factory.__name__

    @functools.wraps(factory)
    def build(*args: object, **kwargs: object) -> GeneratorSpec:
        unknown = [key for key in kwargs if key not in signature.parameters]
        if unknown or len(args) > len(signature.parameters):
            raise ConfigError(f"generator[{name}]", unknown[0] if unknown else args,
                              f"keywords {', '.join(signature.parameters)}")
        for key, value in signature.bind(*args, **kwargs).arguments.items():
            _check_type(name, key, value, hints.get(key))
        try:
            return factory(*args, **kwargs)
        except ConfigError as error:
            if error.field.startswith("generator["):
                raise
            raise ConfigError(f"generator[{name}].{error.field}", error.value, error.allowed) from None

    return build


@_checked
def generic(
    threshold: float = 0.5, lambda_cost: float = 0.1, step_size: float = STEP_SIZE, max_steps: int = MAX_STEPS
) -> GeneratorSpec:
    """Generic gradient generator ("Wachter" in the SaTML paper): ``yloss + 0.1 ||X' - X||``, gamma = 0.5.

    With ``threshold=0.9`` this is the paper's "conservative" mitigation.
    """
    return GeneratorSpec(
        "generic", costs=((lambda_cost, Distance()),), threshold=threshold, step_size=step_size, max_steps=max_steps
    )


@_checked
def wachter(
    threshold: float = 0.5, lambda_cost: float = 0.1, step_size: float = STEP_SIZE, max_steps: int = MAX_STEPS
) -> GeneratorSpec:
    """Wachter et al. (2017): ``yloss + 0.1 sum_j |x'_j - x_j| / MAD_j`` (MAD-weighted L1), gamma = 0.5."""
    return GeneratorSpec(
        "wachter", costs=((lambda_cost, MADDistance()),), threshold=threshold, step_size=step_size,
        max_steps=max_steps,
    )


@_checked
def gravitational(
    threshold: float = 0.5,
    lambda_cost: float = 0.1,
    lambda_extcost: float = 5.0,
    n_neighbours: int = 50,
    tolerance: float = 1e-3,
    step_size: float = STEP_SIZE,
    max_steps: int = MAX_STEPS,
) -> GeneratorSpec:
    """Gravitational generator (Altmeyer et al. 2023): ``yloss + 0.1 ||X' - X|| + 5 ||X' - c||``.

    ``c`` = mean of 50 random current target-class points. No gamma early stop: an individual converges once
    all copies are valid and every |step| < tau = 1e-3, or at the iteration cap.
    """
    return GeneratorSpec(
        "gravitational",
        costs=((lambda_cost, Distance()),),
        extcosts=((lambda_extcost, GravitationalPull(n_neighbours)),),
        threshold=threshold, convergence="threshold_and_small_step", tolerance=tolerance,
        step_size=step_size, max_steps=max_steps,
    )


@_checked
def claproar(
    threshold: float = 0.5,
    lambda_cost: float = 0.1,
    lambda_extcost: float = 5.0,
    tolerance: float = 1e-3,
    step_size: float = STEP_SIZE,
    max_steps: int = MAX_STEPS,
) -> GeneratorSpec:
    """ClaPROAR (Altmeyer et al. 2023): ``yloss + 0.1 ||X' - X|| + 5 BCE(M(x'), yhat(x'))``.

    The external cost (the classifier's own loss at the counterfactual) applies once all copies are valid;
    convergence as for the gravitational generator (valid and every |step| < 1e-3, or the cap).
    """
    return GeneratorSpec(
        "claproar",
        costs=((lambda_cost, Distance()),),
        extcosts=((lambda_extcost, ClassifierLoss()),),
        threshold=threshold, convergence="threshold_and_small_step", tolerance=tolerance,
        step_size=step_size, max_steps=max_steps,
    )


@_checked
def greedy(
    threshold: float = 0.5, epsilon: float = 0.1, n: int = 10, step_size: float | None = None,
    max_steps: int = MAX_STEPS,
) -> GeneratorSpec:
    """Greedy generator (Schut et al. 2021, "Generating interpretable counterfactual explanations by implicit
    minimisation of epistemic and aleatoric uncertainties"; CE.jl ``GreedyGenerator``): yloss only (lambda = 0).

    Each step moves each copy's single most salient allowed feature by ``-epsilon * sign(grad)`` with
    epsilon = 0.1; a feature may change at most n = 10 times before the cap grows (see
    :mod:`recourse_sim.generators.greedy`); gamma = 0.5, T = 100. ``step_size`` is an alias of ``epsilon``.
    """
    return GeneratorSpec(
        "greedy", threshold=threshold, step_size=epsilon if step_size is None else step_size, max_steps=max_steps,
        max_changes=n, strategy="greedy",
    )


@_checked
def revise(
    threshold: float = 0.5, lambda_cost: float = 0.1, step_size: float = STEP_SIZE, max_steps: int = MAX_STEPS
) -> GeneratorSpec:
    """REVISE (Joshi et al. 2019, "Towards realistic individual recourse and actionable explanations in
    black-box decision making systems"): search z in a VAE latent space, ``yloss(M(dec z)) + 0.1 ||dec z - X||``
    (Euclidean over the K-stack), z0 = one encoder sample, gamma = 0.5, Descent(0.01), T = 100.

    The VAE (hidden 32, latent 2 synthetic / 8 real, 100 epochs, Adam 1e-3, batch 50) comes from
    ``SearchContext.vae`` (see :mod:`recourse_sim.generators.latent`); decoded points are projected onto the
    feature constraints.
    """
    return GeneratorSpec(
        "revise", costs=((lambda_cost, Distance()),), threshold=threshold, step_size=step_size,
        max_steps=max_steps, strategy="latent",
    )


@_checked
def clue(
    threshold: float = 0.5, lambda_cost: float = 0.1, step_size: float = STEP_SIZE, max_steps: int = MAX_STEPS
) -> GeneratorSpec:
    """CLUE (Antoran et al. 2021, "Getting a CLUE: a method for explaining uncertainty estimates"): latent search
    minimising the predictive entropy of ``M(dec z)`` + 0.1 ``||dec z - X||_1``; gamma = 0.5, Descent(0.01),
    T = 100 (CE.jl ``CLUEGenerator``; described but not run in the SaTML 2023 paper).

    The objective has no target class: CLUE looks for a nearby *confident* prediction, which for an individual
    deep in the negative region is a more confident negative. It is therefore not a recourse generator in the
    strict sense; its counterfactuals are valid only where the nearest low-entropy region is positive.
    """
    return GeneratorSpec(
        "clue", costs=((lambda_cost, L1Distance()),), threshold=threshold, step_size=step_size,
        max_steps=max_steps, strategy="latent", yloss="entropy",
    )


@_checked
def dice(
    threshold: float = 0.5,
    lambda_cost: float = 0.1,
    lambda_diversity: float = 1.0,
    step_size: float = STEP_SIZE,
    max_steps: int = MAX_STEPS,
) -> GeneratorSpec:
    """DiCE (Mothilal et al. 2020, "Explaining machine learning classifiers through diverse counterfactual
    explanations"): the K copies (K = 5, ``SearchSettings.n_counterfactuals``) are searched jointly,
    ``yloss + 0.1 ||X' - X|| - 1.0 det(Kern)`` with ``Kern_ij = 1 / (1 + ||x'_i - x'_j||)`` plus a deterministic
    1e-5 diagonal jitter (the reference adds random noise); lambda = (0.1, 1.0), gamma = 0.5.
    """
    return GeneratorSpec(
        "dice", costs=((lambda_cost, Distance()),), extcosts=((lambda_diversity, DPPDiversity()),),
        threshold=threshold, step_size=step_size, max_steps=max_steps,
    )


@_checked
def eccco(
    threshold: float = 0.5,
    lambda_cost: float = 0.1,
    lambda_energy: float = 0.5,
    lambda_set_size: float = 0.1,
    coverage: float = 0.95,
    temperature: float = 0.1,
    kappa: float = 1.0,
    tolerance: float = 0.01,
    step_size: float = 0.05,
    max_steps: int = MAX_STEPS,
) -> GeneratorSpec:
    """ECCCo (Altmeyer et al., AAAI 2024, "Faithful model explanations through energy-constrained conformal
    counterfactuals"): ``yloss + 0.1 ||x' - x||_1 + 0.5 (-logit_y+(x')) + 0.1 Omega(x')``.

    Omega is the smooth conformal set-size penalty with T = 0.1, kappa = 1 and q_hat at coverage 0.95 (computed
    from the systems' current data, see :class:`ConformalSetSize`), applied once p >= 0.5. lambda = (0.1 dist,
    0.5 energy, 0.1 set size) are the paper's linearly-separable values (code order [dist, set size, energy]);
    Descent(0.05), T = 100; converges when all copies reach gamma and every |gradient| < 0.01
    (``"threshold_and_small_gradient"``), which a ReLU network's ever-growing logit rarely allows: expect T steps.

    The energy term overshoots on unbounded features (see :class:`Energy`); the ECCCo experiments clamp the
    search to the data range, which here means giving the schema bounds.
    """
    return GeneratorSpec(
        "eccco",
        costs=((lambda_cost, L1Distance()),),
        extcosts=((lambda_energy, Energy()), (lambda_set_size, ConformalSetSize(coverage, temperature, kappa))),
        threshold=threshold, convergence="threshold_and_small_gradient", tolerance=tolerance,
        step_size=step_size, max_steps=max_steps,
    )
