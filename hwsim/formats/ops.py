"""Public entry points: qdq, encode and decode for every format.

numpy arrays and torch CPU tensors go in; the same type, shape and dtype
come out of `qdq`. Inputs are float16, float32, float64, bfloat16 (torch
or ml_dtypes) arrays; integer and complex arrays are rejected.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from hwsim.formats import kernels as k
from hwsim.formats.decoding import code_values
from hwsim.formats.params import code_dtype, element_params, levels_of, rounding_mode, values_table
from hwsim.formats.registry import get
from hwsim.formats.spec import DialectFormat, FloatFormat, Format, ScaledFormat

log = logging.getLogger(__name__)

_EMPTY_CODES = np.zeros(0, np.uint8)


@dataclass
class Encoded:
    """Codes of a tensor in a format, enough to decode it bit for bit.

    codes: element codes, uint8/uint16/uint32, one per element. Element
        formats keep the input shape. Scaled formats move the quantization
        axis last, flatten the other axes into rows and pad each row to
        whole groups: shape (rows, groups * group_size), where rows is 1 for
        a per-tensor power-of-two scale or a per-tensor asymmetric integer.
        Padding contains the code of 0.0 (the zero point for asymmetric integers).
    scale_codes: one code per group in the scale format, shape (rows,
        groups); None for element formats.
    zero_points: per-group zero points for asymmetric integers, else None.
    tensor_scale: the FP32 per-tensor scale (NVFP4), else None.
    dialects: per-block dialect index for dialect formats, else None.
    """

    fmt: Format
    shape: tuple[int, ...]
    axis: int
    codes: np.ndarray
    scale_codes: np.ndarray | None = None
    zero_points: np.ndarray | None = None
    tensor_scale: float | None = None
    dialects: np.ndarray | None = None
    padded_elements: int = 0
    nan_groups: int = 0
    info: dict = field(default_factory=dict)

    @property
    def storage_bits(self) -> int:
        return self.fmt.storage_bits(self.shape, self.axis)


def _resolve_seed(seed, mode: int) -> int:
    if mode != k.STOCHASTIC:
        return 0
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") >> 1
        log.info("stochastic rounding without a seed: drew seed %d; pass seed= to reproduce", seed)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"invalid seed={seed!r}: pass a non-negative integer")
    return int(seed) & 0x7FFF_FFFF_FFFF_FFFF


def _as_numpy(x):
    """Return (array, restore), where restore(result) gives the caller's type, shape and dtype back."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        if x.device.type != "cpu":
            raise ValueError(f"hwsim.formats runs on CPU tensors; got a tensor on {x.device}. Call .cpu() first, or use the torch path in hwsim.accuracy")
        if x.is_complex() or not x.is_floating_point():
            raise TypeError(f"expected a floating-point tensor, got dtype {x.dtype}; convert with .float() first")
        dtype = x.dtype
        detached = x.detach()
        if dtype == torch.float32 or dtype == torch.float64:
            array = detached.numpy()
        else:
            # float16 and bfloat16 widen to float32 exactly.
            array = detached.to(torch.float32).numpy()

        shape = tuple(x.shape)

        def restore(result: np.ndarray):
            # np.ascontiguousarray makes a 0-d array 1-d, so restore the shape after it.
            out = torch.from_numpy(np.ascontiguousarray(result).reshape(shape))
            return out if out.dtype == dtype else out.to(dtype)

        return array, restore
    array = np.asarray(x)
    dtype = array.dtype
    if dtype.kind == "c" or dtype.kind in "iub":
        raise TypeError(f"expected a floating-point array, got dtype {dtype}; convert with .astype(np.float32) first")
    if dtype in (np.float32, np.float64):
        return array, lambda result: result
    if dtype.kind == "f" or dtype.name in ("bfloat16",):
        # float16, and ml_dtypes' bfloat16, widen to float32 exactly.
        widened = array.astype(np.float32)
        return widened, lambda result: result.astype(dtype)
    raise TypeError(f"expected a floating-point array, got dtype {dtype}; convert with .astype(np.float32) first")


