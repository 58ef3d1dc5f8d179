"""Area of PEs and SRAM: Bit Fusion ISCA 2018 synthesis numbers at 45 nm, SRAM density and node scaling."""

import math

import pytest

from hwsim.hardware.area import (
    SRAM_AREA_MM2_PER_BYTE_45NM,
    accelerator_area,
    int_pe_area_um2,
    pe_area,
    sram_area,
)
from hwsim.hardware.loading import load_accelerator
from hwsim.hardware.spec import PESpec
from hwsim.hardware.technology import Technology, area_scale_from_reference

# Sharma et al., Bit Fusion, ISCA 2018: one PE at 45 nm, 500 MHz.
BIT_FUSION_TABLE_UM2 = [(2, 125.0), (4, 282.0), (8, 688.0), (16, 2203.0)]


@pytest.mark.parametrize("bits,area_um2", BIT_FUSION_TABLE_UM2)
def test_bit_fusion_table_reproduced(bits, area_um2):
    area, estimate = int_pe_area_um2(bits, bits)
    assert area == area_um2
    assert not estimate


@pytest.mark.parametrize("bits,area_um2", BIT_FUSION_TABLE_UM2)
def test_fixed_int_pe_area_at_45nm(bits, area_um2):
    spec = PESpec(kind="fixed", accumulator="int32", native_format=f"int{bits}")
    estimate = pe_area(spec)
    assert estimate.area_mm2 == pytest.approx(area_um2 * 1e-6, rel=1e-12)
    assert not estimate.is_estimate


def test_fusible_pe_area():
    # Bit Fusion ISCA 2018: the fusible PE (2-bit BitBricks up to 8x8 bits) is 1733 um^2 at 45 nm.
    spec = PESpec(kind="bit_fusion", accumulator="int32", brick_bits=2, max_bits=8, fusion_energy_factor=2.0)
    estimate = pe_area(spec)
    assert estimate.area_mm2 == pytest.approx(1733e-6, rel=1e-12)
    assert not estimate.is_estimate


def test_mixed_widths_interpolate_in_log_log():
    # 4x8 bits has bit product 32, halfway in log between 4x4 (16) and 8x8 (64): sqrt(282 * 688).
    area, estimate = int_pe_area_um2(4, 8)
    assert area == pytest.approx(math.sqrt(282.0 * 688.0), rel=1e-12)
    assert estimate


def test_float_pe_area_estimate():
    fp16 = pe_area(PESpec(kind="fixed", accumulator="fp32", native_format="fp16"))
    assert fp16.is_estimate
    significand_area, _ = int_pe_area_um2(11, 11)
    assert fp16.area_mm2 > significand_area * 1e-6


def test_sram_area_density():
    # Intel 45 nm SRAM test chip: 153 Mbit in 119 mm^2, so 1 MiB takes 119 * 8 / 153 mm^2.
    assert SRAM_AREA_MM2_PER_BYTE_45NM * 2**20 == pytest.approx(119.0 * 8 / 153, rel=1e-12)
    assert sram_area(2**20).area_mm2 == pytest.approx(119.0 * 8 / 153, rel=1e-12)


def test_area_scales_with_node():
    spec = PESpec(kind="fixed", accumulator="int32", native_format="int8")
    at_32 = pe_area(spec, Technology(32, 0.9))
    # Stillmaker & Baas 2017 area table: 32 nm is 0.46 of 45 nm.
    assert at_32.area_mm2 == pytest.approx(688e-6 * 0.46, rel=1e-12)
    assert at_32.is_estimate
    assert sram_area(1024, Technology(32, 0.9)).area_mm2 == pytest.approx(1024 * SRAM_AREA_MM2_PER_BYTE_45NM * 0.46)


def test_accelerator_area_sums_pes_and_buffers():
    spec = load_accelerator("research-32x32")
    area = accelerator_area(spec)
    # 32x32 fusible PEs of 1733 um^2 and three 64 KiB buffers, all at 45 nm.
    assert area.pe_array_mm2 == pytest.approx(1024 * 1733e-6, rel=1e-12)
    assert area.sram_mm2 == pytest.approx(3 * 65536 * SRAM_AREA_MM2_PER_BYTE_45NM, rel=1e-12)
    assert area.total_mm2 == pytest.approx(area.pe_array_mm2 + area.sram_mm2)


def test_tpu_area_uses_28nm_scaling():
    spec = load_accelerator("tpu-v1")
    area = accelerator_area(spec)
    scale = area_scale_from_reference(spec.technology)
    assert area.pe_array_mm2 == pytest.approx(256 * 256 * 688e-6 * scale, rel=1e-12)
    on_chip_bytes = 24 * 2**20 + 256 * 1024 + 4 * 2**20
    assert area.sram_mm2 == pytest.approx(on_chip_bytes * SRAM_AREA_MM2_PER_BYTE_45NM * scale, rel=1e-12)
