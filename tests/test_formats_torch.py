"""Torch CPU tensors in and out: the same type, dtype and shape come back, with the numpy path's values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hwsim

FORMATS = ["fp8_e4m3", "fp4_e2m1", "int8", "bf16", "mxfp8_e4m3", "mxfp4", "nvfp4", "int4_g128", "nf4"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def random_tensor(dtype, shape=(8, 64), seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", FORMATS)
def test_tensor_keeps_type_dtype_shape(name, dtype):
    x = random_tensor(dtype)
    y = hwsim.qdq(x, name)
    assert isinstance(y, torch.Tensor)
    assert y.dtype == dtype
    assert y.shape == x.shape
    assert y.device.type == "cpu"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", FORMATS)
def test_tensor_matches_numpy_path(name, dtype):
    # float16 and bfloat16 widen to float32 exactly; the result is rounded
    # once back to the tensor's dtype.
    x = random_tensor(dtype)
    wide = x.to(torch.float64 if dtype == torch.float64 else torch.float32).numpy()
    expected = torch.from_numpy(hwsim.qdq(wide, name)).to(dtype)
    torch.testing.assert_close(hwsim.qdq(x, name), expected, rtol=0, atol=0)


def test_tensor_requiring_grad_and_transposed():
    x = random_tensor(torch.float32, (64, 48)).requires_grad_(True)
    transposed = x.t()
    y = hwsim.qdq(transposed, "mxfp4")
    expected = hwsim.qdq(np.ascontiguousarray(transposed.detach().numpy()), "mxfp4")
    np.testing.assert_array_equal(y.numpy(), expected)


def test_tensor_encode_decode_round_trip():
    x = random_tensor(torch.bfloat16, (4, 64))
    decoded = hwsim.decode(hwsim.encode(x, "mxfp8_e4m3"))
    np.testing.assert_array_equal(decoded, hwsim.qdq(x.float().numpy(), "mxfp8_e4m3"))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64])
def test_non_float_tensor_is_rejected(dtype):
    x = torch.zeros(4, dtype=dtype)
    with pytest.raises(TypeError, match=str(dtype)):
        hwsim.qdq(x, "fp8_e4m3")
