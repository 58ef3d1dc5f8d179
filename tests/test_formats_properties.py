"""Properties of qdq that hold for every input, checked with hypothesis, and the statistics of stochastic rounding."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_formats_reference import ELEMENT_FORMATS, format_values

import hwsim
from hwsim.formats import FloatFormat, IntFormat, get

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUNDING = ["nearest_even", "nearest_away", "toward_zero"]
NEAREST = ["nearest_even", "nearest_away"]
ELEMENT_NAMES = list(ELEMENT_FORMATS)
SCALED_NAMES = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp4", "mxint8", "bfp8", "nvfp4", "int4_g128", "nf4", "int8_channel"]


def finite_float32(max_magnitude: float = 3e38):
    bound = float(np.float32(max_magnitude))
    return st.floats(-bound, bound, width=32, allow_nan=False, allow_infinity=False)


def resolve(name: str):
    """The spec for a name: element specs of scaled formats are not registered under their own names."""
    return ELEMENT_FORMATS.get(name) or get(name)


def float32_arrays(size: int = 64, max_magnitude: float = 3e38):
    return arrays(np.float32, size, elements=finite_float32(max_magnitude))


def sign_symmetric(fmt) -> bool:
    """Whether the format's values are symmetric about zero: signed floats and restricted integers."""
    if isinstance(fmt, FloatFormat):
        return fmt.signed
    if isinstance(fmt, IntFormat):
        return fmt.restricted
    return False


def nan_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


@SETTINGS
@given(x=float32_arrays(), name=st.sampled_from(ELEMENT_NAMES + SCALED_NAMES), mode=st.sampled_from(ROUNDING))
def test_qdq_is_idempotent(x, name, mode):
    fmt = resolve(name)
    once = hwsim.qdq(x, fmt, rounding=mode, saturate=True)
    twice = hwsim.qdq(once, fmt, rounding=mode, saturate=True)
    assert nan_equal(twice, once)


@SETTINGS
@given(x=float32_arrays(), name=st.sampled_from(ELEMENT_NAMES), mode=st.sampled_from(ROUNDING))
def test_qdq_is_monotonic(x, name, mode):
    fmt = resolve(name)
    if isinstance(fmt, FloatFormat) and not fmt.signed:
        x = np.abs(x)  # a negative input into an unsigned float format is NaN
    ordered = np.sort(x)
    values = hwsim.qdq(ordered, fmt, rounding=mode, saturate=True).astype(np.float64)
    assert np.all(np.diff(values) >= 0)


@SETTINGS
@given(
    x=float32_arrays(),
    name=st.sampled_from([n for n in ELEMENT_NAMES if sign_symmetric(ELEMENT_FORMATS[n])] + ["mxfp8_e4m3", "mxfp4", "mxint8", "nvfp4"]),
    mode=st.sampled_from(ROUNDING),
)
def test_qdq_is_sign_symmetric(x, name, mode):
    fmt = resolve(name)
    positive = hwsim.qdq(x, fmt, rounding=mode, saturate=True)
    negative = hwsim.qdq(-x, fmt, rounding=mode, saturate=True)
    np.testing.assert_array_equal(negative, -positive)


@SETTINGS
@given(data=st.data(), name=st.sampled_from(ELEMENT_NAMES), mode=st.sampled_from(NEAREST))
def test_qdq_within_half_step(data, name, mode):
    # Inside the range, a nearest mode moves x by at most half the gap
    # between the two values of the format around it.
    fmt = ELEMENT_FORMATS[name]
    values = format_values(fmt)
    x = data.draw(arrays(np.float32, 32, elements=st.floats(float(values[0]), float(values[-1]), width=32)))
    wide = x.astype(np.float64)
    high_index = np.clip(np.searchsorted(values, wide, side="left"), 1, len(values) - 1)
    gap = values[high_index] - values[high_index - 1]
    error = np.abs(hwsim.qdq(x, fmt, rounding=mode).astype(np.float64) - wide)
    assert np.all(error <= gap / 2)


@SETTINGS
@given(x=float32_arrays(size=96, max_magnitude=1e30), name=st.sampled_from(SCALED_NAMES))
def test_decode_of_encode_equals_qdq_property(x, name):
    np.testing.assert_array_equal(hwsim.decode(hwsim.encode(x, name)), hwsim.qdq(x, name))


