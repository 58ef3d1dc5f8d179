"""Bit-accurate multiply-accumulate and GEMM emulation.

`matmul(a, b, MacSpec(a="fp8_e4m3", b="fp8_e4m3", accumulator="fp16"))`
quantizes both operands along K, multiplies exactly, and adds the products
into the accumulator register in the stated order, rounding as the register
does. The result carries the overflow count and, on request, the error
against float64 references.
"""

from hwsim.arith.accumulators import (
    FloatAccumulator,
    IntAccumulator,
    accumulator_names,
    get_accumulator,
    register_accumulator,
)
from hwsim.arith.matmul import MatmulResult, error_vs_k, matmul
from hwsim.arith.spec import ORDERS, MacSpec

__all__ = [
    "ORDERS",
    "FloatAccumulator",
    "IntAccumulator",
    "MacSpec",
    "MatmulResult",
    "accumulator_names",
    "error_vs_k",
    "get_accumulator",
    "matmul",
    "register_accumulator",
]
