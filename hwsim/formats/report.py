"""Error tables: what each format does to a real tensor, and what it costs to store."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hwsim.formats.ops import qdq
from hwsim.formats.registry import get

DEFAULT_FORMATS = (
    "bf16", "fp8_e4m3", "fp8_e5m2", "int8_channel", "int4_g128", "mxfp8_e4m3",
    "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "nvfp4", "nf4", "blockdialect",
)


def error_table(x: np.ndarray, formats=DEFAULT_FORMATS, *, axis: int = -1) -> pd.DataFrame:
    """Measure the error of qdq(x) in each format against x.

    Columns: format, bits_per_element (scale overhead included), storage_bytes
    for this tensor, mse, sqnr_db, max_abs_error and relative_rms_error.
    sqnr_db is 10 log10(signal power / error power), and it is inf when the
    error is zero.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        raise ValueError("the tensor is empty: pass a tensor with at least one element")
    if not np.isfinite(x).all():
        raise ValueError("the tensor contains NaN or Inf: an error table needs finite values; remove them first")
    signal = float(np.mean(x.astype(np.float64) ** 2))
    rows = []
    for name in formats:
        fmt = get(name)
        error = qdq(x, fmt, axis=axis).astype(np.float64) - x
        mse = float(np.mean(error**2))
        if signal > 0:
            relative_rms = float(np.sqrt(mse / signal))
        else:
            relative_rms = 0.0 if mse == 0 else float("inf")
        rows.append(
            {
                "format": fmt.name,
                "bits_per_element": fmt.bits_per_element,
                "storage_bytes": fmt.storage_bits(x.shape, axis) / 8,
                "mse": mse,
                "sqnr_db": 10 * np.log10(signal / mse) if mse > 0 else float("inf"),
                "max_abs_error": float(np.max(np.abs(error))),
                "relative_rms_error": relative_rms,
            }
        )
    return pd.DataFrame(rows)
