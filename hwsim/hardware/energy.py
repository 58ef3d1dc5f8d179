"""Energy per arithmetic operation as a function of operand formats.

Calibration: Horowitz, "Computing's energy problem (and what we can do about
it)", ISSCC 2014, energy table for 45 nm at 0.9 V:

    int8 add 0.03 pJ, int8 multiply 0.2 pJ, int32 add 0.1 pJ, int32 multiply 3.1 pJ,
    fp16 add 0.4 pJ, fp16 multiply 1.1 pJ, fp32 add 0.9 pJ, fp32 multiply 3.7 pJ.

The model, each part fitted to reproduce those eight numbers exactly:

- integer multiply of n x m bits: ALPHA*n*m + BETA*(n + m)/2, an array of n*m
  partial-product cells plus a final carry-propagate adder;
- integer add of n bits: GAMMA*n + DELTA, linear in width;
- float multiply: the integer multiply of the two significands (mantissa + 1
  bits each) plus exponent add, normalisation and rounding, which grow as a
  power law of the format width fitted between fp16 and fp32;
- float add: an integer add of the significand plus alignment and
  normalisation shifters, again a power law of width fitted between fp16 and fp32.

At the reference technology the table formats return the table value with
`is_estimate=False`. Every other format or node gets an estimate from the
fitted model, scaled to the node with `technology.energy_scale_from_reference`.
Energies are in joules; the pJ constants below are converted once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from hwsim.hardware.datatypes import NumberType, parse_number_type
from hwsim.hardware.technology import REFERENCE_TECHNOLOGY, Technology, energy_scale_from_reference

PJ = 1e-12

HOROWITZ_SOURCE = "Horowitz, ISSCC 2014, energy table at 45 nm, 0.9 V"
FITTED_SOURCE = "estimate: model fitted to Horowitz ISSCC 2014 (45 nm, 0.9 V)"

# Horowitz ISSCC 2014, 45 nm, 0.9 V: energy per operation in pJ.
HOROWITZ_45NM_PJ: dict[tuple[str, str], float] = {
    ("add", "int8"): 0.03,
    ("multiply", "int8"): 0.2,
    ("add", "int32"): 0.1,
    ("multiply", "int32"): 3.1,
    ("add", "fp16"): 0.4,
    ("multiply", "fp16"): 1.1,
    ("add", "fp32"): 0.9,
    ("multiply", "fp32"): 3.7,
}

# Integer multiply: 64*ALPHA + 8*BETA = 0.2 (int8) and 1024*ALPHA + 32*BETA = 3.1 (int32).
_ALPHA_PJ = (3.1 - 4 * 0.2) / (1024 - 4 * 64)
_BETA_PJ = (0.2 - 64 * _ALPHA_PJ) / 8
# Integer add: 8*GAMMA + DELTA = 0.03 (int8) and 32*GAMMA + DELTA = 0.1 (int32).
_GAMMA_PJ = (0.1 - 0.03) / (32 - 8)
_DELTA_PJ = 0.03 - 8 * _GAMMA_PJ


def _int_multiply_pj(bits_a: float, bits_b: float) -> float:
    return _ALPHA_PJ * bits_a * bits_b + _BETA_PJ * (bits_a + bits_b) / 2


def _int_add_pj(bits: float) -> float:
    return _GAMMA_PJ * bits + _DELTA_PJ


def _power_law_through(width16_pj: float, width32_pj: float):
    """Return f(width) = width16_pj * (width / 16) ** p with f(32) = width32_pj."""
    exponent = math.log2(width32_pj / width16_pj)
    return lambda width: width16_pj * (width / 16) ** exponent


# Float overheads beyond the significand datapath, pinned to fp16 (11-bit
# significand) and fp32 (24-bit significand).
_float_multiply_overhead_pj = _power_law_through(1.1 - _int_multiply_pj(11, 11), 3.7 - _int_multiply_pj(24, 24))
_float_add_overhead_pj = _power_law_through(0.4 - _int_add_pj(11), 0.9 - _int_add_pj(24))


@dataclass(frozen=True)
class EnergyEstimate:
    """Energy of one action in joules, with where the number comes from."""

    energy_j: float
    source: str
    is_estimate: bool

    def __add__(self, other: "EnergyEstimate") -> "EnergyEstimate":
        source = self.source if self.source == other.source else f"{self.source}; {other.source}"
        return EnergyEstimate(self.energy_j + other.energy_j, source, self.is_estimate or other.is_estimate)

    def scaled(self, factor: float, note: str = "") -> "EnergyEstimate":
        """This energy times `factor`, for an action made of several operations; stays exact only for factor 1."""
        source = f"{self.source}; {note}" if note else self.source
        return EnergyEstimate(self.energy_j * factor, source, self.is_estimate or factor != 1.0)


def _table_name(number: NumberType) -> str | None:
    """Name of the Horowitz table row for this type, or None."""
    if number.kind == "int" and number.width in (8, 32):
        return f"int{number.width}"
    if number.kind == "float" and (number.exponent_bits, number.mantissa_bits) == (5, 10):
        return "fp16"
    if number.kind == "float" and (number.exponent_bits, number.mantissa_bits) == (8, 23):
        return "fp32"
    return None


def _with_technology(energy_pj: float, exact: bool, technology: Technology) -> EnergyEstimate:
    factor = energy_scale_from_reference(technology)
    if technology == REFERENCE_TECHNOLOGY:
        return EnergyEstimate(energy_pj * PJ, HOROWITZ_SOURCE if exact else FITTED_SOURCE, not exact)
    base = HOROWITZ_SOURCE if exact else FITTED_SOURCE
    source = (
        f"estimate: {base}, scaled to {technology.node_nm:g} nm {technology.flavor.upper()} at "
        f"{technology.supply_voltage_v:g} V (Stillmaker & Baas 2017)"
    )
    return EnergyEstimate(energy_pj * factor * PJ, source, True)


def _as_number(number: NumberType | str) -> NumberType:
    return number if isinstance(number, NumberType) else parse_number_type(number)


def multiply_energy(a: NumberType | str, b: NumberType | str, technology: Technology = REFERENCE_TECHNOLOGY) -> EnergyEstimate:
    """Energy of one multiply of operands of types `a` and `b`.

    Integer times float has no single multiplier; convert one operand first
    (the PE fallback "dequantize" does that).
    """
    a, b = _as_number(a), _as_number(b)
    if a.kind != b.kind:
        raise ValueError(
            f"cannot price a multiply of {a.label} by {b.label}: mixed integer and floating-point operands need "
            "one operand converted first"
        )
    name_a, name_b = _table_name(a), _table_name(b)
    if name_a is not None and name_a == name_b:
        return _with_technology(HOROWITZ_45NM_PJ[("multiply", name_a)], True, technology)
    return _with_technology(fitted_multiply_pj(a, b), False, technology)


def fitted_multiply_pj(a: NumberType, b: NumberType) -> float:
    """Multiply energy in pJ at 45 nm and 0.9 V from the fitted model, without the table lookup."""
    if a.kind != b.kind:
        raise ValueError(f"cannot price a multiply of {a.label} by {b.label}: mixed integer and floating-point operands")
    if a.kind == "int":
        return _int_multiply_pj(a.width, b.width)
    return _int_multiply_pj(a.significand_bits, b.significand_bits) + _float_multiply_overhead_pj((a.width + b.width) / 2)


def fitted_add_pj(number: NumberType) -> float:
    """Add energy in pJ at 45 nm and 0.9 V from the fitted model, without the table lookup."""
    if number.kind == "int":
        return _int_add_pj(number.width)
    return _int_add_pj(number.significand_bits) + _float_add_overhead_pj(number.width)


def add_energy(number: NumberType | str, technology: Technology = REFERENCE_TECHNOLOGY) -> EnergyEstimate:
    """Energy of one add of two operands of `number`'s type."""
    number = _as_number(number)
    name = _table_name(number)
    if name is not None:
        return _with_technology(HOROWITZ_45NM_PJ[("add", name)], True, technology)
    return _with_technology(fitted_add_pj(number), False, technology)