# Stochastic rounding. Each of n copies of x rounds to its lower neighbour
# `low` or upper neighbour `high`, up with probability p' = floor(p * 2**32) /
# 2**32 where p = (x - low) / (high - low) (32 random bits per element), so
# E[mean] is within (high - low) * 2**-32 of x and the mean's standard
# deviation is (high - low) * sqrt(p (1 - p) / n) <= (high - low) / (2 sqrt(n)).
# With n = 2**16 the test allows 6 standard deviations plus that bias:
# (high - low) * (6 / 512 + 2**-32). At a fixed seed the outcome is fixed;
# a correct kernel fails it with probability about 2e-9 per case.

STOCHASTIC_CASES = [
    ("fp8_e4m3", 1.03),
    ("fp8_e4m3", 1.0625),
    ("fp8_e4m3", 3 * 2.0**-11),
    ("fp8_e4m3", -300.0),
    ("fp8_e5m2", 0.7),
    ("fp4_e2m1", 5.5),
    ("fp4_e2m1", 0.1),
    ("fp6_e3m2", -13.0),
    ("int8", 2.3),
    ("int8", -2.7),
    ("int4", 6.999),
    ("nf4_element", 0.5),
    ("nf4_element", -0.01),
    ("e8m0", 3.0),
]


def neighbours(name: str, x: float) -> tuple[float, float]:
    values = format_values(ELEMENT_FORMATS[name])
    high_index = int(np.searchsorted(values, x, side="left"))
    return float(values[high_index - 1]), float(values[high_index])


@pytest.mark.parametrize("name, x", STOCHASTIC_CASES)
def test_stochastic_rounding_is_unbiased(name, x):
    n = 2**16
    low, high = neighbours(name, x)
    values = hwsim.qdq(np.full(n, x, dtype=np.float64), resolve(name), rounding="stochastic", seed=1234)
    assert set(np.unique(values)) <= {low, high}
    tolerance = (high - low) * (6 / (2 * math.sqrt(n)) + 2**-32)
    assert abs(values.mean() - x) <= tolerance


@pytest.mark.parametrize("name", ["mxfp4", "mxfp8_e4m3", "nvfp4", "int4_g128"])
def test_stochastic_rounding_unbiased_in_blocks(name):
    # Every block is [1, x, x, ...], so all blocks share one scale and x has the
    # same two neighbours in each. The mean over blocks estimates E[qdq(x)].
    fmt = get(name)
    size = fmt.block_size
    blocks = 2**16 // size
    x = np.full((blocks, size), 0.3, dtype=np.float32)
    x[:, 0] = 1.0
    values = hwsim.qdq(x, name, rounding="stochastic", seed=99)[:, 1:].astype(np.float64)
    low, high = np.unique(values)[[0, -1]]
    n = values.size
    tolerance = (high - low) * (6 / (2 * math.sqrt(n)) + 2**-32)
    assert abs(values.mean() - float(np.float32(0.3))) <= tolerance


@pytest.mark.parametrize("name", ["fp8_e4m3", "int8", "nf4_element", "mxfp4", "nvfp4", "bf16"])
def test_stochastic_rounding_is_reproducible(name):
    x = np.random.default_rng(3).standard_normal((64, 64)).astype(np.float32)
    first = hwsim.qdq(x, name, rounding="stochastic", seed=42)
    second = hwsim.qdq(x, name, rounding="stochastic", seed=42)
    other_seed = hwsim.qdq(x, name, rounding="stochastic", seed=43)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other_seed)
    codes = hwsim.encode(x, name, rounding="stochastic", seed=42).codes
    np.testing.assert_array_equal(codes, hwsim.encode(x, name, rounding="stochastic", seed=42).codes)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["fp8_e4m3", "int8", "nf4_element", "mxfp4", "mxint8", "nvfp4", "int4_g128"])
def test_stochastic_rounding_ignores_thread_count(name, dtype):
    x = np.random.default_rng(5).standard_normal((256, 256)).astype(dtype)
    default_threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one_thread = hwsim.qdq(x, name, rounding="stochastic", seed=7)
        one_thread_codes = hwsim.encode(x, name, rounding="stochastic", seed=7).codes
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        all_threads = hwsim.qdq(x, name, rounding="stochastic", seed=7)
        all_threads_codes = hwsim.encode(x, name, rounding="stochastic", seed=7).codes
    finally:
        numba.set_num_threads(default_threads)
    np.testing.assert_array_equal(one_thread, all_threads)
    np.testing.assert_array_equal(one_thread_codes, all_threads_codes)
