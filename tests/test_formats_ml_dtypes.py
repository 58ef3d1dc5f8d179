"""Exhaustive agreement with ml_dtypes, and each deliberate difference tested on its own.

Inputs: every fp16 and every bf16 bit pattern, all 2**16 upper halves of
fp32 with random lower halves, and all 2**16 upper 16 bits of fp64 with
random lower bits (fixed seeds). Targets: every element format ml_dtypes
0.7 has. Codes must agree bit for bit and decoded values must agree, with
these differences, each a named option or a documented rule:

- saturation: ml_dtypes overflows to Inf or NaN; `saturate=True` clamps to
  the max normal instead (the OCP MX default for elements);
- NaN into FP4/FP6, which have no NaN: ml_dtypes gives the zero of opposite
  sign. hwsim does the same with `nan_to_zero=True`; without it `encode`
  raises and `qdq` returns NaN;
- NaN payloads: numpy and ml_dtypes keep payload bits in fp16 and bf16;
  hwsim writes the quiet NaN of the input's sign (IEEE 754 leaves payload
  propagation as a recommendation, and no format here carries meaning in it);
- zero into E8M0: ml_dtypes gives NaN (0xFF); hwsim gives code 0, 2**-127.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

import hwsim
from hwsim.formats import get

# The inputs go past the float32 and float16 ranges on purpose, and NaN
# payloads pass through casts, so numpy's cast warnings are expected here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:overflow encountered in cast:RuntimeWarning",
    "ignore:invalid value encountered in cast:RuntimeWarning",
)

ML_DTYPES = {
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "fp8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "fp8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "fp6_e2m3": ml_dtypes.float6_e2m3fn,
    "fp6_e3m2": ml_dtypes.float6_e3m2fn,
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
    "e8m0": ml_dtypes.float8_e8m0fnu,
    "bf16": ml_dtypes.bfloat16,
    "fp16": np.float16,
}


def build_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0x5EED)
    patterns16 = np.arange(2**16, dtype=np.uint16)
    upper32 = np.arange(2**16, dtype=np.uint32) << np.uint32(16)
    lower32 = rng.integers(0, 2**16, 2**16, dtype=np.uint32)
    upper64 = np.arange(2**16, dtype=np.uint64) << np.uint64(48)
    lower64 = rng.integers(0, 2**48, 2**16, dtype=np.uint64)
    return {
        "fp16": patterns16.view(np.float16),
        "bf16": patterns16.view(ml_dtypes.bfloat16),
        "fp32": (upper32 | lower32).view(np.float32),
        "fp64": (upper64 | lower64).view(np.float64),
    }


INPUTS = build_inputs()


def ml_dtypes_codes(x: np.ndarray, dtype) -> np.ndarray:
    with np.errstate(all="ignore"):
        cast = x.astype(dtype)
    return cast.view(np.uint8 if cast.itemsize == 1 else np.uint16).astype(np.int64)


def ml_dtypes_values(x: np.ndarray, dtype) -> np.ndarray:
    with np.errstate(all="ignore"):
        return x.astype(dtype).astype(np.float64)


def as_float64(x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return x.astype(np.float64)


def compared(name: str, x: np.ndarray) -> np.ndarray:
    """Mask of inputs where codes must agree bit for bit (see the module docstring for the rest)."""
    fmt = get(name)
    wide = as_float64(x)
    mask = np.ones(x.shape, dtype=bool)
    if fmt.special == "ieee":
        mask &= ~np.isnan(wide)  # payloads: tested in test_nan_payload_becomes_quiet_nan
    if name == "e8m0":
        mask &= wide != 0  # tested in test_e8m0_zero_is_smallest_scale
    return mask


def encode_like_ml_dtypes(x: np.ndarray, name: str):
    """encode with the options that reproduce ml_dtypes: no saturation, and NaN to zero where the format has no NaN."""
    return hwsim.encode(x, name, saturate=False, nan_to_zero=not get(name).has_nan)


TABLE = [pytest.param(name, source, id=f"{source}-{name}") for name in ML_DTYPES for source in INPUTS]


@pytest.mark.parametrize("name, source", TABLE)
def test_encode_codes_match_ml_dtypes(name, source):
    x = INPUTS[source]
    expected = ml_dtypes_codes(x, ML_DTYPES[name])
    codes = encode_like_ml_dtypes(x, name).codes.astype(np.int64)
    mask = compared(name, x)
    wrong = np.nonzero(mask & (codes != expected))[0]
    assert wrong.size == 0, f"{source} -> {name}: inputs {x[wrong[:5]]} give codes {codes[wrong[:5]]}, ml_dtypes {expected[wrong[:5]]}"


@pytest.mark.parametrize("name, source", TABLE)
def test_decode_values_match_ml_dtypes(name, source):
    x = INPUTS[source]
    expected = ml_dtypes_values(x, ML_DTYPES[name])
    decoded = hwsim.decode(encode_like_ml_dtypes(x, name), np.float64)
    mask = compared(name, x)
    np.testing.assert_array_equal(decoded[mask], expected[mask])


@pytest.mark.parametrize("name, source", TABLE)
def test_qdq_values_match_ml_dtypes(name, source):
    x = INPUTS[source]
    expected = ml_dtypes_values(x, ML_DTYPES[name]).astype(x.dtype)
    values = hwsim.qdq(x, name, saturate=False, nan_to_zero=not get(name).has_nan)
    assert values.dtype == x.dtype
    mask = compared(name, x)
    np.testing.assert_array_equal(as_float64(values)[mask], as_float64(expected)[mask])


@pytest.mark.parametrize("name", [n for n in ML_DTYPES if get(n).has_nan])
def test_saturate_clamps_where_ml_dtypes_overflows(name):
    # ml_dtypes has no saturating cast; saturate=True agrees with it on every
    # input except those where ml_dtypes overflows to Inf or NaN, which become
    # the signed max normal. FP4 and FP6 have neither, so both saturate.
    fmt = get(name)
    x = INPUTS["fp32"]
    finite = np.isfinite(x)
    wide = as_float64(x)
    expected = ml_dtypes_values(x, ML_DTYPES[name])
    overflowed = finite & ~np.isfinite(expected) & (wide != 0)
    if not fmt.signed:
        overflowed &= wide > 0  # a negative input into an unsigned format is NaN either way
    expected[overflowed] = np.copysign(fmt.max_normal, wide[overflowed])
    values = hwsim.qdq(x.astype(np.float64), name, saturate=True, nan_to_zero=not fmt.has_nan)
    mask = compared(name, x) & finite
    assert overflowed.any()
    np.testing.assert_array_equal(values[mask], expected[mask])


def test_e4m3_overflow_without_and_with_saturation():
    x = np.array([500.0, -500.0], dtype=np.float32)
    assert np.all(np.isnan(x.astype(ml_dtypes.float8_e4m3fn).astype(np.float32)))
    np.testing.assert_array_equal(hwsim.encode(x, "fp8_e4m3", saturate=False).codes, [0x7F, 0xFF])
    np.testing.assert_array_equal(hwsim.encode(x, "fp8_e4m3", saturate=True).codes, [0x7E, 0xFE])


def test_e5m2_overflow_without_and_with_saturation():
    x = np.array([70000.0, -70000.0], dtype=np.float32)
    assert np.all(np.isinf(x.astype(ml_dtypes.float8_e5m2).astype(np.float32)))
    np.testing.assert_array_equal(hwsim.encode(x, "fp8_e5m2", saturate=False).codes, [0x7C, 0xFC])
    np.testing.assert_array_equal(hwsim.encode(x, "fp8_e5m2", saturate=True).codes, [0x7B, 0xFB])


@pytest.mark.parametrize("name", ["fp4_e2m1", "fp6_e2m3", "fp6_e3m2"])
def test_nan_into_format_without_nan(name):
    fmt = get(name)
    sign_bit = 1 << (fmt.width - 1)
    negative_nan = np.copysign(np.nan, -1.0)
    x = np.array([np.nan, negative_nan, 1.0], dtype=np.float32)

    # ml_dtypes maps NaN to the zero of opposite sign; nan_to_zero=True does the same.
    expected = ml_dtypes_codes(x, ML_DTYPES[name])
    assert list(expected[:2]) == [sign_bit, 0]
    np.testing.assert_array_equal(hwsim.encode(x, name, nan_to_zero=True).codes, expected)

    # By default encode raises, naming the option, and qdq returns NaN.
    with pytest.raises(ValueError, match="nan_to_zero"):
        hwsim.encode(x, name)
    values = hwsim.qdq(x, name)
    assert np.isnan(values[0])
    assert np.isnan(values[1])
    assert values[2] == 1.0


@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_nan_payload_becomes_quiet_nan(name):
    fmt = get(name)
    x = INPUTS["fp16"] if name == "fp16" else INPUTS["bf16"]
    nan = np.isnan(as_float64(x))
    codes = hwsim.encode(x[nan], name).codes.astype(np.int64)
    expected_sign = ml_dtypes_codes(x[nan], ML_DTYPES[name]) >> (fmt.width - 1)
    quiet_nan = ((2**fmt.exponent_bits - 1) << fmt.mantissa_bits) | (1 << (fmt.mantissa_bits - 1))
    np.testing.assert_array_equal(codes & (2 ** (fmt.width - 1) - 1), np.full(codes.shape, quiet_nan))
    np.testing.assert_array_equal(codes >> (fmt.width - 1), expected_sign)


def test_e8m0_zero_is_smallest_scale():
    # OCP MX v1.0 section 5.4.1: E8M0 has no zero, and the MX scale rule
    # clamps a block's shared exponent at -127, the scale of an all-zero
    # block. The value of E8M0 nearest to 0 is 2**-127 (code 0), so hwsim
    # encodes +-0 as code 0; ml_dtypes 0.7 returns NaN (0xFF) instead.
    x = np.array([0.0, -0.0], dtype=np.float32)
    assert list(ml_dtypes_codes(x, ml_dtypes.float8_e8m0fnu)) == [0xFF, 0xFF]
    encoded = hwsim.encode(x, "e8m0")
    np.testing.assert_array_equal(encoded.codes, [0, 0])
    np.testing.assert_array_equal(hwsim.decode(encoded, np.float64), [2.0**-127, 2.0**-127])


def test_e8m0_agrees_on_negative_and_tiny():
    # Negative inputs have no E8M0 code but NaN; inputs below 2**-127 round to
    # code 0. Both agree with ml_dtypes 0.7.
    x = np.array([-1.0, -(2.0**-130), 2.0**-130, 2.0**-149, 1.5 * 2.0**-127, 3.0], dtype=np.float32)
    expected = ml_dtypes_codes(x, ml_dtypes.float8_e8m0fnu)
    np.testing.assert_array_equal(expected, [0xFF, 0xFF, 0, 0, 1, 0x81])
    np.testing.assert_array_equal(hwsim.encode(x, "e8m0").codes, expected)


@pytest.mark.parametrize("name", list(ML_DTYPES))
def test_format_constants_match_finfo(name):
    fmt = get(name)
    info = ml_dtypes.finfo(ML_DTYPES[name])
    assert fmt.max_normal == float(info.max)
    assert fmt.min_normal == float(info.smallest_normal)
    assert fmt.min_subnormal == float(info.smallest_subnormal)
    assert fmt.mantissa_bits == info.nmant
    assert fmt.width == info.bits
    assert fmt.emax + 1 == info.maxexp
    assert math.log2(fmt.min_normal) == info.minexp
