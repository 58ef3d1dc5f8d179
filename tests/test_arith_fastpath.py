"""Exact fast paths give the general path's bits, and are taken only where proved exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hwsim
from hwsim.arith import IntAccumulator, MacSpec, matmul
from hwsim.formats.spec import IntFormat


def _encoded(a, b, mac):
    return hwsim.encode(a, mac.a, axis=-1), hwsim.encode(b, mac.b, axis=-2)


def _assert_same_as_general(a, b, mac, path="auto"):
    encoded_a, encoded_b = _encoded(a, b, mac)
    fast = matmul(encoded_a, encoded_b, mac, path=path)
    general = matmul(encoded_a, encoded_b, mac, path="general")
    assert general.path == "general"
    np.testing.assert_array_equal(fast.values.view(np.int64), general.values.view(np.int64))
    assert fast.overflow_events == general.overflow_events == 0
    return fast


def _ints(rng, shape, low, high):
    return rng.integers(low, high + 1, shape).astype(np.float64)


def test_int8_gemm_takes_float32_blas():
    # K = 1024: |partial sums| <= 1024 * 128 * 128 = 2**24, exact in float32 and int32.
    rng = np.random.default_rng(0)
    a, b = _ints(rng, (40, 1024), -128, 127), _ints(rng, (1024, 9), -128, 127)
    a[0, :] = -128
    b[:, 0] = -128
    fast = _assert_same_as_general(a, b, MacSpec("int8", "int8", "int32_saturate"))
    assert fast.path == "blas32"
    assert fast.values[0, 0] == 2**24


def test_int8_gemv_takes_integer_sums():
    rng = np.random.default_rng(1)
    a, b = _ints(rng, (1, 3000), -128, 127), _ints(rng, (3000, 37), -128, 127)
    fast = _assert_same_as_general(a, b, MacSpec("int8", "int8", "int32_wrap", order="pairwise"))
    assert fast.path == "integer"


def test_long_k_is_split_into_exact_float32_chunks():
    # K = 3000 > 1024, the longest float32-exact chunk of int8 products.
    rng = np.random.default_rng(2)
    a, b = _ints(rng, (32, 3000), -128, 127), _ints(rng, (3000, 8), -128, 127)
    fast = _assert_same_as_general(a, b, MacSpec("int8", "int8", "int32_wrap"))
    assert fast.path == "blas32"


def test_forced_paths_agree():
    rng = np.random.default_rng(3)
    a, b = _ints(rng, (3, 200), -128, 127), _ints(rng, (200, 5), -128, 127)
    mac = MacSpec("int8", "int8", "int32_wrap", order="tree", tree_width=16)
    assert _assert_same_as_general(a, b, mac, path="blas").path == "blas32"
    assert _assert_same_as_general(a, b, mac, path="integer").path == "integer"


def test_float64_blas_for_wide_integer_products():
    # int16 products reach 2**30, too wide for a float32 chunk, and float64 represents sums of 2**23 of them exactly.
    rng = np.random.default_rng(4)
    a, b = _ints(rng, (4, 64), -32768, 32767), _ints(rng, (64, 3), -32768, 32767)
    fast = _assert_same_as_general(a, b, MacSpec("int16", "int16", IntAccumulator(48, "saturate")), path="blas")
    assert fast.path == "blas64"


def test_scales_after_accumulation_on_the_fast_path():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((33, 96)), rng.standard_normal((96, 7))
    fast = _assert_same_as_general(a, b, MacSpec("int8_channel", "int8_channel", "int32_wrap"))
    assert fast.path == "blas32"
    fast = _assert_same_as_general(a[:2], b, MacSpec("int4_channel", "int8_tensor", "fp32"))
    assert fast.path == "integer"


def test_fixed_point_elements_into_a_float_register():
    # Codes of a fixed-point int8 with 4 fraction bits enter as integers; the
    # result is scaled by 2**-8 exactly.
    q4 = IntFormat(8, frac_bits=4, name="q3_4")
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((3, 50)) * 4, rng.standard_normal((50, 4)) * 4
    fast = _assert_same_as_general(a, b, MacSpec(q4, q4, "fp32"))
    assert fast.path == "integer"


@pytest.mark.parametrize("fmt", ["fp4_e2m1", "fp6_e2m3"])
def test_short_float_elements_take_float32_blas(fmt):
    # E2M1 products are multiples of 2**-2 up to 36, E2M3 ones multiples of
    # 2**-6 up to 56.25: K = 300 stays far below 2**24 quanta, and the fp32
    # register represents every partial sum.
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((5, 300)), rng.standard_normal((300, 6))
    fast = _assert_same_as_general(a, b, MacSpec(fmt, fmt, "fp32"))
    assert fast.path == "blas32"


def test_no_fast_path_without_a_proof():
    rng = np.random.default_rng(8)
    ones = np.ones((1, 2**17))
    # Partial sums reach 2**31, beyond int32: the general path counts the overflow.
    overflowing = matmul(-128 * ones, -128 * ones.T, MacSpec("int8", "int8", "int32_wrap"))
    assert overflowing.path == "general"
    assert overflowing.overflow_events == 1
    # fp8 products are multiples of 2**-18, so fp32 represents partial sums exactly
    # only below 2**24 * 2**-18 = 64: small inputs qualify, large ones do not.
    small = _assert_same_as_general(rng.standard_normal((2, 8)) / 8, rng.standard_normal((8, 2)) / 8, MacSpec("fp8_e4m3", "fp8_e4m3", "fp32"))
    assert small.path == "blas32"
    large = matmul(rng.standard_normal((2, 64)) * 8, rng.standard_normal((64, 2)) * 8, MacSpec("fp8_e4m3", "fp8_e4m3", "fp32"))
    assert large.path == "general"
    # Block scales along K round once per block.
    mx = matmul(rng.standard_normal((2, 32)), rng.standard_normal((32, 2)), MacSpec("mxint8", "mxint8", "fp32"))
    assert mx.path == "general"
    # NaN operands, which would otherwise qualify like `small` above.
    nan = matmul(np.array([[np.nan, 0.125]]), np.full((2, 1), 0.125), MacSpec("fp8_e4m3", "fp8_e4m3", "fp32"))
    assert nan.path == "general"
    assert np.isnan(nan.values[0, 0])


def test_lowered_float32_matmul_precision_disables_blas():
    rng = np.random.default_rng(9)
    a, b = _ints(rng, (40, 64), -128, 127), _ints(rng, (64, 3), -128, 127)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        result = matmul(a, b, MacSpec("int8", "int8", "int32_wrap"))
        with pytest.raises(ValueError, match="get_float32_matmul_precision"):
            matmul(a, b, MacSpec("int8", "int8", "int32_wrap"), path="blas")
    finally:
        torch.set_float32_matmul_precision(previous)
    assert result.path == "integer"
