"""Bad input raises an exception that names the value; odd but valid input works."""

from __future__ import annotations

import numpy as np
import pytest

import hwsim
from hwsim.formats import CodebookFormat, FloatFormat, IntFormat, ScaledFormat, get, names

FP4 = get("fp4_e2m1")
E8M0 = get("e8m0")


# Invalid specs.


def test_float_without_exponent_bits():
    with pytest.raises(ValueError, match="exponent_bits=0"):
        FloatFormat(0, 3, 7)


@pytest.mark.parametrize("bits", [1, 17, 32])
def test_integer_width_out_of_range(bits):
    with pytest.raises(ValueError, match=f"bits={bits}"):
        IntFormat(bits)


def test_float_wider_than_32_bits():
    with pytest.raises(ValueError, match="33 bits"):
        FloatFormat(8, 24, 127)


@pytest.mark.parametrize("block_size", [0, -1, -32])
def test_block_size_not_positive(block_size):
    with pytest.raises(ValueError, match=f"block_size={block_size}"):
        ScaledFormat(FP4, E8M0, "block", block_size)


def test_block_size_not_integer():
    with pytest.raises(ValueError, match="block_size=2.5"):
        ScaledFormat(FP4, E8M0, "block", 2.5)


def test_group_size_zero_in_name():
    with pytest.raises(ValueError, match="int4_g0"):
        get("int4_g0")


def test_codebook_with_too_many_levels():
    with pytest.raises(ValueError, match="257 levels"):
        CodebookFormat(tuple(float(i) for i in range(257)))


def test_codebook_not_increasing():
    with pytest.raises(ValueError, match="strictly increasing"):
        CodebookFormat((0.0, 1.0, 1.0))


def test_unknown_special_value_policy():
    with pytest.raises(ValueError, match="special='ocp'"):
        FloatFormat(4, 3, 7, "ocp")


def test_unknown_scale_rule():
    with pytest.raises(ValueError, match="scale_rule='floor'"):
        ScaledFormat(FP4, E8M0, "block", 32, "floor")


def test_ocp_rule_needs_power_of_two_scale():
    with pytest.raises(ValueError, match="scale_rule='ocp'"):
        ScaledFormat(FP4, get("ue4m3"), "block", 16, "ocp")


# Unknown names.


def test_unknown_name_suggests_close_names():
    with pytest.raises(KeyError) as error:
        get("fp8_e4m4")
    message = str(error.value)
    assert "'fp8_e4m4'" in message
    assert "fp8_e4m3" in message


def test_unknown_name_without_close_match():
    with pytest.raises(KeyError, match="zzzz"):
        get("zzzz")


def test_suffix_on_scaled_format():
    with pytest.raises(ValueError, match="mxfp4"):
        get("mxfp4_g32")


# Invalid arrays and options.


@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.uint16, np.bool_, np.complex64, np.complex128])
def test_non_float_array_is_rejected(dtype):
    x = np.zeros(4, dtype=dtype)
    with pytest.raises(TypeError, match=np.dtype(dtype).name):
        hwsim.qdq(x, "fp8_e4m3")
    with pytest.raises(TypeError, match=np.dtype(dtype).name):
        hwsim.encode(x, "mxfp4")


def test_unknown_rounding_mode():
    with pytest.raises(ValueError, match="round_half_up"):
        hwsim.qdq(np.ones(4, dtype=np.float32), "fp8_e4m3", rounding="round_half_up")


def test_axis_out_of_range():
    with pytest.raises(ValueError, match="axis=2"):
        hwsim.qdq(np.ones((4, 32), dtype=np.float32), "mxfp4", axis=2)


def test_negative_seed():
    with pytest.raises(ValueError, match="seed=-1"):
        hwsim.qdq(np.ones(4, dtype=np.float32), "fp8_e4m3", rounding="stochastic", seed=-1)


@pytest.mark.parametrize("amax", [0.0, -1.0, float("inf"), float("nan")])
def test_invalid_static_amax(amax):
    with pytest.raises(ValueError, match="amax="):
        hwsim.qdq(np.ones(16, dtype=np.float32), "nvfp4", amax=amax)


