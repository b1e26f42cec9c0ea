"""The kernel's vectorisable float32 exp and log1p against float64 NumPy: the error in units in the last place
(ulp) of the float32 result, on dense grids and at the edges of their domains."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from recourse_sim.compiled_math import exp_nonpositive, log1p_unit
from recourse_sim.generators.search_kernel import _log_sigmoid_and_slope


@njit(error_model="numpy")
def _both_functions(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(exp_nonpositive, log1p_unit) of every element, as a compiled loop calls them (each test reads the one
    whose domain its inputs are in)."""
    exp, log1p = np.empty_like(x), np.empty_like(x)
    for i in range(x.shape[0]):
        exp[i] = exp_nonpositive(x[i])
        log1p[i] = log1p_unit(x[i])
    return exp, log1p


def _exp_each(x: np.ndarray) -> np.ndarray:
    return _both_functions(x)[0]


def _log1p_each(x: np.ndarray) -> np.ndarray:
    return _both_functions(x)[1]


@njit(error_model="numpy")
def _log_sigmoid_each(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    value, slope = np.empty_like(z), np.empty_like(z)
    for i in range(z.shape[0]):
        value[i], slope[i] = _log_sigmoid_and_slope(z[i])
    return value, slope


def _ulps(result: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.abs(result.astype(np.float64) - exact) / np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)


def _grid(low: float, high: float) -> np.ndarray:
    """A dense float32 grid, with magnitudes down to the smallest normal numbers on both sides of 0."""
    dense = np.linspace(low, high, 1_000_001)
    tiny = np.geomspace(1e-37, max(abs(low), abs(high)), 2_000)
    return np.unique(np.concatenate([dense, tiny * np.sign(low + high), [0.0]]).astype(np.float32))


def test_exp_within_one_ulp_where_the_result_is_normal():
    x = _grid(-87.33, 0.0)
    assert _ulps(_exp_each(x), np.exp(x.astype(np.float64))).max() <= 1.0
    # a rounding error may make a non-positive argument slightly positive
    x = np.linspace(0.0, 0.34, 10_001).astype(np.float32)
    assert _ulps(_exp_each(x), np.exp(x.astype(np.float64))).max() <= 1.0


def test_exp_edges():
    edges = np.array([0.0, -0.0, -1e-45, -87.33654, -87.34, -88.0, -103.0, -1e30, -np.inf, np.nan], np.float32)
    result = _exp_each(edges)
    assert result[0] == 1.0 and result[1] == 1.0 and result[2] == 1.0
    assert 1.17e-38 < result[3] < 1.18e-38  # the smallest normal number, e^-87.33654
    assert np.all(result[4:9] == 0.0)  # subnormal or smaller: 0 (float32's exp gives a subnormal or 0)
    assert np.isnan(result[9])


def test_log1p_within_two_ulps_on_the_unit_interval():
    e = _grid(0.0, 1.0)
    e = e[e > 0]
    assert _ulps(_log1p_each(e), np.log1p(e.astype(np.float64))).max() <= 2.0
    edges = _log1p_each(np.array([0.0, 1e-30, 1.0, np.nan], np.float32))
    assert edges[0] == 0.0 and edges[1] == np.float32(1e-30) and abs(edges[2] - np.log(2.0)) < 1e-7
    assert np.isnan(edges[3])


def test_the_kernels_log_sigmoid_and_its_slope():
    """log sigmoid(z) and 1 - sigmoid(z) as the kernel computes them: relative error below 3e-7 (libm's scalar
    functions give 1.2e-7) over the logits a search meets, and exact limits far out."""
    z = np.linspace(-60.0, 60.0, 200_001).astype(np.float32)
    value, slope = _log_sigmoid_each(z)
    z64 = z.astype(np.float64)
    exact_value = np.minimum(z64, 0.0) - np.log1p(np.exp(-np.abs(z64)))
    exact_slope = 1.0 / (1.0 + np.exp(z64))
    assert np.max(np.abs(value - exact_value) / np.abs(exact_value)) < 3e-7
    assert np.max(np.abs(slope - exact_slope) / exact_slope) < 3e-7
    far = _log_sigmoid_each(np.array([200.0, -200.0], np.float32))
    assert far[0][0] == 0.0 and far[0][1] == np.float32(-200.0)
    assert far[1][0] == 0.0 and far[1][1] == 1.0


@pytest.mark.parametrize("function", [_exp_each, _log1p_each])
def test_results_are_float32(function):
    assert function(np.zeros(3, np.float32)).dtype == np.float32
