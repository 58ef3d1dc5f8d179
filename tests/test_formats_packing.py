"""Bit packing: layouts worked out by hand, round trips and storage counts."""

import numpy as np
import pytest

import hwsim
from hwsim.formats.packing import pack_codes, unpack_codes


def test_two_nibbles_share_a_byte():
    # First code in the low nibble: 0x1 | 0xF << 4 = 0xF1.
    assert pack_codes(np.array([0x1, 0xF], np.uint8), 4).tolist() == [0xF1]


def test_four_6bit_codes_fill_three_bytes():
    # 1 | 2 << 6 | 3 << 12 | 4 << 18 = 1 + 128 + 12288 + 1048576 = 1060993 = 0x103081,
    # stored little-endian as 0x81, 0x30, 0x10.
    assert pack_codes(np.array([1, 2, 3, 4], np.uint8), 6).tolist() == [0x81, 0x30, 0x10]


def test_odd_count_pads_last_byte():
    assert pack_codes(np.array([0xA, 0xB, 0xC], np.uint8), 4).tolist() == [0xBA, 0x0C]


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16])
def test_round_trip_every_width(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2**bits, size=1001)
    packed = pack_codes(codes, bits)
    assert packed.size == -(-1001 * bits // 8)
    assert np.array_equal(unpack_codes(packed, bits, 1001), codes)


def test_mxfp4_packed_size_matches_storage():
    x = np.random.default_rng(0).standard_normal((4, 64), dtype=np.float32)
    encoded = hwsim.encode(x, "mxfp4")
    packed = pack_codes(encoded.codes, 4)
    scale_bits = encoded.scale_codes.size * 8
    assert packed.size * 8 + scale_bits == encoded.storage_bits


def test_code_too_wide_is_rejected():
    with pytest.raises(ValueError, match="does not fit in 4 bits"):
        pack_codes(np.array([16]), 4)


def test_float_codes_are_rejected():
    with pytest.raises(TypeError, match="integer codes"):
        pack_codes(np.array([1.0]), 4)


def test_short_buffer_is_rejected():
    with pytest.raises(ValueError, match="bytes are needed"):
        unpack_codes(np.zeros(1, np.uint8), 6, 4)
