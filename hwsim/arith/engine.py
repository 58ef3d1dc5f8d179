"""Run one emulated GEMM: pick the path, reduce the spec to kernel integers, apply the epilogue."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from hwsim.arith import exactness
from hwsim.arith.accumulators import ROUNDING_CODES, FloatAccumulator, IntAccumulator
from hwsim.arith.fastpath import gemm_exact_blas, gemm_exact_integer, gemm_exact_integer_rows
from hwsim.arith.kernels import ORDER_CHUNKED, ORDER_PAIRWISE, apply_epilogue, gemm_float, gemm_int
from hwsim.arith.operands import Operand, nvfp4_alpha, pad_k
from hwsim.arith.spec import MacSpec

log = logging.getLogger(__name__)

PATHS = ("auto", "general", "blas", "integer")
# Columns per kernel task: up to 512 to amortise the loop over K, fewer when
# a GEMV (M = 1) would otherwise leave cores without a task.
_MAX_TILE_COLUMNS = 512
_MIN_TILE_COLUMNS = 32
# Output rows (batch times M) from which a pass over the data to bound it is
# cheap next to the GEMM itself.
_MIN_ROWS_FOR_DATA_BOUNDS = 16
# The register that integer results are rounded into when a scale is applied
# after accumulation, as int8 GEMMs dequantize in FP32.
EPILOGUE_FP32 = FloatAccumulator(8, 23, name="fp32")
# Limit on the exact int64 sum of one chunk of integer products; a tree
# width whose worst-case chunk sum could reach it is rejected.
_INT_CHUNK_LIMIT = 2**61


@dataclass
class DatapathOutput:
    """Values of one emulated GEMM after the epilogue, with its overflow counts and the path taken."""

    values: np.ndarray
    overflow_events: int
    epilogue_overflow_events: int
    path: str
    fast_path_reason: str


def batch_indices(batch_shape: tuple[int, ...], shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Return, for each output batch element, the flat batch index of its a and of its b (numpy broadcasting)."""
    index_a = np.arange(math.prod(shape_a), dtype=np.int64).reshape(shape_a)
    index_b = np.arange(math.prod(shape_b), dtype=np.int64).reshape(shape_b)
    return (
        np.ascontiguousarray(np.broadcast_to(index_a, batch_shape).reshape(-1)),
        np.ascontiguousarray(np.broadcast_to(index_b, batch_shape).reshape(-1)),
    )


