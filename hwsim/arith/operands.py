"""Turn matmul inputs into the values a datapath multiplies.

a is quantized along its last axis (K) and b along its second-to-last axis,
so both are grouped along K. Each operand provides:
- `values`, float64: the element value times its in-datapath block scale,
  exact by the bit budget that MacSpec checks, in the standard layout
  (batch, M, Kp) for a and (batch, Kp, N) for b; decoded on first use;
- `codes`: signed integer codes (zero point subtracted) for integer element
  formats, else None, in the encoder's layout: (batch, rows, Kp) when
  `codes_by_row` (a, and b in a scaled format), else (batch, Kp, N);
- `row_factor` (batch, M) or (batch, N): the scale applied after
  accumulation (per tensor, channel or token), 1 where the format has none;
- `tensor_scale`: NVFP4's FP32 per-tensor scale g, else None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from numba import njit, prange

from hwsim.formats.decoding import code_values
from hwsim.formats.ops import Encoded, encode
from hwsim.formats.params import values_table
from hwsim.formats.spec import Format, IntFormat, ScaledFormat

_TRANSPOSE_BLOCK = 64


@njit(cache=True, parallel=True)
def _transpose_kernel(x, out):
    n_batch, rows, cols = x.shape
    row_blocks = (rows + _TRANSPOSE_BLOCK - 1) // _TRANSPOSE_BLOCK
    col_blocks = (cols + _TRANSPOSE_BLOCK - 1) // _TRANSPOSE_BLOCK
    for task in prange(n_batch * row_blocks * col_blocks):
        t = task // (row_blocks * col_blocks)
        rest = task - t * row_blocks * col_blocks
        i0 = (rest // col_blocks) * _TRANSPOSE_BLOCK
        j0 = (rest % col_blocks) * _TRANSPOSE_BLOCK
        for i in range(i0, min(rows, i0 + _TRANSPOSE_BLOCK)):
            for j in range(j0, min(cols, j0 + _TRANSPOSE_BLOCK)):
                out[t, j, i] = x[t, i, j]


def transpose_last_two(x: np.ndarray) -> np.ndarray:
    """Copy x (batch, R, C) into a new C-contiguous (batch, C, R) array, in cache-sized blocks."""
    out = np.empty((x.shape[0], x.shape[2], x.shape[1]), x.dtype)
    _transpose_kernel(np.ascontiguousarray(x), out)
    return out


@dataclass
class Operand:
    """One operand in datapath units (see the module docstring)."""

    role: str
    make_values: Callable[[], np.ndarray]
    codes: np.ndarray | None
    codes_by_row: bool
    row_factor: np.ndarray
    tensor_scale: float | None
    batch_shape: tuple[int, ...]
    rows: int
    k: int
    k_padded: int
    encoded: Encoded
    source: object
    _values: np.ndarray | None = field(default=None, repr=False)
    _standard_codes: np.ndarray | None = field(default=None, repr=False)

    @property
    def values(self) -> np.ndarray:
        if self._values is None:
            self._values = self.make_values()
        return self._values

    def standard_codes(self) -> np.ndarray:
        """Integer codes in the standard layout, (batch, M, Kp) for a and (batch, Kp, N) for b."""
        if self._standard_codes is None:
            by_row_b = self.role == "b" and self.codes_by_row
            self._standard_codes = transpose_last_two(self.codes) if by_row_b else self.codes
        return self._standard_codes

    @property
    def has_row_factor(self) -> bool:
        return not bool(np.all(self.row_factor == 1.0))


@njit(cache=True, parallel=True)
def _decode_scaled(codes, table, scales, group, k_valid, rows, out):
    """Element value times its group's scale, zero past k_valid, from codes (batch * rows, Kp) into out (batch, rows, Kp)."""
    n_rows, padded = codes.shape
    for r in prange(n_rows):
        t = r // rows
        i = r - t * rows
        for g in range(scales.shape[1]):
            scale = scales[r, g]
            for kk in range(g * group, min(padded, (g + 1) * group)):
                out[t, i, kk] = table[codes[r, kk]] * scale if kk < k_valid else 0.0


