"""float32 ``exp`` and ``log1p`` that numba-compiled loops can vectorise, for the search kernel's log-sigmoid.

Why: LLVM turns ``np.exp`` and ``np.log1p`` into calls of the C library's scalar functions (this numba build has
no SVML), and a call per lane stops a lane loop from becoming vector instructions. In the search kernel's
log-sigmoid of every copy's logit that cost ~17 ns of the ~95 ns a candidate-step takes on the 10-32-1 benchmark
MLP. Written as polynomials with plain arithmetic, the loops vectorise: 12.3 -> 1.6 ns per log-sigmoid on the
machine this was written on (AVX2).

- :func:`exp_nonpositive`: Cody & Waite range reduction ``x = n ln 2 + r``, ``|r| <= ln 2 / 2``, with ``ln 2`` split
  in two parts so ``n ln 2`` is exact, and the degree-7 minimax polynomial of Cephes' ``expf`` (Moshier, *Methods
  and Programs for Mathematical Functions*, 1989); ``2^n`` put together from its exponent bits. Within 1 ulp of
  the exact value on [-87.3, 0] (tested); 0 below, where the exact value is subnormal (``expf`` would return the
  subnormal: both are far below anything a probability can show).
- :func:`log1p_unit`: ``log(1 + e) = 2 atanh(s)`` with ``s = e / (2 + e)`` in [0, 1/3] for e in [0, 1], the atanh
  series to ``s^15`` (the next term is below 2^-26 of the sum); within 2 ulp (tested).

Imported lazily by its users (numba costs ~0.3 s to import); compiled with ``cache=True``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_F32 = np.float32
_LOG2_E = _F32(1.4426950408889634)
_LN2_HIGH = _F32(0.693359375)  # few mantissa bits: n * _LN2_HIGH is exact for |n| < 2^11
_LN2_LOW = _F32(-2.12194440e-4)
_SMALLEST_NORMAL_EXPONENT = -126
_NORMAL_FLOOR = _F32(-87.33654)  # ln(2^-126): below it exp(x) is subnormal


@intrinsic
def float_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the low 32 bits of the integer ``bits`` (a reinterpretation, no
    conversion): LLVM's ``bitcast``, which costs nothing and vectorises."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if bits.bitwidth > 32:
            value = builder.trunc(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


@njit(cache=True, inline="always", error_model="numpy")
def exp_nonpositive(x: np.float32) -> np.float32:
    """``exp(x)`` in float32 for ``x <= 0`` (see the module docstring); accurate to about 1 ulp up to x = 0.34, so
    a rounding error that makes a non-positive argument slightly positive does no harm."""
    # n = round(x / ln 2): truncation of x log2(e) - 1/2 rounds to nearest where it is negative
    k = np.int32(max(x, _F32(-88.0)) * _LOG2_E - _F32(0.5))
    n = _F32(k)
    r = x - n * _LN2_HIGH - n * _LN2_LOW
    p = _F32(1.9875691500e-4)
    p = p * r + _F32(1.3981999507e-3)
    p = p * r + _F32(8.3334519073e-3)
    p = p * r + _F32(4.1665795894e-2)
    p = p * r + _F32(1.6666665459e-1)
    p = p * r + _F32(5.0000001201e-1)
    p = p * (r * r) + r + _F32(1.0)
    two_to_n = float_from_bits((max(k, _SMALLEST_NORMAL_EXPONENT) + 127) << 23)
    return _F32(0.0) if x < _NORMAL_FLOOR else p * two_to_n


@njit(cache=True, inline="always", error_model="numpy")
def log1p_unit(e: np.float32) -> np.float32:
    """``log(1 + e)`` in float32 for ``0 <= e <= 1`` (see the module docstring)."""
    s = e / (_F32(2.0) + e)
    s2 = s * s
    q = _F32(1.0 / 15.0)
    q = q * s2 + _F32(1.0 / 13.0)
    q = q * s2 + _F32(1.0 / 11.0)
    q = q * s2 + _F32(1.0 / 9.0)
    q = q * s2 + _F32(1.0 / 7.0)
    q = q * s2 + _F32(1.0 / 5.0)
    q = q * s2 + _F32(1.0 / 3.0)
    return _F32(2.0) * (s + s * s2 * q)  # the leading term apart: its rounding alone sets the error
