"""qdq in torch operations, bit-identical to the Numba kernels of `hwsim.formats`.

The accuracy path quantizes tensors on the device the model sits on, so it
cannot call the Numba kernels, which run on NumPy arrays. This module
repeats their arithmetic with torch operations. `hwsim.qdq` is its oracle:
the tests compare the two bit for bit for every registered format and
rounding mode.

`hwsim.accuracy.torch_elements` holds the element arithmetic (rounding,
element codes, random bits). This module lays tensors out as the kernels
do: element formats element by element, power-of-two block scales (OCP MX,
block floating point), and amax scales (INT per group, NVFP4, NF4).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from hwsim.accuracy.torch_elements import (
    constant,
    element_values,
    flat_index,
    float_codes,
    floor_log2,
    int_levels,
    lookup_values,
    pow2,
    random_bits,
    round_magnitude,
    torch_float_dtype,
)
from hwsim.formats import kernels as k
from hwsim.formats.params import rounding_mode
from hwsim.formats.registry import get
from hwsim.formats.spec import DialectFormat, FloatFormat, IntFormat, ScaledFormat

log = logging.getLogger(__name__)


def qdq(x: torch.Tensor, fmt, *, axis: int = -1, rounding: str = "nearest_even", saturate: bool | None = None,
        seed: int | None = None, amax: float | None = None, nan_to_zero: bool = False, flush_to_zero: bool = False) -> torch.Tensor:
    """Quantize x to `fmt` and dequantize it back with torch operations, on x's device.

    Takes the options of `hwsim.qdq` and returns what it returns, bit for bit:
    the same shape and dtype as x. float16 and bfloat16 inputs are computed in
    float32 and rounded back, as `hwsim.qdq` does.
    """
    fmt = get(fmt)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}; use hwsim.qdq for NumPy arrays")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got dtype {x.dtype}; convert with .float() first")
    mode = rounding_mode(rounding)
    if saturate is None:
        # As hwsim.qdq: scaled formats saturate; element formats overflow to Inf or NaN where they have them.
        saturate = not isinstance(fmt, FloatFormat)
    seed = _resolve_seed(seed, mode)
    if amax is not None and (not np.isfinite(amax) or amax <= 0):
        raise ValueError(f"invalid amax={amax!r}: a static amax must be a positive finite number")
    original_dtype = x.dtype
    work = x.detach()
    if original_dtype not in (torch.float32, torch.float64):
        work = work.to(torch.float32)
    scalar = work.ndim == 0
    if scalar:
        work = work.reshape(1)
        axis = 0
    axis = _normalise_axis(axis, work.ndim)
    element = fmt.element if isinstance(fmt, ScaledFormat) else fmt
    # As hwsim.qdq: flushing applies to float elements that have subnormals.
    flush = bool(flush_to_zero) and isinstance(element, FloatFormat) and element.subnormals

    if work.numel() == 0:
        out = work.clone()
    elif isinstance(fmt, ScaledFormat):
        if fmt.scale_rule in ("ocp", "ceil"):
            if amax is not None:
                raise ValueError(f"amax applies to the 'amax' and 'static' scale rules; {fmt.name} uses scale_rule={fmt.scale_rule!r}")
            out = _qdq_pow2(work, fmt, axis, mode, int(bool(saturate)), seed, flush)
        else:
            out = _qdq_amax(work, fmt, axis, mode, int(bool(saturate)), seed, amax, flush)
    elif isinstance(fmt, DialectFormat):
        from hwsim.accuracy.torch_dialect import qdq_dialect

        out = qdq_dialect(work, fmt, axis, mode, seed)
    else:
        if amax is not None:
            raise ValueError(f"amax applies to scaled formats; {fmt.name} is an element format without a scale")
        out = _qdq_element(work, fmt, mode, int(bool(saturate)), seed, bool(nan_to_zero), flush)
    if scalar:
        out = out.reshape(())
    return out if out.dtype == original_dtype else out.to(original_dtype)


def _resolve_seed(seed, mode: int) -> int:
    if mode != k.STOCHASTIC:
        return 0
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") >> 1
        log.info("stochastic rounding without a seed: drew seed %d; pass seed= to reproduce", seed)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"invalid seed={seed!r}: pass a non-negative integer")
    return int(seed) & 0x7FFF_FFFF_FFFF_FFFF


def _normalise_axis(axis: int, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"invalid axis={axis!r} for a tensor with {ndim} dimensions: use -{ndim} to {ndim - 1}")
    return int(axis) % ndim


# ---------------------------------------------------------------------------
# The three layouts: element formats, power-of-two block scales, amax scales.


def _qdq_element(x, fmt, mode, saturate, seed, nan_to_zero, flush):
    if isinstance(fmt, FloatFormat) and x.dtype == torch.float32 and mode == k.NEAREST_EVEN and saturate == 0 and not flush:
        native = torch_float_dtype(fmt)
        if native is not None:
            # torch's float32 to fp16/bf16 cast is IEEE round-to-nearest-even with overflow to Inf, as the
            # kernel; NaN becomes the kernel's canonical quiet NaN.
            y = x.to(native).to(torch.float32)
            return torch.where(torch.isnan(y), torch.nan, y)
    rbits = random_bits(seed, flat_index(tuple(x.shape), x.device)) if mode == k.STOCHASTIC else None
    v = x.to(torch.float64)
    if isinstance(fmt, FloatFormat):
        # The kernel rounds on the input's own bit fields with the exact stochastic threshold. When it
        # flushes, or the format's smallest normal lies below the input's, it takes the 53-bit path
        # with the cutoff instead.
        cutoff = flush or fmt.emin < (-126 if x.dtype == torch.float32 else -1022)
        codes = float_codes(v, fmt, mode, rbits, saturate, cutoff, nan_to_zero, flush)
        if fmt.width > 16:
            # The kernel stores a missing code as 0 and reads wide values from the code bits.
            codes = codes.clamp(min=0)
        return lookup_values(fmt, codes).to(x.dtype)
    return element_values(v, fmt, mode, rbits, saturate, nan_to_zero=nan_to_zero).to(x.dtype)


def rows_of(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Move `axis` last and flatten the other axes: (rows, length), contiguous."""
    moved = x.movedim(axis, -1)
    return moved.reshape(-1, moved.shape[-1]).contiguous()


