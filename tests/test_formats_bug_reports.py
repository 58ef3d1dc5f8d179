"""Cases from public bug reports against other number-format libraries.

Each expected value is worked out by hand in the test from the format's
definition (OCP 8-bit FP v1.0, OCP MX v1.0, NVIDIA's NVFP4 recipe).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import hwsim
from hwsim.formats import Encoded, get

# Element emax that the OCP MX scale rule subtracts (OCP MX v1.0 section 6.3):
# floor(log2) of the element's max normal. Block floating point elements are
# 1.f fixed point below 2, like MXINT8's.
ELEMENT_EMAX = {
    "mxfp8_e4m3": 8,
    "mxfp8_e5m2": 15,
    "mxfp6_e2m3": 2,
    "mxfp6_e3m2": 4,
    "mxfp4": 2,
    "mxint8": 0,
    "bfp4": 0,
    "bfp6": 0,
    "bfp8": 0,
}
MX_FORMATS = list(ELEMENT_EMAX)


def block(*head: float, size: int = 32) -> np.ndarray:
    x = np.zeros(size, dtype=np.float32)
    x[: len(head)] = head
    return x


def decode_element(name: str, code: int) -> float:
    fmt = get(name)
    codes = np.array([code], dtype=np.uint8 if fmt.width <= 8 else np.uint16)
    return float(hwsim.decode(Encoded(fmt=fmt, shape=(1,), axis=-1, codes=codes), np.float64)[0])


def test_mxfp8_e4m3_amax_960_saturates():
    # floor(log2(960)) = 9 and E4M3 emax = 8, so the shared exponent is 1
    # (scale 2, code 128). 957 / 2 = 478.5 and 960 / 2 = 480 exceed 448 and
    # saturate to it, so both decode to 896.
    x = block(960.0, 957.0)
    encoded = hwsim.encode(x, "mxfp8_e4m3")
    assert encoded.scale_codes[0, 0] == 128
    values = hwsim.decode(encoded)
    assert values[0] == 896.0
    assert values[1] == 896.0
    np.testing.assert_array_equal(hwsim.qdq(x, "mxfp8_e4m3")[:2], [896.0, 896.0])


def test_e4m3_tie_rounds_to_even():
    # 4.25 lies halfway between 4.0 (1.000b * 2**2, code 0x48) and 4.5
    # (1.001b * 2**2, code 0x49); the even mantissa wins.
    encoded = hwsim.encode(np.array([4.25, -4.25], dtype=np.float32), "fp8_e4m3")
    np.testing.assert_array_equal(encoded.codes, [0x48, 0xC8])
    np.testing.assert_array_equal(hwsim.decode(encoded), [4.0, -4.0])


def test_fp4_negative_codes():
    assert decode_element("fp4_e2m1", 0b1001) == -0.5
    negative_zero = decode_element("fp4_e2m1", 0b1000)
    assert negative_zero == 0.0
    assert math.copysign(1.0, negative_zero) == -1.0


@pytest.mark.parametrize("code", [0x7F, 0xFF])
def test_e4m3_all_ones_is_nan(code):
    # OCP E4M3 has no Inf; S.1111.111 is NaN, not +-480.
    assert math.isnan(decode_element("fp8_e4m3", code))


def test_e8m0_codes():
    # OCP MX v1.0 section 5.4.1: value 2**(code - 127), code 0xFF is NaN.
    assert decode_element("e8m0", 0) == 2.0**-127
    assert math.isnan(decode_element("e8m0", 255))
    assert decode_element("e8m0", 134) == 128.0


def test_tiny_negative_into_fnuz_is_positive_zero():
    # -1e-8 rounds to zero. fnuz has no negative zero (0x80 is its NaN), so
    # the result is 0x00; OCP E4M3 keeps the sign, 0x80.
    x = np.array([-1e-8], dtype=np.float32)
    assert hwsim.encode(x, "fp8_e4m3fnuz").codes[0] == 0x00
    assert hwsim.encode(x, "fp8_e5m2fnuz").codes[0] == 0x00
    assert hwsim.encode(x, "fp8_e4m3").codes[0] == 0x80


def test_negative_zero_into_e4m3():
    assert hwsim.encode(np.array([-0.0], dtype=np.float32), "fp8_e4m3").codes[0] == 0x80


def test_overflow_without_saturation():
    # E4M3: 500 is past 464, the midpoint between 448 and the next step 480,
    # so it overflows; E4M3 has no Inf, so it is NaN (0x7F).
    # E5M2: 58000 is below 61440, the midpoint between 57344 and 65536, so it
    # rounds to the max normal 57344 (0x7B), not to Inf.
    e4m3 = hwsim.encode(np.array([500.0], dtype=np.float32), "fp8_e4m3", saturate=False)
    e5m2 = hwsim.encode(np.array([58000.0], dtype=np.float32), "fp8_e5m2", saturate=False)
    assert e4m3.codes[0] == 0x7F
    assert math.isnan(hwsim.decode(e4m3)[0])
    assert e5m2.codes[0] == 0x7B
    assert hwsim.decode(e5m2)[0] == 57344.0


@pytest.mark.parametrize("name", MX_FORMATS)
def test_all_zero_mx_block_decodes_to_zeros(name):
    # The OCP rule clamps the shared exponent of an all-zero block at the
    # smallest E8M0 value, code 0 (2**-127); its elements are zeros.
    x = np.zeros((2, get(name).block_size), dtype=np.float32)
    encoded = hwsim.encode(x, name)
    np.testing.assert_array_equal(encoded.scale_codes, np.zeros((2, 1)))
    decoded = hwsim.decode(encoded)
    assert not np.isnan(decoded).any()
    np.testing.assert_array_equal(decoded, x)
    np.testing.assert_array_equal(hwsim.qdq(x, name), x)


@pytest.mark.parametrize("name", ["nvfp4", "nf4", "int4_g128", "int8_channel", "fp8_e4m3_tensor", "int4_asym_g128"])
def test_all_zero_amax_group_decodes_to_zeros(name):
    x = np.zeros((2, 128), dtype=np.float32)
    decoded = hwsim.decode(hwsim.encode(x, name))
    np.testing.assert_array_equal(decoded, x)
    np.testing.assert_array_equal(hwsim.qdq(x, name), x)


def nvfp4_raw_block_scale(block_amax: np.float32, tensor_amax: np.float32) -> np.float32:
    """amax_block / 6 * g in float32, with g = 448 * 6 / amax_tensor (NVIDIA's NVFP4 recipe)."""
    g = np.float32(448.0) * np.float32(6.0) / tensor_amax
    return block_amax / np.float32(6.0) * g


def test_nvfp4_block_scale_rounding_past_448_clamps():
    # With amax = 4.193255 the float32 product amax / 6 * (2688 / amax) is
    # 448.00003, one float32 step above 448; the scale is clamped to 448 (0x7E).
    amax = np.float32(4.193255)
    assert nvfp4_raw_block_scale(amax, amax) > 448
    x = np.zeros(16, dtype=np.float32)
    x[0] = amax
    encoded = hwsim.encode(x, "nvfp4")
    assert encoded.scale_codes[0, 0] == 0x7E
    assert encoded.codes[0, 0] == 0b0111  # 6, the FP4 max
    assert hwsim.decode(encoded)[0] == pytest.approx(float(amax), rel=2**-22)


def test_nvfp4_static_amax_below_data_clamps_scale():
    # A calibration amax of 1 sets g = 2688, so a block amax of 10 needs a
    # block scale of 10 / 6 * 2688 = 4480. It is clamped to 448, and the
    # elements saturate at 6 * 448 / 2688 = 1.
    x = np.zeros(16, dtype=np.float32)
    x[:2] = [10.0, -10.0]
    encoded = hwsim.encode(x, "nvfp4", amax=1.0)
    assert encoded.scale_codes[0, 0] == 0x7E
    np.testing.assert_array_equal(hwsim.decode(encoded)[:2], [1.0, -1.0])


def test_mxfp8_e5m2_block_from_bug_report():
    # amax = 127.99999: floor(log2) = 6, E5M2 emax = 15, shared exponent
    # -9, code 127 - 9 = 118. 127.99999 * 2**9 = 65535.99 overflows 57344 and
    # saturates: 57344 * 2**-9 = 112. 9 * 2**9 = 1.125 * 2**12 is a tie
    # between 1.0 and 1.25 (two mantissa bits); even gives 2**12, so 9 -> 8.
    x = np.array(list(range(1, 32)) + [127.99999], dtype=np.float32)
    encoded = hwsim.encode(x, "mxfp8_e5m2")
    assert encoded.scale_codes[0, 0] == 118
    values = hwsim.decode(encoded)
    assert values[31] == 112.0
    assert values[8] == 8.0
    np.testing.assert_array_equal(hwsim.qdq(x, "mxfp8_e5m2"), values)


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", MX_FORMATS)
def test_nan_or_inf_makes_mx_block_nan(name, special):
    # OCP MX v1.0 section 6.3: a block holding NaN or Inf gets scale NaN
    # (0xFF), and every element of it decodes to NaN. Other blocks are untouched.
    size = get(name).block_size
    x = np.ones(2 * size, dtype=np.float32)
    x[5] = special
    encoded = hwsim.encode(x, name)
    assert encoded.scale_codes[0, 0] == 0xFF
    assert encoded.scale_codes[0, 1] == 127 - ELEMENT_EMAX[name]  # amax 1: shared exponent 0 - emax
    decoded = hwsim.decode(encoded)
    assert np.isnan(decoded[:size]).all()
    np.testing.assert_array_equal(decoded[size:], np.ones(size))
    qdq = hwsim.qdq(x, name)
    assert np.isnan(qdq[:size]).all()
    np.testing.assert_array_equal(qdq[size:], np.ones(size))
