"""Element arithmetic of the torch qdq: rounding, element codes and values, random bits.

The Numba kernels of `hwsim.formats` make every rounding decision in exact
integer arithmetic on a (significand, exponent) pair. Here the same
decisions are made on floating-point values that stay exact. Scaling by a
power of two (built from exponent bits, never with `pow`), the integer
part of a float and the fraction left over are all exact in IEEE
arithmetic. So `floor`, the fraction and its comparison with 1/2 reproduce
the integer rounding. Stochastic rounding compares the kernels' 32 random
bits (SplitMix64 of seed + flat index) with floor(fraction * 2**32).

One approximation of the kernels is copied on purpose. Where they round a
53-bit significand with `round_shift` (integer and scaled formats, and
float element formats whose smallest normal lies below the input's), a
value below 2**-8 of the target step never rounds up under stochastic
rounding, because `round_shift` treats shifts above 60 as zero. Float
element formats otherwise round on the input's bit fields with the exact
threshold.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from hwsim.formats import kernels as k
from hwsim.formats.params import element_params, levels_of
from hwsim.formats.spec import CodebookFormat, FloatFormat, IntFormat

_TWO_POW_32 = 2.0**32
# Below this fraction of a step, the kernels' 53-bit stochastic rounding never rounds up.
_STOCHASTIC_CUTOFF = 2.0**-8
# Integer codes are at most 16 bits wide, so any magnitude above 2**40 saturates.
_INT_MAGNITUDE_CAP = 2.0**40
# SplitMix64 constants as signed int64, since torch has no uint64 shift on CPU.
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64


# ---------------------------------------------------------------------------
# Building blocks shared by every path.


def random_bits(seed: int, index: torch.Tensor) -> torch.Tensor:
    """32 random bits per element, as int64 in [0, 2**32): SplitMix64 of seed + index * golden ratio.

    The same generator as the kernels' `random_bits`, in wrapping int64
    arithmetic with logical shifts written as arithmetic shifts plus a mask.
    """
    z = index * _GOLDEN + seed
    z = (z ^ _shift_right_logical(z, 30)) * _MIX1
    z = (z ^ _shift_right_logical(z, 27)) * _MIX2
    z = z ^ _shift_right_logical(z, 31)
    return _shift_right_logical(z, 32)


def _shift_right_logical(z: torch.Tensor, bits: int) -> torch.Tensor:
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def pow2(exponent: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Exact 2**exponent from the exponent bits (normal range of `dtype`; callers keep exponents inside it)."""
    if dtype == torch.float64:
        biased = (exponent.to(torch.int64).clamp(-1022, 1023) + 1023) << 52
        return biased.view(torch.float64)
    biased = (exponent.to(torch.int32).clamp(-126, 127) + 127) << 23
    return biased.view(torch.float32)


def floor_log2(magnitude: torch.Tensor) -> torch.Tensor:
    """floor(log2(m)) as int64 for positive finite m (frexp is exact)."""
    return torch.frexp(magnitude)[1].to(torch.int64) - 1


def round_magnitude(val: torch.Tensor, mode: int, rbits: torch.Tensor | None, cutoff: bool) -> torch.Tensor:
    """Round val >= 0 (finite) to an integer-valued float of the same dtype, in rounding mode `mode`.

    cutoff: never round up below 2**-8 under stochastic rounding, as the
    kernels do for 53-bit significands.
    """
    if mode == k.NEAREST_EVEN:
        return torch.round(val)  # round half to even, exact
    q = torch.floor(val)
    if mode == k.TOWARD_ZERO:
        return q
    fraction = val - q  # exact: q is the integer part of val
    if mode == k.NEAREST_AWAY:
        return q + (fraction >= 0.5)
    threshold = torch.floor(fraction * _TWO_POW_32).to(torch.int64)
    up = rbits < threshold
    if cutoff:
        up = up & (val >= _STOCHASTIC_CUTOFF)
    return q + up


def constant(value, like: torch.Tensor) -> torch.Tensor:
    """Return `value` as a 0-dim tensor of `like`'s dtype and device.

    Dividing by a tensor rather than a Python number keeps the division
    exact on CUDA, where torch multiplies by the reciprocal of a scalar
    divisor, and avoids `number / tensor`, which torch computes as
    tensor.reciprocal() * number.
    """
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)


