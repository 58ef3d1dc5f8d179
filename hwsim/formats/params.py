"""Turn format specs into the integer parameter vectors the kernels take."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from hwsim.formats import kernels as k
from hwsim.formats.spec import CodebookFormat, FloatFormat, IntFormat

ROUNDING_MODES = {
    "nearest_even": k.NEAREST_EVEN,
    "nearest_away": k.NEAREST_AWAY,
    "toward_zero": k.TOWARD_ZERO,
    "stochastic": k.STOCHASTIC,
}


def rounding_mode(name: str) -> int:
    key = str(name).lower().replace("-", "_")
    if key not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {name!r}: choose one of {', '.join(ROUNDING_MODES)}")
    return ROUNDING_MODES[key]


@lru_cache(maxsize=None)
def element_params(fmt, nan_to_zero: bool = False, flush_to_zero: bool = False) -> np.ndarray:
    """int64 parameter vector of an element format (see the P_* indices in kernels)."""
    p = np.zeros(k.N_PARAMS, dtype=np.int64)
    p[k.P_WIDTH] = fmt.width
    p[k.P_NAN_CODE] = -1
    p[k.P_INF_CODE] = -1
    p[k.P_NAN_ZERO] = int(nan_to_zero)
    if isinstance(fmt, FloatFormat):
        p[k.P_KIND] = k.KIND_FLOAT
        p[k.P_MAN] = fmt.mantissa_bits
        p[k.P_EMIN] = fmt.emin
        p[k.P_SUBNORMALS] = int(fmt.subnormals)
        p[k.P_MAX_CODE] = fmt.max_magnitude_code
        p[k.P_SIGN_MASK] = fmt.sign_mask
        p[k.P_NAN_CODE] = fmt.nan_code
        p[k.P_INF_CODE] = fmt.inf_code
        p[k.P_FNUZ] = int(fmt.special == "fnuz")
        p[k.P_FLUSH] = int(flush_to_zero)
        # Any value with floor(log2) above emax + 1 overflows even after rounding.
        p[k.P_EMAX_PLUS2] = fmt.emax + 1
    elif isinstance(fmt, IntFormat):
        p[k.P_KIND] = k.KIND_INT
        p[k.P_CODE_MIN] = fmt.code_min
        p[k.P_CODE_MAX] = fmt.code_max
        p[k.P_FRAC] = fmt.frac_bits
    elif isinstance(fmt, CodebookFormat):
        p[k.P_KIND] = k.KIND_CODEBOOK
    else:
        raise TypeError(f"{fmt!r} is not an element format")
    p.setflags(write=False)
    return p


@lru_cache(maxsize=None)
def levels_of(fmt) -> np.ndarray:
    """Sorted levels of a codebook; a one-element placeholder for other formats."""
    if isinstance(fmt, CodebookFormat):
        levels = np.asarray(fmt.levels, dtype=np.float64)
    else:
        levels = np.zeros(1, dtype=np.float64)
    levels.setflags(write=False)
    return levels


@lru_cache(maxsize=None)
def values_table(fmt, dtype=np.float64) -> np.ndarray:
    """Decoded value of every code in `dtype`, read-only; for elements of 16 bits or fewer.

    One extra entry, index 2**width, is NaN: kernels store it for a NaN
    input into a format that has no NaN code. Every value of a format of 16
    bits or fewer is exact in float32, so a float32 table loses nothing.
    """
    table = np.append(np.array(fmt.values, dtype=np.float64), np.nan).astype(dtype)
    table.setflags(write=False)
    return table


def code_dtype(width: int) -> np.dtype:
    if width <= 8:
        return np.dtype(np.uint8)
    if width <= 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)
