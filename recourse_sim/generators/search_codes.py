"""The integer codes the compiled search's glue (:mod:`~recourse_sim.generators.compiled_search`) and its kernel
(:mod:`~recourse_sim.generators.search_kernel`) share: compile-time constants of the kernel, in a module of their
own so that deciding what the kernel can search imports no numba and neither module imports the other's caller.
"""

from __future__ import annotations

#: columns of the per-system term weight matrix: the term classes the kernel differentiates by hand
DISTANCE, GRAVITATIONAL, MAD, L1, CLASSIFIER_LOSS, ENERGY, DIVERSITY = range(7)
#: convergence rules (GeneratorSpec.convergence)
THRESHOLD, SMALL_STEP, SMALL_GRADIENT = range(3)
RULES = {"threshold": THRESHOLD, "threshold_and_small_step": SMALL_STEP, "threshold_and_small_gradient": SMALL_GRADIENT}
#: feature kinds of the projection
FREE, INCREASE, DECREASE, IMMUTABLE = range(4)
