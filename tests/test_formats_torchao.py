"""torchao's MX and NVFP4 emulation as an independent oracle.

torchao 0.18.0 (`torchao.prototype.mx_formats`, installed with
`pip install torchao==0.18.0 --no-deps`) runs on the CPU. Where its
conventions differ from hwsim, the difference is listed here and tested:

- MX: torchao divides by max(scale, 2**-126) (it clamps a scale of 2**-127,
  E8M0 code 0, to the smallest normal float32), so blocks whose amax is
  below 2**(emax_elem - 127) differ; the random data here stays above that;
- NVFP4: torchao clamps a block scale below the smallest normal UE4M3,
  2**-6, up to 2**-6; hwsim follows Transformer Engine, which keeps
  subnormal block scales and makes a block whose scale rounds to 0 zeros.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hwsim


mx_formats = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor", reason="torchao 0.18.0 is not installed")
nvfp4_module = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")
torchao_kernels = pytest.importorskip("torchao.prototype.mx_formats.kernels")
torchao_constants = pytest.importorskip("torchao.prototype.mx_formats.constants")

TORCHAO_MX = {
    "mxfp8_e4m3": torch.float8_e4m3fn,
    "mxfp8_e5m2": torch.float8_e5m2,
    "mxfp6_e2m3": torchao_constants.DTYPE_FP6_E2M3,
    "mxfp6_e3m2": torchao_constants.DTYPE_FP6_E3M2,
    "mxfp4": torch.float4_e2m1fn_x2,
}


def mx_oracle_data(seed: int) -> np.ndarray:
    # Blocks of magnitudes 2**-10 .. 2**10, far above the blocks where
    # torchao's 2**-126 clamp of the scale matters.
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((64, 256)) * np.exp2(rng.integers(-10, 10, (64, 1)))).astype(np.float32)


@pytest.mark.parametrize("name", list(TORCHAO_MX))
def test_mx_matches_torchao(name):
    x = mx_oracle_data(1)
    elem_dtype = TORCHAO_MX[name]
    scale, data = mx_formats.to_mx(torch.from_numpy(x), elem_dtype, 32)
    values = mx_formats.to_dtype(data, scale, elem_dtype, 32, torch.float32).numpy()
    encoded = hwsim.encode(x, name)
    np.testing.assert_array_equal(encoded.scale_codes, scale.view(torch.uint8).numpy().reshape(encoded.scale_codes.shape))
    np.testing.assert_array_equal(hwsim.qdq(x, name), values)
    np.testing.assert_array_equal(hwsim.decode(encoded), values)


def test_mxfp8_codes_match_torchao():
    x = mx_oracle_data(2)
    _, data = mx_formats.to_mx(torch.from_numpy(x), torch.float8_e4m3fn, 32)
    np.testing.assert_array_equal(hwsim.encode(x, "mxfp8_e4m3").codes, data.view(torch.uint8).numpy())


def test_mxfp4_codes_match_torchao():
    x = mx_oracle_data(3)
    _, data = mx_formats.to_mx(torch.from_numpy(x), torch.float4_e2m1fn_x2, 32)
    codes = torchao_kernels.unpack_uint4(data).numpy().reshape(x.shape)
    np.testing.assert_array_equal(hwsim.encode(x, "mxfp4").codes, codes)


def torchao_nvfp4(x: np.ndarray):
    """(block scale codes, element codes) from torchao's two-level NVFP4 quantizer with the tensor's amax."""
    tensor = torch.from_numpy(x)
    per_tensor_scale = nvfp4_module.per_tensor_amax_to_scale(tensor.abs().max())
    scales, packed = nvfp4_module.nvfp4_quantize(tensor, 16, per_tensor_scale)
    codes = torchao_kernels.unpack_uint4(packed).numpy().reshape(x.shape)
    return scales.view(torch.uint8).numpy(), codes


def test_nvfp4_matches_torchao():
    x = np.random.default_rng(4).standard_normal((64, 256)).astype(np.float32)
    scale_codes, codes = torchao_nvfp4(x)
    encoded = hwsim.encode(x, "nvfp4")
    np.testing.assert_array_equal(encoded.scale_codes, scale_codes)
    np.testing.assert_array_equal(encoded.codes, codes)


def test_nvfp4_small_block_scale_differs_from_torchao():
    # g = 448 * 6 / 6 = 448. Block 1's amax is 2**-12 of the tensor's, so its
    # scale is 448 * 2**-12 = 7 * 2**-6, above 2**-6, and both agree. Block
    # 2's is 448 * 2**-20 = 7 * 2**-14, below half the smallest subnormal
    # UE4M3 step (2**-10), so hwsim's scale rounds to 0 and the block is
    # zeros; torchao clamps the scale up to 2**-6 (code 0x08).
    x = np.zeros((1, 48), dtype=np.float32)
    x[0, 0] = 6.0
    x[0, 16] = 6.0 * 2.0**-12
    x[0, 32] = 6.0 * 2.0**-20
    torchao_scales, _ = torchao_nvfp4(x)
    encoded = hwsim.encode(x, "nvfp4")
    assert encoded.scale_codes[0, 1] == torchao_scales[0, 1]
    assert encoded.scale_codes[0, 2] == 0
    assert torchao_scales[0, 2] == 0x08
    assert hwsim.decode(encoded)[0, 32] == 0.0
