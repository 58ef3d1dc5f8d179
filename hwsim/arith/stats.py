"""Error statistics of emulated GEMM outputs against float64 references."""

from __future__ import annotations

import numpy as np

STAT_COLUMNS = (
    "outputs",
    "finite_outputs",
    "max_abs_error",
    "mean_abs_error",
    "rms_error",
    "max_rel_error",
    "mean_rel_error",
    "rel_error_outputs",
)


def error_summary(values: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Summary of values - reference over the outputs where both are finite.

    Relative errors |values - reference| / |reference| are taken over the
    outputs with a finite nonzero reference, and `rel_error_outputs` counts
    them; with none, the relative statistics are 0. Non-finite outputs (from
    NaN or Inf inputs, or overflow) are left out and show up as
    outputs - finite_outputs.
    """
    values = np.asarray(values, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    finite = np.isfinite(values) & np.isfinite(reference)
    error = np.abs(values[finite] - reference[finite])
    magnitude = np.abs(reference[finite])
    nonzero = magnitude > 0
    relative = error[nonzero] / magnitude[nonzero]
    count = int(error.size)
    return {
        "outputs": int(values.size),
        "finite_outputs": count,
        "max_abs_error": float(error.max()) if count else 0.0,
        "mean_abs_error": float(error.mean()) if count else 0.0,
        "rms_error": float(np.sqrt(np.mean(error**2))) if count else 0.0,
        "max_rel_error": float(relative.max()) if relative.size else 0.0,
        "mean_rel_error": float(relative.mean()) if relative.size else 0.0,
        "rel_error_outputs": int(relative.size),
    }
