"""Hand-worked GEMM cases, the public API, error statistics and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hwsim
from hwsim.arith import FloatAccumulator, MacSpec, error_vs_k, matmul


def _column(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, 1)


def _row(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(1, -1)


# ---------------------------------------------------------------- hand-worked cases


@pytest.mark.parametrize("order", ["sequential", "pairwise"])
def test_int32_overflow_of_2_to_17_products(order):
    # Each product is (-128) * (-128) = 2**14, and 2**17 of them sum to 2**31,
    # one more than the int32 maximum 2**31 - 1. Sequentially the register
    # contains 2**31 - 2**14 before the last addition, which overflows once.
    # Pairwise, every node is a power of two until the root adds 2**30 + 2**30.
    # Wrapping keeps 2**31 mod 2**32 as a signed number: -2**31 = -2147483648.
    # Saturating clamps to 2**31 - 1 = 2147483647.
    k = 2**17
    a = np.full((1, k), -128.0)
    b = np.full((k, 1), -128.0)
    wrapped = matmul(a, b, MacSpec("int8", "int8", "int32_wrap", order=order))
    saturated = matmul(a, b, MacSpec("int8", "int8", "int32_saturate", order=order))
    assert wrapped.values[0, 0] == -2147483648
    assert wrapped.overflow_events == 1
    assert saturated.values[0, 0] == 2147483647
    assert saturated.overflow_events == 1
    assert wrapped.path == "general"


def test_int32_wrap_counts_each_overflow():
    # Saturation sticks at the maximum, so each further addition of a positive
    # product overflows again: with 2**17 + 2 products the sum passes 2**31 - 1
    # at product 2**17 and stays clamped for the last two, 3 events.
    # Wrapping overflows only once: 2**31 + 2 * 2**14 wraps to -2**31 + 2**15.
    k = 2**17 + 2
    a = np.full((1, k), -128.0)
    b = np.full((k, 1), -128.0)
    saturated = matmul(a, b, MacSpec("int8", "int8", "int32_saturate"))
    wrapped = matmul(a, b, MacSpec("int8", "int8", "int32_wrap"))
    assert saturated.values[0, 0] == 2**31 - 1
    assert saturated.overflow_events == 3
    assert wrapped.values[0, 0] == -(2**31) + 2**15
    assert wrapped.overflow_events == 1


@pytest.mark.parametrize(
    "order, width, expected",
    [
        # fp16 has 10 fraction bits, so numbers in [2048, 4096) are 2 apart.
        # Sequentially the sum reaches 2048 exactly; 2048 + 1 is halfway
        # between 2048 and 2050 and rounds to the even 2048, so every later
        # addition of 1.0 is lost and the sum stops at 2048.
        ("sequential", None, 2048.0),
        # Pairwise, every node adds two equal powers of two (1+1, 2+2, ...),
        # all exact up to 4096 = 2**12, which fp16 represents.
        ("pairwise", None, 4096.0),
        # A 32-wide tree adds 32 exactly each time; 2048 + 32 = 2080 is a
        # multiple of the spacing 2, so every partial sum is exact.
        ("tree", 32, 4096.0),
    ],
)
def test_fp16_accumulation_of_4096_ones(order, width, expected):
    a = np.ones((1, 4096))
    b = np.ones((4096, 1))
    result = matmul(a, b, MacSpec("fp16", "fp16", "fp16", order=order, tree_width=width), return_error=True)
    assert result.values[0, 0] == expected
    assert result.error_quantized[0, 0] == expected - 4096.0


def test_fp32_order_decides_rounding_of_small_terms():
    # fp32 spacing at 1 is 2**-23. Sequentially 2**-24 + 2**-24 = 2**-23 first,
    # then 1 + 2**-23 is exact. Reversed, 1 + 2**-24 is a tie that rounds to
    # the even 1, twice, so the small terms vanish.
    small_first = matmul(_row([2.0**-24, 2.0**-24, 1.0]), _column([1, 1, 1]), MacSpec("fp32", "fp32", "fp32"))
    large_first = matmul(_row([1.0, 2.0**-24, 2.0**-24]), _column([1, 1, 1]), MacSpec("fp32", "fp32", "fp32"))
    assert small_first.values[0, 0] == 1.0 + 2.0**-23
    assert large_first.values[0, 0] == 1.0


def test_fp32_near_tie_single_rounding():
    # Products 2**70 + 2**47 (an odd fp32 significand, spacing 2**47 there) and
    # 2**46 - 1 = (2**23 + 1)(2**23 - 1). Their exact sum lies 1 below the
    # halfway point 2**70 + 2**47 + 2**46, so fp32 rounds it down to
    # 2**70 + 2**47. Rounding first to float64 would give the halfway point
    # itself, which ties to the even 2**70 + 2**48.
    a = _row([2.0**23 + 1, 2.0**23 + 1])
    b = _column([2.0**47, 2.0**23 - 1])
    result = matmul(a, b, MacSpec("fp32", "fp32", "fp32"), path="general")
    assert result.values[0, 0] == 2.0**70 + 2.0**47


@pytest.mark.parametrize(
    "order, width, expected",
    [
        # The exact sum 2**70 + 2**46 + 1 lies just above the halfway point
        # 2**70 + 2**46 between fp32 neighbours 2**70 and 2**70 + 2**47, so one
        # rounding of the whole tree gives 2**70 + 2**47.
        ("tree", 4, 2.0**70 + 2.0**47),
        # Sequentially, 2**70 + 2**46 is an exact tie and rounds to the even
        # 2**70; then 2**70 + 1 rounds back to 2**70.
        ("sequential", None, 2.0**70),
        # Pairwise: R(2**70 + 2**46) = 2**70, then R(2**70 + 1) = 2**70.
        ("pairwise", None, 2.0**70),
    ],
)
def test_fp32_tiny_product_breaks_a_tie(order, width, expected):
    a = _row([2.0**35, 2.0**23, 1.0])
    b = _column([2.0**35, 2.0**23, 1.0])
    result = matmul(a, b, MacSpec("fp32", "fp32", "fp32", order=order, tree_width=width), path="general")
    assert result.values[0, 0] == expected


def test_bf16_register_stalls_at_256():
    # bf16 has 7 fraction bits: numbers in [256, 512) are 2 apart, so 256 + 1
    # ties to the even 256 and the sequential sum of 300 ones stops at 256.
    result = matmul(np.ones((1, 300)), np.ones((300, 1)), MacSpec("bf16", "bf16", "bf16"))
    assert result.values[0, 0] == 256.0


def test_truncating_register_drops_low_bits():
    # fp22_e8m13_rtz keeps 13 fraction bits toward zero: spacing at 1 is
    # 2**-13, so 1 + 0.75 * 2**-13 truncates to 1, and -1 - 0.75 * 2**-13 to -1.
    mac = MacSpec("fp32", "fp32", "fp22_e8m13_rtz")
    up = matmul(_row([1.0, 0.75 * 2.0**-13]), _column([1, 1]), mac)
    down = matmul(_row([-1.0, -0.75 * 2.0**-13]), _column([1, 1]), mac)
    assert up.values[0, 0] == 1.0
    assert down.values[0, 0] == -1.0


def test_fp16_register_overflow_to_inf_and_saturation():
    # fp8_e4m3 max 448: 448 * 448 = 200704, above fp16's max 65504, so the
    # first addition overflows: Inf with IEEE overflow, 65504 when saturating.
    a = np.full((1, 2), 448.0)
    b = np.full((2, 1), 448.0)
    to_inf = matmul(a, b, MacSpec("fp8_e4m3", "fp8_e4m3", "fp16"))
    saturating = matmul(a, b, MacSpec("fp8_e4m3", "fp8_e4m3", FloatAccumulator(5, 10, overflow="saturate")))
    assert to_inf.values[0, 0] == np.inf
    assert to_inf.overflow_events == 1
    assert saturating.values[0, 0] == 65504.0
    assert saturating.overflow_events == 2


def test_nan_and_inf_inputs_propagate():
    # Inf * 1 + Inf * 1 is Inf; Inf * 1 + Inf * (-1) is NaN; NaN spreads (IEEE 754).
    mac = MacSpec("fp16", "fp16", "fp32")
    b = np.ones((2, 2))
    b[1, 1] = -1.0
    a = np.array([[np.inf, np.inf], [np.nan, 1.0]])
    result = matmul(a, b, mac)
    assert result.values[0, 0] == np.inf
    assert np.isnan(result.values[0, 1])
    assert np.isnan(result.values[1]).all()


def test_mxfp4_block_scales_multiply_the_exact_block_dot():
    # One block of 32 (OCP MX v1.0: shared exponent floor(log2 amax) - 2 for
    # E2M1). a = 6 everywhere: shared exponent 2 - 2 = 0, elements 6.
    # b = 2**-21 everywhere: shared exponent -21 - 2 = -23, elements 4.
    # The block dot is 32 * 6 * 4 = 768, scaled by 2**(0 - 23).
    a = np.full((1, 32), 6.0)
    b = np.full((32, 1), 2.0**-21)
    result = matmul(a, b, MacSpec("mxfp4", "mxfp4", "fp32"))
    assert result.values[0, 0] == 768 * 2.0**-23


# ---------------------------------------------------------------- API


def test_padding_is_reported():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 40))
    b = rng.standard_normal((40, 3))
    result = matmul(a, b, MacSpec("mxfp4", "mxfp4", "fp32"))
    assert result.k == 40
    assert result.k_padded == 64
    assert result.padded
    unpadded = matmul(a, b, MacSpec("fp8_e4m3", "fp8_e4m3", "fp32"))
    assert not unpadded.padded


def test_batched_and_broadcast_shapes():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 1, 3, 8))
    b = rng.standard_normal((4, 8, 5))
    mac = MacSpec("fp8_e4m3", "fp8_e4m3", "fp16")
    result = matmul(a, b, mac)
    assert result.values.shape == (2, 4, 3, 5)
    single = matmul(a[1, 0], b[2], mac)
    np.testing.assert_array_equal(result.values[1, 2], single.values)


def test_torch_and_encoded_inputs_agree():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 64)).astype(np.float32)
    b = rng.standard_normal((64, 4)).astype(np.float32)
    mac = MacSpec("nvfp4", "nvfp4", "fp32")
    from_numpy = matmul(a, b, mac)
    from_torch = matmul(torch.from_numpy(a), torch.from_numpy(b), mac)
    from_encoded = matmul(hwsim.encode(a, "nvfp4", axis=-1), hwsim.encode(b, "nvfp4", axis=-2), mac)
    np.testing.assert_array_equal(from_numpy.values, from_torch.values)
    np.testing.assert_array_equal(from_numpy.values, from_encoded.values)


def test_error_against_both_references():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 128))
    b = rng.standard_normal((128, 6))
    result = matmul(a, b, MacSpec("fp8_e4m3", "fp8_e4m3", "fp16"), return_error=True)
    reference = np.matmul(hwsim.decode(hwsim.encode(a, "fp8_e4m3"), np.float64), hwsim.decode(hwsim.encode(b, "fp8_e4m3"), np.float64))
    np.testing.assert_array_equal(result.reference_quantized, reference)
    np.testing.assert_array_equal(result.reference_unquantized, a @ b)
    np.testing.assert_array_equal(result.error_quantized, result.values - reference)
    stats = result.error_stats()
    assert list(stats["reference"]) == ["quantized", "unquantized"]
    quantized = stats.iloc[0]
    assert quantized["max_abs_error"] == np.abs(result.values - reference).max()
    assert quantized["outputs"] == 24
    # Quantizing to fp8 costs more than accumulating in fp16.
    assert stats.iloc[1]["rms_error"] > quantized["rms_error"]


def test_error_stats_need_a_reference():
    result = matmul(np.ones((1, 4)), np.ones((4, 1)), MacSpec("fp16", "fp16", "fp16"))
    with pytest.raises(ValueError, match="return_error=True"):
        result.error_stats()
    with pytest.raises(ValueError, match="return_error=True"):
        result.error_quantized
    encoded = matmul(hwsim.encode(np.ones((1, 4)), "fp16"), hwsim.encode(np.ones((4, 1)), "fp16"), MacSpec("fp16", "fp16", "fp16"), return_error=True)
    assert encoded.reference_unquantized is None
    with pytest.raises(ValueError, match="Encoded inputs have no unquantized values"):
        encoded.error_unquantized


def test_error_vs_k_shows_fp16_breakdown():
    # Sums of ones are exact in fp16 up to 2048 (see the 4096-ones case), then
    # the sequential register stops growing: at K=4096 the error is -2048.
    a = np.ones((1, 4096))
    b = np.ones((4096, 1))
    table = error_vs_k(a, b, MacSpec("fp16", "fp16", "fp16"), k_values=[1024, 2048, 2049, 4096])
    quantized = table[table["reference"] == "quantized"].set_index("k")
    assert quantized.loc[1024, "max_abs_error"] == 0.0
    assert quantized.loc[2048, "max_abs_error"] == 0.0
    assert quantized.loc[2049, "max_abs_error"] == 1.0
    assert quantized.loc[4096, "max_abs_error"] == 2048.0
    default = error_vs_k(a[:, :8], b[:8], MacSpec("fp16", "fp16", "fp16"))
    assert sorted(set(default["k"])) == [1, 2, 4, 8]


# ---------------------------------------------------------------- bad input


def test_mismatched_shapes_are_rejected():
    mac = MacSpec("fp16", "fp16", "fp32")
    with pytest.raises(ValueError, match=r"K=5.*K=4"):
        matmul(np.ones((2, 5)), np.ones((4, 3)), mac)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        matmul(np.ones(4), np.ones((4, 3)), mac)
    with pytest.raises(ValueError, match="batch shapes"):
        matmul(np.ones((2, 1, 4)), np.ones((3, 4, 1)), mac)


def test_wrong_encoded_operands_are_rejected():
    mac = MacSpec("mxfp4", "mxfp4", "fp32")
    with pytest.raises(ValueError, match="encoded as 'fp16'"):
        matmul(hwsim.encode(np.ones((2, 32)), "fp16"), np.ones((32, 2)), mac)
    with pytest.raises(ValueError, match="quantized along K"):
        matmul(np.ones((2, 32)), hwsim.encode(np.ones((32, 2)), "mxfp4", axis=-1), mac)


def test_nan_into_integer_format_is_rejected():
    with pytest.raises(ValueError, match="no NaN"):
        matmul(np.array([[np.nan, 1.0]]), np.ones((2, 1)), MacSpec("int8", "int8", "int32_wrap"))


def test_invalid_path_and_unprovable_fast_path():
    a = np.ones((2, 8))
    b = np.ones((8, 2))
    with pytest.raises(ValueError, match="invalid path='fast'"):
        matmul(a, b, MacSpec("int8", "int8", "int32_wrap"), path="fast")
    with pytest.raises(ValueError, match="not provably exact"):
        matmul(a * 448, b * 448, MacSpec("fp8_e4m3", "fp8_e4m3", "fp16"), path="blas")
    with pytest.raises(TypeError, match="MacSpec"):
        matmul(a, b, "fp32")
