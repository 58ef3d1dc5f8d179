"""A vectorised qdq kernel for MX-style formats: float32 input, float elements, power-of-two scales, nearest-even.

This is the hot path of MX emulation. It computes the same values as
`block_kernels.encode_pow2_blocks`, but works on the input's bit fields with
selects only, so the element loop vectorises. Blocks where that shortcut is
not exact are left to the general kernel: see `qdq_pow2_blocks_float32`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from hwsim.formats.block_kernels import RULE_OCP


@njit(cache=True, parallel=True)
def qdq_pow2_blocks_float32(
    bits2, block, m, emin, max_code, sign_mask, overflow_code, elem_emax, elem_max_exp, elem_max_man,
    rule, scale_emin, scale_emax, values_table, out2, slow_blocks,
):
    """qdq of float32 rows (an int32 view, shape (rows, length)) into an MX format, nearest-even.

    Each block takes its amax from the magnitude bits, because integer order
    equals float order for non-negative floats. The shared exponent s follows
    the OCP rule floor(log2(amax)) - elem_emax or the round-up rule. Each
    element is then rounded at exponent e - s with the element kernel's arithmetic.

    The shortcut skips normalising subnormal inputs. That is exact while
    1 - s <= emin + 127, that is s >= -126 - emin (see float_code_from_bits);
    blocks with a smaller s, and blocks that hold NaN or Inf, are marked in
    `slow_blocks` (rows, groups) for the general kernel and left unwritten.
    The ceil rule's largest element magnitude is elem_max_man * 2**elem_max_exp.
    """
    rows, length = bits2.shape
    n_blocks = (length + block - 1) // block
    emin_in = emin + 127
    s_floor = -126 - emin
    for t in prange(rows * n_blocks):
        r = t // n_blocks
        j = t - r * n_blocks
        start = j * block
        stop = min(start + block, length)
        amax_bits = np.int64(0)
        for i in range(start, stop):
            a = np.int64(bits2[r, i]) & 0x7FFFFFFF
            if a > amax_bits:
                amax_bits = a
        if amax_bits >= 0x7F800000:
            slow_blocks[r, j] = 1
            continue
        if amax_bits == 0:
            s = scale_emin
        elif amax_bits < 0x00800000:
            slow_blocks[r, j] = 1  # subnormal amax: leave the exponent search to the general kernel
            continue
        else:
            e_amax = (amax_bits >> 23) - 127
            if rule == RULE_OCP:
                s = e_amax - elem_emax
            else:
                # Smallest s with elem_max * 2**s >= amax, compared on significands:
                # amax = (1 + f) * 2**e_amax and elem_max = elem_max_man * 2**elem_max_exp.
                amax_sig = (amax_bits & 0x7FFFFF) | 0x800000  # amax = amax_sig * 2**(e_amax - 23)
                s = e_amax - 23 - elem_max_exp
                # elem_max_man * 2**s' >= amax_sig, so s' = ceil(log2(amax_sig / elem_max_man)).
                shift = 0
                while (elem_max_man << shift) < amax_sig:
                    shift += 1
                s += shift
            if s < scale_emin:
                s = scale_emin
            if s > scale_emax:
                s = scale_emax
        if s < s_floor:
            slow_blocks[r, j] = 1
            continue
        scale = np.float32(math.ldexp(1.0, s))  # exact: -127 <= s <= 127
        for i in range(start, stop):
            b = np.int64(bits2[r, i]) & 0xFFFFFFFF
            a = b & 0x7FFFFFFF
            exp_field = a >> 23
            e_eff = (exp_field if exp_field > 0 else 1) - s
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
            if b > 0x7FFFFFFF:
                code |= sign_mask
            out2[r, i] = values_table[code] * scale
