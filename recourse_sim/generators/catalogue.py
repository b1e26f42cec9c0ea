"""The named generators. Each factory returns a :class:`GeneratorSpec` with the paper-era defaults of
CounterfactualExplanations.jl v0.1.5 as used by Altmeyer et al. (SaTML 2023).

A factory states only what makes its generator different (its terms and their weights, its convergence
rule); the options every search generator shares (:data:`COMMON_OPTIONS`: the decision threshold gamma, the
step size and the iteration cap, CounterfactualExplanations.jl's common generator fields) are added by
:func:`generator_factory` with their defaults from :class:`GeneratorSpec`, their one home. A factory that
departs from a common default (ECCCo's step size 0.05) declares the option itself.

Every factory's keywords are checked by :func:`generator_factory`: a keyword of the wrong type
(``threshold = "0.9"``), a non-finite number (``step_size = inf``) or an unknown keyword is refused with one
:class:`ConfigError` naming the generator, the keyword, the value and what is allowed; range errors raised by
the spec or a term are prefixed with the generator's name. A Python call, a scenario file and the dashboard
therefore see the same keywords, defaults and messages (``inspect.signature`` of a factory lists them all)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable

from recourse_sim.errors import ConfigError
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.generators.terms import (
    ClassifierLoss,
    ConformalSetSize,
    Distance,
    DPPDiversity,
    Energy,
    GravitationalPull,
    L1Distance,
    MADDistance,
)
from recourse_sim.metrics.conformal import COVERAGE, KAPPA, TEMPERATURE
from recourse_sim.settings import check_value

#: Options every search generator accepts; defaults from :class:`GeneratorSpec` (gamma 0.5, Descent(0.01), T = 100).
COMMON_OPTIONS = ("threshold", "step_size", "max_steps")
#: lambda1, the weight of the individual cost ||x' - x|| in the reference code's generators.
LAMBDA_COST = 0.1
#: lambda2, the weight of the external cost of the paper's two mitigating generators (gravitational, ClaPROAR).
LAMBDA_EXTCOST = 5.0


def generator_factory(factory: Callable[..., GeneratorSpec]) -> Callable[..., GeneratorSpec]:
    """``factory`` with the common options added to its keywords and every keyword checked (module docstring)."""
    own = inspect.signature(factory).parameters
    spec_fields = {f.name: f for f in dataclasses.fields(GeneratorSpec)}
    spec_hints = typing.get_type_hints(GeneratorSpec)
    common = {name: inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=spec_fields[name].default,
                                      annotation=spec_fields[name].type)
              for name in COMMON_OPTIONS if name not in own}
    # gamma first, then the generator's own options, then the search budget
    ordered = [*(common.pop(n) for n in ("threshold",) if n in common),
               *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own.values()), *common.values()]
    signature = inspect.Signature(ordered)
    hints = {name: spec_hints[name] for name in COMMON_OPTIONS} | typing.get_type_hints(factory)
    name = factory.__name__

    @functools.wraps(factory)
    def build(*args: object, **kwargs: object) -> GeneratorSpec:
        unknown = [key for key in kwargs if key not in signature.parameters]
        if unknown or args:
            raise ConfigError(f"generator[{name}]", unknown[0] if unknown else args,
                              f"keywords {', '.join(signature.parameters)}")
        for key, value in kwargs.items():
            check_value(f"generator[{name}].{key}", value, hints.get(key))
        shared = {key: kwargs.pop(key) for key in COMMON_OPTIONS if key in kwargs and key not in own}
        try:
            spec = factory(**kwargs)
            return spec.replace(**shared) if shared else spec
        except ConfigError as error:
            if error.field.startswith("generator["):
                raise
            raise ConfigError(f"generator[{name}].{error.field}", error.value, error.allowed) from None

    build.__signature__ = signature
    return build


@generator_factory
def generic(lambda_cost: float = LAMBDA_COST) -> GeneratorSpec:
    """Generic gradient generator ("Wachter" in the SaTML paper): ``yloss + 0.1 ||X' - X||``, gamma = 0.5.

    With ``threshold=0.9`` this is the paper's "conservative" mitigation.
    """
    return GeneratorSpec("generic", costs=((lambda_cost, Distance()),))


@generator_factory
def wachter(lambda_cost: float = LAMBDA_COST) -> GeneratorSpec:
    """Wachter et al. (2017): ``yloss + 0.1 sum_j |x'_j - x_j| / MAD_j`` (MAD-weighted L1), gamma = 0.5."""
    return GeneratorSpec("wachter", costs=((lambda_cost, MADDistance()),))


@generator_factory
def gravitational(
    lambda_cost: float = LAMBDA_COST, lambda_extcost: float = LAMBDA_EXTCOST, n_neighbours: int = 50,
    tolerance: float = 1e-3,
) -> GeneratorSpec:
    """Gravitational generator (Altmeyer et al. 2023): ``yloss + 0.1 ||X' - X|| + 5 ||X' - c||``.

    ``c`` = mean of 50 random current target-class points. No gamma early stop: an individual converges once
    all copies are valid and every |step| < tau = 1e-3, or at the iteration cap.
    """
    return GeneratorSpec(
        "gravitational",
        costs=((lambda_cost, Distance()),),
        extcosts=((lambda_extcost, GravitationalPull(n_neighbours)),),
        convergence="threshold_and_small_step", tolerance=tolerance,
    )


