"""Rounding modes on hand-worked ties, subnormals, and the flush-to-zero option.

Each tie below lies exactly halfway between two neighbours of the format.
The comment beside it works out the result of every mode.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_formats_reference import FLOAT_FORMATS, adversarial_inputs, field_value, float_grid, reference_code

import hwsim
from hwsim.formats import FloatFormat

# The inputs go past the float32 and float16 ranges on purpose, and NaN
# payloads pass through casts, so numpy's cast warnings are expected here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:overflow encountered in cast:RuntimeWarning",
    "ignore:invalid value encountered in cast:RuntimeWarning",
)

# (format, input, nearest_even, nearest_away, toward_zero), no saturation.
TIES = [
    # E4M3 near 1, step 1/8: 1 + 1/16 lies between 1 (significand 8, even)
    # and 1.125 (9, odd).
    ("fp8_e4m3", 1.0625, 1.0, 1.125, 1.0),
    ("fp8_e4m3", -1.0625, -1.0, -1.125, -1.0),
    # 1.125 + 1/16 lies between 1.125 (9, odd) and 1.25 (10, even).
    ("fp8_e4m3", 1.1875, 1.25, 1.25, 1.125),
    # Subnormals, step 2**-9: 2**-10 lies between 0 and 2**-9 (1, odd).
    ("fp8_e4m3", 2.0**-10, 0.0, 2.0**-9, 0.0),
    ("fp8_e4m3", -(2.0**-10), -0.0, -(2.0**-9), -0.0),
    # 3 * 2**-10 lies between 2**-9 (1, odd) and 2**-8 (2, even).
    ("fp8_e4m3", 3 * 2.0**-10, 2.0**-8, 2.0**-8, 2.0**-9),
    # 464 lies between the max normal 448 (significand 14, even) and 480, the
    # next step, which overflows to NaN without saturation.
    ("fp8_e4m3", 464.0, 448.0, math.nan, 448.0),
    # E5M2: 1 + 1/8 lies between 1 (4, even) and 1.25 (5, odd); 61440 lies
    # between 57344 (7, odd) and 65536 (overflow, 4, even): Inf, except toward zero.
    ("fp8_e5m2", 1.125, 1.0, 1.25, 1.0),
    ("fp8_e5m2", 61440.0, math.inf, math.inf, 57344.0),
    ("fp8_e5m2", -61440.0, -math.inf, -math.inf, -57344.0),
    # FP4: 5 lies between 4 (2, even) and 6 (3, odd), 2.5 between 2 (2) and
    # 3 (3), and 0.25 between 0 and 0.5. 7 lies between 6 and 8, past the max.
    # FP4 has neither Inf nor NaN, so it saturates to 6.
    ("fp4_e2m1", 5.0, 4.0, 6.0, 4.0),
    ("fp4_e2m1", 2.5, 2.0, 3.0, 2.0),
    ("fp4_e2m1", 0.25, 0.0, 0.5, 0.0),
    ("fp4_e2m1", -7.0, -6.0, -6.0, -6.0),
    # FP6 E2M3: 1 + 1/16 lies between 1 (8, even) and 1.125 (9, odd).
    ("fp6_e2m3", 1.0625, 1.0, 1.125, 1.0),
    # E8M0 has no mantissa bits: 3 lies between 2 and 4, both with
    # significand 1, and the tie goes up, as ml_dtypes 0.7 rounds it.
    ("e8m0", 3.0, 4.0, 4.0, 2.0),
    ("e8m0", 1.5 * 2.0**-127, 2.0**-126, 2.0**-126, 2.0**-127),
    # Integers: 2.5 between 2 and 3, -2.5 between -3 and -2; 127.5 rounds to
    # 128 (even) or away, both past int8's 127, which saturates.
    ("int8", 2.5, 2.0, 3.0, 2.0),
    ("int8", -2.5, -2.0, -3.0, -2.0),
    ("int8", 127.5, 127.0, 127.0, 127.0),
    ("int8", -128.5, -128.0, -128.0, -128.0),
    ("int8_sym", -127.5, -127.0, -127.0, -127.0),
    ("uint8", 0.5, 0.0, 1.0, 0.0),
    # NF4: halfway between level 7 (0.0) and level 8; the even index is 8.
    ("nf4_element", 0.07958029955625534 / 2, 0.07958029955625534, 0.07958029955625534, 0.0),
]


@pytest.mark.parametrize("mode, column", [("nearest_even", 2), ("nearest_away", 3), ("toward_zero", 4)])
@pytest.mark.parametrize("case", TIES, ids=lambda case: f"{case[0]}:{case[1]!r}")
def test_hand_worked_tie(case, mode, column):
    name, x, expected = case[0], case[1], case[column]
    for dtype in (np.float32, np.float64):
        value = float(hwsim.qdq(np.array([x], dtype=dtype), name, rounding=mode, saturate=False)[0])
        if math.isnan(expected):
            assert math.isnan(value), (dtype, value)
        else:
            assert value == expected, (dtype, value)
            assert math.copysign(1.0, value) == math.copysign(1.0, expected), (dtype, value)


def test_e4m3_tie_past_max_saturates_when_asked():
    x = np.array([464.0, 480.0, -500.0], dtype=np.float32)
    away = hwsim.qdq(x, "fp8_e4m3", rounding="nearest_away", saturate=True)
    np.testing.assert_array_equal(away, [448.0, 448.0, -448.0])


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp4_e2m1", "fp16", "bf16"])
def test_subnormals_are_kept(name):
    # Every subnormal value of the format (exponent field 0, mantissa not 0)
    # encodes to itself and decodes back.
    fmt = FLOAT_FORMATS[name]
    subnormals = np.array([v for v in float_grid(fmt).values if 0 < v < fmt.min_normal])
    x = np.concatenate([subnormals, -subnormals]).astype(np.float32)
    np.testing.assert_array_equal(hwsim.qdq(x, name), x)
    codes = hwsim.encode(x, name).codes.astype(np.int64)
    magnitude = codes & (2 ** (fmt.width - 1) - 1)
    assert np.all(magnitude < 2**fmt.mantissa_bits)


def flushed_reference(fmt: FloatFormat, x: float, mode: str, saturate: bool) -> int:
    """Reference code with flush-to-zero after rounding: a subnormal result becomes zero of the same sign."""
    code = reference_code(fmt, x, mode, saturate)
    magnitude_bits = fmt.exponent_bits + fmt.mantissa_bits
    magnitude = code & ((1 << magnitude_bits) - 1)
    if 0 < magnitude < 2**fmt.mantissa_bits and fmt.subnormals:
        sign = code & (1 << magnitude_bits) if fmt.signed else 0
        return 0 if fmt.special == "fnuz" else sign
    return code


@pytest.mark.parametrize("mode", ["nearest_even", "toward_zero"])
@pytest.mark.parametrize("name", [n for n, f in FLOAT_FORMATS.items() if f.subnormals])
def test_flush_to_zero_matches_reference(name, mode):
    fmt = FLOAT_FORMATS[name]
    x = adversarial_inputs(fmt, np.random.default_rng(13)).astype(np.float32)
    if not fmt.has_nan:
        x = x[~np.isnan(x)]
    expected = np.array([flushed_reference(fmt, float(v), mode, True) for v in x])
    encoded = hwsim.encode(x, name, rounding=mode, saturate=True, flush_to_zero=True)
    np.testing.assert_array_equal(encoded.codes.astype(np.int64), expected)
    values = hwsim.qdq(x, name, rounding=mode, saturate=True, flush_to_zero=True)
    np.testing.assert_array_equal(values, np.array([field_value(fmt, int(c)) for c in expected], dtype=np.float32))


def test_flush_to_zero_e4m3_cases():
    # 2**-9 and 7 * 2**-9 are subnormal and flush to signed zeros; 0.99 * 2**-6
    # rounds up to the min normal 2**-6 first (flushing happens after
    # rounding), so it stays.
    x = np.array([2.0**-9, -(2.0**-9), 7 * 2.0**-9, 0.99 * 2.0**-6, 2.0**-6], dtype=np.float32)
    encoded = hwsim.encode(x, "fp8_e4m3", flush_to_zero=True)
    np.testing.assert_array_equal(encoded.codes, [0x00, 0x80, 0x00, 0x08, 0x08])
    values = hwsim.qdq(x, "fp8_e4m3", flush_to_zero=True)
    np.testing.assert_array_equal(values, [0.0, -0.0, 0.0, 2.0**-6, 2.0**-6])
    assert math.copysign(1.0, values[1]) == -1.0


def test_flush_to_zero_fnuz_has_no_negative_zero():
    encoded = hwsim.encode(np.array([-(2.0**-10)], dtype=np.float32), "fp8_e4m3fnuz", flush_to_zero=True)
    assert encoded.codes[0] == 0x00


def test_flush_to_zero_in_mx_block():
    # amax 6: shared exponent 2 - 2 = 0, so elements keep their values. 0.5
    # is FP4's only subnormal magnitude and flushes; 1 and 6 are normal.
    x = np.zeros(32, dtype=np.float32)
    x[:4] = [6.0, 0.5, -0.5, 1.0]
    with_subnormals = hwsim.qdq(x, "mxfp4")
    flushed = hwsim.qdq(x, "mxfp4", flush_to_zero=True)
    np.testing.assert_array_equal(with_subnormals[:4], [6.0, 0.5, -0.5, 1.0])
    np.testing.assert_array_equal(flushed[:4], [6.0, 0.0, -0.0, 1.0])
    encoded = hwsim.encode(x, "mxfp4", flush_to_zero=True)
    np.testing.assert_array_equal(hwsim.decode(encoded), flushed)


def test_flush_to_zero_in_nvfp4_block():
    # amax 6 with a tensor of one block: g = 2688 / 6 = 448, block scale
    # 6 / 6 * 448 = 448, divisor 448 / 448 = 1; 0.5 is subnormal in FP4.
    x = np.array([6.0, 0.5] + [0.0] * 14, dtype=np.float32)
    np.testing.assert_array_equal(hwsim.qdq(x, "nvfp4", flush_to_zero=True)[:2], [6.0, 0.0])
    np.testing.assert_array_equal(hwsim.qdq(x, "nvfp4")[:2], [6.0, 0.5])


@pytest.mark.parametrize("name", ["int8", "nf4_element", "int4_g128", "e8m0"])
def test_flush_to_zero_without_subnormals(name):
    x = np.random.default_rng(19).standard_normal(256).astype(np.float32)
    if name == "e8m0":
        x = np.abs(x)  # E8M0 is unsigned
    np.testing.assert_array_equal(hwsim.qdq(x, name, flush_to_zero=True), hwsim.qdq(x, name))
