"""Bit-counting proofs that decide when plain float arithmetic is already exact.

Notation: Q = 2**(lsb_a + lsb_b), the quantum of every product: each operand
value is an integer multiple of 2**lsb, from the format (spec.OperandProfile)
or, coarser, from the lowest set bit of the values at hand. P bounds
|product|, and S bounds |any partial sum of one output's products|: with the
data at hand, S = min(K P, max_i sum_k |a_ik| max|b|, max|a| max_j sum_k |b_kj|).

Lemma 1 (multiples of Q). Every sum of products is a multiple of Q. Rounding
such an x to a binary float register gives a multiple of Q again. Either x
is representable, or the register's quantum at x exceeds x's lowest set bit,
so it is a multiple of 2Q. In the subnormal range the quantum q is a power
of two, so it is a multiple of Q or it divides x. Hence every register
value, and every sum of register values and products, is an integer
multiple of Q. Rounding to odd at 53 bits keeps this property too.

Lemma 2 (float64 exactness). A multiple n Q of Q with |n| <= 2**53 and
Q >= 2**-1022 is a normal float64 number or zero, so if every partial sum is
bounded by 2**53 Q, float64 addition in any order never rounds.

Lemma 3 (growth). Rounding to nearest moves x by at most 2**-p |x| in the
normal range and q / 2 below it (p significand bits, q the subnormal
quantum), and rounding toward zero never increases |x|. After n roundings a
register value is at most (S + n q) (1 + 2**-p)**n, and never above the
register's largest finite value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from hwsim.arith.accumulators import FloatAccumulator, IntAccumulator
from hwsim.arith.spec import MacSpec

FLOAT32_SIGNIFICAND_BITS = 24
FLOAT32_MIN_SUBNORMAL_EXP = -149
FLOAT32_MAX = float(np.finfo(np.float32).max)


_NO_LSB = 1 << 20  # lowest-bit exponent reported when there is no nonzero finite value


@njit(cache=True, inline="always")
def _lowest_bit_exponent(v):
    """e such that the positive finite float64 v is an odd multiple of 2**e."""
    bits = np.float64(v).view(np.int64)
    biased = bits >> 52
    fraction = bits & ((np.int64(1) << 52) - 1)
    if biased == 0:
        significand, exponent = fraction, np.int64(-1074)
    else:
        significand, exponent = fraction | (np.int64(1) << 52), biased - 1075
    lowest = significand & -significand
    return exponent + (np.float64(lowest).view(np.int64) >> 52) - 1023


@njit(cache=True, parallel=True)
def _row_bounds(x):
    """Bounds of x (batch, rows, K) along its last axis, NaN and Inf skipped.

    Returns (max |x|, max over rows of sum |x|, all finite, min lowest-bit
    exponent of the nonzero values).
    """
    n_batch, rows, k = x.shape
    n = n_batch * rows
    row_max = np.zeros(max(n, 1), np.float64)
    row_sum = np.zeros(max(n, 1), np.float64)
    row_finite = np.ones(max(n, 1), np.bool_)
    row_lsb = np.full(max(n, 1), _NO_LSB, np.int64)
    for r in prange(n):
        t = r // rows
        i = r - t * rows
        largest = 0.0
        total = 0.0
        lsb = _NO_LSB
        for kk in range(k):
            v = abs(np.float64(x[t, i, kk]))
            if math.isfinite(v):
                total += v
                if v > largest:
                    largest = v
                if v != 0.0:
                    lsb = min(lsb, _lowest_bit_exponent(v))
            else:
                row_finite[r] = False
        row_max[r] = largest
        row_sum[r] = total
        row_lsb[r] = lsb
    return row_max.max(), row_sum.max(), row_finite.all(), row_lsb.min()


@njit(cache=True, parallel=True)
def _column_bounds(x):
    """As `_row_bounds` for x (batch, K, columns), summing along K; rows of x are read in order."""
    n_batch, k, cols = x.shape
    tile = 256
    n_tiles = (cols + tile - 1) // tile
    n = n_batch * n_tiles
    tile_max = np.zeros(max(n, 1), np.float64)
    tile_sum = np.zeros(max(n, 1), np.float64)
    tile_finite = np.ones(max(n, 1), np.bool_)
    tile_lsb = np.full(max(n, 1), _NO_LSB, np.int64)
    for task in prange(n):
        t = task // n_tiles
        j0 = (task - t * n_tiles) * tile
        width = min(tile, cols - j0)
        sums = np.zeros(width, np.float64)
        largest = 0.0
        finite = True
        lsb = _NO_LSB
        for kk in range(k):
            for jj in range(width):
                v = abs(np.float64(x[t, kk, j0 + jj]))
                if math.isfinite(v):
                    sums[jj] += v
                    largest = max(largest, v)
                    if v != 0.0:
                        lsb = min(lsb, _lowest_bit_exponent(v))
                else:
                    finite = False
        tile_max[task] = largest
        tile_sum[task] = sums.max() if width > 0 else 0.0
        tile_finite[task] = finite
        tile_lsb[task] = lsb
    return tile_max.max(), tile_sum.max(), tile_finite.all(), tile_lsb.min()


@dataclass(frozen=True)
class DataBounds:
    """Bounds on one GEMM's products, in value units (float) or code units (integer operands).

    lsb_exp: every product is a multiple of 2**lsb_exp, from the values at
    hand (None when taken from the formats alone, or when an operand is all zero).
    """

    max_a: float
    max_b: float
    max_product: float
    max_partial_sum: float
    all_finite: bool
    lsb_exp: int | None = None


def static_value_bounds(mac: MacSpec, k: int) -> DataBounds:
    """Bounds in value units from the formats alone; all_finite is False because float formats may hold NaN."""
    max_a, max_b = mac.profile_a.max_abs, mac.profile_b.max_abs
    return DataBounds(max_a, max_b, max_a * max_b, k * max_a * max_b, False)


def static_integer_bounds(mac: MacSpec, k: int) -> DataBounds:
    """Bounds in code units from the integer formats alone: |code| <= int_max_abs, no NaN or Inf."""
    max_a, max_b = float(mac.profile_a.int_max_abs), float(mac.profile_b.int_max_abs)
    return DataBounds(max_a, max_b, max_a * max_b, k * max_a * max_b, True)


def data_bounds(a: np.ndarray, b: np.ndarray, k: int, b_by_row: bool = False) -> DataBounds:
    """Bounds from a (batch, M, K) and b (batch, K, N), or b (batch, N, K) when b_by_row.

    Sums of float64 magnitudes are computed with rounding: each of the K
    additions of nonnegative terms loses at most a relative 2**-53, so the
    bounds are inflated by (1 + 2**-52)**(K + 2), twice that per addition.
    Sums of integer codes below 2**53 are exact.
    """
    max_a, row_sum, finite_a, lsb_a = _row_bounds(a)
    max_b, col_sum, finite_b, lsb_b = _row_bounds(b) if b_by_row else _column_bounds(b)
    max_product = max_a * max_b
    partial = min(k * max_product, row_sum * max_b, max_a * col_sum)
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        partial *= (1.0 + 2.0**-52) ** (k + 2)
        max_product *= 1.0 + 2.0**-52
    lsb_exp = int(lsb_a + lsb_b) if lsb_a != _NO_LSB and lsb_b != _NO_LSB else None
    return DataBounds(max_a, max_b, max_product, partial, bool(finite_a and finite_b), lsb_exp)


def register_bound(partial_sum: float, n_roundings: int, acc: FloatAccumulator) -> float:
    """Largest finite magnitude a register value can reach (lemma 3)."""
    u = 0.0 if acc.rounding == "toward_zero" else 2.0 ** -acc.precision
    try:
        growth = math.exp(n_roundings * math.log1p(u))
        bound = (partial_sum + n_roundings * acc.min_subnormal) * growth * (1.0 + 2.0**-40)
    except OverflowError:
        bound = math.inf
    return min(bound, acc.max_normal)


@dataclass(frozen=True)
class FloatKernelPlan:
    """Integers that tell the float kernel which additions need checks.

    products_exact: every product of two operand values is a float64 number,
        because their significand bit counts add up to at most 53.
    sums_exact: every register value plus a partial chunk sum, and every sum
        of two register values, is exact in float64 (lemmas 1-3), so plain
        addition replaces TwoSum and the limb fallback.
    lsb_exp: log2 Q, the fixed point of the limb accumulator.
    n_limbs: 32-bit limbs that hold 2 max_register + chunk bound with a carry margin.
    """

    products_exact: bool
    sums_exact: bool
    lsb_exp: int
    n_limbs: int


def plan_float_kernel(mac: MacSpec, bounds: DataBounds, k_padded: int) -> FloatKernelPlan:
    """Decide by lemmas 1-3 which additions of the float kernel need TwoSum checks, and size its limbs."""
    acc = mac.float_accumulator
    assert acc is not None
    pa, pb = mac.profile_a, mac.profile_b
    lsb_exp = _quantum_exp(mac, bounds)
    products_exact = pa.sig_bits + pb.sig_bits <= 53
    chunk = mac.products_per_rounding if mac.order != "pairwise" else 2 * mac.block_length
    chunk_bound = min(chunk * bounds.max_product, bounds.max_partial_sum)
    register = register_bound(bounds.max_partial_sum, k_padded, acc)
    sum_bound = 2.0 * register + chunk_bound
    sums_exact = products_exact and sum_bound < math.ldexp(1.0, 52 + lsb_exp)
    top = 2.0 * acc.max_normal + chunk_bound
    top_exp = math.frexp(top)[1] + 1
    n_limbs = max(4, (top_exp - lsb_exp) // 32 + 4)
    return FloatKernelPlan(products_exact, sums_exact, lsb_exp, n_limbs)


@dataclass(frozen=True)
class FastPathPlan:
    """Choice of exact fast path for one GEMM, or the reason none applies.

    kind: "blas32" or "blas64" (torch matmul on decoded values in float32 or
        float64, K split into chunks of chunk_k), "integer" (exact int64 sums
        of integer codes), or "" when no fast path is provably exact.
    reason: the bound that failed, for kind "".
    """

    kind: str
    chunk_k: int = 0
    reason: str = ""


def plan_fast_path(
    mac: MacSpec, bounds: DataBounds, k_padded: int, integer_operands: bool, m_rows: int, request: str = "auto"
) -> FastPathPlan:
    """Pick an exact fast path when every partial sum is provably exact in the register (proof inline).

    request: "auto" picks the fastest provable path. "blas" or "integer"
    requests that path, and the plan's reason explains why it does not apply.
    """
    if mac.block_length != 1:
        return FastPathPlan("", reason=f"block scales along K make the register round once per block of {mac.block_length}")
    if not bounds.all_finite:
        return FastPathPlan("", reason="operands hold NaN or Inf")
    pa, pb = mac.profile_a, mac.profile_b
    acc = mac.accumulator
    if isinstance(acc, IntAccumulator):
        # Integer register: partial sums of integer codes never leave its range,
        # so no addition wraps or saturates and every order gives the exact sum.
        if bounds.max_partial_sum > acc.max_value:
            return FastPathPlan("", reason=f"partial sums may reach {bounds.max_partial_sum:.6g}, beyond the register's {acc.max_value}")
        quantum_exp = 0
        partial_value = bounds.max_partial_sum
        product_value = bounds.max_product
    else:
        # Float register: partial sums are multiples of Q (lemma 1) below
        # 2**precision Q, so each is representable and no addition rounds.
        if integer_operands:
            # Bounds are in code units; a value is a code times 2**-frac_bits.
            frac_bits = pa.frac_bits + pb.frac_bits
            quantum_exp = (bounds.lsb_exp or 0) - frac_bits
            partial_value = math.ldexp(bounds.max_partial_sum, -frac_bits)
            product_value = math.ldexp(bounds.max_product, -frac_bits)
        else:
            quantum_exp = _quantum_exp(mac, bounds)
            partial_value = bounds.max_partial_sum
            product_value = bounds.max_product
        capacity = math.ldexp(1.0, acc.precision + quantum_exp)
        if partial_value > capacity or partial_value > acc.max_normal:
            return FastPathPlan("", reason=f"partial sums may reach {partial_value:.6g}, beyond the {acc.precision}-bit register's exact range {capacity:.6g}")
        if math.ldexp(1.0, quantum_exp) < acc.min_subnormal:
            return FastPathPlan("", reason="products can be finer than the register's smallest subnormal")
    # The exact sum fits the register, so any exact method reproduces it.
    # Float32 BLAS is exact when the values it multiplies are float32 numbers
    # and every partial sum of a K chunk is a multiple of Q below 2**24 Q
    # (lemma 2 for binary32, with Q >= 2**-149): any summation order, blocking
    # or FMA inside the BLAS then never rounds. Chunk results, each below
    # 2**24 Q, are added in float64, exact by lemma 2 because the total fits
    # the register (at most 2**51 Q). Integer operands go in as codes (Q = 1)
    # and the 2**-frac_bits factors are applied to the exact result.
    if integer_operands:
        quantum_exp, product_units = 0, bounds.max_product
    else:
        product_units = product_value
    quantum = math.ldexp(1.0, quantum_exp)
    float32_values = integer_operands or all(
        p.sig_bits <= FLOAT32_SIGNIFICAND_BITS and p.lsb_exp >= FLOAT32_MIN_SUBNORMAL_EXP and p.max_abs <= FLOAT32_MAX for p in (pa, pb)
    )
    chunk32 = _chunk_length(product_units, quantum, 24) if float32_values and quantum_exp >= FLOAT32_MIN_SUBNORMAL_EXP else 0
    chunk64 = _chunk_length(product_units, quantum, 53)
    if request == "integer":
        if not integer_operands:
            return FastPathPlan("", reason="the integer path needs integer element formats on both operands")
        return FastPathPlan("integer")
    if request == "auto" and m_rows >= 32 and chunk32 >= min(k_padded, 256):
        return FastPathPlan("blas32", chunk_k=min(chunk32, k_padded))
    if request == "auto" and integer_operands:
        # int64 sums of codes never round, and |partial sum| < 2**53 by the checks above.
        return FastPathPlan("integer")
    if chunk32 >= (1 if request == "blas" else 64):
        return FastPathPlan("blas32", chunk_k=min(chunk32, k_padded))
    if chunk64 >= 1:
        return FastPathPlan("blas64", chunk_k=min(chunk64, k_padded))
    return FastPathPlan("", reason="a single product can exceed 2**53 Q")


def _quantum_exp(mac: MacSpec, bounds: DataBounds) -> int:
    """log2 Q: from the values at hand when known (each is a multiple of it), else from the formats."""
    if bounds.lsb_exp is not None:
        return max(bounds.lsb_exp, mac.profile_a.lsb_exp + mac.profile_b.lsb_exp)
    return mac.profile_a.lsb_exp + mac.profile_b.lsb_exp


def _chunk_length(max_product: float, quantum: float, bits: int) -> int:
    """Largest K whose partial sums, at most K max_product, stay below 2**bits quantum."""
    if max_product == 0.0:
        return 2**62
    return int(math.floor(math.ldexp(quantum, bits) / max_product))
