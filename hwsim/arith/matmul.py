"""Public entry points: emulated matmul, its result, and error as a function of K."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from hwsim.arith.engine import run_datapath
from hwsim.arith.operands import as_float64, check_shapes, prepare_operand
from hwsim.arith.spec import MacSpec
from hwsim.arith.stats import STAT_COLUMNS, error_summary
from hwsim.formats.ops import Encoded, decode
from hwsim.formats.spec import IntFormat, ScaledFormat

log = logging.getLogger(__name__)


@dataclass
class MatmulResult:
    """Output of an emulated GEMM.

    values: float64 array (..., M, N). Each entry is a value of the output
        register: the accumulator, or FP32 for an integer accumulator whose
        result is scaled after accumulation.
    k: the reduction length K.
    k_padded: K after padding both operands with zeros to whole blocks. The
        padded zeros enter the adder tree.
    overflow_events: additions into the accumulator whose exact result left
        its range (wrapped, saturated or became Inf).
    epilogue_overflow_events: outputs that overflowed when the scales constant
        along K were applied.
    path: "general" (the emulating kernels), or the exact fast path used:
        "blas32", "blas64" or "integer".
    reference_quantized: float64 matmul of the decoded operands (hwsim.decode),
        when return_error=True. For NVFP4, hwsim.decode scales elements by
        float32(s / g), while the datapath applies s per block and
        1 / (g_a g_b) once, so the two differ by about 2**-24 relative.
    reference_unquantized: float64 matmul of the inputs, when
        return_error=True and the inputs were arrays.
    """

    values: np.ndarray
    mac: MacSpec
    k: int
    k_padded: int
    overflow_events: int
    epilogue_overflow_events: int
    path: str
    reference_quantized: np.ndarray | None = None
    reference_unquantized: np.ndarray | None = None

    @property
    def padded(self) -> bool:
        """Whether K was padded to whole blocks."""
        return self.k_padded != self.k

    @property
    def error_quantized(self) -> np.ndarray:
        """values - reference_quantized per output: the error the arithmetic adds to the quantized operands."""
        if self.reference_quantized is None:
            raise ValueError("no quantized reference: call matmul(..., return_error=True)")
        return self.values - self.reference_quantized

    @property
    def error_unquantized(self) -> np.ndarray:
        """values - reference_unquantized per output: quantization and arithmetic error together."""
        if self.reference_unquantized is None:
            raise ValueError(
                "no unquantized reference: call matmul(..., return_error=True) with arrays; Encoded inputs have no unquantized values"
            )
        return self.values - self.reference_unquantized

    def error_stats(self):
        """pandas DataFrame with one row per available reference ("quantized", "unquantized") and the columns of stats.STAT_COLUMNS."""
        import pandas as pd

        rows = []
        for name, reference in (("quantized", self.reference_quantized), ("unquantized", self.reference_unquantized)):
            if reference is not None:
                rows.append({"reference": name, **error_summary(self.values, reference)})
        if not rows:
            raise ValueError("no reference to compare with: call matmul(..., return_error=True)")
        return pd.DataFrame(rows, columns=("reference",) + STAT_COLUMNS)


def matmul(a, b, mac: MacSpec, *, return_error: bool = False, path: str = "auto") -> MatmulResult:
    """Emulate a @ b on the multiply-accumulate datapath `mac`, bit for bit.

    a: (..., M, K) and b: (..., K, N) float arrays or CPU tensors. They are
        quantized here along K: a to mac.a along its last axis, b to mac.b
        along its second-to-last axis. Encoded operands already quantized
        that way are used as they are. Leading axes broadcast as in
        numpy.matmul.
    return_error: also compute float64 references of the quantized operands
        and of the unquantized inputs (see MatmulResult).
    path: "auto" takes an exact fast path where one is proved exact, and the
        emulating kernels elsewhere. "general" always emulates. "blas" and
        "integer" force that fast path and raise ValueError when it is not
        provably exact.
    """
    if not isinstance(mac, MacSpec):
        raise TypeError(f"expected a MacSpec for mac, got {type(mac).__name__}; build one with MacSpec(a=..., b=..., accumulator=...)")
    batch_shape, m, k, n = check_shapes(a, b)
    want_codes = mac.block_length == 1 and all(_integer_elements(fmt) for fmt in (mac.a, mac.b))
    op_a = prepare_operand(a, mac.a, "a", want_codes)
    op_b = prepare_operand(b, mac.b, "b", want_codes)
    output = run_datapath(mac, op_a, op_b, batch_shape, path)
    if output.fast_path_reason:
        log.debug("%s: no exact fast path: %s", mac.label, output.fast_path_reason)
    k_padded = max(op_a.k_padded, op_b.k_padded)
    if k_padded != k:
        log.info("%s: K=%d padded with zeros to %d, whole blocks of the block-scaled operand", mac.label, k, k_padded)
    result = MatmulResult(
        output.values, mac, k, k_padded, output.overflow_events, output.epilogue_overflow_events, output.path,
    )
    if return_error:
        result.reference_quantized = np.matmul(decode(op_a.encoded, np.float64), decode(op_b.encoded, np.float64))
        if op_a.source is not None and op_b.source is not None:
            result.reference_unquantized = np.matmul(as_float64(op_a.source), as_float64(op_b.source))
    return result


def _integer_elements(fmt) -> bool:
    element = fmt.element if isinstance(fmt, ScaledFormat) else fmt
    return isinstance(element, IntFormat)


def error_vs_k(a, b, mac: MacSpec, k_values=None, *, path: str = "auto"):
    """Tabulate the error of the emulated a[..., :k] @ b[..., :k, :] for each k, as a pandas DataFrame.

    The table shows where an accumulator breaks down as K grows: fp16
    accumulation of positive products stalls once the spacing of the sum
    exceeds the products.
    k_values defaults to the powers of two below K, and K. Each prefix is
    quantized on its own, so per-tensor scales follow the prefix's amax.
    One row per k and reference, with k, k_padded, reference, overflow_events
    and the columns of stats.STAT_COLUMNS.
    """
    import pandas as pd

    if isinstance(a, Encoded) or isinstance(b, Encoded):
        raise ValueError("error_vs_k slices the unquantized inputs along K; pass arrays, not Encoded operands")
    _, _, k_total, _ = check_shapes(a, b)
    if k_values is None:
        k_values = [2**p for p in range(k_total.bit_length()) if 2**p < k_total] + [k_total]
    rows = []
    for k in k_values:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= k_total:
            raise ValueError(f"invalid k={k!r} in k_values: each k must be an integer from 1 to K={k_total}")
        result = matmul(a[..., :k], b[..., :k, :], mac, return_error=True, path=path)
        stats = result.error_stats()
        for record in stats.to_dict("records"):
            rows.append({"k": int(k), "k_padded": result.k_padded, "overflow_events": result.overflow_events, **record})
    return pd.DataFrame(rows, columns=("k", "k_padded", "reference", "overflow_events") + STAT_COLUMNS)
