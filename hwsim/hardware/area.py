"""Area of processing elements and SRAM, by operand widths and technology node.

PE area is calibrated to the synthesised PEs of Bit Fusion (Sharma et al.,
"Bit Fusion: Bit-Level Dynamically Composable Architecture for Accelerating
Deep Neural Networks", ISCA 2018), one PE at 45 nm and 500 MHz:

    2x2 bits 125 um^2, 4x4 bits 282 um^2, 8x8 bits 688 um^2, 16x16 bits 2203 um^2,
    and the fusible PE (2-bit BitBricks fused up to 8x8 bits) 1733 um^2.

An integer PE of a x w bits interpolates that table linearly in log-log over
the product a*w, so the table points come back exactly and every other width
is an estimate. That table has no floating-point or block-scaled PEs. Their
area is estimated as the integer PE of their significand widths times the
ratio of float to integer multiply energy in the energy model, which assumes
that area tracks energy.

SRAM area per byte comes from Intel's 45 nm SRAM test chip: 153 Mbit in
119 mm^2 with 0.346 um^2 6T cells (Intel, January 2006, as reported by PC Pro,
"Intel declares itself on 45nm track"), read as 153 * 2**20 bits, about
5.93 um^2 per byte including periphery. Areas scale to other nodes with the
Stillmaker-Baas area factors, so any node but 45 nm gives estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwsim.hardware.datatypes import NumberType, parse_number_type
from hwsim.hardware.energy import fitted_multiply_pj, multiply_energy
from hwsim.hardware.spec import AcceleratorSpec, PESpec
from hwsim.hardware.technology import REFERENCE_TECHNOLOGY, Technology, area_scale_from_reference

BIT_FUSION_SOURCE = "Sharma et al., Bit Fusion, ISCA 2018: PE synthesis at 45 nm, 500 MHz"
# Bit Fusion ISCA 2018, 45 nm: (activation bits, weight bits) -> PE area in um^2.
# NOTE: these values and the fusible PE's are as widely quoted from the paper's PE table;
# the paper itself was not at hand to check them.
BIT_FUSION_PE_AREA_UM2: dict[tuple[int, int], float] = {
    (2, 2): 125.0,
    (4, 4): 282.0,
    (8, 8): 688.0,
    (16, 16): 2203.0,
}
# Bit Fusion ISCA 2018, 45 nm: fusible PE of 2-bit BitBricks up to 8x8 bits.
BIT_FUSION_FUSIBLE_PE_AREA_UM2 = 1733.0
BIT_FUSION_FUSIBLE_REFERENCE = (2, 8)  # (brick_bits, max_bits) of that PE

# Intel 45 nm SRAM test chip: 153 Mbit in 119 mm^2.
SRAM_TEST_CHIP_AREA_MM2 = 119.0
SRAM_TEST_CHIP_BITS = 153 * 2**20
SRAM_AREA_MM2_PER_BYTE_45NM = SRAM_TEST_CHIP_AREA_MM2 / (SRAM_TEST_CHIP_BITS / 8)
SRAM_AREA_SOURCE = "Intel 45 nm SRAM test chip, 153 Mbit in 119 mm^2 (2006)"

UM2_PER_MM2 = 1e6


@dataclass(frozen=True)
class AreaEstimate:
    """An area in mm^2 with where the number comes from."""

    area_mm2: float
    source: str
    is_estimate: bool


def _interpolated_int_pe_area_um2(bit_product: float) -> float:
    points = sorted((a * w, area) for (a, w), area in BIT_FUSION_PE_AREA_UM2.items())
    if bit_product <= points[0][0]:
        (x0, y0), (x1, y1) = points[0], points[1]
    elif bit_product >= points[-1][0]:
        (x0, y0), (x1, y1) = points[-2], points[-1]
    else:
        index = next(i for i in range(len(points) - 1) if points[i][0] <= bit_product <= points[i + 1][0])
        (x0, y0), (x1, y1) = points[index], points[index + 1]
    slope = math.log(y1 / y0) / math.log(x1 / x0)
    return y0 * (bit_product / x0) ** slope


def int_pe_area_um2(activation_bits: int, weight_bits: int) -> tuple[float, bool]:
    """Area of an integer MAC PE at 45 nm and whether it is an estimate (False only at a Bit Fusion table point)."""
    key = (activation_bits, weight_bits)
    if key in BIT_FUSION_PE_AREA_UM2:
        return BIT_FUSION_PE_AREA_UM2[key], False
    return _interpolated_int_pe_area_um2(activation_bits * weight_bits), True


def float_pe_area_um2(a: NumberType, b: NumberType) -> float:
    """Estimated area at 45 nm of a float MAC PE: the integer PE of the significands times the float/int energy ratio."""
    significand_area = _interpolated_int_pe_area_um2(a.significand_bits * b.significand_bits)
    float_energy = multiply_energy(a, b).energy_j
    int_energy = fitted_multiply_pj(NumberType.integer(a.significand_bits), NumberType.integer(b.significand_bits)) * 1e-12
    return significand_area * float_energy / int_energy


def pe_area(pe: PESpec, technology: Technology = REFERENCE_TECHNOLOGY) -> AreaEstimate:
    """Area of one PE of the spec at `technology`."""
    scale = area_scale_from_reference(technology)
    node_note = "" if technology.node_nm == REFERENCE_TECHNOLOGY.node_nm else f", scaled to {technology.node_nm:g} nm"
    if pe.kind == "fixed":
        native = parse_number_type(pe.native_format)
        if native.kind == "int":
            area_um2, estimate = int_pe_area_um2(native.width, native.width)
            source = BIT_FUSION_SOURCE if not estimate else f"estimate: interpolated in {BIT_FUSION_SOURCE}"
        else:
            area_um2, estimate = float_pe_area_um2(native, native), True
            source = f"estimate: {native.label} PE from the integer PE of its significand and the float/int energy ratio"
    elif pe.kind == "bit_fusion":
        reference_max_area, _ = int_pe_area_um2(*(BIT_FUSION_FUSIBLE_REFERENCE[1],) * 2)
        max_area, _ = int_pe_area_um2(pe.max_bits, pe.max_bits)
        area_um2 = BIT_FUSION_FUSIBLE_PE_AREA_UM2 * max_area / reference_max_area
        estimate = (pe.brick_bits, pe.max_bits) != BIT_FUSION_FUSIBLE_REFERENCE
        source = BIT_FUSION_SOURCE + ": fusible PE" if not estimate else f"estimate: fusible PE of {BIT_FUSION_SOURCE} scaled to {pe.max_bits} bits"
    elif pe.kind == "bit_serial":
        area_um2, _ = int_pe_area_um2(pe.parallel_bits, pe.serial_bits)
        estimate = True
        source = f"estimate: {pe.parallel_bits}x{pe.serial_bits}-bit integer PE of {BIT_FUSION_SOURCE}"
    else:
        lanes_area = 0.0
        for element_name in pe.element_formats:
            element = parse_number_type(element_name)
            lanes = dict(pe.macs_per_cycle_by_element_bits).get(element.width, 1)
            if element.kind == "int":
                element_area, _ = int_pe_area_um2(element.width, element.width)
            else:
                element_area = float_pe_area_um2(element, element)
            lanes_area = max(lanes_area, lanes * element_area)
        area_um2, estimate = lanes_area, True
        source = "estimate: widest element multiplier lanes of the block-scaled PE"
    if node_note:
        estimate = True
        source = source if source.startswith("estimate") else f"estimate: {source}"
    return AreaEstimate(area_um2 * scale / UM2_PER_MM2, source + node_note, estimate)


def sram_area(capacity_bytes: float, technology: Technology = REFERENCE_TECHNOLOGY) -> AreaEstimate:
    """Area of an SRAM of `capacity_bytes` at `technology` (an estimate: density of a 45 nm test chip)."""
    scale = area_scale_from_reference(technology)
    node_note = "" if technology.node_nm == REFERENCE_TECHNOLOGY.node_nm else f", scaled to {technology.node_nm:g} nm"
    return AreaEstimate(capacity_bytes * SRAM_AREA_MM2_PER_BYTE_45NM * scale, f"estimate: {SRAM_AREA_SOURCE}{node_note}", True)


@dataclass(frozen=True)
class AcceleratorArea:
    """Area of an accelerator by component, in mm^2; off-chip DRAM is not counted."""

    pe_array_mm2: float
    sram_mm2: float
    pe_area: AreaEstimate

    @property
    def total_mm2(self) -> float:
        return self.pe_array_mm2 + self.sram_mm2


def accelerator_area(spec: AcceleratorSpec) -> AcceleratorArea:
    """Area of the PE array and on-chip memories; control, interconnect and I/O are not modelled."""
    one_pe = pe_area(spec.pe, spec.technology)
    num_pes = spec.systolic_array.num_pes if spec.systolic_array is not None else 1
    sram_mm2 = sum(sram_area(level.capacity_bytes, spec.technology).area_mm2 for level in spec.memory if level.kind != "dram")
    return AcceleratorArea(one_pe.area_mm2 * num_pes, sram_mm2, one_pe)