def flat_index(shape: tuple[int, ...], device) -> torch.Tensor:
    n = int(np.prod(shape)) if shape else 1
    return torch.arange(n, dtype=torch.int64, device=device).reshape(shape)


@lru_cache(maxsize=None)
def _device_table(fmt, device: torch.device) -> torch.Tensor:
    """values_table(fmt) on `device`, float64, with -1 mapping to NaN through a trailing entry."""
    table = np.array(fmt.values, dtype=np.float64)
    return torch.from_numpy(np.append(table, np.nan)).to(device)


@lru_cache(maxsize=None)
def device_levels(fmt: CodebookFormat, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(levels_of(fmt), dtype=np.float64)).to(device)


def lookup_values(fmt, codes: torch.Tensor) -> torch.Tensor:
    """float64 value of element codes; code -1 (no code) gives NaN.

    Formats wider than 16 bits are binary32 (FP32), read from their bit pattern.
    """
    if fmt.width > 16:
        signed = torch.where(codes >= 2**31, codes - 2**32, codes).clamp(min=-(2**31))
        return signed.to(torch.int32).view(torch.float32).to(torch.float64)
    table = _device_table(fmt, codes.device)
    return table[torch.where(codes < 0, table.numel() - 1, codes)]


# ---------------------------------------------------------------------------
# Element encoders: each takes values already divided by any scale.


def int_levels(v: torch.Tensor, fmt: IntFormat, mode: int, rbits, cutoff: bool = True) -> torch.Tensor:
    """Integer value (before 2**-frac_bits) nearest v, saturated to the code range; NaN stays NaN.

    The float twin of the kernels' `int_code`.
    """
    val = torch.clamp(v.abs() * float(2**fmt.frac_bits), max=_INT_MAGNITUDE_CAP)
    q = round_magnitude(torch.nan_to_num(val, nan=0.0), mode, rbits, cutoff)
    # Adding +0.0 turns -0.0 into +0.0: an integer code has one zero.
    q = torch.where(v < 0, -q, q).clamp(fmt.code_min, fmt.code_max) + 0.0
    return torch.where(torch.isnan(v), v, q)


def float_codes(v: torch.Tensor, fmt: FloatFormat, mode: int, rbits, saturate: int, cutoff: bool,
                nan_to_zero: bool = False, flush: bool = False) -> torch.Tensor:
    """Stored code (int64) of float64 values v in a float element format; -1 where no code exists.

    The float twin of `float_magnitude_code` followed by `finish_float_code`.
    flush: a finite value whose rounded code is subnormal becomes zero of its sign.
    """
    p = element_params(fmt, nan_to_zero)
    man, emin = int(p[k.P_MAN]), int(p[k.P_EMIN])
    is_nan = torch.isnan(v)
    is_inf = torch.isinf(v)
    is_zero = v == 0
    finite = ~(is_nan | is_inf | is_zero)
    negative = torch.signbit(v)

    magnitude = torch.where(finite, v.abs(), 1.0)
    exponent = torch.clamp(floor_log2(magnitude), min=emin)
    overflow = exponent > int(p[k.P_EMAX_PLUS2])
    exponent = torch.where(overflow, emin, exponent)  # keeps pow2 below in range; the lane is overwritten
    val = torch.where(overflow, 0.0, magnitude * pow2(man - exponent))
    q = round_magnitude(val, mode, rbits, cutoff).to(torch.int64)
    code = ((exponent - emin) << man) + q
    if not fmt.subnormals:
        code = torch.clamp(code - (1 << man), min=0)
    elif flush:
        code = torch.where((code > 0) & (code < (1 << man)), 0, code)
    overflow = finite & (overflow | (code > int(p[k.P_MAX_CODE])))
    code = torch.where(finite, code, 0)
    return _finish_float_codes(code, negative, is_nan, is_inf, is_zero, overflow, p, mode, saturate)


