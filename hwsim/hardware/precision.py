"""Compute precisions of matrix units, and how an operand pair is run on them.

A matrix unit (a GPU's tensor cores, an NPU's MAC array) multiplies operands
of a few *compute precisions*: fp16, bf16, tf32, fp8, fp6, fp4, int8, int4,
and fp32 on a GPU's CUDA cores. `resolve_matmul` takes the formats of the
two operands of a matrix product and the precisions a device offers, and
returns a `ComputePlan`: the precision the product runs at and which operands
must be converted to it first.

Rules, in order:

- an operand whose elements are exactly a compute precision of the device
  runs as it is, and two operands at the same precision take the *native*
  path;
- otherwise the product runs at the fastest precision that represents every
  value of both operands exactly, and the operands of another precision are
  converted to it (dequantized) by the vector units: when only the weight
  operand is converted, this is a weight-only kernel (W4A16, W8A16, W4A8),
  which is how such formats always run; when an activation of a precision
  the device offers is widened to meet a wider weight (fp8 activations into
  an fp16 LM head), the path is *mixed*; when the activation's own
  precision is not one the device offers, the path is *emulated*, and the
  caller decides whether emulation is allowed;
- codebook and dialect elements (NF4, BlockDialect) are table lookups that
  always need converting, to fp16.

Scales: per-tensor, per-channel and per-token scales are applied to the
output in the kernel epilogue and cost nothing here. Group and block scales
are applied by the matrix unit when the device lists the compute precision in
its block-scaled precisions (Blackwell MXFP8/MXFP6/MXFP4 and NVFP4). A
converted operand whose target precision is a float folds its scale into the
conversion. Otherwise each partial sum over one block is rescaled by the
vector units (`rescale_block_size`).
"""

from __future__ import annotations

from dataclasses import dataclass

from hwsim.hardware.datatypes import NumberType
from hwsim.hardware.pe import UnsupportedFormatError, describe_operand

# Exact value sets of the compute precisions: (kind, exponent bits, mantissa bits) for floats,
# ("int", 0, magnitude bits) for signed integers. fp8 and fp6 matrix units take either of two
# encodings (E4M3 or E5M2; E2M3 or E3M2), so an element fits them if it fits either one.
PRECISION_TYPES: dict[str, tuple[tuple[str, int, int], ...]] = {
    "int4": (("int", 0, 3),),
    "int8": (("int", 0, 7),),
    "fp4": (("float", 2, 1),),
    "fp6": (("float", 2, 3), ("float", 3, 2)),
    "fp8": (("float", 4, 3), ("float", 5, 2)),
    "fp16": (("float", 5, 10),),
    "bf16": (("float", 8, 7),),
    "tf32": (("float", 8, 10),),
    "fp32": (("float", 8, 23),),
}
PRECISIONS = tuple(PRECISION_TYPES)
INTEGER_PRECISIONS = ("int4", "int8")
# Codebook and dialect elements are decoded through a table of fp16 values.
CODEBOOK_TARGET = "fp16"

# Number types that price one MAC at each precision (hwsim.hardware.energy takes these names).
PRECISION_NUMBER_TYPES = {
    "int4": "int4",
    "int8": "int8",
    "fp4": "fp4_e2m1",
    "fp6": "fp6_e2m3",
    "fp8": "fp8_e4m3",
    "fp16": "fp16",
    "bf16": "bf16",
    "tf32": NumberType.floating(8, 10, "tf32"),
    "fp32": "fp32",
}


def accumulator_for(precision: str) -> str:
    """Accumulator type of a matrix unit at `precision`: int32 for integer products, fp32 for float ones."""
    return "int32" if precision in INTEGER_PRECISIONS else "fp32"


@dataclass(frozen=True)
class OperandPrecision:
    """One operand format reduced to what a matrix unit needs to know."""

    format_name: str
    precision: str | None  # the compute precision its elements are exactly, or None
    element: NumberType | None  # None for codebook and dialect elements
    block_size: int | None  # elements per group or block scale
    is_float_scale_power_of_two: bool

    @property
    def needs_decoding(self) -> bool:
        return self.element is None


@dataclass(frozen=True)
class ComputePlan:
    """How one matrix product of an (activation, weight) format pair runs.

    `path` is "native" (no conversion), "weight_only" (the weight operand is
    dequantized to the activation's precision), "mixed" (an activation of a
    precision the device offers is widened to meet the weight) or
    "emulated" (the activation's precision is not one the device offers).
    `rescale_block_size` is the block of the reduction axis after which the
    vector units rescale a partial sum, or None when no operand needs that.
    """

    precision: str
    convert_activation: bool
    convert_weight: bool
    path: str
    block_scales_native: bool
    rescale_block_size: int | None
    activation: OperandPrecision
    weight: OperandPrecision

    @property
    def note(self) -> str:
        parts = [f"{self.path} at {self.precision}"]
        converted = [o.format_name for o, c in ((self.activation, self.convert_activation), (self.weight, self.convert_weight)) if c]
        if converted:
            parts.append(f"{', '.join(converted)} converted to {self.precision} by the vector units")
        if self.rescale_block_size:
            parts.append(f"partial sums rescaled every {self.rescale_block_size} elements by the vector units")
        return "; ".join(parts)