@njit(cache=True, parallel=True)
def _decode_scaled_transposed(codes, table, scales, group, k_valid, rows, out):
    """As `_decode_scaled` into out (batch, Kp, rows), written in 64 x 64 blocks to stay in cache."""
    n_rows, padded = codes.shape
    n_batch = n_rows // rows
    row_blocks = (rows + _TRANSPOSE_BLOCK - 1) // _TRANSPOSE_BLOCK
    k_blocks = (padded + _TRANSPOSE_BLOCK - 1) // _TRANSPOSE_BLOCK
    for task in prange(n_batch * row_blocks * k_blocks):
        t = task // (row_blocks * k_blocks)
        rest = task - t * row_blocks * k_blocks
        i0 = (rest // k_blocks) * _TRANSPOSE_BLOCK
        k0 = (rest % k_blocks) * _TRANSPOSE_BLOCK
        i1 = min(rows, i0 + _TRANSPOSE_BLOCK)
        for kk in range(k0, min(padded, k0 + _TRANSPOSE_BLOCK)):
            g = kk // group
            if kk < k_valid:
                for i in range(i0, i1):
                    out[t, kk, i] = table[codes[t * rows + i, kk]] * scales[t * rows + i, g]
            else:
                for i in range(i0, i1):
                    out[t, kk, i] = 0.0


@njit(cache=True, parallel=True)
def _lookup(codes, table, out):
    for i in prange(codes.shape[0]):
        out[i] = table[codes[i]]


def decode_codes(fmt, codes: np.ndarray) -> np.ndarray:
    """float64 value of each code of an element format; a parallel table lookup for formats of 16 bits or fewer."""
    if fmt.width > 16:
        return code_values(fmt, codes)
    flat = np.ascontiguousarray(codes).reshape(-1)
    out = np.empty(flat.shape[0], np.float64)
    _lookup(flat, values_table(fmt), out)
    return out.reshape(codes.shape)


def as_float64(x) -> np.ndarray:
    """Copy an array or CPU tensor into a float64 numpy array, for the references."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _shape_of(x) -> tuple[int, ...]:
    if isinstance(x, Encoded):
        return tuple(x.shape)
    return tuple(int(s) for s in np.shape(x))


def check_shapes(a, b) -> tuple[tuple[int, ...], int, int, int]:
    """Validate a (..., M, K) against b (..., K, N); return (batch shape, M, K, N)."""
    shape_a, shape_b = _shape_of(a), _shape_of(b)
    for role, shape, form in (("a", shape_a, "(M, K)"), ("b", shape_b, "(K, N)")):
        if len(shape) < 2:
            raise ValueError(
                f"invalid {role} of shape {shape}: matmul needs at least 2 dimensions {form}; "
                f"reshape a vector to {'(1, K)' if role == 'a' else '(K, 1)'}"
            )
    if shape_a[-1] != shape_b[-2]:
        raise ValueError(
            f"mismatched shapes: a is {shape_a} and b is {shape_b}; the last axis of a (K={shape_a[-1]}) "
            f"must equal the second-to-last axis of b (K={shape_b[-2]})"
        )
    try:
        batch = np.broadcast_shapes(shape_a[:-2], shape_b[:-2])
    except ValueError:
        raise ValueError(
            f"mismatched batch shapes: a is {shape_a} and b is {shape_b}; the leading axes {shape_a[:-2]} and "
            f"{shape_b[:-2]} must broadcast as in numpy.matmul"
        ) from None
    return tuple(batch), shape_a[-2], shape_a[-1], shape_b[-1]


def _check_encoded(encoded: Encoded, fmt: Format, role: str) -> None:
    if encoded.fmt != fmt:
        raise ValueError(
            f"invalid {role}: it is encoded as {encoded.fmt.name!r} but the MacSpec expects {fmt.name!r}; "
            f"encode it with hwsim.encode(x, {fmt.name!r}, ...) or pass the unquantized array"
        )
    if isinstance(fmt, ScaledFormat):
        ndim = len(encoded.shape)
        expected = ndim - 1 if role == "a" else ndim - 2
        if encoded.axis != expected:
            raise ValueError(
                f"invalid {role}: it is encoded along axis {encoded.axis}, but {role} must be quantized along K, "
                f"axis {expected - ndim} (a along its last axis, b along its second-to-last)"
            )


def integer_codes(element: IntFormat, codes: np.ndarray) -> np.ndarray:
    """Signed integer value of each code (before 2**-frac_bits), in the narrowest of int8, int16, int32."""
    if element.signed and element.bits == 8 and codes.dtype == np.uint8:
        return codes.view(np.int8)
    ints = element.code_to_int(codes)
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if element.code_min >= info.min and element.code_max <= info.max:
            return ints.astype(dtype)
    return ints


def prepare_operand(x, fmt: Format, role: str, want_codes: bool) -> Operand:
    """Quantize x (or check an Encoded) along K and return the operand's datapath values."""
    if isinstance(x, Encoded):
        encoded, source = x, None
        _check_encoded(encoded, fmt, role)
    else:
        encoded, source = encode(x, fmt, axis=-1 if role == "a" else -2), x
    shape = tuple(encoded.shape)
    batch_shape = shape[:-2]
    n_batch = math.prod(batch_shape)
    if role == "a":
        rows, k = shape[-2], shape[-1]
    else:
        k, rows = shape[-2], shape[-1]
    if isinstance(fmt, ScaledFormat):
        parts = _scaled_operand(encoded, fmt, role, n_batch, rows, k, want_codes)
    else:
        parts = _element_operand(encoded, fmt, role, n_batch, rows, k, want_codes)
    make_values, codes, codes_by_row, row_factor, tensor_scale, k_padded = parts
    return Operand(role, make_values, codes, codes_by_row, row_factor, tensor_scale, batch_shape, rows, k, k_padded, encoded, source)


def _element_operand(encoded: Encoded, fmt: Format, role: str, n_batch: int, rows: int, k: int, want_codes: bool):
    codes = np.asarray(encoded.codes)
    codes = codes.reshape((n_batch, rows, k) if role == "a" else (n_batch, k, rows))
    ints = integer_codes(fmt, codes) if want_codes and isinstance(fmt, IntFormat) else None
    return (lambda: decode_codes(fmt, codes)), ints, role == "a", np.ones((n_batch, rows)), None, k


def _scaled_operand(encoded: Encoded, fmt: ScaledFormat, role: str, n_batch: int, rows: int, k: int, want_codes: bool):
    element = fmt.element
    group = int(encoded.info["group_size"])
    n_rows = n_batch * rows
    codes = np.asarray(encoded.codes)
    scale_values = code_values(fmt.scale, np.asarray(encoded.scale_codes))
    if codes.shape[0] != n_rows:
        # One power-of-two scale for the whole tensor: the encoder kept a single row.
        codes = codes.reshape(n_rows, -1)
        scale_values = np.broadcast_to(scale_values.reshape(1, -1)[:, :1], (n_rows, 1))
    padded = codes.shape[1]
    per_k_block = fmt.granularity in ("group", "block")
    row_factor = np.ones(n_rows) if per_k_block else np.asarray(scale_values[:, 0], dtype=np.float64)
    asymmetric = isinstance(element, IntFormat) and element.asymmetric
    ints = None
    if want_codes and isinstance(element, IntFormat) and not per_k_block:
        if asymmetric:
            ints = codes.astype(np.int64) - np.asarray(encoded.zero_points)[:, :1]
        else:
            ints = integer_codes(element, codes)
        ints = ints.reshape(n_batch, rows, padded)

    def make_values() -> np.ndarray:
        if not asymmetric and element.width <= 16:
            # One pass: look up, scale, clear the padding and lay out for the kernels.
            block_scales = np.ascontiguousarray(scale_values if per_k_block else np.ones((n_rows, 1)))
            block = group if per_k_block else padded
            if role == "a":
                out = np.empty((n_batch, rows, padded), np.float64)
                _decode_scaled(codes, values_table(element), block_scales, block, k, rows, out)
            else:
                out = np.empty((n_batch, padded, rows), np.float64)
                _decode_scaled_transposed(codes, values_table(element), block_scales, block, k, rows, out)
            return out
        if asymmetric:
            zero_points = np.repeat(np.asarray(encoded.zero_points), group, axis=1)[:, :padded]
            elements = np.ldexp((codes.astype(np.int64) - zero_points).astype(np.float64), -element.frac_bits)
        else:
            elements = decode_codes(element, codes)
        if per_k_block:
            n_blocks = scale_values.shape[1]
            values = (elements.reshape(n_rows, n_blocks, group) * scale_values[:, :, None]).reshape(n_rows, padded)
        else:
            values = elements
        if padded > k:
            # Padding codes are 0, which is not the value 0 in every format
            # (NF4's code 0 is -1, an asymmetric code 0 is -zero_point).
            values[:, k:] = 0.0
        values = values.reshape(n_batch, rows, padded)
        return values if role == "a" else transpose_last_two(values)

    tensor_scale = float(encoded.tensor_scale) if encoded.tensor_scale is not None else None
    return make_values, ints, True, row_factor.reshape(n_batch, rows), tensor_scale, padded


def pad_k(x: np.ndarray, k_padded: int, k_axis: int) -> np.ndarray:
    """Zero-pad axis k_axis (1 or 2) of a (batch, ., .) operand array to k_padded."""
    if x.shape[k_axis] == k_padded:
        return x
    shape = list(x.shape)
    shape[k_axis] = k_padded
    out = np.zeros(shape, x.dtype)
    if k_axis == 2:
        out[:, :, : x.shape[2]] = x
    else:
        out[:, : x.shape[1], :] = x
    return out


def nvfp4_alpha(scale_a: float | None, scale_b: float | None) -> float:
    """Epilogue factor for FP32 per-tensor scales: float32(1 / float32(g_a * g_b)), computed in float32."""
    if scale_a is None and scale_b is None:
        return 1.0
    g = np.float32(1.0)
    for scale in (scale_a, scale_b):
        if scale is not None:
            g = np.float32(g * np.float32(scale))
    return float(np.float32(1.0) / g)