def test_static_amax_with_power_of_two_rule():
    with pytest.raises(ValueError, match="scale_rule='ocp'"):
        hwsim.qdq(np.ones(32, dtype=np.float32), "mxfp4", amax=1.0)


def test_static_amax_on_element_format():
    with pytest.raises(ValueError, match="fp8_e4m3"):
        hwsim.qdq(np.ones(4, dtype=np.float32), "fp8_e4m3", amax=1.0)


def test_static_rule_needs_amax():
    fmt = ScaledFormat(get("int8"), get("fp32"), "tensor", 1, "static", name="int8_static")
    with pytest.raises(ValueError, match="amax="):
        hwsim.qdq(np.ones(4, dtype=np.float32), fmt)
    np.testing.assert_array_equal(hwsim.qdq(np.array([1.0, 2.0], dtype=np.float32), fmt, amax=127.0), [1.0, 2.0])


def test_nan_into_format_without_nan_names_option():
    with pytest.raises(ValueError, match="nan_to_zero=True"):
        hwsim.encode(np.array([1.0, np.nan], dtype=np.float32), "int8")


# Empty, non-contiguous and special inputs.


def every_format_name() -> list[str]:
    return names() + ["int4_g128", "int8_channel", "fp8_e4m3_tensor", "int8_asym_tensor"]


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 32)])
@pytest.mark.parametrize("name", every_format_name())
def test_empty_array(name, shape):
    x = np.zeros(shape, dtype=np.float32)
    values = hwsim.qdq(x, name)
    assert values.shape == shape
    assert values.dtype == np.float32
    decoded = hwsim.decode(hwsim.encode(x, name))
    assert decoded.shape == shape


@pytest.mark.parametrize("name", ["fp8_e4m3", "int8", "nf4_element", "mxfp4", "nvfp4", "int4_g128", "fp8_e4m3_tensor"])
def test_non_contiguous_views(name):
    base = np.random.default_rng(2).standard_normal((64, 96)).astype(np.float32)
    for view in (base[:, ::2], base.T, base[::-1], base[::2, 1::3]):
        assert not view.flags.c_contiguous
        np.testing.assert_array_equal(hwsim.qdq(view, name), hwsim.qdq(np.ascontiguousarray(view), name))
        decoded = hwsim.decode(hwsim.encode(view, name))
        np.testing.assert_array_equal(decoded, hwsim.qdq(np.ascontiguousarray(view), name))


@pytest.mark.parametrize("name", every_format_name())
def test_nan_and_inf_never_crash(name):
    x = np.array([[np.nan, np.inf, -np.inf, 0.0, -0.0, 3e38, -3e38, 1e-45] * 8] * 2, dtype=np.float32)
    values = hwsim.qdq(x, name)
    assert values.shape == x.shape
    fmt = get(name)
    scaled = fmt.kind in ("scaled", "dialect")
    if scaled or fmt.has_nan:
        decoded = hwsim.decode(hwsim.encode(x, name))
        np.testing.assert_array_equal(decoded, values)
    else:
        with pytest.raises(ValueError, match="nan_to_zero"):
            hwsim.encode(x, name)
        decoded = hwsim.decode(hwsim.encode(x, name, nan_to_zero=True))
        assert not np.isnan(decoded).any()


@pytest.mark.parametrize("name", ["fp8_e4m3", "int4", "mxfp4", "nvfp4"])
def test_zero_dimensional_input(name):
    value = hwsim.qdq(np.float32(1.3), name)
    assert np.shape(value) == ()
    decoded = hwsim.decode(hwsim.encode(np.float32(1.3), name))
    assert np.shape(decoded) == ()
    assert float(decoded) == float(value)


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16"])
def test_narrow_numpy_dtypes_come_back(dtype):
    import ml_dtypes  # noqa: F401  registers bfloat16 with numpy

    x = np.linspace(-3, 3, 64).astype(dtype)
    y = hwsim.qdq(x, "fp8_e4m3")
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y.astype(np.float32), hwsim.qdq(x.astype(np.float32), "fp8_e4m3"))
