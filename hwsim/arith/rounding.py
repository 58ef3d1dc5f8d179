"""Numba primitives that round exact sums into an accumulator register.

Every value an emulated datapath produces is stored in a float64. A float
accumulator's value is always one of the register's numbers, and float64
represents each of them exactly, because the register has at most 50
mantissa bits and its exponent range lies inside float64's normal range
(see accumulators.py).

Correct rounding in two steps. The exact sum x = acc + term is first
rounded to odd at 53 bits, RO53(x): truncate to 53 bits, and set the last
bit when anything was cut off. Then RO53(x) is rounded to the register.
Boldo and Melquiond, "Emulation of a FMA and correctly rounded sums: proved
algorithms using rounding to odd", IEEE Trans. Computers 57(4):462-471,
2008, prove that rounding RO_{p+k}(x) to nearest at p bits (either tie rule)
equals rounding x directly when k >= 2. Truncation is simpler: RO only sets
a bit below position p + k, which truncation to p < p + k bits drops. The
register has p <= 51 significand bits and its subnormal quantum
2**(emin - mantissa_bits) lies at least 2 bits above float64's, so k >= 2.

RO53(a + b) of two float64 values comes from TwoSum: s = fl(a + b)
and err = a + b - s exactly. When err != 0 the exact sum lies strictly
between s and its neighbour toward err; RO53 picks whichever of the two has
an odd last bit. When the sum of the two is known to be exact (see
exactness.py), plain addition is RO53 already.

Sums of many terms that float64 cannot represent go through a fixed-point
accumulator of 32-bit limbs (`limbs_add`, `limbs_round_to_odd`), exact for
any terms that are integer multiples of 2**lsb_exp.

NOTE: Numba's cache checks only the source file of each cached function, so
kernels compiled into kernels.py keep an old copy of these primitives after
this file changes. Clear hwsim/arith/__pycache__ after editing it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

NEAREST_EVEN = 0
NEAREST_AWAY = 1
TOWARD_ZERO = 2

_SIGN_BIT = np.int64(-(2**63))
_MAGNITUDE_MASK = np.int64(2**63 - 1)
_FRACTION_MASK = np.int64(2**52 - 1)
_INF_BITS = np.int64(0x7FF0_0000_0000_0000)
_LIMB_MASK = np.int64(0xFFFF_FFFF)
# 2**27 + 1, Veltkamp's constant that splits a float64 into two 26-bit halves.
_SPLITTER = 134217729.0


@njit(cache=True, inline="always")
def float_bits(x):
    return np.float64(x).view(np.int64)


@njit(cache=True, inline="always")
def bits_float(b):
    return np.int64(b).view(np.float64)


@njit(cache=True, inline="always")
def round_to_register(x, mantissa_bits, emin, max_bits, rounding, saturate):
    """Round x (exact, or RO53 of an exact value) to a float register; return (value, overflowed).

    max_bits is the float64 bit pattern of the register's largest finite value.
    Zeros, Inf and NaN pass through. overflowed is True when a finite x lies
    beyond the register's range after rounding.
    """
    bits = float_bits(x)
    magnitude = bits & _MAGNITUDE_MASK
    biased = magnitude >> 52
    if biased == 2047 or magnitude == 0:
        return x, False
    e = biased - 1023
    # Bits of the float64 fraction below the register's last bit; subnormal
    # results keep fewer bits, with quantum q = 2**(emin - mantissa_bits).
    shift = 52 - mantissa_bits
    if e < emin:
        shift += emin - e
    if shift < 52:
        mask = (np.int64(1) << shift) - 1
        if rounding == NEAREST_EVEN:
            magnitude += (mask >> 1) + ((magnitude >> shift) & 1)
        elif rounding == NEAREST_AWAY:
            magnitude += np.int64(1) << (shift - 1)
        magnitude &= ~mask
    elif shift == 52:
        # x in [q, 2q): the result is q or 2q, and the quotient's last bit is
        # the implicit one, so a tie rounds up to the even 2q.
        if rounding != TOWARD_ZERO and (magnitude & _FRACTION_MASK) >= (np.int64(1) << 51):
            magnitude = (biased + 1) << 52
        else:
            magnitude = biased << 52
    elif shift == 53:
        # x in [q/2, q): a tie (x == q/2) rounds to the even 0 under nearest-even.
        fraction = magnitude & _FRACTION_MASK
        if rounding == NEAREST_AWAY or (rounding == NEAREST_EVEN and fraction != 0):
            magnitude = (biased + 1) << 52
        else:
            magnitude = 0
    else:
        magnitude = 0
    overflowed = magnitude > max_bits
    if overflowed:
        if saturate or rounding == TOWARD_ZERO:
            magnitude = max_bits
        else:
            magnitude = _INF_BITS
    return bits_float(magnitude | (bits & _SIGN_BIT)), overflowed


@njit(cache=True, inline="always")
def add_round_to_odd(x, y):
    """RO53(x + y) for float64 x, y whose exact sum is finite; Inf and NaN propagate."""
    s = x + y
    bb = s - x
    err = (x - (s - bb)) + (y - bb)
    # err is NaN when s is Inf or NaN, which passes through unchanged.
    if err != 0.0 and math.isfinite(s):
        bits = float_bits(s)
        if (bits & 1) == 0:
            if (err > 0.0) == (s > 0.0):
                bits += 1
            else:
                bits -= 1
            s = bits_float(bits)
    return s


@njit(cache=True, inline="always")
def two_product_error(a, b, p):
    """Exact a * b - p for p = fl(a * b), by Dekker's product (no FMA; no overflow or underflow assumed)."""
    c = _SPLITTER * a
    a_hi = c - (c - a)
    a_lo = a - a_hi
    c = _SPLITTER * b
    b_hi = c - (c - b)
    b_lo = b - b_hi
    return ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


