"""Numba GEMM kernels that emulate a multiply-accumulate datapath bit for bit.

Operands arrive as plain arrays: a (Ba, M, Kp) and b (Bb, Kp, N) of operand
values (float64 for float registers, signed integer codes for integer
registers), with a_index and b_index mapping each output batch to its
operand batches. hwsim.arith.engine reduces a spec to integers at this
boundary.

Work is split into tasks of one output row and a tile of columns, run in
parallel. Inside a task the loop over K is outermost and the loop over the
tile's columns innermost, so consecutive iterations update independent
accumulators and the CPU overlaps their rounding.

Orders (ORDER_CHUNKED covers "sequential" and "tree"):
- ORDER_CHUNKED: acc = round(acc + exact sum of `chunk` products), chunk by chunk;
- ORDER_PAIRWISE: leaves are exact sums of `term` products, and nodes are
  rounded sums of two children. A stack of pending subtrees, merged from
  the smallest at the end, builds the same tree as pairing level by level
  with the odd node moving up unchanged.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from hwsim.arith.rounding import (
    add_round_to_odd,
    limbs_add,
    limbs_round_to_odd,
    multiply_round_to_odd,
    round_to_register,
    two_product_error,
    wrap_or_saturate,
)

ORDER_CHUNKED = 0
ORDER_PAIRWISE = 1
# A stack of 64 pending subtrees covers 2**64 leaves.
_STACK_DEPTH = 64


@njit(cache=True)
def _chunk_sums(a_row, b2, k0, k1, j0, width, sums, errors, check):
    """sums[jj] = exact float64 sum of a_row[k] * b2[k, j0 + jj] over k0 <= k < k1.

    With check=True, errors[jj] is nonzero (or NaN) when some partial sum was
    rounded, by TwoSum; the caller then recomputes that column exactly.
    Sums start at -0.0, the additive identity for either sign of zero.
    """
    for jj in range(width):
        sums[jj] = -0.0
        errors[jj] = 0.0
    for k in range(k0, k1):
        av = a_row[k]
        if check:
            for jj in range(width):
                p = av * b2[k, j0 + jj]
                s = sums[jj] + p
                bb = s - sums[jj]
                err = (sums[jj] - (s - bb)) + (p - bb)
                errors[jj] = max(errors[jj], abs(err)) if err == err else err
                sums[jj] = s
        else:
            for jj in range(width):
                sums[jj] += av * b2[k, j0 + jj]


@njit(cache=True)
def _exact_chunk_to_odd(base, a_row, b2, k0, k1, j, products_exact, limbs, lsb_exp):
    """RO53(base + sum of the chunk's products) for one column, through the fixed-point limbs.

    Products that are not float64 numbers enter as p + err by Dekker's product.
    A non-finite float64 sum means an Inf or NaN operand, whose IEEE result it
    already is.
    """
    approx = base
    for k in range(k0, k1):
        approx += a_row[k] * b2[k, j]
    if not math.isfinite(approx):
        return approx
    limbs_add(limbs, base, lsb_exp)
    for k in range(k0, k1):
        av = a_row[k]
        bv = b2[k, j]
        p = av * bv
        limbs_add(limbs, p, lsb_exp)
        if not products_exact:
            limbs_add(limbs, two_product_error(av, bv, p), lsb_exp)
    return limbs_round_to_odd(limbs, lsb_exp)


@njit(cache=True)
def _fold_chunk(
    acc, base_is_acc, a_row, b2, k0, k1, j0, width, sums, errors, limbs,
    mantissa_bits, emin, max_bits, rounding, saturate, products_exact, sums_exact, lsb_exp,
):
    """acc[jj] = round(base + exact chunk sum) for each column of the tile; return the overflow count.

    base is acc[jj] when base_is_acc, else -0.0 (a pairwise leaf pair starts from nothing).
    """
    overflows = 0
    if not products_exact:
        for jj in range(width):
            base = acc[jj] if base_is_acc else -0.0
            x = _exact_chunk_to_odd(base, a_row, b2, k0, k1, j0 + jj, False, limbs, lsb_exp)
            value, overflowed = round_to_register(x, mantissa_bits, emin, max_bits, rounding, saturate)
            acc[jj] = value
            overflows += overflowed
        return overflows
    check = not sums_exact and k1 - k0 > 1
    _chunk_sums(a_row, b2, k0, k1, j0, width, sums, errors, check)
    for jj in range(width):
        base = acc[jj] if base_is_acc else -0.0
        s = sums[jj]
        if sums_exact:
            x = base + s
        elif check and errors[jj] != 0.0 and math.isfinite(s):
            x = _exact_chunk_to_odd(base, a_row, b2, k0, k1, j0 + jj, True, limbs, lsb_exp)
        else:
            x = add_round_to_odd(base, s)
        value, overflowed = round_to_register(x, mantissa_bits, emin, max_bits, rounding, saturate)
        acc[jj] = value
        overflows += overflowed
    return overflows


@njit(cache=True)
def _add_nodes(target, other, width, mantissa_bits, emin, max_bits, rounding, saturate, sums_exact):
    """target[jj] = round(other[jj] + target[jj]) for register values; return the overflow count."""
    overflows = 0
    for jj in range(width):
        if sums_exact:
            x = other[jj] + target[jj]
        else:
            x = add_round_to_odd(other[jj], target[jj])
        value, overflowed = round_to_register(x, mantissa_bits, emin, max_bits, rounding, saturate)
        target[jj] = value
        overflows += overflowed
    return overflows


@njit(cache=True)
def _single_products_exact(acc, a_row, b2, j0, width, mantissa_bits, emin, max_bits, rounding, saturate):
    """acc = round(acc + a * b) product by product, where every acc + product is exact in float64."""
    overflows = 0
    for k in range(a_row.shape[0]):
        av = a_row[k]
        for jj in range(width):
            value, overflowed = round_to_register(acc[jj] + av * b2[k, j0 + jj], mantissa_bits, emin, max_bits, rounding, saturate)
            acc[jj] = value
            overflows += overflowed
    return overflows


@njit(cache=True)
def _single_products_to_odd(acc, a_row, b2, j0, width, mantissa_bits, emin, max_bits, rounding, saturate):
    """acc = round(RO53(acc + a * b)) product by product, for products that are float64 numbers."""
    overflows = 0
    for k in range(a_row.shape[0]):
        av = a_row[k]
        for jj in range(width):
            x = add_round_to_odd(acc[jj], av * b2[k, j0 + jj])
            value, overflowed = round_to_register(x, mantissa_bits, emin, max_bits, rounding, saturate)
            acc[jj] = value
            overflows += overflowed
    return overflows


@njit(cache=True)
def _float_task(
    a_row, b2, j0, width, order, term, chunk, n_limbs,
    mantissa_bits, emin, max_bits, rounding, saturate, products_exact, sums_exact, lsb_exp, out_row,
):
    """One output row's tile of columns: out_row[j0:j0+width]; return the overflow count."""
    k_stop = a_row.shape[0]
    acc = np.zeros(width, np.float64)
    sums = np.empty(width, np.float64)
    errors = np.empty(width, np.float64)
    limbs = np.zeros(n_limbs, np.int64)
    register = (mantissa_bits, emin, max_bits, rounding, saturate)
    overflows = 0
    if order == ORDER_CHUNKED and chunk == 1 and products_exact:
        if sums_exact:
            overflows += _single_products_exact(acc, a_row, b2, j0, width, *register)
        else:
            overflows += _single_products_to_odd(acc, a_row, b2, j0, width, *register)
    elif order == ORDER_CHUNKED:
        for k0 in range(0, k_stop, chunk):
            k1 = min(k0 + chunk, k_stop)
            overflows += _fold_chunk(
                acc, True, a_row, b2, k0, k1, j0, width, sums, errors, limbs, *register, products_exact, sums_exact, lsb_exp
            )
    else:
        # Pairwise: a stack of pending subtrees and their levels.
        stack = np.empty((_STACK_DEPTH, width), np.float64)
        levels = np.zeros(_STACK_DEPTH, np.int64)
        n_terms = k_stop // term
        depth = 0
        for pair in range(n_terms // 2):
            k0 = pair * 2 * term
            overflows += _fold_chunk(
                acc, False, a_row, b2, k0, k0 + 2 * term, j0, width, sums, errors, limbs, *register, products_exact, sums_exact, lsb_exp
            )
            level = 1
            while depth > 0 and levels[depth - 1] == level:
                overflows += _add_nodes(acc, stack[depth - 1], width, *register, sums_exact)
                depth -= 1
                level += 1
            stack[depth, :] = acc
            levels[depth] = level
            depth += 1
        if n_terms % 2 == 1:
            # The last leaf joins the smallest pending subtree, if there is one.
            base_is_acc = depth > 0
            if base_is_acc:
                acc[:] = stack[depth - 1, :]
                depth -= 1
            overflows += _fold_chunk(
                acc, base_is_acc, a_row, b2, (n_terms - 1) * term, k_stop, j0, width, sums, errors, limbs,
                *register, products_exact, sums_exact, lsb_exp,
            )
        elif depth > 0:
            acc[:] = stack[depth - 1, :]
            depth -= 1
        while depth > 0:
            overflows += _add_nodes(acc, stack[depth - 1], width, *register, sums_exact)
            depth -= 1
    out_row[j0 : j0 + width] = acc
    return overflows


@njit(cache=True, parallel=True)
def gemm_float(
    a, b, a_index, b_index, order, term, chunk, n_limbs,
    mantissa_bits, emin, max_bits, rounding, saturate, products_exact, sums_exact, lsb_exp, tile, out,
):
    """Emulate out[t] = a[a_index[t]] @ b[b_index[t]] with a float register; return the overflow count.

    order: ORDER_CHUNKED (chunk products per rounding) or ORDER_PAIRWISE
    (leaves of `term` products). The register is (mantissa_bits, emin,
    max_bits, rounding, saturate) as in round_to_register; products_exact,
    sums_exact and lsb_exp come from exactness.plan_float_kernel.
    """
    n_batch, m, n = out.shape
    n_tiles = (n + tile - 1) // tile
    n_tasks = n_batch * m * n_tiles
    overflow_counts = np.zeros(n_tasks, np.int64)
    for task in prange(n_tasks):
        t = task // (m * n_tiles)
        rest = task - t * m * n_tiles
        i = rest // n_tiles
        j0 = (rest - i * n_tiles) * tile
        overflow_counts[task] = _float_task(
            a[a_index[t], i], b[b_index[t]], j0, min(tile, n - j0), order, term, chunk, n_limbs,
            mantissa_bits, emin, max_bits, rounding, saturate, products_exact, sums_exact, lsb_exp, out[t, i],
        )
    return overflow_counts.sum()


@njit(cache=True)
def _int_chunk(a_row, b2, k0, k1, j0, width, sums):
    for jj in range(width):
        sums[jj] = 0
    for k in range(k0, k1):
        av = np.int64(a_row[k])
        for jj in range(width):
            sums[jj] += av * np.int64(b2[k, j0 + jj])


@njit(cache=True)
def _int_fold(acc, base_is_acc, sums, width, bits, saturate):
    """acc[jj] = fit(base + sums[jj]) with base acc[jj] or 0; return the overflow count."""
    overflows = 0
    for jj in range(width):
        base = acc[jj] if base_is_acc else 0
        value, overflowed = wrap_or_saturate(base + sums[jj], bits, saturate)
        acc[jj] = value
        overflows += overflowed
    return overflows


@njit(cache=True)
def _int_task(a_row, b2, j0, width, order, term, chunk, bits, saturate, out_row):
    """One output row's tile of columns with an integer register; return the overflow count."""
    k_stop = a_row.shape[0]
    acc = np.zeros(width, np.int64)
    sums = np.zeros(width, np.int64)
    overflows = 0
    if order == ORDER_CHUNKED:
        for k0 in range(0, k_stop, chunk):
            _int_chunk(a_row, b2, k0, min(k0 + chunk, k_stop), j0, width, sums)
            overflows += _int_fold(acc, True, sums, width, bits, saturate)
    else:
        stack = np.zeros((_STACK_DEPTH, width), np.int64)
        levels = np.zeros(_STACK_DEPTH, np.int64)
        n_terms = k_stop // term
        depth = 0
        for pair in range(n_terms // 2):
            k0 = pair * 2 * term
            _int_chunk(a_row, b2, k0, k0 + 2 * term, j0, width, sums)
            overflows += _int_fold(acc, False, sums, width, bits, saturate)
            level = 1
            while depth > 0 and levels[depth - 1] == level:
                overflows += _int_fold(acc, True, stack[depth - 1], width, bits, saturate)
                depth -= 1
                level += 1
            stack[depth, :] = acc
            levels[depth] = level
            depth += 1
        if n_terms % 2 == 1:
            _int_chunk(a_row, b2, (n_terms - 1) * term, k_stop, j0, width, sums)
            base_is_acc = depth > 0
            if base_is_acc:
                acc[:] = stack[depth - 1, :]
                depth -= 1
            overflows += _int_fold(acc, base_is_acc, sums, width, bits, saturate)
        elif depth > 0:
            acc[:] = stack[depth - 1, :]
            depth -= 1
        while depth > 0:
            overflows += _int_fold(acc, True, stack[depth - 1], width, bits, saturate)
            depth -= 1
    out_row[j0 : j0 + width] = acc
    return overflows


@njit(cache=True, parallel=True)
def gemm_int(a, b, a_index, b_index, order, term, chunk, bits, saturate, tile, out):
    """Emulate out[t] = a[a_index[t]] @ b[b_index[t]] with a `bits`-bit integer register; return the overflow count.

    Chunk sums are exact in int64 (the caller bounds them below 2**61), and
    every addition into the register wraps or saturates.
    """
    n_batch, m, n = out.shape
    n_tiles = (n + tile - 1) // tile
    n_tasks = n_batch * m * n_tiles
    overflow_counts = np.zeros(n_tasks, np.int64)
    for task in prange(n_tasks):
        t = task // (m * n_tiles)
        rest = task - t * m * n_tiles
        i = rest // n_tiles
        j0 = (rest - i * n_tiles) * tile
        overflow_counts[task] = _int_task(
            a[a_index[t], i], b[b_index[t]], j0, min(tile, n - j0), order, term, chunk, bits, saturate, out[t, i]
        )
    return overflow_counts.sum()


@njit(cache=True, parallel=True)
def apply_epilogue(values, factors, mantissa_bits, emin, max_bits, rounding, saturate, out):
    """out = round(values * factors) to a float register, one rounding per element; return the overflow count."""
    n = values.shape[0]
    chunk = 4096
    n_chunks = (n + chunk - 1) // chunk
    overflow_counts = np.zeros(n_chunks, np.int64)
    for c in prange(n_chunks):
        overflows = 0
        for t in range(c * chunk, min(n, (c + 1) * chunk)):
            x = multiply_round_to_odd(values[t], factors[t])
            value, overflowed = round_to_register(x, mantissa_bits, emin, max_bits, rounding, saturate)
            out[t] = value
            overflows += overflowed
        overflow_counts[c] = overflows
    return overflow_counts.sum()