def _finish_float_codes(magnitude, negative, is_nan, is_inf, is_zero, overflow, p, mode, saturate):
    """Vectorised `finish_float_code`: NaN, Inf, overflow and sign rules on magnitude codes."""
    sign_mask, nan_code, inf_code = int(p[k.P_SIGN_MASK]), int(p[k.P_NAN_CODE]), int(p[k.P_INF_CODE])
    max_code, fnuz, nan_zero = int(p[k.P_MAX_CODE]), bool(p[k.P_FNUZ]), bool(p[k.P_NAN_ZERO])
    sign = torch.where(negative, sign_mask, 0)
    signed_nan = torch.full_like(magnitude, nan_code) if (fnuz or sign_mask == 0 or nan_code < 0) else nan_code | sign

    # Overflow of a finite value or an Inf input.
    overflowing = overflow | is_inf
    if saturate == 1 or nan_code < 0:
        magnitude = torch.where(overflowing, max_code, magnitude)
        overflow_to_nan = torch.zeros_like(overflowing)
    else:
        clamp_here = overflow & (mode == k.TOWARD_ZERO)
        magnitude = torch.where(clamp_here, max_code, magnitude)
        remaining = overflowing & ~clamp_here
        if inf_code >= 0:
            magnitude = torch.where(remaining, inf_code, magnitude)
            overflow_to_nan = torch.zeros_like(overflowing)
        else:
            overflow_to_nan = remaining

    # Sign rules.
    if sign_mask == 0:
        code = torch.where(negative & ~((magnitude == 0) & is_zero), nan_code, magnitude)
    elif fnuz:
        code = torch.where(negative & (magnitude != 0), magnitude | sign_mask, magnitude)
    else:
        code = magnitude | sign

    code = torch.where(overflow_to_nan, signed_nan, code)
    if saturate == 0 and inf_code >= 0:
        code = torch.where(is_inf, inf_code | sign, code)
    if nan_code >= 0:
        code = torch.where(is_nan, signed_nan, code)
    elif nan_zero:
        code = torch.where(is_nan, torch.where(negative, 0, sign_mask), code)
    else:
        code = torch.where(is_nan, -1, code)
    return code


def codebook_codes(v: torch.Tensor, levels: torch.Tensor, mode: int, rbits) -> torch.Tensor:
    """Level index that each float64 v rounds to (levels sorted ascending, ends saturate); -1 for NaN.

    The twin of the kernels' `codebook_code`, with the same float64 distances.
    """
    n = levels.numel()
    is_nan = torch.isnan(v)
    value = torch.where(is_nan, levels[0], v)
    lo = (torch.searchsorted(levels, value.contiguous(), right=True) - 1).clamp(0, n - 2)
    hi = lo + 1
    below = value - levels[lo]
    above = levels[hi] - value
    if mode == k.NEAREST_EVEN:
        tie = torch.where((lo & 1) == 0, lo, hi)
        code = torch.where(below < above, lo, torch.where(above < below, hi, tie))
    elif mode == k.NEAREST_AWAY:
        tie = torch.where(levels[hi].abs() >= levels[lo].abs(), hi, lo)
        code = torch.where(below < above, lo, torch.where(above < below, hi, tie))
    elif mode == k.TOWARD_ZERO:
        code = torch.where(value > 0, lo, hi)
    else:
        threshold = (below / (levels[hi] - levels[lo]) * _TWO_POW_32).to(torch.int64)
        code = torch.where(rbits < threshold, hi, lo)
    code = torch.where(below == 0, lo, code)
    code = torch.where(value <= levels[0], 0, torch.where(value >= levels[n - 1], n - 1, code))
    return torch.where(is_nan, -1, code)


def element_values(v: torch.Tensor, element, mode: int, rbits, saturate: int, cutoff: bool = True,
                   nan_to_zero: bool = False, flush: bool = False) -> torch.Tensor:
    """float64 value of each v after rounding into an element format (NaN where no code exists).

    nan_to_zero: NaN encodes as 0.0 in integer and codebook formats, and as the
    zero of opposite sign in float formats without NaN (as ml_dtypes does).
    """
    if isinstance(element, FloatFormat):
        return lookup_values(element, float_codes(v, element, mode, rbits, saturate, cutoff, nan_to_zero, flush))
    if nan_to_zero:
        v = torch.where(torch.isnan(v), 0.0, v)
    if isinstance(element, IntFormat):
        return int_levels(v, element, mode, rbits, cutoff) * float(2.0**-element.frac_bits)
    return lookup_values(element, codebook_codes(v, device_levels(element, v.device), mode, rbits))


def torch_float_dtype(fmt: FloatFormat) -> torch.dtype | None:
    """Return the torch dtype with exactly this format's codes and IEEE rules (fp16, bf16), or None."""
    if not (fmt.special == "ieee" and fmt.signed and fmt.subnormals):
        return None
    return {(5, 10, 15): torch.float16, (8, 7, 127): torch.bfloat16}.get((fmt.exponent_bits, fmt.mantissa_bits, fmt.bias))
