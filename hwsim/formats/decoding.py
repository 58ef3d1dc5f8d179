"""Decode `Encoded` codes back to values."""

from __future__ import annotations

import numpy as np

from hwsim.formats.params import values_table
from hwsim.formats.spec import DialectFormat, FloatFormat, ScaledFormat


def decode_encoded(encoded, dtype: np.dtype) -> np.ndarray:
    fmt = encoded.fmt
    if dtype.kind != "f":
        raise ValueError(f"invalid dtype={dtype}: decode to a floating-point dtype such as np.float32")
    if isinstance(fmt, ScaledFormat):
        return _decode_scaled(encoded, dtype)
    if isinstance(fmt, DialectFormat):
        from hwsim.formats.dialect import decode_dialect

        return decode_dialect(encoded, dtype)
    return code_values(fmt, encoded.codes).astype(dtype)


def code_values(fmt, codes: np.ndarray) -> np.ndarray:
    """float64 value of each code of an element format; formats wider than 16 bits are decoded from their fields."""
    if fmt.width > 16:
        if _is_binary32(fmt):
            return codes.astype(np.uint32).view(np.float32).astype(np.float64)
        return float_code_values(fmt, codes)
    return values_table(fmt)[codes]


def _is_binary32(fmt: FloatFormat) -> bool:
    fields = (fmt.exponent_bits, fmt.mantissa_bits, fmt.bias, fmt.special, fmt.signed, fmt.subnormals)
    return fields == (8, 23, 127, "ieee", True, True)


def float_code_values(fmt: FloatFormat, codes: np.ndarray) -> np.ndarray:
    """float64 value of each code of a float format of up to 32 bits, from its sign, exponent and mantissa fields."""
    c = np.asarray(codes).astype(np.int64)
    m = fmt.mantissa_bits
    magnitude = c & ((1 << (fmt.exponent_bits + m)) - 1)
    exponent_field = magnitude >> m
    significand = magnitude & ((1 << m) - 1)
    if fmt.subnormals:
        normal = exponent_field > 0
        significand = np.where(normal, significand | (1 << m), significand)
        exponent = np.where(normal, exponent_field, 1) - fmt.bias - m
    else:
        significand = significand | (1 << m)
        exponent = exponent_field - fmt.bias - m
    values = np.ldexp(significand.astype(np.float64), exponent.astype(np.int32))
    special = magnitude > fmt.max_magnitude_code
    values = np.where(special, np.where(magnitude == fmt.inf_code, np.inf, np.nan), values)
    if fmt.signed:
        values = np.where((c & fmt.sign_mask) != 0, -values, values)
    if fmt.special == "fnuz":
        values = np.where(c == fmt.sign_mask, np.nan, values)
    return values


def _decode_scaled(encoded, dtype: np.dtype) -> np.ndarray:
    fmt: ScaledFormat = encoded.fmt
    group = encoded.info["group_size"]
    moved_shape = encoded.info["moved_shape"]
    # Elements per row of codes: the axis length, or the whole tensor when a
    # per-tensor group was flattened into one row.
    length = encoded.info.get("row_length", moved_shape[-1] if moved_shape else 1)
    codes = encoded.codes
    rows, padded = codes.shape
    n_blocks = encoded.scale_codes.shape[1]
    elements = code_values(fmt.element, codes).reshape(rows, n_blocks, group)
    scales = code_values(fmt.scale, encoded.scale_codes)
    if fmt.scale_rule in ("ocp", "ceil"):
        # Power-of-two scales: the product is exact in float64.
        values = elements * scales[:, :, None]
    else:
        g = np.float32(encoded.tensor_scale if encoded.tensor_scale is not None else 1.0)
        divisor = (scales.astype(np.float32) / g).astype(np.float64)
        if encoded.zero_points is not None:
            elements = codes.reshape(rows, n_blocks, group).astype(np.float64) - encoded.zero_points[:, :, None]
        values = elements * divisor[:, :, None]
        values[np.isnan(scales)] = np.nan
    values = values.reshape(rows, padded)[:, :length].reshape(moved_shape).astype(dtype)
    if len(encoded.shape) == 0:
        return values.reshape(())
    return np.moveaxis(values, -1, encoded.axis)