def mac_energy(
    a: NumberType | str,
    b: NumberType | str,
    accumulator: NumberType | str,
    technology: Technology = REFERENCE_TECHNOLOGY,
) -> EnergyEstimate:
    """Energy of one multiply-accumulate: a multiply of `a` by `b` and an add at the accumulator's type."""
    return multiply_energy(a, b, technology) + add_energy(accumulator, technology)


def scale_combine_energy(scale_a: NumberType | None, scale_b: NumberType | None, technology: Technology) -> EnergyEstimate:
    """Energy to combine the two block scales of a block dot product into one factor.

    Power-of-two scales (no mantissa bits, such as E8M0) combine by adding
    exponents, an integer add of the exponent width; other scales multiply.
    One scale alone needs no combining; no scale costs nothing.
    """
    scales = [s for s in (scale_a, scale_b) if s is not None]
    if len(scales) < 2:
        return EnergyEstimate(0.0, FITTED_SOURCE, True)
    if all(s.kind == "float" and s.mantissa_bits == 0 for s in scales):
        width = max(s.exponent_bits for s in scales)
        return add_energy(NumberType.integer(width), technology)
    return multiply_energy(scales[0], scales[1], technology)


def scale_apply_energy(power_of_two: bool, accumulator: NumberType, technology: Technology) -> EnergyEstimate:
    """Energy to apply a combined scale to a block's partial sum before it joins the accumulator.

    A power-of-two scale shifts the sum, priced as an add of the accumulator's
    exponent width; any other scale is a multiply at the accumulator's type.
    """
    if power_of_two:
        width = accumulator.exponent_bits if accumulator.kind == "float" else accumulator.width
        return add_energy(NumberType.integer(max(width, 2)), technology)
    return multiply_energy(accumulator, accumulator, technology)


