"""Run scaled formats: move the axis last, group the rows, call the block kernels."""

from __future__ import annotations

import math

import numpy as np

from hwsim.formats import block_kernels as bk
from hwsim.formats import fast_block
from hwsim.formats.kernels import NEAREST_EVEN
from hwsim.formats.params import code_dtype, element_params, levels_of, values_table
from hwsim.formats.spec import FloatFormat, ScaledFormat

_EMPTY_2D = np.zeros((0, 0), np.uint8)


def group_layout(fmt: ScaledFormat, length: int) -> int:
    """Elements per group along the axis for a row of `length` elements."""
    if fmt.granularity in ("group", "block"):
        return int(fmt.block_size)
    return max(length, 1)


def tensor_scale_value(fmt: ScaledFormat, finite_amax: float) -> float:
    """Second-level scale g = scale max * element max / amax_tensor, in float32.

    For NVFP4 this is 448 * 6 / amax, the per-tensor scale of NVIDIA's recipe.
    As in Transformer Engine, g is capped at the largest float32 (a tiny amax
    would overflow it) and is 1 when amax is 0 or g underflows to 0.
    """
    if finite_amax == 0.0:
        return 1.0
    numerator = np.float32(fmt.scale.max_normal) * np.float32(fmt.element.max_normal)
    with np.errstate(over="ignore"):
        g = numerator / np.float32(finite_amax)
    g = min(g, np.finfo(np.float32).max)
    return float(g) if g > 0 else 1.0


def finite_amax(array: np.ndarray) -> float:
    magnitude = np.abs(array)
    finite = np.isfinite(magnitude)
    if finite.all():
        return float(magnitude.max()) if magnitude.size else 0.0
    return float(magnitude[finite].max()) if finite.any() else 0.0


