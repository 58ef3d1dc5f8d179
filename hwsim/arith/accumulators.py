"""Accumulator specs: the register a multiply-accumulate datapath adds products into.

`IntAccumulator` is a two's-complement register that wraps around or
saturates when a sum leaves its range. `FloatAccumulator` is a binary
floating-point register with subnormals, Inf and NaN in the IEEE 754 layout.
Every addition into it rounds once, in its rounding mode. A finite sum
beyond its range becomes Inf or saturates at the largest finite value.

Named accumulators (`get_accumulator`):

| name | register |
| --- | --- |
| int32_wrap, int32_saturate | 32-bit two's complement |
| int16_wrap, int16_saturate | 16-bit two's complement |
| fp32, fp16, bf16 | IEEE 754 binary32, binary16, bfloat16, nearest-even |
| fp22_e8m13_rtz | 8 exponent and 13 mantissa bits, toward-zero rounding |

fp22_e8m13_rtz models FP8 tensor-core accumulation on Hopper (H100) as
reported: an "FP22 (e8m13)" accumulator whose results are truncated
(ScoRpii Tech, "Your GPU's FP32 Output Is Lying: Truncation in Tensor Cores",
2026, citing the PyTorch blog). Khattak and Mikaitis, "Accurate Models of
NVIDIA Tensor Cores", arXiv:2512.07004, model these units in detail.
NOTE: hardware aligns and truncates each product to the largest exponent of
its block before adding. This register truncates the exact sum once instead,
so it can differ from a GPU in the last bit.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np

IntOverflow = Literal["wrap", "saturate"]
FloatOverflow = Literal["inf", "saturate"]
AccumulatorRounding = Literal["nearest_even", "nearest_away", "toward_zero"]

INT_OVERFLOW_MODES = ("wrap", "saturate")
FLOAT_OVERFLOW_MODES = ("inf", "saturate")
ACCUMULATOR_ROUNDING_MODES = ("nearest_even", "nearest_away", "toward_zero")

# Rounding-mode codes the kernels take; the values match hwsim.formats.kernels.
ROUNDING_CODES = {"nearest_even": 0, "nearest_away": 1, "toward_zero": 2}

# Integer registers are returned as float64 values, which hold every integer
# up to 2**53 exactly.
MAX_INT_ACCUMULATOR_BITS = 53
# A float register must sit well inside float64 so that the kernels can hold
# its values, and values rounded to odd at 53 bits, as normal float64 numbers:
# at most 10 exponent bits (range 2**-560 .. 2**512) and 50 mantissa bits
# (53 >= p + 2 bits, which rounding to odd needs before the final rounding).
MAX_FLOAT_ACCUMULATOR_EXPONENT_BITS = 10
MAX_FLOAT_ACCUMULATOR_MANTISSA_BITS = 50


def _check_int(name: str, value: object, low: int, high: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"invalid {name}={value!r}: must be an integer from {low} to {high}; {fix}")


@dataclass(frozen=True)
class IntAccumulator:
    """Two's-complement register of `bits` bits.

    overflow="wrap" keeps the low `bits` bits of a sum, as adders do;
    overflow="saturate" clamps the sum to the register's range.
    """

    bits: int = 32
    overflow: IntOverflow = "wrap"
    name: str = ""

    kind = "int"

    def __post_init__(self) -> None:
        _check_int("bits", self.bits, 2, MAX_INT_ACCUMULATOR_BITS, "results are float64 values, which hold integers up to 2**53 exactly")
        if self.overflow not in INT_OVERFLOW_MODES:
            raise ValueError(f"invalid overflow={self.overflow!r} for an integer accumulator: choose 'wrap' or 'saturate'")

    @property
    def min_value(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def max_value(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def label(self) -> str:
        return self.name or f"int{self.bits}_{self.overflow}"


@dataclass(frozen=True)
class FloatAccumulator:
    """Binary floating-point register with IEEE 754 layout: bias 2**(exponent_bits-1) - 1, subnormals, Inf and NaN.

    rounding: how each addition rounds ("toward_zero" is truncation).
    overflow="inf": a finite sum beyond the range rounds as IEEE 754 specifies
        (to Inf in the nearest modes, to the largest finite value toward zero);
    overflow="saturate": it becomes the largest finite value in every mode.
    Inf and NaN inputs propagate as IEEE 754 defines in both modes.
    """

    exponent_bits: int
    mantissa_bits: int
    rounding: AccumulatorRounding = "nearest_even"
    overflow: FloatOverflow = "inf"
    name: str = ""

    kind = "float"

    def __post_init__(self) -> None:
        _check_int(
            "exponent_bits", self.exponent_bits, 2, MAX_FLOAT_ACCUMULATOR_EXPONENT_BITS,
            "the register must fit inside float64's range with margin (fp32 and bf16 have 8)",
        )
        _check_int(
            "mantissa_bits", self.mantissa_bits, 1, MAX_FLOAT_ACCUMULATOR_MANTISSA_BITS,
            "exact rounding needs at least two spare float64 bits (fp32 has 23)",
        )
        if self.rounding not in ACCUMULATOR_ROUNDING_MODES:
            raise ValueError(f"invalid rounding={self.rounding!r} for a float accumulator: choose one of {', '.join(ACCUMULATOR_ROUNDING_MODES)}")
        if self.overflow not in FLOAT_OVERFLOW_MODES:
            raise ValueError(f"invalid overflow={self.overflow!r} for a float accumulator: choose 'inf' or 'saturate'")

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1

    @property
    def emax(self) -> int:
        """Exponent of the largest normal number."""
        return self.bias

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def max_normal(self) -> float:
        return math.ldexp(2.0 - math.ldexp(1.0, -self.mantissa_bits), self.emax)

    @property
    def min_subnormal(self) -> float:
        return math.ldexp(1.0, self.emin - self.mantissa_bits)

    @property
    def precision(self) -> int:
        """Significand bits, the implicit one included."""
        return self.mantissa_bits + 1

    @property
    def label(self) -> str:
        return self.name or f"e{self.exponent_bits}m{self.mantissa_bits}_{self.rounding}"


Accumulator = Union[IntAccumulator, FloatAccumulator]

_ACCUMULATORS: dict[str, Accumulator] = {}


def register_accumulator(name: str, accumulator: Accumulator, *, replace: bool = False) -> Accumulator:
    """Add `accumulator` to the named accumulators; raise if the name is taken unless `replace=True`."""
    key = name.lower()
    if key in _ACCUMULATORS and not replace:
        raise ValueError(f"accumulator name {name!r} is already registered; pass replace=True to overwrite it")
    _ACCUMULATORS[key] = accumulator
    return accumulator


def accumulator_names() -> list[str]:
    return list(_ACCUMULATORS)


def get_accumulator(name: str | Accumulator) -> Accumulator:
    """Return the named accumulator; specs pass through."""
    if isinstance(name, (IntAccumulator, FloatAccumulator)):
        return name
    if not isinstance(name, str):
        raise TypeError(f"expected an accumulator name or spec, got {type(name).__name__}: {name!r}")
    key = name.strip().lower()
    if key in _ACCUMULATORS:
        return _ACCUMULATORS[key]
    close = difflib.get_close_matches(key, list(_ACCUMULATORS), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise ValueError(
        f"unknown accumulator {name!r}: {hint}choose one of {', '.join(_ACCUMULATORS)}, "
        f"or pass IntAccumulator(...) or FloatAccumulator(...)"
    )


register_accumulator("int32_wrap", IntAccumulator(32, "wrap", name="int32_wrap"))
register_accumulator("int32_saturate", IntAccumulator(32, "saturate", name="int32_saturate"))
register_accumulator("int16_wrap", IntAccumulator(16, "wrap", name="int16_wrap"))
register_accumulator("int16_saturate", IntAccumulator(16, "saturate", name="int16_saturate"))
register_accumulator("fp32", FloatAccumulator(8, 23, name="fp32"))
register_accumulator("fp16", FloatAccumulator(5, 10, name="fp16"))
register_accumulator("bf16", FloatAccumulator(8, 7, name="bf16"))
register_accumulator("fp22_e8m13_rtz", FloatAccumulator(8, 13, "toward_zero", name="fp22_e8m13_rtz"))