@dataclass(frozen=True)
class ActionEnergy:
    """Energy per action of one named action, in joules, with its source."""

    action: str
    energy_j: float
    source: str
    is_estimate: bool


@dataclass(frozen=True)
class EnergyTable:
    """Energy per action for one accelerator and one choice of operand formats.

    As in Accelergy, a performance model counts actions and this table prices
    them: energy = count x energy per action.
    """

    entries: tuple[ActionEnergy, ...]

    def __post_init__(self) -> None:
        names = [entry.action for entry in self.entries]
        if len(names) != len(set(names)):
            raise ValueError(f"energy table lists an action twice: {names}")
        for entry in self.entries:
            if not entry.energy_j >= 0:
                raise ValueError(f"invalid energy {entry.energy_j!r} J for action {entry.action!r}: energies must be >= 0")

    @classmethod
    def from_estimates(cls, estimates: Mapping[str, EnergyEstimate]) -> "EnergyTable":
        return cls(tuple(ActionEnergy(name, e.energy_j, e.source, e.is_estimate) for name, e in estimates.items()))

    def energy_j(self, action: str) -> float:
        for entry in self.entries:
            if entry.action == action:
                return entry.energy_j
        raise KeyError(f"action {action!r} is not in the energy table; known actions: {', '.join(self.actions)}")

    @property
    def actions(self) -> tuple[str, ...]:
        return tuple(entry.action for entry in self.entries)

    def price(self, counts: Mapping[str, object]) -> dict[str, object]:
        """Energy in joules of each counted action: count x energy per action (counts may be numpy arrays)."""
        return {action: count * self.energy_j(action) for action, count in counts.items()}


def total_energy_j(priced: Mapping[str, object], actions: Iterable[str]) -> object:
    """Sum of the priced energies of `actions` (0.0 when none is present)."""
    total = 0.0
    for action in actions:
        if action in priced:
            total = total + priced[action]
    return total
