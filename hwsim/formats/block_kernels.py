"""Numba kernels for scaled formats: one scale per group of elements along the last axis.

The input is a 2-D array (rows, length) whose rows are independent. Each
row is cut into groups of `block` elements (the last group may be short,
which is the same as padding it with zeros). Codes are written to a
(rows, groups * block) array, so padding counts in storage.

Two scale families:
- power of two (`encode_pow2_blocks`, OCP MX): the shared exponent only
  shifts each element's exponent, so encoding is exact for any input;
- arbitrary scale (`encode_amax_groups`, INT per group, NVFP4, NF4): the
  scale is amax / element max, rounded into the scale format. Elements are
  x / scale, computed in float32 for float32 input (as GPU kernels do) and
  in float64 for float64 input.
A decoded value is element value x scale, computed exactly in float64 and
rounded once to the output dtype.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from hwsim.formats.kernels import (
    KIND_CODEBOOK,
    KIND_INT,
    NEAREST_EVEN,
    P_CODE_MAX,
    P_NAN_CODE,
    P_WIDTH,
    STOCHASTIC,
    codebook_code,
    decode_float_magnitude,
    decompose_value,
    encode_value,
    finish_float_code,
    float_magnitude_code,
    int_code,
    random_bits,
    round_shift,
)

RULE_OCP = 0
RULE_CEIL = 1


@njit(cache=True, inline="always")
def shared_exponent(amax, rule, elem_emax, elem_max, scale_emin, scale_emax):
    """Shared exponent of a block with largest magnitude amax > 0, clamped to the scale's range."""
    cls, negative, sig, exp2, e = decompose_value(amax)
    if rule == RULE_OCP:
        s = e - elem_emax  # OCP MX v1.0, 6.3: floor(log2(amax)) - emax_elem
    else:
        # Round-up rule: the smallest s with elem_max * 2**s >= amax.
        cls_m, neg_m, sig_m, exp2_m, e_m = decompose_value(elem_max)
        s = e - e_m + 1
        while math.ldexp(elem_max, s - 1) >= amax:
            s -= 1
        while math.ldexp(elem_max, s) < amax:
            s += 1
    if s < scale_emin:
        s = scale_emin
    if s > scale_emax:
        s = scale_emax
    return s


@njit(cache=True, parallel=True)
def encode_pow2_blocks(
    x2, block, p, levels, rule, elem_emax, elem_max, scale_emin, scale_emax, scale_nan_code,
    mode, seed, saturate, codes2, scale_codes, values_table, out2,
):
    """Encode rows of x2 into a power-of-two-scaled block format (MX, block floating point).

    A block holding NaN or Inf gets the scale's NaN code, element codes 0
    and decodes to NaN, as OCP MX v1.0 section 6.3 requires. An all-zero
    block gets the smallest scale (code 0 of E8M0, 2**-127) and decodes to
    zeros. Returns the count of such NaN blocks.
    """
    rows, length = x2.shape
    n_blocks = (length + block - 1) // block
    write_codes = codes2.shape[0] == rows
    write_values = out2.shape[0] == rows
    kind = p[0]
    nan_blocks = np.zeros(rows * n_blocks, np.int64)
    for t in prange(rows * n_blocks):
        r = t // n_blocks
        j = t - r * n_blocks
        start = j * block
        stop = min(start + block, length)
        amax = 0.0
        special = False
        for i in range(start, stop):
            v = abs(np.float64(x2[r, i]))
            if math.isnan(v) or math.isinf(v):
                special = True
            elif v > amax:
                amax = v
        if special:
            nan_blocks[t] = 1
            scale_codes[r, j] = scale_nan_code
            for i in range(start, stop):
                if write_codes:
                    codes2[r, i] = 0
                if write_values:
                    out2[r, i] = np.nan
            if write_codes:
                for i in range(stop, start + block):
                    codes2[r, i] = 0
            continue
        if amax == 0.0:
            s = scale_emin
        else:
            s = shared_exponent(amax, rule, elem_emax, elem_max, scale_emin, scale_emax)
        scale_codes[r, j] = s - scale_emin
        for i in range(start, stop):
            flat = r * length + i
            rbits = random_bits(seed, flat) if mode == STOCHASTIC else np.int64(0)
            xv = np.float64(x2[r, i])
            if kind == KIND_CODEBOOK:
                code = np.int64(codebook_code(math.ldexp(xv, -s), levels, mode, rbits))
            else:
                cls, negative, sig, exp2, e = decompose_value(xv)
                if kind == KIND_INT:
                    code = int_code(cls, negative, sig, exp2 - s, p, mode, rbits) & ((np.int64(1) << p[P_WIDTH]) - 1)
                else:
                    magnitude = np.int64(0)
                    if cls == 1:
                        magnitude = float_magnitude_code(sig, exp2 - s, e - s, p, mode, rbits)
                    code = finish_float_code(cls, negative, magnitude, p, mode, saturate)
            if write_codes:
                codes2[r, i] = code
            if write_values:
                out2[r, i] = math.ldexp(values_table[code], s)
        if write_codes:
            # Padding gets the code of 0.0, which is not code 0 in a codebook.
            pad_code = codebook_code(0.0, levels, NEAREST_EVEN, np.int64(0)) if kind == KIND_CODEBOOK else 0
            for i in range(stop, start + block):
                codes2[r, i] = pad_code
    return nan_blocks.sum()


