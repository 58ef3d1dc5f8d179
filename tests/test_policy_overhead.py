"""Storage accounting: format_bits against Format.storage_bits, and subsets, metadata and KV windows counted by hand."""

from __future__ import annotations

import math

import pytest

from hwsim import formats
from hwsim.policy import BitsBreakdown, GroupMetadata, PolicyError, Quantizer, Subset, format_bits, quantizer_bits


@pytest.mark.parametrize(
    "name",
    ["fp16", "int8", "fp8_e4m3", "int4_g128", "int4_asym_g64", "int8_channel", "int8_token", "int4_tensor", "mxfp4", "mxfp6_e2m3", "nvfp4", "nf4", "blockdialect", "bfp8"],
)
@pytest.mark.parametrize("shape, axis", [((8, 300), -1), ((3, 5, 64), -1), ((300, 8), 0), ((7,), -1)])
def test_format_bits_matches_storage_bits(name, shape, axis):
    breakdown = format_bits(name, shape, axis)

    assert breakdown.total_bits == formats.get(name).storage_bits(shape, axis)
    assert breakdown.elements == math.prod(shape)


def test_format_bits_splits_scale_and_zero_point():
    # [4, 256] asymmetric int4, groups of 64: 16 groups with a 16-bit scale and a 4-bit zero point each.
    breakdown = format_bits("int4_asym_g64", (4, 256))

    assert breakdown == BitsBreakdown(elements=1024, element_bits=1024 * 4, scale_bits=16 * 16, zero_point_bits=16 * 4)


def test_nvfp4_counts_tensor_scale():
    breakdown = format_bits("nvfp4", (2, 32))

    # 4 blocks of 16 with an 8-bit scale, and one 32-bit tensor scale.
    assert breakdown.scale_bits == 4 * 8 + 32
    assert breakdown.element_bits == 64 * 4


def test_partial_group_is_padded():
    # 130 channels in groups of 128: two groups per row, the second padded to 128.
    breakdown = format_bits("int4_g128", (1, 130))

    assert breakdown.element_bits == 256 * 4
    assert breakdown.scale_bits == 2 * 16


