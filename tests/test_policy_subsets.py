"""qdq_tensor: each subset kind against hwsim.qdq applied by hand to the parts it should split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwsim import formats
from hwsim.policy import Quantizer, Subset
from hwsim.policy.subsets import channel_amax, hessian_diagonal, pca_basis, qdq_tensor, weight_error_scores


@pytest.fixture
def weight() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(16, 256, generator=generator)


def test_plain_quantizer_is_qdq(weight):
    quantizer = Quantizer("int4_g128", rounding="toward_zero")

    assert torch.equal(qdq_tensor(weight, quantizer), formats.qdq(weight, "int4_g128", rounding="toward_zero"))


def test_numpy_in_numpy_out(weight):
    array = weight.numpy()
    result = qdq_tensor(array, Quantizer("int8_channel"))

    assert isinstance(result, np.ndarray)
    np.testing.assert_array_equal(result, formats.qdq(array, "int8_channel"))


def test_outlier_channels_follow_scores(weight):
    weight = weight.clone()
    weight[:, [5, 77]] *= 50.0
    quantizer = Quantizer("int4_g128", subset=Subset("outlier_channels", "int8_g128", count=2))
    result = qdq_tensor(weight, quantizer)
    keep = [i for i in range(256) if i not in (5, 77)]

    # The two loud channels go to int8 together; the other 254 form the int4 groups on their own (Atom's reorder).
    assert torch.equal(result[:, [5, 77]], formats.qdq(weight[:, [5, 77]].contiguous(), "int8_g128"))
    assert torch.equal(result[:, keep], formats.qdq(weight[:, keep].contiguous(), "int4_g128"))


def test_outlier_channels_from_calibration_scores(weight):
    scores = torch.zeros(256)
    scores[[3, 9, 200]] = 1.0
    quantizer = Quantizer("int4_g128", subset=Subset("outlier_channels", "fp16", count=3))
    result = qdq_tensor(weight, quantizer, scores=scores)

    assert torch.equal(result[:, [3, 9, 200]], weight[:, [3, 9, 200]].half().float())


def test_output_features(weight):
    scores = torch.arange(16.0)
    quantizer = Quantizer("int4_g128", subset=Subset("output_features", "int8_channel", count=4))
    result = qdq_tensor(weight, quantizer, scores=scores)

    assert torch.equal(result[12:], formats.qdq(weight[12:].contiguous(), "int8_channel"))
    assert torch.equal(result[:12], formats.qdq(weight[:12].contiguous(), "int4_g128"))


def test_pca_subspace_with_identity_basis_is_channel_split(weight):
    quantizer = Quantizer("int4_channel", subset=Subset("pca_subspace", "int8_channel", fraction=0.25))
    result = qdq_tensor(weight, quantizer, basis=torch.eye(256))

    assert torch.allclose(result[:, :64], formats.qdq(weight[:, :64].contiguous(), "int8_channel"))
    assert torch.allclose(result[:, 64:], formats.qdq(weight[:, 64:].contiguous(), "int4_channel"))


def test_pca_subspace_keeps_product_with_rotated_activations():
    # With a full-precision subspace covering every direction, the projection cancels: X U U^T W^T = X W^T.
    generator = torch.Generator().manual_seed(1)
    activations = torch.randn(512, 32, generator=generator, dtype=torch.float64) @ torch.randn(32, 32, generator=generator, dtype=torch.float64)
    basis = pca_basis(activations)
    quantizer = Quantizer("fp32", subset=Subset("pca_subspace", "fp32", fraction=0.5))

    assert torch.allclose(basis.T @ basis, torch.eye(32, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(qdq_tensor(activations.float(), quantizer, basis=basis.float()), activations.float(), atol=1e-4)


def test_pca_basis_orders_by_variance():
    generator = torch.Generator().manual_seed(2)
    activations = torch.randn(4000, 3, generator=generator) * torch.tensor([1.0, 10.0, 0.1])
    basis = pca_basis(activations)

    # The first principal direction is the 10x channel, the last the 0.1x one.
    assert abs(float(basis[1, 0])) > 0.99
    assert abs(float(basis[2, 2])) > 0.99


def test_sparse_outliers_keep_largest_in_fp16(weight):
    quantizer = Quantizer("int3_g16", subset=Subset("sparse_outliers", "fp16", fraction=0.01))
    result = qdq_tensor(weight, quantizer)
    count = round(0.01 * weight.numel())
    top = torch.topk(weight.abs().reshape(-1), count).indices
    mask = torch.zeros(weight.numel(), dtype=torch.bool)
    mask[top] = True
    mask = mask.reshape(weight.shape)

    assert torch.equal(result[mask], weight[mask].half().float())
    assert torch.equal(result[~mask], formats.qdq(weight.masked_fill(mask, 0.0), "int3_g16")[~mask])


def test_salient_groups_pick_formats_by_group(weight):
    quantizer = Quantizer("int3_g128", subset=Subset("salient_groups", "int8_g128", fraction=0.125, low_format="int2_g128"))
    # 32 groups (16 rows x 2); rank them by a given score: group g of row r scores r * 2 + g.
    scores = torch.arange(32.0).reshape(16, 2)
    result = qdq_tensor(weight, quantizer, scores=scores)
    high = formats.qdq(weight, "int8_g128")
    low = formats.qdq(weight, "int2_g128")
    base = formats.qdq(weight, "int3_g128")

    # The top 4 groups are rows 14 and 15; the bottom 4 are rows 0 and 1.
    assert torch.equal(result[14:], high[14:])
    assert torch.equal(result[:2], low[:2])
    assert torch.equal(result[2:14], base[2:14])


def test_kv_window_leaves_recent_tokens_in_fp16():
    generator = torch.Generator().manual_seed(3)
    cache = torch.randn(1, 2, 100, 64, generator=generator)
    quantizer = Quantizer("int2_asym_g32", axis=-2, kv_window=36)
    result = qdq_tensor(cache, quantizer)

    assert torch.equal(result[..., 64:, :], cache[..., 64:, :].half().float())
    assert torch.equal(result[..., :64, :], formats.qdq(cache[..., :64, :].contiguous(), "int2_asym_g32", axis=-2))


def test_scores_with_wrong_length_rejected(weight):
    quantizer = Quantizer("int4_g128", subset=Subset("outlier_channels", "int8_g128", count=2))

    with pytest.raises(ValueError, match="have 10 entries, expected 256"):
        qdq_tensor(weight, quantizer, scores=torch.ones(10))


def test_calibration_helpers():
    activations = torch.tensor([[1.0, -4.0], [-3.0, 2.0]])

    assert torch.equal(channel_amax(activations), torch.tensor([3.0, 4.0]))
    assert torch.equal(hessian_diagonal(activations), torch.tensor([10.0, 20.0], dtype=torch.float64))


def test_weight_error_scores_weight_by_hessian(weight):
    diagonal = torch.zeros(256, dtype=torch.float64)
    diagonal[7] = 2.0
    scores = weight_error_scores(weight, "int4_g128", diagonal)
    error = (weight.double() - formats.qdq(weight, "int4_g128").double()) ** 2

    assert torch.allclose(scores[:, 7], 2.0 * error[:, 7])
    assert torch.count_nonzero(scores[:, :7]) == 0
