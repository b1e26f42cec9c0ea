"""The named generators. Each factory returns a :class:`GeneratorSpec` with the paper-era defaults of
CounterfactualExplanations.jl v0.1.5 as used by Altmeyer et al. (SaTML 2023); every one accepts the decision
threshold gamma and the search's step size and iteration cap."""

from __future__ import annotations

from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.generators.terms import ClassifierLoss, Distance, GravitationalPull, MADDistance

STEP_SIZE = 0.01  # Descent(0.01) in the reference code
MAX_STEPS = 100  # T = 100 iterations


def generic(
    threshold: float = 0.5, lambda_cost: float = 0.1, step_size: float = STEP_SIZE, max_steps: int = MAX_STEPS
) -> GeneratorSpec:
    """Generic gradient generator ("Wachter" in the SaTML paper): ``yloss + 0.1 ||X' - X||``, gamma = 0.5.

    With ``threshold=0.9`` this is the paper's "conservative" mitigation.
    """
    return GeneratorSpec(
        "generic", costs=((lambda_cost, Distance()),), threshold=threshold, step_size=step_size, max_steps=max_steps
    )


def wachter(
    threshold: float = 0.5, lambda_cost: float = 0.1, step_size: float = STEP_SIZE, max_steps: int = MAX_STEPS
) -> GeneratorSpec:
    """Wachter et al. (2017): ``yloss + 0.1 sum_j |x'_j - x_j| / MAD_j`` (MAD-weighted L1), gamma = 0.5."""
    return GeneratorSpec(
        "wachter", costs=((lambda_cost, MADDistance()),), threshold=threshold, step_size=step_size,
        max_steps=max_steps,
    )


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