def test_metadata_replaces_scale_storage():
    # SpQR: groups of 16 with 3-bit scale and zero, second level every 16 groups with 16-bit scale and zero for each.
    metadata = GroupMetadata(scale_bits=3, zero_point_bits=3, second_level_group_size=16, second_level_bits=16)
    breakdown = format_bits("int3_asym_g16", (16, 256), metadata=metadata)
    groups = 16 * 256 // 16

    assert breakdown.element_bits == 16 * 256 * 3
    assert breakdown.scale_bits == groups * 3 + (groups // 16) * 2 * 16
    assert breakdown.zero_point_bits == groups * 3 + (groups // 16) * 2 * 16


def test_metadata_second_level_rounds_up():
    metadata = GroupMetadata(scale_bits=4, second_level_group_size=16, second_level_bits=16)

    # 17 groups need two second-level groups; no zero points, so no second pair.
    assert metadata.bits_for_groups(17) == (17 * 4 + 2 * 2 * 16, 0)


def test_metadata_needs_scaled_format():
    with pytest.raises(PolicyError, match="has no scale groups") as error:
        Quantizer("int4", metadata=GroupMetadata(16))

    assert error.value.field == "metadata"


def test_outlier_channels_counted():
    # [8, 256]: 16 channels in int8_g128 (one group per row), 240 in int4_g128 (two groups per row, the second padded).
    quantizer = Quantizer("int4_g128", subset=Subset("outlier_channels", "int8_g128", count=16))
    breakdown = quantizer_bits(quantizer, (8, 256))

    assert breakdown.element_bits == 8 * 256 * 4
    assert breakdown.scale_bits == 8 * 2 * 16
    assert breakdown.outlier_bits == 8 * 128 * 8 + 8 * 16
    assert breakdown.index_bits == 16 * 8  # ceil(log2(256)) = 8
    assert breakdown.elements == 8 * 256


def test_outlier_channels_by_fraction_and_without_index():
    quantizer = Quantizer("int4_token", subset=Subset("outlier_channels", "fp16", fraction=0.25, index_bits=10))
    breakdown = quantizer_bits(quantizer, (2, 64))

    # 16 of 64 channels in fp16; the other 48 in int4 with one 16-bit scale per token.
    assert breakdown.outlier_bits == 2 * 16 * 16
    assert breakdown.element_bits == 2 * 48 * 4
    assert breakdown.scale_bits == 2 * 16
    assert breakdown.index_bits == 16 * 10
    assert quantizer_bits(quantizer, (2, 64), include_index=False).index_bits == 0


def test_output_features_counted_per_expert():
    # [experts=2, out=10, in=128]: 1 row of 10 per expert in int8_channel.
    quantizer = Quantizer("int4_g128", subset=Subset("output_features", "int8_channel", fraction=0.1))
    breakdown = quantizer_bits(quantizer, (2, 10, 128))

    assert breakdown.outlier_bits == 2 * (128 * 8 + 16)
    assert breakdown.element_bits == 2 * 9 * 128 * 4
    assert breakdown.index_bits == 2 * 1 * 4  # ceil(log2(10)) = 4


def test_sparse_outliers_on_top_of_dense():
    quantizer = Quantizer("int3_g16", subset=Subset("sparse_outliers", "fp16", fraction=0.01, index_bits=16))
    breakdown = quantizer_bits(quantizer, (10, 160))
    outliers = round(0.01 * 1600)

    assert breakdown.element_bits == 1600 * 3
    assert breakdown.scale_bits == 100 * 16
    assert breakdown.outlier_bits == outliers * 16
    assert breakdown.index_bits == outliers * 16


def test_salient_groups_keep_average():
    quantizer = Quantizer("int3_g32", subset=Subset("salient_groups", "int4_g32", fraction=0.25, low_format="int2_g32"))
    breakdown = quantizer_bits(quantizer, (4, 128))
    # 16 groups: 4 up, 4 down, 8 at 3 bits; every group keeps a 16-bit scale and a 2-bit selector.

    assert breakdown.element_bits == 8 * 32 * 3 + 4 * 32 * 2
    assert breakdown.outlier_bits == 4 * (32 * 4 + 16)
    assert breakdown.scale_bits == 12 * 16
    assert breakdown.index_bits == 16 * 2
    assert breakdown.bits_per_element == 3 + 16 / 32 + 2 / 32


def test_salient_groups_need_matching_group_size():
    with pytest.raises(PolicyError, match="dense format's group size 32") as error:
        Quantizer("int3_g32", subset=Subset("salient_groups", "int4_g128", fraction=0.1))

    assert error.value.field == "subset.format"


def test_kv_window_keeps_recent_tokens():
    # Keys [1, 2, 100, 64] grouped over 32 tokens per channel, 36 recent tokens in fp16.
    quantizer = Quantizer("int2_asym_g32", axis=-2, kv_window=36)
    breakdown = quantizer_bits(quantizer, (1, 2, 100, 64))
    older_groups = 2 * 64 * 2  # 64 older tokens make two groups of 32 per channel

    assert breakdown.outlier_bits == 2 * 36 * 64 * 16
    assert breakdown.element_bits == 2 * 64 * 64 * 2
    assert breakdown.scale_bits == older_groups * 16
    assert breakdown.zero_point_bits == older_groups * 2


def test_kv_window_longer_than_cache():
    breakdown = quantizer_bits(Quantizer("int4_token", kv_window=128), (1, 2, 10, 64))

    assert breakdown.total_bits == 2 * 10 * 64 * 16


def test_breakdown_sums_and_scales():
    a = BitsBreakdown(10, 40, 16, 0, 8, 2)

    assert (a + a).times(3) == BitsBreakdown(60, 240, 96, 0, 48, 12)
    assert a.total_bits == 66
    with pytest.raises(ValueError, match="empty tensor"):
        BitsBreakdown().bits_per_element


@pytest.mark.parametrize(
    "kwargs, field, message",
    [
        ({"kind": "outlier_channels", "format": "int8_g128"}, "fraction", "needs its size"),
        ({"kind": "sparse_outliers", "format": "fp16", "count": 5}, "count", "sized by fraction"),
        ({"kind": "output_features", "format": "int8_g128", "fraction": 1.5}, "fraction", "between 0 and 1.0"),
        ({"kind": "salient_groups", "format": "int4_g128", "fraction": 0.6}, "fraction", "between 0 and 0.5"),
        ({"kind": "pca_subspace", "format": "int8_token", "fraction": 0.1, "selection": "fisher"}, "selection", "activation_variance"),
        ({"kind": "outlier_channels", "format": "int8_g128", "count": 4, "low_format": "int2_g128"}, "low_format", "only a salient_groups"),
        ({"kind": "outlier_channels", "format": "int8_g128", "count": 4, "index_bits": -1}, "index_bits", "invalid index_bits=-1"),
    ],
)
def test_subset_validation(kwargs, field, message):
    with pytest.raises(PolicyError, match=message) as error:
        Subset(**kwargs)

    assert error.value.field == field
