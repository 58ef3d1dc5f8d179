"""How a processing element runs a pair of operand formats: MACs per cycle and energy per action.

`map_operands` takes a PE spec and the activation and weight formats of an
op and returns a `PEMapping`. The mapping gives the reduction elements one PE
consumes per step (Bit Fusion fuses narrow operands) and the cycles a step
takes (bit-serial weights, or operands wider than a fusion unit). It also
gives the energy of each action the PE performs. A format the PE cannot take raises
`UnsupportedFormatError`, which names the PE field to change, unless the spec
chooses the "dequantize" fallback, whose cost the mapping carries.

Scales: a per-tensor, per-channel or per-token scale is applied once per
output element after accumulation, which any PE can do. Group and block
scales need a block-scaled PE, or the dequantize fallback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from hwsim import formats as format_registry
from hwsim.hardware.datatypes import NumberType, number_type_of, parse_number_type
from hwsim.hardware.energy import (
    EnergyEstimate,
    FITTED_SOURCE,
    add_energy,
    mac_energy,
    multiply_energy,
    scale_apply_energy,
    scale_combine_energy,
)
from hwsim.hardware.spec import PESpec
from hwsim.hardware.technology import REFERENCE_TECHNOLOGY, Technology

NO_ENERGY = EnergyEstimate(0.0, "none", False)
BLOCK_GRANULARITIES = ("group", "block")


class UnsupportedFormatError(ValueError):
    """An operand format that the PE cannot take, with the PE field to change."""


@dataclass(frozen=True)
class Operand:
    """An operand format split into what reaches the multiplier and how it is scaled."""

    role: str  # "activation" or "weight"
    format_name: str
    element: NumberType | None  # None for codebook and dialect elements, which need decoding first
    scale: NumberType | None
    block_size: int | None  # elements per scale for group and block granularity
    output_scaled: bool  # a per-tensor, per-channel or per-token scale, applied after accumulation

    @property
    def block_scaled(self) -> bool:
        return self.block_size is not None


def describe_operand(role: str, fmt) -> Operand:
    """Operand view of a registry format (or format name)."""
    fmt = format_registry.get(fmt)
    name = getattr(fmt, "name", "") or str(fmt)
    if fmt.kind in ("int", "float"):
        return Operand(role, name, number_type_of(fmt), None, None, False)
    if fmt.kind == "codebook":
        return Operand(role, name, None, None, None, False)
    if fmt.kind == "dialect":
        return Operand(role, name, None, number_type_of(fmt.scale), fmt.block_size, False)
    element = fmt.element
    # NOTE: zero points of asymmetric integer formats are not priced; their codes are treated as unsigned integers.
    element_type = None if element.kind == "codebook" else number_type_of(element)
    scale = number_type_of(fmt.scale)
    second_level = fmt.tensor_scale is not None
    if fmt.granularity in BLOCK_GRANULARITIES:
        return Operand(role, name, element_type, scale, fmt.block_size, second_level)
    return Operand(role, name, element_type, scale, None, True)


@dataclass(frozen=True)
class PEMapping:
    """Throughput and energy per action of one PE on an (activation, weight) format pair.

    One step of the PE consumes `reduction_per_step` elements of the reduction
    dimension (more than one when Bit Fusion fuses narrow operands) and takes
    `cycles_per_step` cycles (more than one for bit-serial weights or operands
    wider than a fusion unit). Energies are per action: per MAC, per block of
    `block_size` MACs that share scales, per output element for per-tensor or
    per-channel scales, and per element converted by the dequantize fallback.
    """

    reduction_per_step: int
    cycles_per_step: int
    mac: EnergyEstimate
    block: EnergyEstimate
    block_size: int | None
    output_scale: EnergyEstimate
    dequantize: EnergyEstimate
    dequantize_activation: bool
    dequantize_weight: bool
    notes: tuple[str, ...] = ()

    @property
    def macs_per_pe_cycle(self) -> float:
        return self.reduction_per_step / self.cycles_per_step


def _fits(element: NumberType, native: NumberType) -> bool:
    """Return whether every value of `element` is exactly a value of `native`."""
    if element.kind == "int" and native.kind == "int":
        if element.signed and not native.signed:
            return False
        magnitude_bits = element.width - 1 if element.signed else element.width
        native_magnitude = native.width - 1 if native.signed else native.width
        return magnitude_bits <= native_magnitude
    if element.kind == "float" and native.kind == "float":
        return element.exponent_bits <= native.exponent_bits and element.mantissa_bits <= native.mantissa_bits
    return False


def _unsupported(pe: PESpec, field: str, operand: Operand, reason: str, fix: str) -> UnsupportedFormatError:
    value = getattr(pe, field)
    return UnsupportedFormatError(
        f"{operand.role} format {operand.format_name!r} is not supported by the {pe.kind} PE "
        f"(pe.{field}={value!r}): {reason}; {fix}"
    )


def _output_scale_energy(operands: tuple[Operand, ...], accumulator: NumberType, technology: Technology) -> EnergyEstimate:
    count = sum(1 for operand in operands if operand.output_scaled)
    if count == 0:
        return NO_ENERGY
    return multiply_energy(accumulator, accumulator, technology).scaled(count, f"{count} output scale multiply(s) per output")


def _map_fixed(pe: PESpec, operands: tuple[Operand, Operand], accumulator: NumberType, technology: Technology) -> PEMapping:
    native = parse_number_type(pe.native_format)
    dequantize = []
    for operand in operands:
        direct = operand.element is not None and not operand.block_scaled and _fits(operand.element, native)
        if direct:
            dequantize.append(False)
            continue
        if pe.fallback != "dequantize":
            if operand.element is None:
                reason = "its codes index a codebook that the multiplier cannot decode"
            elif operand.block_scaled:
                reason = f"it has a scale per {operand.block_size} elements and the PE has no block-scale unit"
            else:
                reason = f"{operand.element.label} values do not fit the {native.label} multiplier"
            raise _unsupported(pe, "native_format", operand, reason, "set pe.fallback: dequantize, or choose a PE that takes this format")
        dequantize.append(True)
    notes = []
    dequantize_energy = NO_ENERGY
    # NOTE: the converter is assumed to keep pace with the array, so the fallback costs energy but no cycles.
    if any(dequantize):
        dequantize_energy = multiply_energy(native, native, technology)
        converted = [o.format_name for o, d in zip(operands, dequantize) if d]
        notes.append(f"fallback: {', '.join(converted)} dequantized to {native.label} at the buffer port, one multiply per element")
    kept = tuple(o for o, d in zip(operands, dequantize) if not d)
    return PEMapping(
        1, 1, mac_energy(native, native, accumulator, technology), NO_ENERGY, None,
        _output_scale_energy(kept, accumulator, technology), dequantize_energy, dequantize[0], dequantize[1], tuple(notes),
    )


def _require_plain_int(pe: PESpec, field: str, operand: Operand) -> NumberType:
    if operand.element is None or operand.element.kind != "int" or operand.block_scaled:
        raise _unsupported(pe, field, operand, f"a {pe.kind} PE multiplies plain integers", "quantize this operand to an integer format with per-tensor or per-channel scales")
    return operand.element


def _map_bit_fusion(pe: PESpec, operands: tuple[Operand, Operand], accumulator: NumberType, technology: Technology) -> PEMapping:
    lanes, cycles = 1, 1
    for operand in operands:
        element = _require_plain_int(pe, "max_bits", operand)
        rounded = max(pe.brick_bits, 2 ** math.ceil(math.log2(element.width)))
        if rounded > 2 * pe.max_bits:
            raise _unsupported(pe, "max_bits", operand, f"{element.width}-bit operands exceed twice the fusion width", "use a wider fusion unit")
        if rounded <= pe.max_bits:
            lanes *= pe.max_bits // rounded
        else:
            cycles *= rounded // pe.max_bits
    unit = parse_number_type(f"int{pe.max_bits}")
    per_cycle = mac_energy(unit, unit, accumulator, technology).scaled(pe.fusion_energy_factor, "fusion unit energy per cycle")
    per_mac = per_cycle.scaled(cycles / lanes, f"{lanes} MAC(s) per step over {cycles} cycle(s)")
    return PEMapping(lanes, cycles, per_mac, NO_ENERGY, None, _output_scale_energy(operands, accumulator, technology), NO_ENERGY, False, False)


def _map_bit_serial(pe: PESpec, operands: tuple[Operand, Operand], accumulator: NumberType, technology: Technology) -> PEMapping:
    activation = _require_plain_int(pe, "parallel_bits", operands[0])
    weight = _require_plain_int(pe, "max_serial_bits", operands[1])
    if activation.width > pe.parallel_bits:
        raise _unsupported(pe, "parallel_bits", operands[0], f"{activation.width}-bit activations exceed the parallel port", "use a narrower activation format")
    if weight.width > pe.max_serial_bits:
        raise _unsupported(pe, "max_serial_bits", operands[1], f"{weight.width}-bit weights exceed the serial limit", "use a narrower weight format")
    cycles = -(-weight.width // pe.serial_bits)
    per_cycle = multiply_energy(parse_number_type(f"int{pe.parallel_bits}"), NumberType.integer(max(pe.serial_bits, 2)), technology)
    per_cycle = per_cycle + add_energy(accumulator, technology)
    return PEMapping(
        1, cycles, per_cycle.scaled(cycles, f"{cycles} shift-add cycles per MAC"), NO_ENERGY, None,
        _output_scale_energy(operands, accumulator, technology), NO_ENERGY, False, False,
    )


def _binade_span(number: NumberType) -> int:
    return 0 if number.kind == "int" else 2**number.exponent_bits - 2


def _map_block_scaled(pe: PESpec, operands: tuple[Operand, Operand], accumulator: NumberType, technology: Technology) -> PEMapping:
    allowed_elements = [parse_number_type(name) for name in pe.element_formats]
    allowed_scales = [parse_number_type(name) for name in pe.scale_formats]
    macs_by_bits = dict(pe.macs_per_cycle_by_element_bits)
    for operand in operands:
        if not operand.block_scaled or operand.element is None:
            raise _unsupported(pe, "element_formats", operand, "a block-scaled PE takes block-scaled operands only", "quantize both operands to block-scaled formats such as mxfp8_e4m3 or mxfp4")
        if not any(_same_type(operand.element, allowed) for allowed in allowed_elements):
            raise _unsupported(pe, "element_formats", operand, f"element {operand.element.label} is not listed", "add the element format to pe.element_formats")
        if not any(_same_type(operand.scale, allowed) for allowed in allowed_scales):
            raise _unsupported(pe, "scale_formats", operand, f"scale {operand.scale.label} is not listed", "add the scale format to pe.scale_formats")
    widest = max(operand.element.width for operand in operands)
    widths = sorted(bits for bits in macs_by_bits if bits >= widest)
    if not widths:
        raise _unsupported(pe, "macs_per_cycle_by_element_bits", operands[0], f"no throughput is given for {widest}-bit elements", "add the element width to pe.macs_per_cycle_by_element_bits")
    lanes = macs_by_bits[widths[0]]
    block_size = min(operand.block_size for operand in operands)
    a, w = operands[0].element, operands[1].element
    # Products within a block add in fixed point, wide enough for both significands, their binade spans and the block sum.
    adder_bits = min(64, a.significand_bits + w.significand_bits + _binade_span(a) + _binade_span(w) + math.ceil(math.log2(block_size)))
    per_mac = multiply_energy(a, w, technology) + add_energy(NumberType.integer(adder_bits), technology)
    power_of_two = all(o.scale.kind == "float" and o.scale.mantissa_bits == 0 for o in operands)
    block = scale_combine_energy(operands[0].scale, operands[1].scale, technology)
    block = block + scale_apply_energy(power_of_two, accumulator, technology) + add_energy(accumulator, technology)
    notes = (f"block of {block_size}: intra-block sum in a {adder_bits}-bit fixed-point adder ({FITTED_SOURCE})",)
    return PEMapping(
        lanes, 1, per_mac, block, block_size, _output_scale_energy(operands, accumulator, technology), NO_ENERGY, False, False, notes,
    )


def _same_type(a: NumberType | None, b: NumberType) -> bool:
    if a is None:
        return False
    return (a.kind, a.width, a.exponent_bits, a.mantissa_bits) == (b.kind, b.width, b.exponent_bits, b.mantissa_bits)


_MAPPERS = {"fixed": _map_fixed, "bit_fusion": _map_bit_fusion, "bit_serial": _map_bit_serial, "block_scaled": _map_block_scaled}


@lru_cache(maxsize=1024)
def map_operands(pe: PESpec, activation_format, weight_format, technology: Technology = REFERENCE_TECHNOLOGY) -> PEMapping:
    """Map `activation_format` x `weight_format` onto `pe`; raise UnsupportedFormatError naming the PE field to change."""
    operands = (describe_operand("activation", activation_format), describe_operand("weight", weight_format))
    accumulator = parse_number_type(pe.accumulator)
    return _MAPPERS[pe.kind](pe, operands, accumulator, technology)
