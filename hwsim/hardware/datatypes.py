"""Number types of arithmetic hardware: integer or floating point, with widths.

A `NumberType` is what a multiplier or adder is built for, reduced to the
widths that set its cost. It comes from a registry format (`number_type_of`)
or from a name such as "int32" or "fp32" (`parse_number_type`), because
accumulators are often wider than any stored format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from hwsim import formats as format_registry

NumberKind = Literal["int", "float"]

_NAMED_FLOATS = {
    # name: (exponent_bits, mantissa_bits); IEEE 754 binary16/32/64 and bfloat16.
    "fp16": (5, 10),
    "bf16": (8, 7),
    "fp32": (8, 23),
    "fp64": (11, 52),
}
_INT_NAME = re.compile(r"^(?P<unsigned>u?)int(?P<bits>\d+)$")


@dataclass(frozen=True)
class NumberType:
    """Integer or floating-point operand type, reduced to what sets arithmetic cost.

    For integers `width` is the total bit count and `mantissa_bits` the
    magnitude bits; for floats `mantissa_bits` excludes the implicit leading one.
    """

    kind: NumberKind
    width: int
    exponent_bits: int = 0
    mantissa_bits: int = 0
    signed: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("int", "float"):
            raise ValueError(f"invalid number kind {self.kind!r}: choose 'int' or 'float'")
        if self.width < 1 or self.width > 64:
            raise ValueError(f"invalid width={self.width!r} for {self.label}: expected 1 to 64 bits")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.kind == "int":
            return f"{'' if self.signed else 'u'}int{self.width}"
        return f"e{self.exponent_bits}m{self.mantissa_bits}"

    @property
    def significand_bits(self) -> int:
        """Bits of the significand a multiplier array multiplies: magnitude bits for integers, 1 + mantissa for floats."""
        if self.kind == "int":
            return self.width
        return self.mantissa_bits + 1

    @classmethod
    def integer(cls, bits: int, signed: bool = True) -> "NumberType":
        return cls("int", bits, 0, bits - 1 if signed else bits, signed, f"{'' if signed else 'u'}int{bits}")

    @classmethod
    def floating(cls, exponent_bits: int, mantissa_bits: int, name: str = "", signed: bool = True) -> "NumberType":
        return cls("float", int(signed) + exponent_bits + mantissa_bits, exponent_bits, mantissa_bits, signed, name)


def parse_number_type(name: str) -> NumberType:
    """Number type named like "int32", "uint8", "fp32" or "bf16", or any element format of the registry."""
    key = str(name).strip().lower()
    match = _INT_NAME.match(key)
    if match:
        bits = int(match.group("bits"))
        if not 2 <= bits <= 64:
            raise ValueError(f"invalid integer type {name!r}: use 2 to 64 bits, such as int32")
        return NumberType.integer(bits, signed=not match.group("unsigned"))
    if key in _NAMED_FLOATS:
        exponent_bits, mantissa_bits = _NAMED_FLOATS[key]
        return NumberType.floating(exponent_bits, mantissa_bits, key)
    try:
        fmt = format_registry.get(key)
    except KeyError as error:
        raise ValueError(
            f"unknown number type {name!r}: use intN, uintN, fp16, bf16, fp32 or an element format name"
        ) from error
    return number_type_of(fmt)


def number_type_of(fmt) -> NumberType:
    """Number type of an element format (int, float or codebook); scaled formats give their element's type."""
    kind = fmt.kind
    if kind in ("scaled", "dialect"):
        return number_type_of(fmt.element)
    if kind == "int":
        return NumberType("int", fmt.width, 0, fmt.mantissa_bits, fmt.is_signed, fmt.name)
    if kind == "float":
        return NumberType("float", fmt.width, fmt.exponent_bits, fmt.mantissa_bits, fmt.is_signed, fmt.name)
    if kind == "codebook":
        # A codebook code is an index; the value it stands for is decoded before any multiply.
        return NumberType("int", fmt.width, 0, fmt.width, fmt.is_signed, fmt.name)
    raise ValueError(f"format {getattr(fmt, 'name', fmt)!r} of kind {kind!r} has no arithmetic number type")