@njit(cache=True, inline="always")
def round_to_integer(v, mode, rbits):
    """Integer nearest the float64 v in the given mode, without a range limit (|v| < 2**62)."""
    cls, negative, sig, exp2, e = decompose_value(v)
    if cls == 0:
        return np.int64(0)
    if exp2 >= 0:
        q = sig << exp2
    else:
        q = round_shift(sig, -exp2, mode, rbits)
    return -q if negative else q


@njit(cache=True, parallel=True)
def encode_amax_groups(
    x2, block, p, levels, scale_p, scale_max, tensor_scale, elem_max,
    static_amax, asymmetric, compute_f32, mode, seed, saturate,
    codes2, scale_codes, zero_points, values_table, out2,
):
    """Encode rows of x2 into groups scaled by amax / elem_max (or (max - min) / qmax when asymmetric).

    The scale is amax / elem_max * tensor_scale, capped at scale_max and rounded
    to nearest-even into the scale format (NVFP4: UE4M3, with the FP32 per-tensor
    scale g = 448 * 6 / amax_tensor as `tensor_scale`; 1 otherwise).
    Elements are x / (scale / tensor_scale). A scale that rounds to zero makes
    the group zeros, as NVIDIA Transformer Engine's NVFP4 quantizer does (it
    multiplies by an encode factor of 0). Padding gets the code of 0.0.
    static_amax > 0 replaces each group's amax. A group holding NaN or Inf gets
    the scale's NaN code and decodes to NaN. Returns the count of such NaN groups.
    """
    rows, length = x2.shape
    n_blocks = (length + block - 1) // block
    write_codes = codes2.shape[0] == rows
    write_values = out2.shape[0] == rows
    kind = p[0]
    qmax = p[P_CODE_MAX]
    nan_groups = np.zeros(rows * n_blocks, np.int64)
    g32 = np.float32(tensor_scale)
    for t in prange(rows * n_blocks):
        r = t // n_blocks
        j = t - r * n_blocks
        start = j * block
        stop = min(start + block, length)
        amax = 0.0
        lo = 0.0
        hi = 0.0
        special = False
        for i in range(start, stop):
            v = np.float64(x2[r, i])
            if math.isnan(v) or math.isinf(v):
                special = True
            else:
                if abs(v) > amax:
                    amax = abs(v)
                if v < lo:
                    lo = v
                if v > hi:
                    hi = v
        if special:
            nan_groups[t] = 1
            scale_codes[r, j] = scale_p[P_NAN_CODE]
            zero_points[r, j] = 0
            for i in range(start, stop):
                if write_codes:
                    codes2[r, i] = 0
                if write_values:
                    out2[r, i] = np.nan
            if write_codes:
                for i in range(stop, start + block):
                    codes2[r, i] = 0
            continue
        if static_amax > 0.0:
            amax = static_amax
            lo = -static_amax
            hi = static_amax
        # Scale in float32, as GPU quantization kernels compute it.
        if asymmetric:
            raw = (np.float32(hi) - np.float32(lo)) / np.float32(qmax)
        else:
            raw = np.float32(amax) / np.float32(elem_max) * g32
        raw64 = min(np.float64(raw), scale_max)
        scale_code = encode_value(raw64, scale_p, levels, NEAREST_EVEN, np.int64(0), 1)
        scale_codes[r, j] = scale_code
        # The divisor is scale / tensor_scale in float32 for every input dtype,
        # so decoding the stored codes reproduces these values exactly.
        scale32 = np.float32(decode_float_magnitude(scale_code, scale_p))
        divisor32 = scale32 / g32
        divisor64 = np.float64(divisor32)
        zero_group = divisor32 == 0.0
        zp = np.int64(0)
        if asymmetric and not zero_group:
            zp = round_to_integer(np.float64(-np.float32(lo) / scale32), NEAREST_EVEN, np.int64(0))
            zp = min(max(zp, np.int64(0)), qmax)
        if asymmetric:
            zero_points[r, j] = zp
        for i in range(start, stop):
            flat = r * length + i
            rbits = random_bits(seed, flat) if mode == STOCHASTIC else np.int64(0)
            if zero_group:
                v = np.float64(x2[r, i]) * 0.0  # keeps the sign of x, as x * 0 does
            elif compute_f32:
                v = np.float64(np.float32(x2[r, i]) / divisor32)
            else:
                v = np.float64(x2[r, i]) / divisor64
            if asymmetric:
                q = round_to_integer(v, mode, rbits) + zp
                code = min(max(q, np.int64(0)), qmax)
                value = np.float64(code - zp) * divisor64
            else:
                code = encode_value(v, p, levels, mode, rbits, saturate)
                value = values_table[code] * divisor64
            if write_codes:
                codes2[r, i] = code
            if write_values:
                out2[r, i] = value
        if write_codes:
            pad_code = zp if asymmetric else encode_value(0.0, p, levels, NEAREST_EVEN, np.int64(0), saturate)
            for i in range(stop, start + block):
                codes2[r, i] = pad_code
    return nan_groups.sum()
