"""Energy per operation: the Horowitz ISSCC 2014 table at 45 nm, the fitted model and technology scaling."""

import math

import pytest

from hwsim import formats
from hwsim.hardware.datatypes import NumberType, parse_number_type
from hwsim.hardware.energy import (
    EnergyTable,
    add_energy,
    fitted_add_pj,
    fitted_multiply_pj,
    mac_energy,
    multiply_energy,
    scale_combine_energy,
)
from hwsim.hardware.memory import sram_access_energy_pj_per_byte
from hwsim.hardware.technology import (
    REFERENCE_TECHNOLOGY,
    Technology,
    area_scale_from_reference,
    energy_factor,
    energy_scale,
    energy_scale_from_reference,
)

PJ = 1e-12

# Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm, 0.9 V.
HOROWITZ_TABLE = [
    ("add", "int8", 0.03),
    ("multiply", "int8", 0.2),
    ("add", "int32", 0.1),
    ("multiply", "int32", 3.1),
    ("add", "fp16", 0.4),
    ("multiply", "fp16", 1.1),
    ("add", "fp32", 0.9),
    ("multiply", "fp32", 3.7),
]


def _number(name):
    # int8, fp16 and fp32 come from the format registry; int32 is wider than any stored format.
    return parse_number_type(name) if name == "int32" else parse_number_type(formats.get(name).name)


@pytest.mark.parametrize("operation,type_name,expected_pj", HOROWITZ_TABLE)
def test_horowitz_table_reproduced(operation, type_name, expected_pj):
    number = _number(type_name)
    estimate = multiply_energy(number, number) if operation == "multiply" else add_energy(number)
    assert estimate.energy_j == pytest.approx(expected_pj * PJ, rel=1e-12)
    assert not estimate.is_estimate
    assert "Horowitz" in estimate.source


@pytest.mark.parametrize("operation,type_name,expected_pj", HOROWITZ_TABLE)
def test_fitted_model_passes_through_table(operation, type_name, expected_pj):
    number = _number(type_name)
    fitted_pj = fitted_multiply_pj(number, number) if operation == "multiply" else fitted_add_pj(number)
    assert fitted_pj == pytest.approx(expected_pj, rel=1e-12)


def test_other_formats_are_estimates():
    for name in ("int4", "fp8_e4m3", "fp8_e5m2", "bf16", "fp4_e2m1", "fp6_e3m2", "int16"):
        number = parse_number_type(name)
        assert multiply_energy(number, number).is_estimate, name
        assert add_energy(number).is_estimate, name
        assert multiply_energy(number, number).source.startswith("estimate"), name


def test_integer_multiply_grows_quadratically():
    # The fit is ALPHA*n*m + BETA*(n+m)/2 with 64*ALPHA + 8*BETA = 0.2 and 1024*ALPHA + 32*BETA = 3.1 (pJ).
    alpha = (3.1 - 4 * 0.2) / (1024 - 256)
    beta = (0.2 - 64 * alpha) / 8
    for bits in (2, 4, 16):
        number = NumberType.integer(bits)
        expected_pj = alpha * bits * bits + beta * bits
        assert multiply_energy(number, number).energy_j == pytest.approx(expected_pj * PJ, rel=1e-12)
    int4, int8 = NumberType.integer(4), NumberType.integer(8)
    mixed_pj = alpha * 4 * 8 + beta * (4 + 8) / 2
    assert multiply_energy(int4, int8).energy_j == pytest.approx(mixed_pj * PJ, rel=1e-12)


def test_integer_add_grows_linearly():
    # Linear fit through int8 0.03 pJ and int32 0.1 pJ: 0.03 + (n - 8) * 0.07 / 24.
    for bits in (4, 16, 24):
        expected_pj = 0.03 + (bits - 8) * 0.07 / 24
        assert add_energy(NumberType.integer(bits)).energy_j == pytest.approx(expected_pj * PJ, rel=1e-12)


def test_float_energy_ordered_by_width():
    names = ["fp4_e2m1", "fp6_e2m3", "fp8_e4m3", "bf16", "fp16", "fp32"]
    multiplies = [multiply_energy(parse_number_type(n), parse_number_type(n)).energy_j for n in names]
    adds = [add_energy(parse_number_type(n)).energy_j for n in ("fp4_e2m1", "fp8_e4m3", "fp16", "fp32")]
    assert all(e > 0 for e in multiplies)
    assert multiplies[0] < multiplies[2] < multiplies[4] < multiplies[5]
    # bf16 has an 8-bit significand, fp16 an 11-bit one, so bf16 multiplies cost less.
    assert multiplies[3] < multiplies[4]
    assert adds == sorted(adds)


def test_fp8_multiply_above_int8():
    assert multiply_energy(parse_number_type("fp8_e4m3"), parse_number_type("fp8_e4m3")).energy_j > multiply_energy("int8", "int8").energy_j