def _fits(element: NumberType, kind: str, exponent_bits: int, mantissa_bits: int) -> bool:
    """Return whether every value of `element` is exactly a value of the given type."""
    if element.kind == "int":
        magnitude = element.width - 1 if element.signed else element.width
        if kind == "int":
            return magnitude <= mantissa_bits
        # A float represents every integer up to 2**(mantissa + 1) exactly, if its exponent reaches that far.
        return magnitude <= mantissa_bits + 1 and 2 ** (exponent_bits - 1) - 1 >= magnitude
    if kind == "int":
        return False
    return element.exponent_bits <= exponent_bits and element.mantissa_bits <= mantissa_bits


def fits_precision(element: NumberType | None, precision: str) -> bool:
    """Return whether every value of `element` is exactly a value of `precision` (codebooks fit fp16 and wider floats)."""
    if element is None:
        return precision in ("fp16", "tf32", "fp32")
    return any(_fits(element, *candidate) for candidate in PRECISION_TYPES[precision])


def exact_precision(element: NumberType | None) -> str | None:
    """Return the compute precision with exactly the value set of `element`, or None."""
    if element is None:
        return None
    for name, candidates in PRECISION_TYPES.items():
        for kind, exponent_bits, mantissa_bits in candidates:
            if element.kind == "int" and kind == "int":
                magnitude = element.width - 1 if element.signed else element.width
                if element.signed and magnitude == mantissa_bits:
                    return name
            elif element.kind == "float" and kind == "float":
                if (element.exponent_bits, element.mantissa_bits) == (exponent_bits, mantissa_bits):
                    return name
    return None


def describe_precision(fmt) -> OperandPrecision:
    """Reduce a registry format (or format name) to its compute precision, element type and block size."""
    operand = describe_operand("operand", fmt)
    scale = operand.scale
    power_of_two = scale is not None and scale.kind == "float" and scale.mantissa_bits == 0
    return OperandPrecision(operand.format_name, exact_precision(operand.element), operand.element, operand.block_size, power_of_two)


def resolve_matmul(
    activation_format,
    weight_format,
    precisions: dict[str, float],
    block_scaled_precisions: tuple[str, ...] = (),
    *,
    allow_emulation: bool = False,
    device: str = "the device",
) -> ComputePlan:
    """Choose the compute precision for `activation_format` x `weight_format` on a device.

    `precisions` maps each compute precision the device offers to its peak
    rate. Among the precisions that represent both operands exactly, the
    fastest wins, and ties go to the activation's own precision. Raise
    UnsupportedFormatError when no precision represents both, or when an
    activation of a precision the device does not offer would need
    converting and `allow_emulation` is False.
    """
    activation = describe_precision(activation_format)
    weight = describe_precision(weight_format)
    if activation.precision is not None and activation.precision == weight.precision and activation.precision in precisions:
        chosen = activation.precision
    else:
        candidates = [p for p in precisions if fits_precision(activation.element, p) and fits_precision(weight.element, p)]
        if not candidates:
            raise UnsupportedFormatError(
                f"unsupported formats: no compute precision of {device} represents both activation format "
                f"{activation.format_name!r} and weight format {weight.format_name!r} exactly; it offers "
                f"{', '.join(precisions)}; choose formats that fit one of them"
            )
        chosen = max(candidates, key=lambda p: (precisions[p], p == activation.precision, p == weight.precision))
    convert_activation = activation.precision != chosen
    convert_weight = weight.precision != chosen
    if convert_activation:
        path = "mixed" if activation.precision in precisions else "emulated"
    elif convert_weight:
        path = "weight_only"
    else:
        path = "native"
    if path == "emulated" and not allow_emulation:
        raise UnsupportedFormatError(
            f"activation format {activation.format_name!r} is not a compute precision of {device} "
            f"(it offers {', '.join(precisions)}); running it means converting activations to {chosen} first. "
            f"Allow emulation (simulate(..., unsupported='emulate') or --emulate-unsupported) to price that, "
            f"or choose an activation format in {', '.join(precisions)}"
        )

    block_native = chosen in block_scaled_precisions
    rescale = None
    blocks = []
    for operand, converted in ((activation, convert_activation), (weight, convert_weight)):
        if operand.block_size is None:
            continue
        if converted and chosen not in INTEGER_PRECISIONS:
            continue  # the scale folds into the conversion to a float precision
        if not converted and block_native:
            continue
        blocks.append(operand.block_size)
    if blocks:
        rescale = min(blocks)
    return ComputePlan(chosen, convert_activation, convert_weight, path, block_native, rescale, activation, weight)