@njit(cache=True, inline="always")
def multiply_round_to_odd(a, b):
    """RO53(a * b) for float64 a, b; Inf and NaN propagate."""
    p = a * b
    if not math.isfinite(p) or p == 0.0:
        return p
    err = two_product_error(a, b, p)
    if err != 0.0:
        bits = float_bits(p)
        if (bits & 1) == 0:
            if (err > 0.0) == (p > 0.0):
                bits += 1
            else:
                bits -= 1
            p = bits_float(bits)
    return p


@njit(cache=True, inline="always")
def wrap_or_saturate(x, bits, saturate):
    """Fit the exact integer x into a `bits`-bit two's-complement register; return (value, overflowed)."""
    high = (np.int64(1) << (bits - 1)) - 1
    low = -high - 1
    if low <= x <= high:
        return x, False
    if saturate:
        return (high if x > high else low), True
    modulus = np.int64(1) << bits
    wrapped = x & (modulus - 1)
    if wrapped > high:
        wrapped -= modulus
    return wrapped, True


@njit(cache=True, inline="always")
def _bit_length(x):
    n = 0
    while x > 0:
        x >>= 1
        n += 1
    return n


@njit(cache=True)
def limbs_add(limbs, x, lsb_exp):
    """Add the finite float64 x, an integer multiple of 2**lsb_exp, to the fixed-point limbs exactly.

    Limb i stores a signed count of 2**(lsb_exp + 32 i). Additions are not
    carried until `limbs_round_to_odd`, so each limb takes 2**30 additions of
    values below 2**32 without overflow.
    """
    if x == 0.0:
        return
    bits = float_bits(x)
    magnitude = bits & _MAGNITUDE_MASK
    biased = magnitude >> 52
    significand = (magnitude & _FRACTION_MASK) | (np.int64(1) << 52)
    position = biased - 1075 - lsb_exp
    if position < 0:
        # x is a multiple of 2**lsb_exp, so the bits shifted out are zero.
        significand >>= -position
        position = 0
    index = position >> 5
    offset = position & 31
    low = (significand & ((np.int64(1) << (32 - offset)) - 1)) << offset
    rest = significand >> (32 - offset)
    middle = rest & _LIMB_MASK
    high = rest >> 32
    if bits < 0:
        limbs[index] -= low
        limbs[index + 1] -= middle
        limbs[index + 2] -= high
    else:
        limbs[index] += low
        limbs[index + 1] += middle
        limbs[index + 2] += high


@njit(cache=True)
def limbs_round_to_odd(limbs, lsb_exp):
    """Return RO53 of the value held in the limbs (+0.0 for an exact zero) and clear the limbs."""
    n = limbs.shape[0]
    for i in range(n - 1):
        carry = limbs[i] >> 32
        limbs[i] -= carry << 32
        limbs[i + 1] += carry

    # Work on the magnitude: every limb in [0, 2**32) after the carries.
    negative = limbs[n - 1] < 0
    if negative:
        for i in range(n):
            limbs[i] = -limbs[i]
        for i in range(n - 1):
            carry = limbs[i] >> 32
            limbs[i] -= carry << 32
            limbs[i + 1] += carry
    top = n - 1
    while top >= 0 and limbs[top] == 0:
        top -= 1
    if top < 0:
        return 0.0

    # Gather the leading 62 bits into `significand` and OR the rest into `sticky`.
    significand = limbs[top]
    n_bits = _bit_length(significand)
    i = top - 1
    while i >= 0 and n_bits + 32 <= 62:
        significand = (significand << 32) | limbs[i]
        n_bits += 32
        i -= 1
    sticky = False
    lsb_position = 0
    if i >= 0:
        take = 62 - n_bits
        if take > 0:
            significand = (significand << take) | (limbs[i] >> (32 - take))
            sticky = (limbs[i] & ((np.int64(1) << (32 - take)) - 1)) != 0
        else:
            sticky = limbs[i] != 0
        n_bits += take
        lsb_position = 32 * i + 32 - take
        for j in range(i):
            if limbs[j] != 0:
                sticky = True

    # Round to odd at 53 bits: truncate, and set the last bit when anything was cut.
    if n_bits > 53:
        drop = n_bits - 53
        cut = significand & ((np.int64(1) << drop) - 1)
        significand >>= drop
        lsb_position += drop
        if cut != 0 or sticky:
            significand |= 1
    for j in range(n):
        limbs[j] = 0
    value = math.ldexp(np.float64(significand), lsb_position + lsb_exp)
    return -value if negative else value
