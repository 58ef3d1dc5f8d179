"""MacSpec and accumulator specs: derived quantities and validation messages."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwsim.arith import FloatAccumulator, IntAccumulator, MacSpec, accumulator_names, get_accumulator, matmul, register_accumulator
from hwsim.formats.spec import CodebookFormat, DialectFormat, FloatFormat, ScaledFormat

E8M0 = FloatFormat(8, 0, 127, "fn", signed=False, subnormals=False, name="e8m0")


def test_named_accumulators():
    assert {"int32_wrap", "int32_saturate", "fp32", "fp16", "bf16", "fp22_e8m13_rtz"} <= set(accumulator_names())
    fp16 = get_accumulator("fp16")
    # IEEE 754 binary16: max (2 - 2**-10) * 2**15 = 65504, smallest subnormal 2**-24.
    assert fp16.max_normal == 65504.0
    assert fp16.min_subnormal == 2.0**-24
    assert get_accumulator("bf16").max_normal == (2 - 2.0**-7) * 2.0**127
    assert get_accumulator("fp32").max_normal == float(np.finfo(np.float32).max)
    hopper = get_accumulator("fp22_e8m13_rtz")
    assert (hopper.exponent_bits, hopper.mantissa_bits, hopper.rounding) == (8, 13, "toward_zero")
    int32 = get_accumulator("int32_saturate")
    assert (int32.min_value, int32.max_value) == (-(2**31), 2**31 - 1)


def test_unknown_accumulator_suggests_a_name():
    with pytest.raises(ValueError, match="unknown accumulator 'fp33'.*did you mean 'fp32'"):
        get_accumulator("fp33")
    with pytest.raises(ValueError, match="unknown accumulator"):
        MacSpec("fp8_e4m3", "fp8_e4m3", "int31")


def test_register_accumulator_rejects_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        register_accumulator("fp32", FloatAccumulator(8, 23))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"exponent_bits": 11, "mantissa_bits": 10}, "invalid exponent_bits=11"),
        ({"exponent_bits": 5, "mantissa_bits": 0}, "invalid mantissa_bits=0"),
        ({"exponent_bits": 5, "mantissa_bits": 51}, "invalid mantissa_bits=51"),
        ({"exponent_bits": 5, "mantissa_bits": 10, "rounding": "stochastic"}, "invalid rounding='stochastic'"),
        ({"exponent_bits": 5, "mantissa_bits": 10, "overflow": "wrap"}, "invalid overflow='wrap'.*'inf' or 'saturate'"),
    ],
)
def test_float_accumulator_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FloatAccumulator(**kwargs)


def test_int_accumulator_validation():
    with pytest.raises(ValueError, match="invalid bits=64.*2\\*\\*53"):
        IntAccumulator(64)
    with pytest.raises(ValueError, match="invalid overflow='inf'.*'wrap' or 'saturate'"):
        IntAccumulator(32, "inf")


def test_macspec_resolves_names_and_blocks():
    mac = MacSpec("mxfp4", "nvfp4", "fp32", order="tree", tree_width=64)
    assert isinstance(mac.a, ScaledFormat)
    assert mac.accumulator == get_accumulator("fp32")
    # MX blocks of 32 and NVFP4 blocks of 16 share scales over gcd(32, 16) = 16 products.
    assert mac.block_length == 16
    assert mac.products_per_rounding == 64
    assert MacSpec("mxfp4", "fp8_e4m3").block_length == 32
    assert MacSpec("fp8_e4m3", "fp8_e4m3").block_length == 1
    assert MacSpec("fp8_e4m3", "int8_channel").block_length == 1
    assert mac.label == "mxfp4 x nvfp4 -> fp32, tree64"


def test_macspec_is_frozen_and_comparable():
    mac = MacSpec("int8", "int8", "int32_wrap")
    assert mac == MacSpec("int8", "int8", get_accumulator("int32_wrap"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        mac.order = "pairwise"


def test_operand_profiles():
    mac = MacSpec("nvfp4", "mxfp8_e4m3")
    # NVFP4: E2M1 (2 significand bits, lsb 2**-1) times UE4M3 (4 bits, lsb 2**-9).
    assert (mac.profile_a.sig_bits, mac.profile_a.lsb_exp, mac.profile_a.block) == (6, -10, 16)
    # MXFP8 E4M3: 4 bits, lsb 2**-9, times E8M0 (1 bit, lsb 2**-127).
    assert (mac.profile_b.sig_bits, mac.profile_b.lsb_exp, mac.profile_b.block) == (5, -136, 32)
    int8 = MacSpec("int8", "int4_channel").profile_b
    assert (int8.int_max_abs, int8.block) == (8, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"a": "fp9"}, "invalid a: unknown format 'fp9'"),
        ({"order": "random"}, "invalid order='random'.*sequential, pairwise, tree"),
        ({"order": "tree"}, "invalid tree_width=None.*such as 32"),
        ({"order": "tree", "tree_width": 0}, "invalid tree_width=0"),
        ({"tree_width": 8}, "invalid tree_width=8 with order='sequential'"),
        ({"a": "mxfp4", "order": "tree", "tree_width": 48}, "invalid tree_width=48.*multiple of 32"),
        ({"accumulator": "int32_wrap"}, "invalid a='fp8_e4m3' with integer accumulator int32_wrap.*integer format"),
        ({"a": "mxint8", "b": "int8", "accumulator": "int32_wrap"}, "invalid a='mxint8'.*scale per block along K"),
    ],
)
def test_macspec_validation(kwargs, message):
    spec = {"a": "fp8_e4m3", "b": "fp8_e4m3", "accumulator": "fp32", **kwargs}
    with pytest.raises(ValueError, match=message):
        MacSpec(**spec)


def test_dialect_formats_are_rejected():
    dialect = DialectFormat((CodebookFormat((-1.0, 0.0, 1.0, 2.0), name="d0"),), E8M0, name="toy_dialect")
    with pytest.raises(ValueError, match="invalid a='toy_dialect': dialect formats"):
        MacSpec(dialect, "fp8_e4m3")


def test_scaled_values_must_fit_float64():
    # Levels with 53-bit significands times a 24-bit FP32 scale need 77 bits.
    levels = (-1.0, 0.1, 1.0 / 3.0, 1.0)
    fp32 = FloatFormat(8, 23, 127, name="fp32")
    wide = ScaledFormat(CodebookFormat(levels, name="wide_levels"), fp32, "block", 32, "amax", name="wide_codebook")
    with pytest.raises(ValueError, match="77 significand bits.*fewer mantissa bits"):
        MacSpec(wide, "fp8_e4m3")


def test_integer_tree_width_bound():
    # int16 products reach 2**30; 2**31 of them could reach 2**61, past the exact int64 chunk sum.
    mac = MacSpec("int16", "int16", IntAccumulator(48), order="tree", tree_width=2**31)
    with pytest.raises(ValueError, match="invalid tree_width=2147483648.*smaller tree_width"):
        matmul(np.ones((1, 4)), np.ones((4, 1)), mac, path="general")