def test_mixed_int_float_multiply_rejected():
    with pytest.raises(ValueError, match="mixed integer and floating-point"):
        multiply_energy("int8", "fp16")


def test_mac_is_multiply_plus_accumulate():
    mac = mac_energy("int8", "int8", "int32")
    assert mac.energy_j == pytest.approx((0.2 + 0.1) * PJ, rel=1e-12)
    assert not mac.is_estimate


def test_power_of_two_scales_combine_by_exponent_add():
    e8m0 = parse_number_type("e8m0")
    combined = scale_combine_energy(e8m0, e8m0, REFERENCE_TECHNOLOGY)
    assert combined.energy_j == pytest.approx(add_energy(NumberType.integer(8)).energy_j)
    ue4m3 = parse_number_type("ue4m3")
    assert scale_combine_energy(ue4m3, ue4m3, REFERENCE_TECHNOLOGY).energy_j == pytest.approx(multiply_energy(ue4m3, ue4m3).energy_j)
    assert scale_combine_energy(e8m0, None, REFERENCE_TECHNOLOGY).energy_j == 0.0


def test_reference_technology_scale_is_one():
    assert energy_scale_from_reference(Technology(45, 0.9, "hp")) == 1.0
    assert area_scale_from_reference(Technology(45, 0.9, "hp")) == 1.0


def test_stillmaker_corrigendum_example():
    # Stillmaker & Baas 2017, corrigendum to section 4.2.1: 1 pJ/op at 65 nm and 1.3 V becomes
    # 0.4571 / 2.604 pJ/op = 0.1755 pJ/op at 32 nm (HP) and 0.9 V.
    source, target = Technology(65, 1.3), Technology(32, 0.9, "hp")
    assert energy_factor(source) == pytest.approx(2.604, abs=5e-4)
    assert energy_factor(target) == pytest.approx(0.4571, abs=5e-5)
    # The corrigendum divides the rounded factors, so allow the fourth decimal.
    assert 1.0 * energy_scale(source, target) == pytest.approx(0.1755, abs=1e-4)


def test_energy_scaled_to_7nm():
    seven = Technology(7, 0.7, "hp")
    scaled = multiply_energy("int8", "int8", seven)
    assert scaled.is_estimate
    assert "7 nm" in scaled.source
    assert scaled.energy_j < multiply_energy("int8", "int8").energy_j


def test_area_scale_table_points():
    # Stillmaker & Baas 2017 area table, 45 nm row: 32 nm 0.46, 7 nm 0.059, 90 nm 2.8.
    assert area_scale_from_reference(Technology(32, 0.9)) == pytest.approx(0.46)
    assert area_scale_from_reference(Technology(7, 0.7)) == pytest.approx(0.059)
    assert area_scale_from_reference(Technology(90, 1.2)) == pytest.approx(2.8)
    between = area_scale_from_reference(Technology(28, 0.9))
    assert 0.21 < between < 0.46


def test_technology_rejects_bad_values():
    with pytest.raises(ValueError, match="node_nm=3"):
        Technology(3, 0.7)
    with pytest.raises(ValueError, match="flavor='ulp'"):
        Technology(22, 0.8, "ulp")
    with pytest.raises(ValueError, match="supply_voltage_v=5"):
        Technology(45, 5)


@pytest.mark.parametrize("capacity,pj_per_64bit", [(8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0)])
def test_sram_energy_table_points(capacity, pj_per_64bit):
    # Horowitz ISSCC 2014, 45 nm: SRAM 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ per 64-bit access.
    assert sram_access_energy_pj_per_byte(capacity) == pytest.approx(pj_per_64bit / 8, rel=1e-12)


def test_sram_energy_interpolates_in_log_log():
    # Halfway (in log) between 8 KB and 32 KB is 16 KB: sqrt(10 * 20) pJ per 64 bits.
    assert sram_access_energy_pj_per_byte(16 * 1024) == pytest.approx(math.sqrt(200) / 8, rel=1e-12)


def test_energy_table_prices_counts():
    table = EnergyTable.from_estimates({"mac": mac_energy("int8", "int8", "int32"), "dram_read_byte": add_energy("int8")})
    priced = table.price({"mac": 1000, "dram_read_byte": 10})
    assert priced["mac"] == pytest.approx(1000 * 0.3 * PJ)
    assert priced["dram_read_byte"] == pytest.approx(10 * 0.03 * PJ)
    with pytest.raises(KeyError, match="not in the energy table"):
        table.energy_j("leak")


def test_energy_table_rejects_negative_energy():
    from hwsim.hardware.energy import ActionEnergy

    with pytest.raises(ValueError, match="energies must be >= 0"):
        EnergyTable((ActionEnergy("mac", -1e-12, "test", True),))
