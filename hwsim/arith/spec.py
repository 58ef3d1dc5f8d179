"""MacSpec: the operand formats, the accumulator and the order of additions of a dot-product datapath.

Scales are applied where hardware applies them:
- a scale per block or group along K (MX, NVFP4, int4_g128) sits inside the
  datapath: each block's dot product is computed exactly, multiplied by the
  block scales of both operands, and only then added to the accumulator,
  which is how OCP MX v1.0 defines the dot product of two MX blocks;
- a scale that is constant along K (per tensor, channel or token) is applied
  once to the accumulated sum, in an epilogue, as int8 and FP8 GEMMs do;
- NVFP4's FP32 per-tensor scales g_a, g_b are applied in that epilogue as
  alpha = float32(1 / float32(g_a * g_b)).

Orders of addition, each over *terms*: a term is one product for element
formats and one block's exact scaled dot product for block-scaled operands:
- "sequential": acc = round(acc + term), term after term;
- "pairwise": a balanced binary tree over the terms. Leaves 2i and 2i+1 are
  added exactly and rounded once, then pairs of those, and so on. A node
  without a partner moves up a level unchanged;
- "tree": a `tree_width`-wide adder tree: the exact sum of `tree_width`
  products is added to the accumulator with one rounding, as tensor-core MMA
  instructions round once per instruction.
  NOTE: the tree adds exactly and rounds once in the register's mode; GPU
  adder trees also drop bits while aligning products (see accumulators.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from functools import reduce
from typing import Literal

import numpy as np

from hwsim.arith.accumulators import Accumulator, FloatAccumulator, IntAccumulator, get_accumulator
from hwsim.formats.registry import get
from hwsim.formats.spec import CodebookFormat, DialectFormat, FloatFormat, Format, IntFormat, ScaledFormat

Order = Literal["sequential", "pairwise", "tree"]
ORDERS = ("sequential", "pairwise", "tree")

# An element times its block scale is held in one float64, so it may have at
# most 53 significand bits, and its exponents must keep every product of two
# operand values a normal float64 number (2**-1022 .. 2**1024).
FLOAT64_SIGNIFICAND_BITS = 53
MAX_OPERAND_EXPONENT = 500


@dataclass(frozen=True)
class OperandProfile:
    """Static bounds on the values one operand feeds the multipliers.

    sig_bits: significand bits of any value, after an in-datapath block scale.
    lsb_exp: every value is an integer multiple of 2**lsb_exp.
    max_abs: largest finite magnitude.
    block: elements that share an in-datapath scale along K; 1 when the
        operand has no scale or its scale is applied after accumulation.
    int_max_abs: largest integer magnitude a code stands for (integer elements
        before 2**-frac_bits, zero point subtracted); 0 for other elements.
    """

    sig_bits: int
    lsb_exp: int
    max_abs: float
    block: int
    int_max_abs: int
    frac_bits: int


def _element_profile(element) -> tuple[int, int, float, int, int]:
    """(sig_bits, lsb_exp, max_abs, int_max_abs, frac_bits) of an element format."""
    if isinstance(element, IntFormat):
        if element.asymmetric:
            # code - zero point with both in 0 .. 2**bits - 1.
            int_max = 2**element.bits - 1
        else:
            int_max = max(abs(element.code_min), abs(element.code_max))
        return int_max.bit_length(), -element.frac_bits, math.ldexp(int_max, -element.frac_bits), int_max, element.frac_bits
    if isinstance(element, FloatFormat):
        return element.mantissa_bits + 1, element.emin - element.mantissa_bits, element.max_normal, 0, 0
    if isinstance(element, CodebookFormat):
        sig_bits, lsb_exp = 1, 0
        for level in element.levels:
            if level == 0.0:
                continue
            ratio = Fraction(level)
            sig_bits = max(sig_bits, abs(ratio.numerator).bit_length())
            lsb_exp = min(lsb_exp, -(ratio.denominator.bit_length() - 1))
        return sig_bits, lsb_exp, element.max_normal, 0, 0
    raise TypeError(f"{element!r} is not an element format")


def operand_profile(fmt: Format, role: str) -> OperandProfile:
    """Bounds on the in-datapath values of operand `role` ("a" or "b") in format `fmt`."""
    if isinstance(fmt, DialectFormat):
        raise ValueError(
            f"invalid {role}={fmt.name!r}: dialect formats pick a codebook per block, which the GEMM emulator "
            f"does not model yet; use an MX or NVFP4 format for {role}"
        )
    if not isinstance(fmt, ScaledFormat):
        sig, lsb, max_abs, int_max, frac = _element_profile(fmt)
        return OperandProfile(sig, lsb, max_abs, 1, int_max, frac)
    sig, lsb, max_abs, int_max, frac = _element_profile(fmt.element)
    if fmt.granularity not in ("group", "block"):
        # The scale is constant along K, so it is applied after accumulation.
        return OperandProfile(sig, lsb, max_abs, 1, int_max, frac)
    scale = fmt.scale
    scale_sig = scale.mantissa_bits + 1
    scale_lsb = scale.emin - scale.mantissa_bits
    total_sig = sig + scale_sig
    if total_sig > FLOAT64_SIGNIFICAND_BITS:
        raise ValueError(
            f"invalid {role}={fmt.name!r}: an element times its block scale needs {total_sig} significand bits "
            f"({sig} + {scale_sig}), but the emulator stores it in a float64 (53 bits); use a scale format with fewer mantissa bits"
        )
    return OperandProfile(total_sig, lsb + scale_lsb, max_abs * scale.max_normal, int(fmt.block_size), 0, 0)


def _scale_is_per_k_block(fmt: Format) -> bool:
    return isinstance(fmt, ScaledFormat) and fmt.granularity in ("group", "block")


def _element_of(fmt: Format):
    return fmt.element if isinstance(fmt, ScaledFormat) else fmt


@dataclass(frozen=True)
class MacSpec:
    """A multiply-accumulate datapath: operand formats, accumulator and order of additions.

    a, b: formats of the two operands, as registry names or specs. a is
        quantized along its last axis (K), b along its second-to-last axis.
    accumulator: a name from `accumulator_names()` or an IntAccumulator /
        FloatAccumulator.
    order: "sequential", "pairwise" or "tree" (see the module docstring).
    tree_width: products per rounding for order="tree"; a multiple of the
        block size when an operand is block-scaled.
    """

    a: Format | str
    b: Format | str
    accumulator: Accumulator | str = "fp32"
    order: Order = "sequential"
    tree_width: int | None = None
    profile_a: OperandProfile = field(init=False, repr=False, compare=False)
    profile_b: OperandProfile = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", _resolve_format(self.a, "a"))
        object.__setattr__(self, "b", _resolve_format(self.b, "b"))
        object.__setattr__(self, "accumulator", get_accumulator(self.accumulator))
        object.__setattr__(self, "profile_a", operand_profile(self.a, "a"))
        object.__setattr__(self, "profile_b", operand_profile(self.b, "b"))
        self._check_order()
        self._check_integer_datapath()
        for role, profile in (("a", self.profile_a), ("b", self.profile_b)):
            if profile.lsb_exp < -MAX_OPERAND_EXPONENT or profile.max_abs > 2.0**MAX_OPERAND_EXPONENT:
                raise ValueError(
                    f"invalid {role}={getattr(self, role).name!r}: its values span 2**{profile.lsb_exp} to {profile.max_abs:.3g}, "
                    f"beyond the 2**-{MAX_OPERAND_EXPONENT} .. 2**{MAX_OPERAND_EXPONENT} the emulator represents exactly; use a narrower format"
                )

    def _check_order(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"invalid order={self.order!r}: choose one of {', '.join(ORDERS)}")
        if self.order != "tree":
            if self.tree_width is not None:
                raise ValueError(f"invalid tree_width={self.tree_width!r} with order={self.order!r}: tree_width applies to order='tree'; drop it or set order='tree'")
            return
        width = self.tree_width
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width <= 0:
            raise ValueError(f"invalid tree_width={width!r}: order='tree' needs a positive number of products per rounding, such as 32")
        if width % self.block_length:
            raise ValueError(
                f"invalid tree_width={width}: block-scaled operands add whole blocks of {self.block_length} products exactly, "
                f"so tree_width must be a multiple of {self.block_length}"
            )

    def _check_integer_datapath(self) -> None:
        if not isinstance(self.accumulator, IntAccumulator):
            return
        for role in ("a", "b"):
            fmt = getattr(self, role)
            if not isinstance(_element_of(fmt), IntFormat):
                raise ValueError(
                    f"invalid {role}={fmt.name!r} with integer accumulator {self.accumulator.label}: integer accumulators add "
                    f"integer products; use an integer format for {role} or a float accumulator such as 'fp32'"
                )
            if _scale_is_per_k_block(fmt):
                raise ValueError(
                    f"invalid {role}={fmt.name!r} with integer accumulator {self.accumulator.label}: a scale per block along K "
                    f"makes terms non-integer; use a per-tensor or per-channel format (such as int8_channel) or a float accumulator"
                )

    @property
    def block_length(self) -> int:
        """Products in one term: the greatest common divisor of the in-datapath block sizes, 1 without block scales."""
        blocks = [p.block for p in (self.profile_a, self.profile_b) if p.block > 1]
        return reduce(math.gcd, blocks) if blocks else 1

    @property
    def products_per_rounding(self) -> int:
        """Products added exactly before one rounding: the term for sequential and pairwise, tree_width for tree."""
        return int(self.tree_width) if self.order == "tree" else self.block_length

    @property
    def is_integer(self) -> bool:
        return isinstance(self.accumulator, IntAccumulator)

    @property
    def float_accumulator(self) -> FloatAccumulator | None:
        return self.accumulator if isinstance(self.accumulator, FloatAccumulator) else None

    @property
    def label(self) -> str:
        order = f"tree{self.tree_width}" if self.order == "tree" else self.order
        return f"{self.a.name} x {self.b.name} -> {self.accumulator.label}, {order}"


def _resolve_format(fmt, role: str) -> Format:
    try:
        return get(fmt)
    except KeyError as error:
        raise ValueError(f"invalid {role}: {error.args[0]}") from None
