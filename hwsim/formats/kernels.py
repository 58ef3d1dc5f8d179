"""Numba kernels for encode, decode and fused qdq.

Kernels take plain arrays and integers only. A spec is turned into an
int64 parameter vector by `hwsim.formats.params` at the kernel boundary.

Numbers are handled as (negative, significand, exponent) with the value
sig * 2**exp2: the significand is an int64 below 2**54, so every rounding
decision is made in exact integer arithmetic. Power-of-two block scales
only shift `exp2`, which is why MX encoding is exact for any input.

Stochastic rounding uses 32 random bits per element from a counter-based
generator (SplitMix64 of seed + element index), so a result depends on the
seed and the element's flat index, never on the thread count. An element
rounds up with probability floor(residue * 2**32 / ulp) / 2**32.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# Rounding modes.
NEAREST_EVEN = 0
NEAREST_AWAY = 1
TOWARD_ZERO = 2
STOCHASTIC = 3

# Element kinds.
KIND_FLOAT = 0
KIND_INT = 1
KIND_CODEBOOK = 2

# Indices into the element parameter vector built by hwsim.formats.params.
P_KIND = 0
P_MAN = 1  # float: mantissa bits
P_EMIN = 2  # float: exponent of the smallest normal
P_SUBNORMALS = 3  # float: 1 when exponent field 0 encodes subnormals and zero
P_MAX_CODE = 4  # float: largest finite magnitude code
P_SIGN_MASK = 5  # float: sign bit of a code, 0 for unsigned formats
P_NAN_CODE = 6  # float: NaN code (positive), -1 when none
P_INF_CODE = 7  # float: +Inf code, -1 when none
P_FNUZ = 8  # float: 1 when there is no negative zero (0x80 is NaN)
P_CODE_MIN = 9  # int: smallest integer value
P_CODE_MAX = 10  # int: largest integer value
P_FRAC = 11  # int: fraction bits of the fixed point
P_WIDTH = 12  # code width in bits
P_NAN_ZERO = 13  # 1: a NaN input without a NaN code encodes as a zero (floats: of opposite sign, as ml_dtypes does)
P_EMAX_PLUS2 = 14  # float: exponent above which every value overflows
P_FLUSH = 15  # float: 1 when a result that rounds to a subnormal becomes zero of the same sign
N_PARAMS = 16

# Sentinel magnitude code for "overflowed".
_OVERFLOW = np.int64(1) << np.int64(62)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def random_bits(seed, index):
    """32 random bits for element `index`: SplitMix64 of seed + index * golden ratio."""
    z = np.uint64(seed) + np.uint64(index) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.int64(z >> np.uint64(32))


@njit(cache=True, inline="always")
def round_shift(sig, shift, mode, rbits):
    """Round sig / 2**shift to an integer (sig >= 0, shift >= 1) in the given mode."""
    if shift > 60:
        # sig < 2**54, so the quotient is below 2**-6 and rounds to 0 in every
        # nearest mode; stochastic rounding would round up with probability
        # below 2**-6 * 2**-(shift - 60), which is treated as 0.
        return np.int64(0)
    q = sig >> shift
    rem = sig - (q << shift)
    half = np.int64(1) << (shift - 1)
    if mode == NEAREST_EVEN:
        if rem > half or (rem == half and (q & 1) == 1):
            q += 1
    elif mode == NEAREST_AWAY:
        if rem >= half:
            q += 1
    elif mode == STOCHASTIC:
        if shift >= 32:
            threshold = rem >> (shift - 32)
        else:
            threshold = rem << (32 - shift)
        if rbits < threshold:
            q += 1
    return q


@njit(cache=True, inline="always")
def bit_length(x):
    n = 0
    while x > 0:
        x >>= 1
        n += 1
    return n


@njit(cache=True, inline="always")
def decompose_value(v):
    """Split a float64 value into (class, negative, sig, exp2, e).

    class: 0 zero, 1 finite, 2 Inf, 3 NaN. The value is sig * 2**exp2 and
    e = floor(log2(value)).
    """
    if math.isnan(v):
        return 3, 0, np.int64(0), np.int64(0), np.int64(0)
    negative = 1 if (v < 0.0 or (v == 0.0 and math.copysign(1.0, v) < 0.0)) else 0
    a = abs(v)
    if math.isinf(a):
        return 2, negative, np.int64(0), np.int64(0), np.int64(0)
    if a == 0.0:
        return 0, negative, np.int64(0), np.int64(0), np.int64(0)
    f, k = math.frexp(a)
    return 1, negative, np.int64(math.ldexp(f, 53)), np.int64(k - 53), np.int64(k - 1)


@njit(cache=True, inline="always")
def float_magnitude_code(sig, exp2, e, p, mode, rbits):
    """Magnitude code of sig * 2**exp2 (> 0) in a float element format, or _OVERFLOW."""
    m = p[P_MAN]
    emin = p[P_EMIN]
    et = e if e > emin else emin
    if et > p[P_EMAX_PLUS2]:
        return _OVERFLOW
    shift = et - m - exp2
    if shift > 0:
        q = round_shift(sig, shift, mode, rbits)
    else:
        q = sig << (-shift)
    code = ((et - emin) << m) + q
    if p[P_SUBNORMALS] == 0:
        # Without subnormals the implicit one is always there, and a value
        # below the smallest normal clamps to it (E8M0 has no zero).
        code -= np.int64(1) << m
        if code < 0:
            code = 0
    if code > p[P_MAX_CODE]:
        return _OVERFLOW
    return code


@njit(cache=True, inline="always")
def decode_float_magnitude(magnitude, p):
    """Value of a finite, non-negative float code from its fields (no table, any width)."""
    m = p[P_MAN]
    exp_field = magnitude >> m
    man_field = magnitude & ((np.int64(1) << m) - 1)
    if exp_field == 0 and p[P_SUBNORMALS] == 1:
        return math.ldexp(np.float64(man_field), p[P_EMIN] - m)
    exponent = exp_field + p[P_EMIN] - p[P_SUBNORMALS]
    return math.ldexp(np.float64((np.int64(1) << m) + man_field), exponent - m)


@njit(cache=True, inline="always")
def finish_code(cls, negative, magnitude, max_code, sign_mask, nan_code, inf_code, fnuz, nan_zero, mode, saturate, no_code):
    """Apply NaN, Inf, overflow and sign rules to a magnitude code.

    Returns the stored code, or `no_code` (2**width, one past the last code)
    for a NaN input into a format without a NaN code.
    """
    if cls == 3:  # NaN input
        if nan_code >= 0:
            if fnuz == 1 or sign_mask == 0:
                return nan_code
            return nan_code | (sign_mask if negative else 0)
        if nan_zero == 1:
            return 0 if negative else sign_mask
        return no_code
    if cls == 2:  # Inf input
        magnitude = _OVERFLOW
        if saturate == 0 and inf_code >= 0:
            return inf_code | (sign_mask if negative else 0)
    if magnitude == _OVERFLOW:
        if saturate == 1 or nan_code < 0 or (mode == TOWARD_ZERO and cls == 1):
            magnitude = max_code
        elif inf_code >= 0:
            magnitude = inf_code
        else:
            if fnuz == 1:
                return nan_code
            return nan_code | (sign_mask if negative else 0)
    if negative:
        if sign_mask == 0:
            # Unsigned format: zero stays zero, anything below zero has no code but NaN.
            if magnitude == 0 and cls == 0:
                return np.int64(0)
            return nan_code
        if magnitude == 0 and fnuz == 1:
            return np.int64(0)
        return magnitude | sign_mask
    return magnitude


@njit(cache=True, inline="always")
def finish_float_code(cls, negative, magnitude, p, mode, saturate):
    """finish_code with the parameters read from an element parameter vector, after flush-to-zero.

    Flushing happens after rounding: a finite input whose rounded magnitude
    code is subnormal (exponent field 0, mantissa not 0) becomes zero.
    """
    if p[P_FLUSH] == 1 and p[P_SUBNORMALS] == 1 and cls == 1 and 0 < magnitude < (np.int64(1) << p[P_MAN]):
        magnitude = np.int64(0)
    return finish_code(
        cls, negative, magnitude, p[P_MAX_CODE], p[P_SIGN_MASK], p[P_NAN_CODE], p[P_INF_CODE],
        p[P_FNUZ], p[P_NAN_ZERO], mode, saturate, np.int64(1) << p[P_WIDTH],
    )


@njit(cache=True, inline="always")
def float_code_from_bits(
    b, frac_bits, exp_bits, scale_exp, m, emin, subnormals, max_code, emax_plus2,
    sign_mask, nan_code, inf_code, fnuz, nan_zero, mode, rbits, saturate, normalise, no_code,
):
    """Stored code of (IEEE float with bits b) / 2**scale_exp in a float element format.

    The same rounding as float_magnitude_code, written on the input's bit
    fields with scalar parameters, so the element loop has few branches and
    no loads from a parameter array. Returns no_code (2**width) for a NaN
    input when the format has no NaN code.

    normalise=False skips normalising subnormal inputs, which is exact when
    scale_exp == 0 and the format's emin is at or above the input's: the
    input's subnormal step is then a multiple-of-two fraction of the
    format's step, so the unnormalised significand rounds the same way.
    Keeping the loop out lets the compiler vectorise the element loop.
    """
    sign_shift = frac_bits + exp_bits
    negative = (b >> sign_shift) & 1
    a = b & ((np.int64(1) << sign_shift) - 1)
    frac_mask = (np.int64(1) << frac_bits) - 1
    exp_field = a >> frac_bits
    if exp_field == (np.int64(1) << exp_bits) - 1:
        cls = 3 if (a & frac_mask) != 0 else 2
        return finish_code(cls, negative, np.int64(0), max_code, sign_mask, nan_code, inf_code, fnuz, nan_zero, mode, saturate, no_code)
    if a == 0:
        return finish_code(0, negative, np.int64(0), max_code, sign_mask, nan_code, inf_code, fnuz, nan_zero, mode, saturate, no_code)
    bias_in = (np.int64(1) << (exp_bits - 1)) - 1
    sig = a & frac_mask
    if exp_field > 0:
        sig |= np.int64(1) << frac_bits
        e_eff = exp_field - scale_exp
    else:
        e_eff = 1 - scale_exp
        if normalise:
            # Subnormal input: normalise so that the implicit-bit position is set.
            while sig < (np.int64(1) << frac_bits):
                sig <<= 1
                e_eff -= 1
    # e_eff and emin_in are biased as the input format biases its exponent.
    emin_in = emin + bias_in
    code = _OVERFLOW
    if e_eff - emin_in <= emax_plus2 - emin:
        extra = emin_in - e_eff
        if extra < 0:
            extra = 0
        shift = frac_bits - m + extra
        if shift > 62:
            shift = 62
        if shift > 0:
            q = sig >> shift
            rem = sig - (q << shift)
            half = np.int64(1) << (shift - 1)
            if mode == NEAREST_EVEN:
                q += (rem > half) | ((rem == half) & ((q & 1) == 1))
            elif mode == NEAREST_AWAY:
                q += rem >= half
            elif mode == STOCHASTIC:
                if shift >= 32:
                    threshold = rem >> (shift - 32)
                else:
                    threshold = rem << (32 - shift)
                q += rbits < threshold
        else:
            q = sig << (-shift)
        et_off = e_eff - emin_in
        if et_off < 0:
            et_off = 0
        code = (et_off << m) + q
        if subnormals == 0:
            code -= np.int64(1) << m
            if code < 0:
                code = 0
        if code > max_code:
            code = _OVERFLOW
    return finish_code(1, negative, code, max_code, sign_mask, nan_code, inf_code, fnuz, nan_zero, mode, saturate, no_code)


@njit(cache=True, inline="always")
def int_code(cls, negative, sig, exp2, p, mode, rbits):
    """Integer value (before 2**-frac_bits) nearest sig * 2**exp2 in the given mode, saturated to the code range."""
    if cls == 0:
        return np.int64(0)
    if cls == 2:
        return p[P_CODE_MIN] if negative else p[P_CODE_MAX]
    shift = -p[P_FRAC] - exp2
    if shift > 0:
        q = round_shift(sig, shift, mode, rbits)
    elif -shift + bit_length(sig) > 40:
        q = np.int64(1) << 40  # far beyond any 16-bit code range
    else:
        q = sig << (-shift)
    if negative:
        q = -q
    if q < p[P_CODE_MIN]:
        q = p[P_CODE_MIN]
    if q > p[P_CODE_MAX]:
        q = p[P_CODE_MAX]
    return q


@njit(cache=True, inline="always")
def codebook_code(v, levels, mode, rbits):
    """Index of the level that v rounds to; levels sorted ascending, ends saturate."""
    n = levels.shape[0]
    if v <= levels[0]:
        return 0
    if v >= levels[n - 1]:
        return n - 1
    lo = 0
    hi = n - 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if levels[mid] <= v:
            lo = mid
        else:
            hi = mid
    below = v - levels[lo]
    above = levels[hi] - v
    if below == 0.0:
        return lo
    if mode == NEAREST_EVEN:
        if below < above:
            return lo
        if above < below:
            return hi
        return lo if (lo & 1) == 0 else hi
    if mode == NEAREST_AWAY:
        if below < above:
            return lo
        if above < below:
            return hi
        return hi if abs(levels[hi]) >= abs(levels[lo]) else lo
    if mode == TOWARD_ZERO:
        return lo if v > 0.0 else hi
    # stochastic: up with probability below / (levels[hi] - levels[lo])
    if rbits < np.int64(below / (levels[hi] - levels[lo]) * 4294967296.0):
        return hi
    return lo


@njit(cache=True, inline="always")
def encode_value(v, p, levels, mode, rbits, saturate):
    """Element code of a float64 value; 2**width when the value has no code (NaN into a format without NaN).

    With P_NAN_ZERO set, a NaN into an integer or codebook format encodes as 0.0 does.
    """
    kind = p[P_KIND]
    if kind == KIND_CODEBOOK:
        if math.isnan(v):
            if p[P_NAN_ZERO] == 0:
                return np.int64(1) << p[P_WIDTH]
            v = 0.0
        return np.int64(codebook_code(v, levels, mode, rbits))
    cls, negative, sig, exp2, e = decompose_value(v)
    if kind == KIND_INT:
        if cls == 3:
            if p[P_NAN_ZERO] == 0:
                return np.int64(1) << p[P_WIDTH]
            cls = 0
        q = int_code(cls, negative, sig, exp2, p, mode, rbits)
        return q & ((np.int64(1) << p[P_WIDTH]) - 1)
    magnitude = np.int64(0)
    if cls == 1:
        magnitude = float_magnitude_code(sig, exp2, e, p, mode, rbits)
    return finish_float_code(cls, negative, magnitude, p, mode, saturate)


# The four element kernels below differ only in the input layout (a literal,
# binary32 or binary64) and in what they store (codes or values). Each store
# is unconditional and the parameters are scalars read before the loop, so
# the compiler folds the masks and vectorises the loop, which makes it
# several times faster than one kernel with flags. A NaN input into a format
# without a NaN code gets the index 2**width: its code is stored as 0 and its
# value, values_table[2**width], is NaN; callers count such inputs.


@njit(cache=True, parallel=True)
def qdq_float32_bits(bits, p, mode, seed, saturate, values_table, out):
    """values_table[code] of binary32 bit patterns (an int32 view) in a float element format.

    Subnormal inputs are not normalised (see float_code_from_bits). That is
    exact for formats whose smallest normal is at or above the input's, so
    callers send other formats to encode_values.
    """
    m, emin, subnormals, max_code, emax_plus2 = p[P_MAN], p[P_EMIN], p[P_SUBNORMALS], p[P_MAX_CODE], p[P_EMAX_PLUS2]
    sign_mask, nan_code, inf_code, fnuz, nan_zero = p[P_SIGN_MASK], p[P_NAN_CODE], p[P_INF_CODE], p[P_FNUZ], p[P_NAN_ZERO]
    no_code = np.int64(1) << p[P_WIDTH]
    for i in prange(bits.shape[0]):
        rbits = random_bits(seed, i) if mode == STOCHASTIC else np.int64(0)
        code = float_code_from_bits(
            np.int64(bits[i]) & 0xFFFFFFFF, 23, 8, 0, m, emin, subnormals, max_code, emax_plus2,
            sign_mask, nan_code, inf_code, fnuz, nan_zero, mode, rbits, saturate, False, no_code,
        )
        out[i] = values_table[code]


@njit(cache=True, parallel=True)
def qdq_float32_nearest_even(bits, m, emin, max_code, sign_mask, fnuz, overflow_code, inf_code, nan_code, values_table, out):
    """qdq_float32_bits for nearest-even rounding into a signed format, with the special cases precomputed.

    The arithmetic of float_code_from_bits with mode=NEAREST_EVEN and
    normalise=False, reduced to selects so that the loop vectorises (about
    three times faster than the general kernel). The codes a finite overflow,
    an Inf and a NaN input take are passed in for positive inputs
    (`nan_code` = 2**width when the format has no NaN); the sign is added after.
    """
    emin_in = emin + 127
    no_code = values_table.shape[0] - 1
    for i in prange(bits.shape[0]):
        b = np.int64(bits[i]) & 0xFFFFFFFF
        a = b & 0x7FFFFFFF
        exp_field = a >> 23
        e_eff = exp_field if exp_field > 0 else 1
        extra = emin_in - e_eff
        if extra < 0:
            extra = 0
        shift = 23 - m + extra
        if shift > 25:
            shift = 25  # the significand is below 2**24, so it rounds to 0 from here on
        sig = (a & 0x7FFFFF) | (np.int64(exp_field > 0) << 23)
        q = sig >> shift
        rem = sig - (q << shift)
        half = np.int64(1) << (shift - 1)
        q += (rem > half) | ((rem == half) & ((q & 1) == 1))
        et_off = e_eff - emin_in
        if et_off < 0:
            et_off = 0
        code = (et_off << m) + q
        if code > max_code:
            code = overflow_code
        if exp_field == 0xFF:
            code = inf_code if a == 0x7F800000 else nan_code
        if b > 0x7FFFFFFF and code != no_code and (fnuz == 0 or code != 0):
            code |= sign_mask
        out[i] = values_table[code]


@njit(cache=True, parallel=True)
def qdq_float64_bits(bits, p, mode, seed, saturate, values_table, out):
    """qdq_float32_bits for binary64 bit patterns (an int64 view)."""
    m, emin, subnormals, max_code, emax_plus2 = p[P_MAN], p[P_EMIN], p[P_SUBNORMALS], p[P_MAX_CODE], p[P_EMAX_PLUS2]
    sign_mask, nan_code, inf_code, fnuz, nan_zero = p[P_SIGN_MASK], p[P_NAN_CODE], p[P_INF_CODE], p[P_FNUZ], p[P_NAN_ZERO]
    no_code = np.int64(1) << p[P_WIDTH]
    for i in prange(bits.shape[0]):
        rbits = random_bits(seed, i) if mode == STOCHASTIC else np.int64(0)
        code = float_code_from_bits(
            np.int64(bits[i]), 52, 11, 0, m, emin, subnormals, max_code, emax_plus2,
            sign_mask, nan_code, inf_code, fnuz, nan_zero, mode, rbits, saturate, False, no_code,
        )
        out[i] = values_table[code]


@njit(cache=True, parallel=True)
def encode_float32_bits(bits, p, mode, seed, saturate, codes):
    """Codes of binary32 bit patterns (an int32 view) in a float element format."""
    m, emin, subnormals, max_code, emax_plus2 = p[P_MAN], p[P_EMIN], p[P_SUBNORMALS], p[P_MAX_CODE], p[P_EMAX_PLUS2]
    sign_mask, nan_code, inf_code, fnuz, nan_zero = p[P_SIGN_MASK], p[P_NAN_CODE], p[P_INF_CODE], p[P_FNUZ], p[P_NAN_ZERO]
    no_code = np.int64(1) << p[P_WIDTH]
    for i in prange(bits.shape[0]):
        rbits = random_bits(seed, i) if mode == STOCHASTIC else np.int64(0)
        code = float_code_from_bits(
            np.int64(bits[i]) & 0xFFFFFFFF, 23, 8, 0, m, emin, subnormals, max_code, emax_plus2,
            sign_mask, nan_code, inf_code, fnuz, nan_zero, mode, rbits, saturate, False, no_code,
        )
        codes[i] = code & (no_code - 1)


@njit(cache=True, parallel=True)
def encode_float64_bits(bits, p, mode, seed, saturate, codes):
    """encode_float32_bits for binary64 bit patterns (an int64 view)."""
    m, emin, subnormals, max_code, emax_plus2 = p[P_MAN], p[P_EMIN], p[P_SUBNORMALS], p[P_MAX_CODE], p[P_EMAX_PLUS2]
    sign_mask, nan_code, inf_code, fnuz, nan_zero = p[P_SIGN_MASK], p[P_NAN_CODE], p[P_INF_CODE], p[P_FNUZ], p[P_NAN_ZERO]
    no_code = np.int64(1) << p[P_WIDTH]
    for i in prange(bits.shape[0]):
        rbits = random_bits(seed, i) if mode == STOCHASTIC else np.int64(0)
        code = float_code_from_bits(
            np.int64(bits[i]), 52, 11, 0, m, emin, subnormals, max_code, emax_plus2,
            sign_mask, nan_code, inf_code, fnuz, nan_zero, mode, rbits, saturate, False, no_code,
        )
        codes[i] = code & (no_code - 1)


@njit(cache=True, parallel=True)
def encode_values(x, p, levels, mode, seed, saturate, codes, values_table, out):
    """Encode float values into an element format with no scale (int, codebook, or float from any input dtype).

    Writes codes (length 0 to skip) and values_table[code] (length 0 to skip).
    A NaN input without a code is stored as code 0 with the value NaN.
    """
    n = x.shape[0]
    write_codes = codes.shape[0] == n
    write_values = out.shape[0] == n
    no_code = np.int64(1) << p[P_WIDTH]
    for i in prange(n):
        rbits = random_bits(seed, i) if mode == STOCHASTIC else np.int64(0)
        code = encode_value(np.float64(x[i]), p, levels, mode, rbits, saturate)
        if write_codes:
            codes[i] = code & (no_code - 1)
        if write_values:
            out[i] = values_table[code]