def from_rows(out2: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    moved_shape = x.movedim(axis, -1).shape
    return out2.reshape(moved_shape).movedim(-1, axis)


def blocks_of(x2: torch.Tensor, block: int) -> torch.Tensor:
    """Reshape (rows, length) to (rows, blocks, block), padding the last block with zeros."""
    rows, length = x2.shape
    n_blocks = -(-length // block)
    pad = n_blocks * block - length
    if pad:
        x2 = torch.nn.functional.pad(x2, (0, pad))
    return x2.reshape(rows, n_blocks, block)


def group_statistics(xb: torch.Tensor, need_range: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Return (amax, lo, hi, special) per group of (..., block).

    amax is the largest finite |x|, lo = min(0, min finite x), hi = max(0,
    max finite x), special marks groups holding NaN or Inf. lo and hi are
    None unless need_range.
    """
    amax = xb.abs().amax(dim=-1)  # NaN and Inf propagate into the max
    special = ~torch.isfinite(amax)
    if bool(special.any()):
        xb = torch.where(torch.isfinite(xb), xb, 0.0)
        amax = xb.abs().amax(dim=-1)
    lo = hi = None
    if need_range:
        lo = xb.amin(dim=-1).clamp(max=0.0)
        hi = xb.amax(dim=-1).clamp(min=0.0)
    return amax, lo, hi, special


def shared_exponents(amax64: torch.Tensor, element_emax: int, element_max: float, scale: FloatFormat, rule: str) -> torch.Tensor:
    """Return the shared exponent per block (int64), clamped to the scale's range, and the smallest for amax 0.

    rule "ocp": floor(log2(amax)) - element emax (OCP MX v1.0, section 6.3);
    rule "ceil": the smallest s with element max * 2**s >= amax.
    """
    zero = amax64 == 0
    exponent = floor_log2(torch.where(zero, 1.0, amax64))
    if rule == "ocp":
        s = exponent - int(element_emax)
    else:
        s0 = exponent - (int(np.frexp(element_max)[1]) - 1) + 1
        fits_lower = element_max * pow2(s0 - 1) >= amax64
        s = torch.where(fits_lower, s0 - 1, s0)
    s = s.clamp(int(scale.emin), int(scale.emax))
    return torch.where(zero, int(scale.emin), s)


def _qdq_pow2(x, fmt: ScaledFormat, axis, mode, saturate, seed, flush):
    x2 = rows_of(x, axis)
    if fmt.granularity == "tensor":
        x2 = x2.reshape(1, -1)
        block = x2.shape[1]
    elif fmt.granularity in ("channel", "token"):
        block = x2.shape[1]
    else:
        block = int(fmt.block_size)
    rows, length = x2.shape
    xb = blocks_of(x2, block)
    amax, _, _, special = group_statistics(xb, need_range=False)
    element = fmt.element
    s = shared_exponents(amax.to(torch.float64), element.emax, float(element.max_normal), fmt.scale, fmt.scale_rule)[..., None]

    rbits = None
    if mode == k.STOCHASTIC:
        rbits = blocks_of(random_bits(seed, flat_index((rows, length), x.device)), block)
    scaled = xb.to(torch.float64) * pow2(-s)
    values = element_values(scaled, fmt.element, mode, rbits, saturate, flush=flush) * pow2(s)
    values = torch.where(special[..., None], torch.nan, values).to(x.dtype)
    out2 = values.reshape(rows, -1)[:, :length]
    return from_rows(out2, x, axis)


def tensor_scale(fmt: ScaledFormat, amax_tensor: torch.Tensor) -> torch.Tensor:
    """Return the float32 second-level scale g = scale max * element max / amax_tensor (NVFP4: 448 * 6 / amax).

    As `hwsim.formats.scaled.tensor_scale_value`: g is capped at the largest
    float32, and is 1 when amax is 0 or g underflows to 0.
    """
    numerator = np.float32(fmt.scale.max_normal) * np.float32(fmt.element.max_normal)
    amax32 = amax_tensor.to(torch.float32)
    g = (constant(numerator, amax32) / amax32).clamp(max=float(np.finfo(np.float32).max))
    return torch.where((amax_tensor == 0) | ~(g > 0), 1.0, g)


def scale_divisors(amax, lo, hi, fmt: ScaledFormat, g32) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (divisor32, scale32) per group: scale / g in float32, and the scale rounded into the scale format.

    The scale is amax / element max * g (or (hi - lo) / qmax for asymmetric
    integers) in float32, capped at the scale max and rounded to nearest-even
    into the scale format, as `encode_amax_groups` does. It may round to 0.
    """
    element = fmt.element
    if getattr(element, "asymmetric", False):
        hi32 = hi.to(torch.float32)
        raw = (hi32 - lo.to(torch.float32)) / constant(element.code_max, hi32)
    else:
        amax32 = amax.to(torch.float32)
        raw = amax32 / constant(element.max_normal, amax32) * g32
    scale32 = _round_scale(raw, fmt.scale)
    return scale32 / g32, scale32


def _round_scale(raw32: torch.Tensor, scale: FloatFormat) -> torch.Tensor:
    """Cap float32 raw scales at the scale max and round them to nearest-even into `scale`."""
    clamped = raw32.clamp(max=float(scale.max_normal))
    if (scale.exponent_bits, scale.mantissa_bits, scale.bias, scale.special) == (8, 23, 127, "ieee"):
        return clamped  # FP32: a float32 value is its own nearest FP32 value
    native = torch_float_dtype(scale)
    if native is not None:
        # The clamp keeps the cast away from overflow; the cast itself is IEEE nearest-even.
        return clamped.to(native).to(torch.float32)
    codes = float_codes(clamped.to(torch.float64), scale, k.NEAREST_EVEN, None, 1, cutoff=True)
    return lookup_values(scale, codes).to(torch.float32)


def quantize_groups(xb, amax, lo, hi, fmt: ScaledFormat, g32, mode, saturate, rbits, out_dtype, flush: bool = False) -> torch.Tensor:
    """Quantize and dequantize groups (..., block) with given per-group statistics (..., 1), for the amax and static rules.

    lo and hi are needed for asymmetric integer elements only (None otherwise).
    A group whose scale rounds to 0 becomes zeros of the signs of its inputs.
    Exposed so that GPTQ can round one column at a time against statistics
    fixed earlier; `_qdq_amax` calls it with each group's own statistics.
    """
    element = fmt.element
    divisor32, scale32 = scale_divisors(amax, lo, hi, fmt, g32)
    zero_group = divisor32 == 0
    any_zero_group = bool(zero_group.any())
    if xb.dtype == torch.float32:
        v32 = xb / divisor32
        if any_zero_group:
            # The kernel multiplies by 0 instead of dividing, which keeps the sign of x.
            v32 = torch.where(zero_group, xb * 0.0, v32)
    else:
        v32 = None
    if isinstance(element, IntFormat) and not element.asymmetric and v32 is not None and out_dtype == torch.float32:
        # float32 fast path: the element value q * 2**-frac has at most 17 significant bits and the
        # divisor 24, so the float32 product is the exact product rounded once, as the kernel's.
        if mode == k.NEAREST_EVEN and element.frac_bits == 0:
            # round() is half-to-even and clamp() keeps NaN; adding +0.0 turns -0.0 into +0.0,
            # since an integer code has one zero.
            q = torch.round(v32).clamp_(element.code_min, element.code_max).add_(0.0)
            return q.mul_(divisor32)
        q = int_levels(v32, element, mode, rbits)
        return q * float(2.0**-element.frac_bits) * divisor32
    divisor64 = divisor32.to(torch.float64)
    if v32 is not None:
        v = v32.to(torch.float64)
    else:
        v = xb / divisor64
        if any_zero_group:
            v = torch.where(zero_group, xb * 0.0, v)

    if getattr(element, "asymmetric", False):
        zero_point = torch.round((-lo.to(torch.float32) / scale32).to(torch.float64)).clamp(0, element.code_max)
        zero_point = torch.where(zero_group, 0.0, zero_point)
        # round_to_integer in the kernel: no saturation before the zero point, and Inf rounds to 0.
        q = round_magnitude(torch.nan_to_num(v.abs(), posinf=0.0), mode, rbits, cutoff=True)
        q = torch.where(v < 0, -q, q)
        code = (q + zero_point).clamp(0, element.code_max)
        return ((code - zero_point) * divisor64).to(out_dtype)
    values = element_values(v, element, mode, rbits, saturate, flush=flush) * divisor64
    return values.to(out_dtype)


def _qdq_amax(x, fmt: ScaledFormat, axis, mode, saturate, seed, amax, flush):
    """Apply the amax and static scale rules as `run_scaled` and `encode_amax_groups` do."""
    if fmt.scale_rule == "static" and amax is None:
        raise ValueError(f"format {fmt.name} uses scale_rule='static': pass amax= from calibration")
    asymmetric = bool(getattr(fmt.element, "asymmetric", False))
    x2 = rows_of(x, axis)
    rows, length = x2.shape
    block = int(fmt.block_size) if fmt.granularity in ("group", "block") else length
    xb = blocks_of(x2, block)
    group_amax, lo, hi, special = group_statistics(xb, need_range=asymmetric)

    static = torch.tensor(float(amax), dtype=torch.float64, device=x.device) if amax is not None else None
    g32 = torch.ones((), dtype=torch.float32, device=x.device)
    if fmt.tensor_scale is not None:
        g32 = tensor_scale(fmt, static if static is not None else group_amax.amax().to(torch.float64))
    # With a per-tensor second-level scale (NVFP4), a calibration amax sets that scale only.
    group_static = static if fmt.tensor_scale is None else None
    if fmt.granularity == "tensor" and group_static is None:
        if asymmetric:
            # One group over the whole tensor: its min and max.
            lo = lo.amin().expand_as(lo)
            hi = hi.amax().expand_as(hi)
        else:
            group_static = group_amax.amax().to(torch.float64)
    if group_static is not None:
        # A static amax of 0 (an all-zero tensor) keeps each group's own statistics, as the kernel does.
        use_static = group_static > 0
        group_amax = torch.where(use_static, group_static.to(group_amax.dtype), group_amax)
        if lo is not None:
            lo = torch.where(use_static, -group_static.to(lo.dtype), lo)
            hi = torch.where(use_static, group_static.to(hi.dtype), hi)

    rbits = None
    if mode == k.STOCHASTIC:
        rbits = blocks_of(random_bits(seed, flat_index((rows, length), x.device)), block)
    if lo is not None:
        lo, hi = lo[..., None], hi[..., None]
    values = quantize_groups(xb, group_amax[..., None], lo, hi, fmt, g32, mode, saturate, rbits, x.dtype, flush)
    if bool(special.any()):
        if fmt.granularity == "tensor":
            # One group for the whole tensor: a NaN or Inf anywhere makes all of it NaN.
            special = torch.ones_like(special)
        values = torch.where(special[..., None], torch.nan, values)
    out2 = values.reshape(rows, -1)[:, :length]
    return from_rows(out2, x, axis)