def run_scaled(array, fmt: ScaledFormat, axis, mode, saturate, seed, amax, want_codes, want_values, flush_to_zero=False):
    from hwsim.formats.ops import Encoded

    moved = np.moveaxis(array, axis, -1) if array.ndim else array.reshape(1)
    lead_shape = moved.shape[:-1]
    length = moved.shape[-1]
    x2 = np.ascontiguousarray(moved).reshape(-1, length) if length else np.zeros((int(np.prod(lead_shape)), 0), array.dtype)
    rows = x2.shape[0]

    static_amax = 0.0
    if amax is not None:
        if fmt.scale_rule in ("ocp", "ceil"):
            raise ValueError(f"amax applies to the 'amax' and 'static' scale rules; {fmt.name} uses scale_rule={fmt.scale_rule!r}")
        static_amax = float(amax)
    elif fmt.scale_rule == "static":
        raise ValueError(f"format {fmt.name} uses scale_rule='static': pass amax= from calibration")
    element = fmt.element
    asymmetric = bool(getattr(element, "asymmetric", False))
    # With a per-tensor second-level scale (NVFP4), a calibration amax sets that
    # scale only; each block still takes its own amax.
    group_amax = 0.0 if fmt.tensor_scale is not None else static_amax
    if fmt.granularity == "tensor":
        block = max(length, 1)
        if fmt.scale_rule in ("ocp", "ceil") or (asymmetric and group_amax == 0.0):
            # The kernel finds the exponent, or the min and max, of the one group itself.
            x2 = x2.reshape(1, -1)
            block = max(x2.shape[1], 1)
        elif group_amax == 0.0:
            # One group for the whole tensor: compute its amax once, then scale rows in parallel.
            group_amax = finite_amax(x2)
    else:
        block = group_layout(fmt, length)
    n_rows, n_len = x2.shape
    n_blocks = -(-n_len // block) if n_len else 0
    padded = n_blocks * block

    flush = bool(flush_to_zero) and isinstance(element, FloatFormat) and element.subnormals
    p = element_params(element, False, flush)
    levels = levels_of(element)
    table = values_table(element)
    codes2 = np.empty((n_rows, padded), code_dtype(element.width)) if want_codes else _EMPTY_2D
    out2 = np.empty((n_rows, n_len), array.dtype) if want_values else np.zeros((0, 0), array.dtype)
    scale_codes = np.empty((n_rows, n_blocks), code_dtype(fmt.scale.width))
    zero_points = np.zeros((n_rows, n_blocks), np.int64)
    tensor_scale = 1.0

    if fmt.scale_rule in ("ocp", "ceil") and not flush and _fast_mx_applies(fmt, x2, mode, want_codes, want_values):
        nan_blocks = _fast_mx_qdq(fmt, x2, block, mode, seed, saturate, out2)
    elif fmt.scale_rule in ("ocp", "ceil"):
        scale = fmt.scale
        nan_blocks = bk.encode_pow2_blocks(
            x2, block, p, levels,
            bk.RULE_OCP if fmt.scale_rule == "ocp" else bk.RULE_CEIL,
            element.emax, element.max_normal, scale.emin, scale.emax, scale.nan_code,
            mode, seed, saturate, codes2, scale_codes, table, out2,
        )
    else:
        if fmt.tensor_scale is not None:
            tensor_scale = tensor_scale_value(fmt, static_amax if static_amax else finite_amax(x2))
        scale = fmt.scale
        nan_blocks = bk.encode_amax_groups(
            x2, block, p, levels, element_params(scale),
            scale.max_normal, tensor_scale, element.max_normal,
            group_amax, asymmetric, array.dtype == np.float32, mode, seed, saturate,
            codes2, scale_codes, zero_points, table, out2,
        )

    if fmt.granularity == "tensor" and nan_blocks:
        # The group is the whole tensor, so a NaN or Inf anywhere makes all of it NaN.
        scale_codes[:] = fmt.scale.nan_code
        if want_values:
            out2[:] = np.nan
        nan_blocks = n_rows * n_blocks

    values = None
    if want_values:
        values = out2.reshape(moved.shape)
        values = np.moveaxis(values, -1, axis) if array.ndim else values.reshape(())
    encoded = None
    if want_codes:
        encoded = Encoded(
            fmt=fmt,
            shape=tuple(array.shape),
            axis=axis,
            codes=codes2,
            scale_codes=scale_codes,
            zero_points=zero_points if getattr(element, "asymmetric", False) else None,
            tensor_scale=tensor_scale if fmt.tensor_scale is not None else None,
            padded_elements=int(n_rows * padded - n_rows * n_len),
            nan_groups=int(nan_blocks),
        )
        encoded.info["moved_shape"] = tuple(moved.shape)
        encoded.info["group_size"] = block
        encoded.info["row_length"] = n_len
    return values, encoded


def _fast_mx_applies(fmt: ScaledFormat, x2, mode, want_codes, want_values) -> bool:
    element = fmt.element
    return (
        want_values
        and not want_codes
        and x2.dtype == np.float32
        and mode == NEAREST_EVEN
        and isinstance(element, FloatFormat)
        and element.signed
        and element.special != "fnuz"
        and element.width <= 16
        and fmt.granularity in ("block", "group", "channel", "token")
    )


def _fast_mx_qdq(fmt: ScaledFormat, x2, block, mode, seed, saturate, out2) -> int:
    """qdq through the vectorised MX kernel, then redo the rows it left to the general kernel."""
    element = fmt.element
    scale = fmt.scale
    rows, length = x2.shape
    n_blocks = -(-length // block) if length else 0
    slow = np.zeros((rows, n_blocks), np.uint8)
    if saturate or not element.has_nan:
        overflow_code = element.max_magnitude_code
    else:
        overflow_code = element.inf_code if element.has_inf else element.nan_code
    max_man, max_exp = _integer_significand(element.max_normal)

    fast_block.qdq_pow2_blocks_float32(
        x2.view(np.int32), block, element.mantissa_bits, element.emin, element.max_magnitude_code, element.sign_mask,
        overflow_code, element.emax, max_exp, max_man,
        bk.RULE_OCP if fmt.scale_rule == "ocp" else bk.RULE_CEIL, scale.emin, scale.emax,
        values_table(element, np.float32), out2, slow,
    )
    slow_rows = np.flatnonzero(slow.any(axis=1))
    if slow_rows.size == 0:
        return 0

    sub = np.ascontiguousarray(x2[slow_rows])
    sub_out = np.empty_like(sub)
    sub_scales = np.empty((sub.shape[0], n_blocks), code_dtype(scale.width))
    # The general kernel numbers elements by their flat index in its own input,
    # which only matters for stochastic rounding; this path is nearest-even.
    nan_blocks = bk.encode_pow2_blocks(
        sub, block, element_params(element), levels_of(element),
        bk.RULE_OCP if fmt.scale_rule == "ocp" else bk.RULE_CEIL,
        element.emax, element.max_normal, scale.emin, scale.emax, scale.nan_code,
        mode, seed, saturate, _EMPTY_2D, sub_scales, values_table(element), sub_out,
    )
    out2[slow_rows] = sub_out
    return int(nan_blocks)


def _integer_significand(value: float) -> tuple[int, int]:
    """(man, exp) with value == man * 2**exp and man an odd integer (or 0)."""
    mantissa, exponent = math.frexp(value)
    man = int(math.ldexp(mantissa, 53))
    exp = exponent - 53
    while man and man % 2 == 0:
        man //= 2
        exp += 1
    return man, exp