def _check_rounding_and_saturate(fmt, rounding, saturate):
    mode = rounding_mode(rounding)
    if saturate is None:
        # Element formats follow IEEE/ml_dtypes (overflow to Inf or NaN);
        # scaled formats saturate, the OCP MX default.
        saturate = not isinstance(fmt, FloatFormat)
    return mode, int(bool(saturate))


def qdq(
    x, fmt, *, axis: int = -1, rounding: str = "nearest_even", saturate: bool | None = None, seed: int | None = None,
    amax: float | None = None, nan_to_zero: bool = False, flush_to_zero: bool = False,
):
    """Quantize x to `fmt` and dequantize it back, in one pass.

    axis: the axis that groups and blocks run along (the reduction axis K of a matmul).
    rounding: nearest_even, nearest_away, toward_zero or stochastic (needs `seed` to reproduce).
    saturate: clamp overflow to the max normal. None takes the format's default:
        scaled formats saturate, and element formats overflow to Inf or NaN where they have them.
    amax: a static amax from calibration, for the amax and static scale rules. With a
        second-level tensor scale (NVFP4) it sets that scale only; blocks keep their own amax.
    nan_to_zero: for formats without a NaN code, map NaN to the zero of opposite sign,
        as ml_dtypes does (integers and codebooks: to the code of 0); by default such
        NaN inputs come out NaN.
    flush_to_zero: float elements whose rounded result is subnormal become zero of
        the same sign (flushing after rounding); no effect on integer and codebook elements.
    Returns the same type, shape and dtype as x.
    """
    fmt = get(fmt)
    array, restore = _as_numpy(x)
    result = _run(array, fmt, axis, rounding, saturate, seed, amax, nan_to_zero, flush_to_zero, want_codes=False, want_values=True)[0]
    return restore(result)


def encode(
    x, fmt, *, axis: int = -1, rounding: str = "nearest_even", saturate: bool | None = None, seed: int | None = None,
    amax: float | None = None, nan_to_zero: bool = False, flush_to_zero: bool = False,
) -> Encoded:
    """Encode x into codes of `fmt`; the options are those of `qdq`.

    Raises ValueError when x contains NaN and the format has no NaN code
    (FP4, FP6, integers), unless nan_to_zero=True.
    """
    fmt = get(fmt)
    array, _ = _as_numpy(x)
    encoded = _run(array, fmt, axis, rounding, saturate, seed, amax, nan_to_zero, flush_to_zero, want_codes=True, want_values=False)[1]
    return encoded


def decode(encoded: Encoded, dtype=np.float32) -> np.ndarray:
    """Decode an `Encoded` back to an array of its original shape (float32 unless `dtype` is given)."""
    from hwsim.formats.decoding import decode_encoded

    return decode_encoded(encoded, np.dtype(dtype))


def _normalise_axis(axis: int, ndim: int) -> int:
    if ndim == 0:
        return 0
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"invalid axis={axis!r} for an array with {ndim} dimensions: use -{ndim} to {ndim - 1}")
    return int(axis) % ndim


def _run(array, fmt, axis, rounding, saturate, seed, amax, nan_to_zero, flush_to_zero, *, want_codes, want_values):
    mode, sat = _check_rounding_and_saturate(fmt, rounding, saturate)
    seed = _resolve_seed(seed, mode)
    if amax is not None and (not np.isfinite(amax) or amax <= 0):
        raise ValueError(f"invalid amax={amax!r}: a static amax must be a positive finite number")
    if isinstance(fmt, ScaledFormat):
        from hwsim.formats.scaled import run_scaled

        return run_scaled(array, fmt, _normalise_axis(axis, array.ndim), mode, sat, seed, amax, want_codes, want_values, bool(flush_to_zero))
    if isinstance(fmt, DialectFormat):
        from hwsim.formats.dialect import run_dialect

        return run_dialect(array, fmt, _normalise_axis(axis, array.ndim), mode, sat, seed, want_codes, want_values)
    if amax is not None:
        raise ValueError(f"amax applies to scaled formats; {fmt.name} is an element format without a scale")
    return _run_element(array, fmt, mode, sat, seed, nan_to_zero, flush_to_zero, want_codes, want_values)