@generator_factory
def claproar(
    lambda_cost: float = LAMBDA_COST, lambda_extcost: float = LAMBDA_EXTCOST, tolerance: float = 1e-3,
) -> GeneratorSpec:
    """ClaPROAR (Altmeyer et al. 2023): ``yloss + 0.1 ||X' - X|| + 5 BCE(M(x'), yhat(x'))``.

    The external cost (the classifier's own loss at the counterfactual) applies once all copies are valid;
    convergence as for the gravitational generator (valid and every |step| < 1e-3, or the cap).
    """
    return GeneratorSpec(
        "claproar",
        costs=((lambda_cost, Distance()),),
        extcosts=((lambda_extcost, ClassifierLoss()),),
        convergence="threshold_and_small_step", tolerance=tolerance,
    )


@generator_factory
def greedy(epsilon: float = 0.1, n: int = 10, step_size: float | None = None) -> GeneratorSpec:
    """Greedy generator (Schut et al. 2021, "Generating interpretable counterfactual explanations by implicit
    minimisation of epistemic and aleatoric uncertainties"; CE.jl ``GreedyGenerator``): yloss only (lambda = 0).

    Each step moves each copy's single most salient allowed feature by ``-epsilon * sign(grad)`` with
    epsilon = 0.1; a feature may change at most n = 10 times before the cap grows (see
    :mod:`recourse_sim.generators.greedy`); gamma = 0.5, T = 100. ``step_size`` is an alias of ``epsilon``.
    """
    return GeneratorSpec(
        "greedy", step_size=epsilon if step_size is None else step_size, max_changes=n, strategy="greedy",
    )


@generator_factory
def revise(lambda_cost: float = LAMBDA_COST) -> GeneratorSpec:
    """REVISE (Joshi et al. 2019, "Towards realistic individual recourse and actionable explanations in
    black-box decision making systems"): search z in a VAE latent space, ``yloss(M(dec z)) + 0.1 ||dec z - X||``
    (Euclidean over the K-stack), z0 = one encoder sample, gamma = 0.5, Descent(0.01), T = 100.

    The VAE (hidden 32, latent 2 synthetic / 8 real, 100 epochs, Adam 1e-3, batch 50) comes from
    ``SearchContext.vae`` (see :mod:`recourse_sim.generators.latent`); decoded points are projected onto the
    feature constraints.
    """
    return GeneratorSpec("revise", costs=((lambda_cost, Distance()),), strategy="latent")


@generator_factory
def clue(lambda_cost: float = LAMBDA_COST) -> GeneratorSpec:
    """CLUE (Antoran et al. 2021, "Getting a CLUE: a method for explaining uncertainty estimates"): latent search
    minimising the predictive entropy of ``M(dec z)`` + 0.1 ``||dec z - X||_1``; gamma = 0.5, Descent(0.01),
    T = 100 (CE.jl ``CLUEGenerator``; described but not run in the SaTML 2023 paper).

    The objective has no target class: CLUE looks for a nearby *confident* prediction, which for an individual
    deep in the negative region is a more confident negative. It is therefore not a recourse generator in the
    strict sense; its counterfactuals are valid only where the nearest low-entropy region is positive.
    """
    return GeneratorSpec("clue", costs=((lambda_cost, L1Distance()),), strategy="latent", yloss="entropy")


@generator_factory
def dice(lambda_cost: float = LAMBDA_COST, lambda_diversity: float = 1.0) -> GeneratorSpec:
    """DiCE (Mothilal et al. 2020, "Explaining machine learning classifiers through diverse counterfactual
    explanations"): the K copies (K = 5, ``SearchSettings.n_counterfactuals``) are searched jointly,
    ``yloss + 0.1 ||X' - X|| - 1.0 det(Kern)`` with ``Kern_ij = 1 / (1 + ||x'_i - x'_j||)`` plus a deterministic
    1e-5 diagonal jitter (the reference adds random noise); lambda = (0.1, 1.0), gamma = 0.5.
    """
    return GeneratorSpec("dice", costs=((lambda_cost, Distance()),), extcosts=((lambda_diversity, DPPDiversity()),))


@generator_factory
def eccco(
    lambda_cost: float = LAMBDA_COST,
    lambda_energy: float = 0.5,
    lambda_set_size: float = 0.1,
    coverage: float = COVERAGE,
    temperature: float = TEMPERATURE,
    kappa: float = KAPPA,
    tolerance: float = 0.01,
    step_size: float = 0.05,
) -> GeneratorSpec:
    """ECCCo (Altmeyer et al., AAAI 2024, "Faithful model explanations through energy-constrained conformal
    counterfactuals"): ``yloss + 0.1 ||x' - x||_1 + 0.5 (-logit_y+(x')) + 0.1 Omega(x')``.

    Omega is the smooth conformal set-size penalty with T = 0.1, kappa = 1 and q_hat at coverage 0.95 (computed
    from the systems' current data, see :class:`ConformalSetSize`), applied once p >= 0.5. lambda = (0.1 dist,
    0.5 energy, 0.1 set size) are the paper's linearly-separable values (code order [dist, set size, energy]);
    Descent(0.05), T = 100; converges when all copies reach gamma and every |gradient| < 0.01
    (``"threshold_and_small_gradient"``), which a ReLU network's ever-growing logit rarely allows: expect T steps.

    The energy term overshoots on unbounded features (see :class:`Energy`); the ECCCo experiments clamp the
    search to the data range, which a scenario asks for with ``[data] bounds = "data_range"`` (or schema bounds).
    """
    return GeneratorSpec(
        "eccco",
        costs=((lambda_cost, L1Distance()),),
        extcosts=((lambda_energy, Energy()), (lambda_set_size, ConformalSetSize(coverage, temperature, kappa))),
        convergence="threshold_and_small_gradient", tolerance=tolerance, step_size=step_size,
    )
