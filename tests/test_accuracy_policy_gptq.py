"""GPTQ under a policy subset: column plans, and what they reduce to when the Hessian is diagonal.

With H = c I the inverse Hessian's Cholesky factor is diagonal, so GPTQ
feeds no error forward and each column is rounded against statistics of
the original matrix: GPTQ then gives exactly the round-to-nearest qdq of
`hwsim.policy.subsets.qdq_tensor`. With correlated inputs it must do better
than round to nearest on the layer's output error, which is what it minimises.
"""

import pytest
import torch

from hwsim.accuracy.config import AccuracyConfig
from hwsim.accuracy.gptq import MaskPlan, gptq_weight
from hwsim.accuracy.policy_path import SubsetQdq, input_scores, weight_scores
from hwsim.policy import Policy, Quantizer, Rule, Subset, preset
from hwsim.policy.subsets import pca_basis, subset_selection

ROWS, COLUMNS = 48, 256


def _weight(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(ROWS, COLUMNS, generator=generator)
    # A few large columns, as real weights have, so subsets have something to find.
    weight[:, 7] *= 9.0
    weight[:, 130] *= 6.0
    return weight


def _inputs(seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(COLUMNS, COLUMNS, generator=generator) / COLUMNS**0.5 + torch.eye(COLUMNS)
    x = torch.randn(2048, COLUMNS, generator=generator) @ mixing
    x[:, 3] *= 20.0
    return x


QUANTIZERS = {
    "outlier_channels": Quantizer("int4_g128", subset=Subset("outlier_channels", "int8_g128", count=16)),
    "output_features": Quantizer("int4_asym_g128", subset=Subset("output_features", "int8_g128", fraction=0.125)),
    "sparse_outliers": Quantizer("int3_asym_g16", subset=Subset("sparse_outliers", "fp16", fraction=0.01)),
    "salient_groups": Quantizer("int3_g128", subset=Subset("salient_groups", "int4_g128", fraction=0.1, low_format="int2_g128")),
    "channel_scales": Quantizer("int3_asym_channel", subset=Subset("outlier_channels", "fp16", count=3)),
}


@pytest.mark.parametrize("kind", list(QUANTIZERS))
def test_gptq_with_identity_hessian_is_round_to_nearest(kind):
    weight = _weight()
    qdq = SubsetQdq(QUANTIZERS[kind])
    rounded = qdq.gptq(weight, torch.eye(COLUMNS, dtype=torch.float64) * 3.0)
    assert torch.equal(rounded, qdq(weight))


def test_gptq_pca_subspace_with_identity_hessian_matches_qdq():
    """The projected path works in float64 and qdq_tensor in float32, so a rare tie may round apart: allow 0.5% of elements."""
    weight = _weight()
    quantizer = Quantizer("int4_channel", subset=Subset("pca_subspace", "int8_channel", fraction=1 / 8))
    qdq = SubsetQdq(quantizer, basis=pca_basis(_inputs()))
    rounded = qdq.gptq(weight, torch.eye(COLUMNS, dtype=torch.float64))
    expected = qdq(weight)
    close = torch.isclose(rounded, expected, rtol=1e-4, atol=1e-5)
    assert close.float().mean() > 0.995


@pytest.mark.parametrize("kind", list(QUANTIZERS))
def test_gptq_beats_round_to_nearest_on_correlated_inputs(kind):
    weight, x = _weight(), _inputs()
    hessian = 2.0 * x.double().T @ x.double() / x.shape[0]
    quantizer = QUANTIZERS[kind]
    scores, _ = weight_scores(quantizer, weight, x, None) if quantizer.subset.selection != "fisher" else (None, None)
    qdq = SubsetQdq(quantizer, scores=scores)

    def output_error(q):
        return float(((x.double() @ (weight - q).double().T) ** 2).sum())

    assert output_error(qdq.gptq(weight, hessian)) < 0.8 * output_error(qdq(weight))


def test_gptq_keeps_the_subset_that_qdq_keeps():
    """Sparse outliers: the kept elements come back fp16-representable, the same positions as qdq_tensor picks."""
    weight, x = _weight(), _inputs()
    hessian = 2.0 * x.double().T @ x.double() / x.shape[0]
    quantizer = QUANTIZERS["sparse_outliers"]
    mask = subset_selection(weight, quantizer)
    rounded = SubsetQdq(quantizer).gptq(weight, hessian)
    kept = rounded[mask]
    assert torch.equal(kept, kept.half().float())
    # The dense part has at most 8 levels per group of 16 (3 bits); the kept outliers are off that grid.
    group = rounded[~mask.any(dim=1)].reshape(-1, 16) if (~mask.any(dim=1)).any() else rounded[:1, :16]
    assert all(len(torch.unique(row)) <= 8 for row in group)


def test_mask_plan_rejects_a_scaled_keep_format():
    with pytest.raises(ValueError, match="element format such as fp16"):
        gptq_weight(_weight(), torch.eye(COLUMNS, dtype=torch.float64), "int4_g128",
                    plan=MaskPlan("int4_g128", torch.zeros(ROWS, COLUMNS, dtype=torch.bool), "int8_g128"))


def test_atom_weights_and_inputs_keep_the_same_channels():
    x = _inputs()
    atom = preset("atom-w4a4")
    weight_rule = atom.quantizer_for("model.layers.0.mlp.up_proj", "weight")
    input_rule = atom.quantizer_for("model.layers.0.mlp.up_proj", "input")
    weight_channels = weight_scores(weight_rule, _weight(), x, None)[0]
    input_channels = input_scores(input_rule, x)[0]
    assert torch.equal(weight_channels, input_channels)
    # Channel 3 of the inputs is 20 times larger than the rest: the largest amax, so Atom keeps it.
    assert subset_selection(_weight(), weight_rule, weight_channels)[3]


def test_from_policy_takes_the_policy_options():
    quarot = AccuracyConfig.from_policy("quarot-w4a4kv4")
    assert quarot.policy is preset("quarot-w4a4kv4")
    assert quarot.rotate
    assert quarot.gptq
    smooth = AccuracyConfig.from_policy(preset("w8a8-smoothquant"))
    assert smooth.smoothquant_alpha == 0.5
    assert not smooth.gptq
    assert not smooth.rotate
    assert AccuracyConfig.from_policy("atom-w4a4").calibrated
    assert not AccuracyConfig.from_policy("mxfp4").calibrated
    # Uniform strings keep their per-role form.
    assert AccuracyConfig.from_policy("w4a16").policy is None


def test_policy_config_rejects_mixed_inputs():
    with pytest.raises(ValueError, match="weight were given too"):
        AccuracyConfig(policy=preset("mxfp4"), weight="int4_g128")
    with pytest.raises(ValueError, match="kv_window"):
        AccuracyConfig(policy=preset("kivi-kv2"), kv_window=16)
    awq = Policy("awq-w4", (Rule(("weight",), Quantizer("int4_g128")),), weight_method="awq")
    with pytest.raises(ValueError, match="weight_method='awq'"):
        AccuracyConfig.from_policy(awq)
    with pytest.raises(ValueError, match="not a uniform policy string"):
        AccuracyConfig.from_policy("atom-w4a5")