def _run_element(array, fmt, mode, sat, seed, nan_to_zero, flush_to_zero, want_codes, want_values):
    flat = np.ascontiguousarray(array).reshape(-1)
    n = flat.shape[0]
    flush = bool(flush_to_zero) and isinstance(fmt, FloatFormat) and fmt.subnormals
    p = element_params(fmt, bool(nan_to_zero), flush)
    wide = fmt.width > 16
    codes = np.empty(n, code_dtype(fmt.width)) if (want_codes or wide) else _EMPTY_CODES
    out_dtype = array.dtype
    out = np.empty(n, out_dtype) if (want_values and not wide) else np.zeros(0, out_dtype)
    table = values_table(fmt, out_dtype.type) if not wide else np.zeros(2, out_dtype)
    if wide and not isinstance(fmt, FloatFormat):
        raise ValueError(f"format {fmt.name}: element formats wider than 16 bits must be floats")
    fast = isinstance(fmt, FloatFormat) and not flush and (
        (flat.dtype == np.float32 and fmt.emin >= -126) or (flat.dtype == np.float64 and fmt.emin >= -1022)
    )
    if fast:
        # Bit-level kernels; they skip normalising subnormal inputs, which is
        # exact when the format's smallest normal is at or above the input's.
        if flat.dtype == np.float32:
            bits = flat.view(np.int32)
            encode_kernel, qdq_kernel = k.encode_float32_bits, k.qdq_float32_bits
        else:
            bits = flat.view(np.int64)
            encode_kernel, qdq_kernel = k.encode_float64_bits, k.qdq_float64_bits
        if want_codes or wide:
            encode_kernel(bits, p, mode, seed, sat, codes)
        if want_values and not wide:
            if flat.dtype == np.float32 and mode == k.NEAREST_EVEN and fmt.signed and not nan_to_zero:
                _qdq_float32_nearest_even(bits, fmt, sat, table, out)
            else:
                qdq_kernel(bits, p, mode, seed, sat, table, out)
    else:
        k.encode_values(flat, p, levels_of(fmt), mode, seed, sat, codes, table, out)
    if want_codes and not fmt.has_nan and not nan_to_zero:
        missing = int(np.count_nonzero(np.isnan(flat)))
        if missing:
            raise ValueError(
                f"{missing} NaN input(s) have no code in {fmt.name}, which has no NaN; "
                f"pass nan_to_zero=True to map NaN to a zero as ml_dtypes does, or remove the NaN first"
            )
    if wide and want_values:
        out = code_values(fmt, codes).astype(out_dtype)
    values = out.reshape(array.shape) if want_values else None
    encoded = None
    if want_codes:
        encoded = Encoded(fmt=fmt, shape=tuple(array.shape), axis=-1, codes=codes.reshape(array.shape))
    return values, encoded


def _qdq_float32_nearest_even(bits, fmt: FloatFormat, saturate: int, table, out) -> None:
    """Run the vectorised nearest-even kernel, with the codes of overflow, Inf and NaN worked out here."""
    no_code = 2**fmt.width
    nan_code = fmt.nan_code if fmt.has_nan else no_code
    if saturate or not fmt.has_nan:
        overflow_code = fmt.max_magnitude_code
    else:
        overflow_code = fmt.inf_code if fmt.has_inf else nan_code
    if fmt.has_inf and not saturate:
        inf_code = fmt.inf_code
    else:
        inf_code = overflow_code
    fnuz = int(fmt.special == "fnuz")
    k.qdq_float32_nearest_even(
        bits, fmt.mantissa_bits, fmt.emin, fmt.max_magnitude_code, fmt.sign_mask, fnuz,
        overflow_code, inf_code, nan_code, table, out,
    )
