"""Every code of every element format decodes to the value its spec defines.

Values are worked out here from the fields (sign, exponent, mantissa, bias,
special-value policy), independently of hwsim's value tables, and checked
against the constants published for each format. Identities that hold for
all float formats run over all of them at once, as ml_dtypes' finfo tests do.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_formats_reference import ELEMENT_FORMATS, FLOAT_FORMATS, decode_codes, field_value, float_grid

import hwsim
from hwsim.formats import Encoded, FloatFormat, get

NAN = math.nan


@pytest.mark.parametrize("name", list(ELEMENT_FORMATS))
def test_every_code_decodes_to_field_value(name):
    fmt = ELEMENT_FORMATS[name]
    codes = np.arange(2**fmt.width, dtype=np.int64)
    expected = np.array([field_value(fmt, int(c)) for c in codes])
    np.testing.assert_array_equal(decode_codes(fmt, codes), expected)


@pytest.mark.parametrize("name", list(ELEMENT_FORMATS))
def test_spec_values_property_matches_fields(name):
    fmt = ELEMENT_FORMATS[name]
    expected = np.array([field_value(fmt, c) for c in range(2**fmt.width)])
    np.testing.assert_array_equal(np.asarray(fmt.values, dtype=np.float64), expected)


# Published constants: OCP 8-bit FP v1.0 (E4M3, E5M2), OCP MX v1.0 section 5.3
# (FP6, FP4) and 5.4.1 (E8M0), IEEE 754 (binary16) and bfloat16, and the fnuz
# variants as ml_dtypes documents them. Columns: max normal, min normal, min
# subnormal, Inf code (or None), NaN codes.
PUBLISHED = {
    "fp8_e4m3": (448.0, 2**-6, 2**-9, None, [0x7F, 0xFF]),
    "fp8_e5m2": (57344.0, 2**-14, 2**-16, 0x7C, [0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF]),
    "fp8_e4m3fnuz": (240.0, 2**-7, 2**-10, None, [0x80]),
    "fp8_e5m2fnuz": (57344.0, 2**-15, 2**-17, None, [0x80]),
    "fp6_e2m3": (7.5, 1.0, 0.125, None, []),
    "fp6_e3m2": (28.0, 0.25, 0.0625, None, []),
    "fp4_e2m1": (6.0, 1.0, 0.5, None, []),
    "e8m0": (2.0**127, 2.0**-127, 2.0**-127, None, [0xFF]),
    "ue4m3": (448.0, 2**-6, 2**-9, None, [0x7F]),
    "fp16": (65504.0, 2**-14, 2**-24, 0x7C00, [0x7C01, 0x7E00, 0x7FFF, 0xFC01, 0xFFFF]),
    "bf16": (float.fromhex("0x1.fep127"), 2.0**-126, 2.0**-133, 0x7F80, [0x7F81, 0x7FC0, 0xFFFF]),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_constants(name):
    fmt = get(name)
    max_normal, min_normal, min_subnormal, inf, nans = PUBLISHED[name]
    assert fmt.max_normal == max_normal
    assert fmt.min_normal == min_normal
    assert fmt.min_subnormal == min_subnormal
    assert fmt.has_inf == (inf is not None)
    if inf is not None:
        assert field_value(fmt, inf) == math.inf
    for code in nans:
        assert math.isnan(field_value(fmt, code)), hex(code)
    nan_count = sum(math.isnan(field_value(fmt, c)) for c in range(2**fmt.width))
    assert fmt.has_nan == (nan_count > 0)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_constants_decode(name):
    fmt = get(name)
    max_normal, min_normal, min_subnormal, _, nans = PUBLISHED[name]
    grid = float_grid(fmt)
    assert grid.values[-2] == max_normal
    assert decode_codes(fmt, np.array([grid.codes[-2]]))[0] == max_normal
    if nans:
        assert np.all(np.isnan(decode_codes(fmt, np.array(nans))))


# Hand-written tables: every code of FP4, and named codes of the others.
FP4_VALUES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]

NAMED_CODES = {
    "fp8_e4m3": {0x00: 0.0, 0x01: 2**-9, 0x07: 7 * 2**-9, 0x08: 2**-6, 0x38: 1.0, 0x7E: 448.0, 0x80: -0.0, 0xFE: -448.0},
    "fp8_e5m2": {0x01: 2**-16, 0x04: 2**-14, 0x3C: 1.0, 0x7B: 57344.0, 0x7C: math.inf, 0xFC: -math.inf},
    "fp8_e4m3fnuz": {0x00: 0.0, 0x01: 2**-10, 0x40: 1.0, 0x7F: 240.0, 0xFF: -240.0},
    "fp8_e5m2fnuz": {0x00: 0.0, 0x01: 2**-17, 0x40: 1.0, 0x7F: 57344.0},
    "fp6_e2m3": {0x01: 0.125, 0x08: 1.0, 0x1F: 7.5, 0x3F: -7.5, 0x20: -0.0},
    "fp6_e3m2": {0x01: 0.0625, 0x04: 0.25, 0x0C: 1.0, 0x1F: 28.0, 0x3F: -28.0},
    "e8m0": {0x00: 2.0**-127, 0x7F: 1.0, 0x86: 128.0, 0xFE: 2.0**127},
    "ue4m3": {0x00: 0.0, 0x01: 2**-9, 0x38: 1.0, 0x7E: 448.0},
    "int4": {0x0: 0.0, 0x7: 7.0, 0x8: -8.0, 0xF: -1.0},
    "int4_sym": {0x7: 7.0, 0x8: NAN, 0x9: -7.0},
    "int4_asym": {0x0: 0.0, 0xF: 15.0},
    "uint8": {0x00: 0.0, 0xFF: 255.0},
    "int16": {0x7FFF: 32767.0, 0x8000: -32768.0, 0xFFFF: -1.0},
    "mxint8_element": {0x40: 1.0, 0x7F: 127 / 64, 0x81: -127 / 64, 0x80: NAN, 0x01: 1 / 64},
    "nf4_element": {0: -1.0, 7: 0.0, 8: 0.07958029955625534, 15: 1.0},
}


def test_fp4_every_code():
    np.testing.assert_array_equal(decode_codes(get("fp4_e2m1"), np.arange(16)), FP4_VALUES)
    signs = np.signbit(decode_codes(get("fp4_e2m1"), np.arange(16)))
    np.testing.assert_array_equal(signs, np.arange(16) >= 8)


@pytest.mark.parametrize("name", list(NAMED_CODES))
def test_named_codes(name):
    fmt = ELEMENT_FORMATS[name]
    table = NAMED_CODES[name]
    codes = np.array(list(table), dtype=np.int64)
    expected = np.array(list(table.values()))
    decoded = decode_codes(fmt, codes)
    np.testing.assert_array_equal(decoded, expected)
    np.testing.assert_array_equal(np.signbit(decoded), np.signbit(expected))


# Identities over every float format, from the fields alone.


@pytest.mark.parametrize("name", list(FLOAT_FORMATS))
def test_float_format_identities(name):
    fmt = FLOAT_FORMATS[name]
    grid = float_grid(fmt)
    positive = [v for v in grid.values[:-1] if v > 0]
    emin = 1 - fmt.bias if fmt.subnormals else -fmt.bias

    assert fmt.width == int(fmt.signed) + fmt.exponent_bits + fmt.mantissa_bits
    assert fmt.max_normal == grid.values[-2]
    assert fmt.min_normal == 2.0**emin
    assert fmt.min_subnormal == positive[0]
    assert fmt.emax == math.floor(math.log2(fmt.max_normal))
    assert fmt.emin == emin
    has_zero = 0.0 in grid.values
    assert fmt.has_negative_zero == (fmt.signed and fmt.special != "fnuz" and has_zero)


@pytest.mark.parametrize("name", [n for n, f in FLOAT_FORMATS.items() if f.subnormals])
def test_subnormal_step_is_min_subnormal(name):
    # With subnormals, every value below min normal is a multiple of min
    # subnormal = 2**(emin - mantissa bits), and there are 2**m - 1 of them.
    fmt = FLOAT_FORMATS[name]
    subnormals = [v for v in float_grid(fmt).values if 0 < v < fmt.min_normal]
    assert fmt.min_subnormal == 2.0 ** (fmt.emin - fmt.mantissa_bits)
    assert len(subnormals) == 2**fmt.mantissa_bits - 1
    assert all(v / fmt.min_subnormal == k + 1 for k, v in enumerate(subnormals))


@pytest.mark.parametrize("name", list(FLOAT_FORMATS))
def test_max_normal_from_fields(name):
    # The largest finite magnitude: all exponent and mantissa bits set, less
    # the codes the special-value policy takes for Inf and NaN.
    fmt = FLOAT_FORMATS[name]
    m = fmt.mantissa_bits
    top_exponent = 2**fmt.exponent_bits - 1
    if fmt.special == "ieee":
        exponent_field, mantissa_field = top_exponent - 1, 2**m - 1
    elif fmt.special == "fn":
        exponent_field, mantissa_field = (top_exponent, 2**m - 2) if m else (top_exponent - 1, 0)
    else:
        exponent_field, mantissa_field = top_exponent, 2**m - 1
    expected = (1 + mantissa_field / 2**m) * 2.0 ** (exponent_field - fmt.bias)
    assert fmt.max_normal == expected


# Formats wider than 16 bits: fp32 and any user float up to 32 bits.

TF32 = FloatFormat(8, 10, 127, "ieee", name="tf32")


def wide_field_values(fmt: FloatFormat, codes: np.ndarray) -> np.ndarray:
    return np.array([field_value(fmt, int(c)) for c in codes])


def inf_like(fmt: FloatFormat) -> int:
    """Code with every exponent bit set and a zero mantissa: +Inf in an IEEE-style format."""
    return (2**fmt.exponent_bits - 1) << fmt.mantissa_bits


@pytest.mark.parametrize("fmt", [get("fp32"), TF32], ids=["fp32", "tf32"])
def test_wide_float_codes_decode(fmt):
    rng = np.random.default_rng(3)
    magnitude_bits = fmt.exponent_bits + fmt.mantissa_bits
    top = np.arange(2**12, dtype=np.int64) << (fmt.width - 12)
    codes = top | rng.integers(0, 2 ** (fmt.width - 12), top.size)
    codes = np.concatenate([codes, [0, 1, 2**magnitude_bits - 1, inf_like(fmt), 2 ** (fmt.width - 1)]])
    encoded = Encoded(fmt=fmt, shape=codes.shape, axis=-1, codes=codes.astype(np.uint32))
    np.testing.assert_array_equal(hwsim.decode(encoded, np.float64), wide_field_values(fmt, codes))



def test_tf32_qdq_rounds_to_ten_mantissa_bits():
    # 1 + 2**-11 is a tie between 1 and 1 + 2**-10: it rounds to even, 1.
    # 1 + 3 * 2**-11 is a tie between 1 + 2**-10 and 1 + 2**-9: even is 1 + 2**-9.
    x = np.array([1.0, 1 + 2**-11, 1 + 3 * 2**-11, -2.5, 2.0**-130], dtype=np.float32)
    expected = np.array([1.0, 1.0, 1 + 2**-9, -2.5, 2.0**-130], dtype=np.float32)
    np.testing.assert_array_equal(hwsim.qdq(x, TF32), expected)
    codes = hwsim.encode(x, TF32).codes
    assert codes[0] == 127 << 10
    np.testing.assert_array_equal(hwsim.decode(hwsim.encode(x, TF32)), expected)


def test_fp32_encode_matches_numpy_cast():
    rng = np.random.default_rng(5)
    upper = np.arange(2**16, dtype=np.uint64) << np.uint64(48)
    x = (upper | rng.integers(0, 2**48, upper.size, dtype=np.uint64)).view(np.float64)
    with np.errstate(all="ignore"):
        expected = x.astype(np.float32)
    finite_or_inf = ~np.isnan(x)
    codes = hwsim.encode(x, "fp32").codes
    np.testing.assert_array_equal(codes[finite_or_inf], expected.view(np.uint32)[finite_or_inf])
    values = hwsim.qdq(x, "fp32")
    np.testing.assert_array_equal(values[finite_or_inf], expected[finite_or_inf].astype(np.float64))