def tile_columns(n_rows: int, n_columns: int) -> int:
    """Columns per task, so that there are at least four tasks per thread where the shape allows."""
    import numba

    min_tasks = 4 * numba.get_num_threads()
    tile = _MAX_TILE_COLUMNS
    while tile > _MIN_TILE_COLUMNS and n_rows * -(-n_columns // tile) < min_tasks:
        tile //= 2
    return tile


def register_params(acc: FloatAccumulator) -> tuple[int, int, int, int, int]:
    """(mantissa_bits, emin, max_bits, rounding, saturate) of a float register, for the kernels."""
    max_bits = int(np.float64(acc.max_normal).view(np.int64))
    return acc.mantissa_bits, acc.emin, max_bits, ROUNDING_CODES[acc.rounding], int(acc.overflow == "saturate")


def run_datapath(mac: MacSpec, op_a: Operand, op_b: Operand, batch_shape: tuple[int, ...], path: str) -> DatapathOutput:
    """Compute the emulated a @ b on `path` ("auto", "general", "blas" or "integer"), then the epilogue."""
    if path not in PATHS:
        raise ValueError(f"invalid path={path!r}: choose one of {', '.join(PATHS)}")
    k_padded = max(op_a.k_padded, op_b.k_padded)
    a_index, b_index = batch_indices(batch_shape, op_a.batch_shape, op_b.batch_shape)
    shape = (a_index.shape[0], op_a.rows, op_b.rows)
    raw, path_used, reason, overflows = None, "general", "", 0
    if path != "general":
        raw, path_used, reason = _run_fast_path(mac, op_a, op_b, a_index, b_index, k_padded, shape, path)
    if raw is None:
        if mac.is_integer:
            a_codes, b_codes = pad_k(op_a.standard_codes(), k_padded, 2), pad_k(op_b.standard_codes(), k_padded, 1)
            raw, overflows = _run_general_int(mac, a_codes, b_codes, a_index, b_index, shape)
        else:
            a_values, b_values = pad_k(op_a.values, k_padded, 2), pad_k(op_b.values, k_padded, 1)
            raw, overflows = _run_general_float(mac, a_values, b_values, a_index, b_index, k_padded, shape)
    values, epilogue_overflows = _epilogue(mac, raw, op_a, op_b, a_index, b_index)
    return DatapathOutput(values.reshape(batch_shape + shape[1:]), int(overflows), int(epilogue_overflows), path_used, reason)


def _run_fast_path(mac, op_a, op_b, a_index, b_index, k_padded, shape, path):
    """Return (exact raw sums or None, path name, reason no fast path applies)."""
    # Integer codes feed the integer fast path and BLAS directly (Q = 1), in
    # the encoder's layout; float operand values are decoded only when needed.
    integer_operands = op_a.codes is not None and op_b.codes is not None
    b_by_row = integer_operands and op_b.codes_by_row
    if integer_operands:
        a_arr, b_arr = pad_k(op_a.codes, k_padded, 2), pad_k(op_b.codes, k_padded, 2 if b_by_row else 1)
    else:
        a_arr, b_arr = pad_k(op_a.values, k_padded, 2), pad_k(op_b.values, k_padded, 1)

    request = "auto" if path == "auto" else path
    rows = shape[0] * shape[1]
    plan = exactness.FastPathPlan("")
    if integer_operands:
        # The formats alone often bound the sums, which saves a pass over the data.
        plan = exactness.plan_fast_path(mac, exactness.static_integer_bounds(mac, k_padded), k_padded, True, rows, request)
    if not plan.kind:
        bounds = exactness.data_bounds(a_arr, b_arr, k_padded, b_by_row)
        plan = exactness.plan_fast_path(mac, bounds, k_padded, integer_operands, rows, request)
    if plan.kind == "blas32" and _float32_matmul_lowered():
        reason = "torch.get_float32_matmul_precision() is not 'highest', so float32 BLAS may round its inputs"
        plan = exactness.FastPathPlan("integer") if integer_operands and path == "auto" else exactness.FastPathPlan("", reason=reason)
    if not plan.kind:
        if path != "auto":
            raise ValueError(f"path={path!r} is not provably exact for {mac.label}: {plan.reason}; use path='auto' or 'general'")
        return None, "general", plan.reason

    if plan.kind == "integer":
        raw = np.empty(shape, np.int64)
        if b_by_row:
            gemm_exact_integer_rows(a_arr, b_arr, a_index, b_index, tile_columns(rows, shape[2]), raw)
        else:
            gemm_exact_integer(a_arr, b_arr, a_index, b_index, tile_columns(shape[0] * shape[1], shape[2]), raw)
        raw = raw.astype(np.float64)
    else:
        raw = gemm_exact_blas(a_arr, b_arr, a_index, b_index, plan.chunk_k, plan.kind == "blas32", b_by_row)
    if integer_operands and not mac.is_integer:
        raw = np.ldexp(raw, -(mac.profile_a.frac_bits + mac.profile_b.frac_bits))
    return raw, plan.kind, ""


def _float32_matmul_lowered() -> bool:
    import torch

    return torch.get_float32_matmul_precision() != "highest"


def _run_general_int(mac, a_codes, b_codes, a_index, b_index, shape):
    acc = mac.accumulator
    pa, pb = mac.profile_a, mac.profile_b
    term = mac.block_length
    span = mac.products_per_rounding if mac.order != "pairwise" else 2 * term
    if span * pa.int_max_abs * pb.int_max_abs >= _INT_CHUNK_LIMIT:
        raise ValueError(f"invalid tree_width={mac.tree_width}: exact sums of {span} integer products could exceed 2**61; use a smaller tree_width")
    order = ORDER_PAIRWISE if mac.order == "pairwise" else ORDER_CHUNKED
    out = np.empty(shape, np.int64)
    overflows = gemm_int(
        a_codes, b_codes, a_index, b_index, order, term, mac.products_per_rounding,
        acc.bits, int(acc.overflow == "saturate"), tile_columns(shape[0] * shape[1], shape[2]), out,
    )
    return out.astype(np.float64), overflows


def _run_general_float(mac, a_values, b_values, a_index, b_index, k_padded, shape):
    # The formats alone often prove the sums exact. Otherwise bounds from the
    # data may, at the cost of one pass over both operands, which pays off
    # only when that pass is small next to the GEMM (not for a GEMV).
    plan = exactness.plan_float_kernel(mac, exactness.static_value_bounds(mac, k_padded), k_padded)
    if not plan.sums_exact and shape[0] * shape[1] >= _MIN_ROWS_FOR_DATA_BOUNDS:
        plan = exactness.plan_float_kernel(mac, exactness.data_bounds(a_values, b_values, k_padded), k_padded)
    if not plan.products_exact:
        log.info("%s: products exceed float64, so every chunk is summed in fixed-point limbs (slow)", mac.label)
    order = ORDER_PAIRWISE if mac.order == "pairwise" else ORDER_CHUNKED
    out = np.empty(shape, np.float64)
    overflows = gemm_float(
        a_values, b_values, a_index, b_index, order, mac.block_length, mac.products_per_rounding, plan.n_limbs,
        *register_params(mac.accumulator), plan.products_exact, plan.sums_exact, plan.lsb_exp,
        tile_columns(shape[0] * shape[1], shape[2]), out,
    )
    return out, overflows


def _epilogue(mac: MacSpec, raw: np.ndarray, op_a: Operand, op_b: Operand, a_index, b_index) -> tuple[np.ndarray, int]:
    """Apply scales that are constant along K: one rounding of raw * factor into the output register.

    factor = scale_a[row] * scale_b[column] * alpha in float64, where the two
    scales multiply exactly and alpha is NVFP4's float32(1 / float32(g_a * g_b)).
    An integer register also multiplies by 2**-frac_bits for fixed-point
    elements. Float registers round into themselves, integer registers into FP32.
    """
    alpha = nvfp4_alpha(op_a.tensor_scale, op_b.tensor_scale)
    frac_bits = mac.profile_a.frac_bits + mac.profile_b.frac_bits if mac.is_integer else 0
    if not op_a.has_row_factor and not op_b.has_row_factor and alpha == 1.0 and frac_bits == 0:
        return raw, 0
    factor = op_a.row_factor[a_index][:, :, None] * op_b.row_factor[b_index][:, None, :]
    factor = factor * alpha
    if frac_bits:
        factor = np.ldexp(factor, -frac_bits)
    register = mac.accumulator if isinstance(mac.accumulator, FloatAccumulator) else EPILOGUE_FP32
    mantissa_bits, emin, max_bits, rounding, saturate = register_params(register)
    flat = np.ascontiguousarray(raw).reshape(-1)
    factor = np.ascontiguousarray(np.broadcast_to(factor, raw.shape)).reshape(-1)
    out = np.empty_like(flat)
    overflows = apply_epilogue(flat, factor, mantissa_bits, emin, max_bits, rounding, saturate, out)
    return out.reshape(raw.shape), overflows
