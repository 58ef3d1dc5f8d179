"""Scaled and block formats against slow references written from their scale rules.

References, one block at a time in plain Python, with element codes from
the scalar element reference:

- OCP MX (OCP MX v1.0 section 6.3): the shared exponent s is floor(log2(amax))
  minus the element's emax, clamped to E8M0's [-127, 127]. Elements are
  x / 2**s, rounded and saturated. An all-zero block takes exponent -127, and
  a block with NaN or Inf takes scale 0xFF and decodes to NaN;
- round-up ("ceil", cuBLAS's rule for UE8M0 scales): the smallest s with
  element max * 2**s >= amax;
- amax with an FP16 scale (int4_g128): scale = amax / element max in
  float32, rounded to nearest-even FP16; elements x / scale in float32;
- NVFP4 (NVIDIA Transformer Engine's recipe): g = 448 * 6 / amax_tensor in
  float32, capped at the float32 max and 1 when amax_tensor is 0; block
  scale s = UE4M3(min(amax_block / 6 * g, 448)); elements
  E2M1(clamp(x / (s / g), -6, 6)); a block scale that rounds to 0 makes
  the block zeros;
- asymmetric integers: scale (max - min) / qmax over the group with 0 in
  range, zero point round(-min / scale), codes clamp(round(x / scale) + zp);
- NF4: absmax scale in FP32, elements the nearest NF4 level of x / absmax.

In every amax rule a scale that rounds to zero makes its group zeros.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from test_formats_reference import field_value, format_values, reference_code

import hwsim
from hwsim.formats import IntFormat, ScaledFormat, get, names

F32 = np.float32
MODES = ("nearest_even", "nearest_away", "toward_zero")


def element_max(element) -> float:
    """Largest value of an element format (127 for int8: the scale rules divide by the positive max)."""
    return float(np.max(format_values(element)))


def element_emax(element) -> int:
    """floor(log2(max)) of an element format."""
    return math.frexp(element_max(element))[1] - 1


def blocks_of(row: np.ndarray, size: int):
    """Yield (start, block) over a row, the last block padded with zeros."""
    for start in range(0, len(row), size):
        chunk = np.zeros(size, dtype=row.dtype)
        part = row[start : start + size]
        chunk[: len(part)] = part
        yield start, chunk, len(part)


def reference_pow2(fmt: ScaledFormat, x: np.ndarray, mode: str):
    """(scale codes, element codes, values) of a 2-D array under the OCP or ceil rule, blocks along the last axis."""
    element = fmt.element
    emax = element_emax(element)
    largest = Fraction(element_max(element))
    rows, length = x.shape
    n_blocks = -(-length // fmt.block_size)
    scale_codes = np.zeros((rows, n_blocks), dtype=np.int64)
    codes = np.zeros((rows, n_blocks * fmt.block_size), dtype=np.int64)
    values = np.zeros(x.shape, dtype=np.float64)
    for r in range(rows):
        for j, (start, chunk, used) in enumerate(blocks_of(x[r].astype(np.float64), fmt.block_size)):
            if not np.all(np.isfinite(chunk)):
                scale_codes[r, j] = 0xFF
                values[r, start : start + used] = np.nan
                continue
            amax = float(np.max(np.abs(chunk)))
            if amax == 0:
                shared = -127
            elif fmt.scale_rule == "ocp":
                shared = math.frexp(amax)[1] - 1 - emax
            else:
                shared = 200
                while largest * Fraction(2) ** (shared - 1) >= Fraction(amax):
                    shared -= 1
            shared = min(max(shared, -127), 127)
            scale_codes[r, j] = shared + 127
            for i, v in enumerate(chunk):
                code = reference_code(element, math.ldexp(float(v), -shared), mode, saturate=True)
                codes[r, start + i] = code
                if i < used:
                    values[r, start + i] = math.ldexp(field_value(element, code), shared)
    return scale_codes, codes, values


WIDE_INTEGER = IntFormat(16, name="int16")


def round_to_integer(value: float, mode: str) -> int:
    """Integer nearest value in the rounding mode (|value| < 2**15), from the integer element reference."""
    code = reference_code(WIDE_INTEGER, value, mode)
    return code - 2**16 if code >= 2**15 else code


def reference_amax(fmt: ScaledFormat, x: np.ndarray, mode: str, tensor_amax: float | None = None):
    """(scale codes, element codes, values) under the amax rule for float32 input, groups along the last axis.

    Covers symmetric integers and floats (an FP16, FP32 or UE4M3 scale, with
    NVFP4's per-tensor scale), asymmetric integers and codebooks.
    """
    element, scale_format = fmt.element, fmt.scale
    rows, length = x.shape
    size = fmt.block_size if fmt.granularity in ("group", "block") else length
    n_blocks = -(-length // size)
    largest = F32(element_max(element))
    asymmetric = getattr(element, "asymmetric", False)

    g = F32(1.0)
    if fmt.tensor_scale is not None:
        amax_all = F32(tensor_amax if tensor_amax is not None else np.max(np.abs(x)))
        if amax_all > 0:
            with np.errstate(over="ignore"):
                g = F32(scale_format.max_normal) * largest / amax_all
            g = min(g, F32(np.finfo(np.float32).max))

    scale_codes = np.zeros((rows, n_blocks), dtype=np.int64)
    codes = np.zeros((rows, n_blocks * size), dtype=np.int64)
    values = np.zeros(x.shape, dtype=np.float64)
    for r in range(rows):
        for j, (start, chunk, used) in enumerate(blocks_of(x[r].astype(np.float32), size)):
            low, high = F32(min(0.0, chunk.min())), F32(max(0.0, chunk.max()))
            if asymmetric:
                raw = (high - low) / largest
            else:
                raw = F32(np.max(np.abs(chunk))) / largest * g
            raw = min(float(raw), scale_format.max_normal)
            if scale_format.width == 32:
                scale = F32(raw)  # raw is a float32 already, so FP32 represents it exactly
                scale_code = int(np.array(scale).view(np.uint32))
            else:
                scale_code = reference_code(scale_format, raw, "nearest_even", saturate=True)
                scale = F32(field_value(scale_format, scale_code))
            scale_codes[r, j] = scale_code
            divisor = scale / g
            zero_point = 0
            if asymmetric and scale > 0:
                zero_point = min(max(round_to_integer(float(-low / scale), "nearest_even"), 0), int(largest))
            for i, v in enumerate(chunk):
                if scale == 0:
                    code = reference_code(element, float(v) * 0.0, mode, saturate=True)
                    value = 0.0
                elif asymmetric:
                    rounded = round_to_integer(float(F32(v) / scale), mode)
                    code = min(max(rounded + zero_point, 0), int(largest))
                    value = (code - zero_point) * float(divisor)
                else:
                    code = reference_code(element, float(F32(v) / divisor), mode, saturate=True)
                    value = field_value(element, code) * float(divisor)
                codes[r, start + i] = code
                if i < used:
                    values[r, start + i] = value
    return scale_codes, codes, values


def sample_blocks(rng: np.random.Generator, rows: int = 6, length: int = 100) -> np.ndarray:
    """Blocks of very different magnitudes, power-of-two maxima, zeros and a subnormal block; float32."""
    magnitude = np.exp2(rng.integers(-20, 20, (rows, 1)))
    x = (rng.standard_normal((rows, length)) * magnitude).astype(np.float32)
    x[0, :40] = 0.0
    x[1, 3] = 2.0**5  # a power-of-two amax, where floor and ceil differ by one
    x[1, 4:32] = np.clip(x[1, 4:32], -31, 31)
    x[2, :] = (rng.standard_normal(length) * 2.0**-140).astype(np.float32)  # subnormal float32 values
    return x


POW2_FORMATS = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "mxint8", "bfp4", "bfp6", "bfp8"]
CEIL_FORMATS = {
    name: ScaledFormat(get(element), get("e8m0"), "block", 32, "ceil", name=name)
    for name, element in [("mxfp8_e4m3_ceil", "fp8_e4m3"), ("mxfp4_ceil", "fp4_e2m1"), ("mxint8_ceil", "int8")]
}


def all_pow2_formats():
    return [get(n) for n in POW2_FORMATS] + list(CEIL_FORMATS.values())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", all_pow2_formats(), ids=lambda f: f.name)
def test_pow2_scaled_matches_reference(fmt, mode):
    x = sample_blocks(np.random.default_rng(17))
    scale_codes, codes, values = reference_pow2(fmt, x, mode)
    encoded = hwsim.encode(x, fmt, rounding=mode)
    np.testing.assert_array_equal(encoded.scale_codes, scale_codes)
    np.testing.assert_array_equal(encoded.codes, codes)
    np.testing.assert_array_equal(hwsim.qdq(x, fmt, rounding=mode), values.astype(np.float32))
    np.testing.assert_array_equal(hwsim.qdq(x.astype(np.float64), fmt, rounding=mode), values)


def test_ceil_rule_avoids_saturation():
    # amax 480 into E4M3: the OCP rule gives floor(log2 480) - 8 = 0, and
    # 480 saturates to 448. The round-up rule gives the smallest s with
    # 448 * 2**s >= 480, s = 1, and 480 / 2 = 240 = 1.875 * 2**7 is exact.
    x = np.zeros(32, dtype=np.float32)
    x[0] = 480.0
    ocp = hwsim.encode(x, "mxfp8_e4m3")
    ceil = hwsim.encode(x, CEIL_FORMATS["mxfp8_e4m3_ceil"])
    assert ocp.scale_codes[0, 0] == 127
    assert ceil.scale_codes[0, 0] == 128
    assert hwsim.decode(ocp)[0] == 448.0
    assert hwsim.decode(ceil)[0] == 480.0


AMAX_FORMATS = ["int4_g128", "int8_g32", "int4_asym_g128", "int8_asym_g32", "nf4", "fp8_e4m3_g32", "nvfp4", "int8_channel", "fp8_e4m3_channel"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", AMAX_FORMATS)
def test_amax_scaled_matches_reference(name, mode):
    fmt = get(name)
    x = sample_blocks(np.random.default_rng(23), length=200)
    x = np.clip(x, -6e4, 6e4) if fmt.scale.name == "fp16" else x
    scale_codes, codes, values = reference_amax(fmt, x, mode)
    encoded = hwsim.encode(x, fmt, rounding=mode)
    np.testing.assert_array_equal(encoded.scale_codes, scale_codes)
    np.testing.assert_array_equal(encoded.codes, codes)
    np.testing.assert_array_equal(hwsim.qdq(x, fmt, rounding=mode), values.astype(np.float32))


@pytest.mark.parametrize("name", ["int4_tensor", "fp8_e4m3_tensor", "int8_asym_tensor", "nf4_element_tensor"])
def test_tensor_granularity_matches_reference(name):
    # One group for the whole tensor: the reference flattens it to one row.
    fmt = get(name)
    x = np.random.default_rng(29).standard_normal((3, 40)).astype(np.float32)
    x[0, 0] = -3.0 * np.abs(x).max()  # an asymmetric range
    one_row = x.reshape(1, -1)
    _, _, values = reference_amax(ScaledFormat(fmt.element, fmt.scale, "channel", 1, fmt.scale_rule), one_row, "nearest_even")
    np.testing.assert_array_equal(hwsim.qdq(x, fmt), values.reshape(x.shape).astype(np.float32))
    encoded = hwsim.encode(x, fmt)
    assert np.unique(encoded.scale_codes).size == 1


def test_nvfp4_static_amax_matches_reference():
    fmt = get("nvfp4")
    x = np.random.default_rng(31).standard_normal((2, 64)).astype(np.float32)
    _, codes, values = reference_amax(fmt, x, "nearest_even", tensor_amax=2.5)
    np.testing.assert_array_equal(hwsim.encode(x, fmt, amax=2.5).codes, codes)
    np.testing.assert_array_equal(hwsim.qdq(x, fmt, amax=2.5), values.astype(np.float32))


def test_nvfp4_subnormal_tensor_keeps_values():
    # amax_tensor = 1e-40 makes 448 * 6 / amax overflow float32; Transformer
    # Engine caps g at the float32 max, so the tensor still quantizes to
    # about its own values instead of to zeros.
    x = np.full((1, 16), 1e-40, dtype=np.float32)
    values = hwsim.qdq(x, "nvfp4")
    assert np.all(values > 0)
    np.testing.assert_allclose(values, x, rtol=0.25)


def test_nvfp4_block_scale_rounding_to_zero_makes_zeros():
    # Block 1's amax is 2**-30 of the tensor's: amax_block / 6 * g =
    # 448 * 2**-30, far below half the smallest UE4M3 step (2**-10), so its
    # scale rounds to 0 and the block decodes to zeros, as in Transformer Engine.
    x = np.zeros(32, dtype=np.float32)
    x[0] = 1.0
    x[16:] = 2.0**-30
    encoded = hwsim.encode(x, "nvfp4")
    assert encoded.scale_codes[0, 1] == 0
    np.testing.assert_array_equal(hwsim.decode(encoded)[16:], np.zeros(16))


# Storage: bits per element, padding and the accounting of Encoded.


@pytest.mark.parametrize(
    "name, bits",
    [
        ("mxfp4", 4 + 8 / 32),
        ("mxfp8_e4m3", 8 + 8 / 32),
        ("mxint8", 8 + 8 / 32),
        ("nvfp4", 4 + 8 / 16),
        ("int4_g128", 4 + 16 / 128),
        ("int4_asym_g128", 4 + (16 + 4) / 128),
        ("nf4", 4 + 32 / 64),
        ("bfp8", 8 + 8 / 16),
        ("fp8_e4m3", 8.0),
    ],
)
def test_bits_per_element(name, bits):
    assert get(name).bits_per_element == bits


def test_mxfp4_padding_counts_in_storage():
    # 3 rows of 40 elements: 2 blocks of 32 per row, 24 padding elements per
    # row. Storage: 3 * 64 * 4 element bits + 3 * 2 * 8 scale bits = 816.
    x = np.ones((3, 40), dtype=np.float32)
    encoded = hwsim.encode(x, "mxfp4")
    assert encoded.codes.shape == (3, 64)
    assert encoded.scale_codes.shape == (3, 2)
    assert encoded.padded_elements == 72
    assert encoded.storage_bits == 816
    assert get("mxfp4").storage_bits((3, 40)) == 816
    np.testing.assert_array_equal(hwsim.decode(encoded), x)


def test_nvfp4_storage_includes_tensor_scale():
    # 20 elements: 2 blocks of 16 (12 padding), 32 * 4 + 2 * 8 + 32 (FP32 tensor scale) = 176.
    assert get("nvfp4").storage_bits((1, 20)) == 176
    assert hwsim.encode(np.ones((1, 20), dtype=np.float32), "nvfp4").storage_bits == 176


def test_storage_along_other_axis():
    # Blocks along axis 0 of a (40, 3) array: the same 816 bits as (3, 40) along axis 1.
    assert get("mxfp4").storage_bits((40, 3), axis=0) == 816
    encoded = hwsim.encode(np.ones((40, 3), dtype=np.float32), "mxfp4", axis=0)
    assert encoded.storage_bits == 816


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4", "int4_g128", "int8_channel", "nf4"])
def test_axis_matches_transposed_input(name):
    x = np.random.default_rng(37).standard_normal((48, 5)).astype(np.float32)
    along_0 = hwsim.qdq(x, name, axis=0)
    along_last = hwsim.qdq(np.ascontiguousarray(x.T), name, axis=-1).T
    np.testing.assert_array_equal(along_0, along_last)


def test_three_dimensional_middle_axis():
    x = np.random.default_rng(41).standard_normal((2, 40, 3)).astype(np.float32)
    moved = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    expected = np.moveaxis(hwsim.qdq(moved, "mxfp8_e4m3"), -1, 1)
    np.testing.assert_array_equal(hwsim.qdq(x, "mxfp8_e4m3", axis=1), expected)


def test_channel_granularity_scale_per_row():
    x = np.array([[1.0, -2.0, 0.5], [100.0, 3.0, -50.0]], dtype=np.float32)
    encoded = hwsim.encode(x, "int8_channel")
    assert encoded.scale_codes.shape == (2, 1)
    # Row amax 2 and 100, scales 2 / 127 and 100 / 127 in FP16; each row's
    # amax encodes as +-127.
    assert encoded.codes[0, 1] == np.uint8(-127 & 0xFF)
    assert encoded.codes[1, 0] == 127


# decode(encode(x)) equals qdq(x) bit for bit, for every registered format.

SUFFIXED = ["int4_g128", "int8_channel", "int8_token", "fp8_e4m3_tensor", "int4_asym_g64", "fp4_e2m1_g16", "nf4_element_g64"]


def every_format_name() -> list[str]:
    return [n for n in names() if get(n).kind != "float" or get(n).width <= 16] + SUFFIXED + ["fp32"]


@pytest.mark.parametrize("mode", MODES + ("stochastic",))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", every_format_name())
def test_decode_of_encode_equals_qdq(name, dtype, mode):
    rng = np.random.default_rng(43)
    x = (rng.standard_normal((5, 70)) * np.exp2(rng.integers(-8, 8, (5, 1)))).astype(dtype)
    x[0, :3] = [0.0, -0.0, 1e-30]
    encoded = hwsim.encode(x, name, rounding=mode, seed=9)
    decoded = hwsim.decode(encoded, dtype)
    assert decoded.shape == x.shape
    np.testing.assert_array_equal(decoded, hwsim.qdq(x, name, rounding=mode, seed=9))


def accepts_nan(fmt) -> bool:
    """Whether encode takes NaN without nan_to_zero: scaled formats (a NaN block) and floats with a NaN code."""
    return fmt.kind in ("scaled", "dialect") or (fmt.kind == "float" and fmt.has_nan)


@pytest.mark.parametrize("name", [n for n in every_format_name() if accepts_nan(get(n))])
def test_decode_of_encode_equals_qdq_with_specials(name):
    x = np.random.default_rng(47).standard_normal((3, 64)).astype(np.float32)
    x[0, 1], x[1, 2], x[2, 3] = np.nan, np.inf, -np.inf
    decoded = hwsim.decode(hwsim.encode(x, name))
    np.testing.assert_array_equal(decoded, hwsim.qdq(x, name))

