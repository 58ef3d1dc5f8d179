"""Policies to and from plain dicts and YAML: lossless round trips, and errors that name the rule and the field."""

from __future__ import annotations

import copy

import pytest
import yaml

from hwsim.policy import PRESETS, Policy, PolicyError, Quantizer, Rule, dump_policy, load_policy
from hwsim.policy.allocation import allocate


def _every_feature_policy() -> Policy:
    from hwsim.policy import GroupMetadata, Subset

    return Policy(
        "kitchen sink",
        (
            Rule(("weight",), None, pattern="*.down_proj", layers="0,31", name="keep"),
            Rule(("weight",), Quantizer("int3_asym_g16", rounding="toward_zero", metadata=GroupMetadata(3, 3, 16, 16), subset=Subset("sparse_outliers", "fp16", fraction=0.01, index_bits=16)), regex=r"layers\.\*\.mlp\..*", name="mlp"),
            Rule(("weight",), Quantizer("int4_g128", subset=Subset("salient_groups", "int8_g128", fraction=0.05, low_format="int2_g128")), layers="1-3", name="salient"),
            Rule(("weight",), Quantizer("int4_g128", subset=Subset("outlier_channels", "fp16", count=7, selection="weight_magnitude", index_bits=13))),
            Rule(("activation",), Quantizer("int8_token", subset=Subset("pca_subspace", "fp16", fraction=1 / 3)), op_kinds=("GEMM", "gemv")),
            Rule(("kv_key",), Quantizer("int2_asym_g32", axis=-2, kv_window=64, metadata=GroupMetadata(16, 16))),
            Rule(("kv_value",), Quantizer("int4_token", rounding="stochastic")),
        ),
        description="uses every field",
        full_precision_format="bf16",
        quantized_parameter_kinds=("linear", "lm_head"),
        rotation="hadamard",
        smoothquant_alpha=0.75,
        weight_method="awq",
    )


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_yaml_round_trip(name):
    policy = PRESETS[name].policy

    text = policy.to_yaml()
    back = Policy.from_yaml(text)

    assert back == policy
    assert back.to_yaml() == text


def test_every_field_survives_round_trip(tmp_path):
    policy = _every_feature_policy()
    path = tmp_path / "policy.yaml"

    dump_policy(policy, path)
    back = load_policy(path)

    assert back == policy
    assert Policy.from_dict(policy.to_dict()) == policy
    # to_dict is canonical: a second trip gives the same dict.
    assert Policy.from_dict(policy.to_dict()).to_dict() == policy.to_dict()


def test_dict_defaults_are_left_out():
    row = Policy("w4", (Rule(("weight",), Quantizer("int4_g128")),)).to_dict()

    assert row == {"name": "w4", "rules": [{"roles": ["weight"], "quantizer": {"format": "int4_g128"}}]}


def test_quantizer_written_as_format_name():
    policy = Policy.from_dict({"name": "short", "rules": [{"roles": ["kv_cache"], "quantizer": "int8_token"}]})

    assert policy.rules[0].quantizer == Quantizer("int8_token")
    assert policy.rules[0].roles == ("kv_key", "kv_value")


def test_allocated_policy_round_trips():
    allocation = allocate(
        ["model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj", "model.layers.2.mlp.up_proj"],
        ["int4_g128", "int8_channel"],
        [[2.0, 1.0], [3.0, 1.0], [2.5, 1.0]],
        [[4, 8], [4, 8], [4, 8]],
        16,
    )
    policy = allocation.to_policy()

    assert Policy.from_yaml(policy.to_yaml()) == policy


def _valid() -> dict:
    return {
        "name": "atom-like",
        "rules": [
            {"name": "weights", "roles": ["weight"], "quantizer": {"format": "int4_g128"}},
            {
                "name": "outliers",
                "roles": ["activation"],
                "quantizer": {"format": "int4_g128", "subset": {"kind": "outlier_channels", "format": "int8_g128", "count": 128}},
            },
        ],
    }


def _with(path: tuple, value) -> dict:
    data = copy.deepcopy(_valid())
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    "path, value, field, words",
    [
        (("rules", 1, "quantizer", "format"), "int9_g128", "rules[1].quantizer.format", ["rule 1 ('outliers')", "unknown format 'int9_g128'"]),
        (("rules", 1, "quantizer", "subset", "count"), -3, "rules[1].quantizer.subset.count", ["rule 1 ('outliers')", "invalid count=-3"]),
        (("rules", 1, "quantizer", "subset", "kind"), "outliers", "rules[1].quantizer.subset.kind", ["rule 1 ('outliers')", "invalid kind='outliers'"]),
        (("rules", 1, "quantizer", "subset", "fraction"), 0.1, "rules[1].quantizer.subset.count", ["count or fraction, not both"]),
        (("rules", 1, "quantizer", "subset", "selection"), "hessian", "rules[1].quantizer.subset.selection", ["invalid selection='hessian'"]),
        (("rules", 1, "quantizer", "rounding"), "nearest", "rules[1].quantizer.rounding", ["invalid rounding='nearest'"]),
        (("rules", 1, "quantizer", "scale"), "fp8", "rules[1].quantizer.scale", ["unknown key 'scale' in quantizer"]),
        (("rules", 0, "roles"), ["weights"], "rules[0].roles", ["rule 0 ('weights')", "invalid role 'weights'"]),
        (("rules", 0, "roles"), _DELETE, "rules[0].roles", ["rule 0 ('weights')", "missing key 'roles'"]),
        (("rules", 0, "quantizer"), _DELETE, "rules[0].quantizer", ["missing key 'quantizer'"]),
        (("rules", 0, "layers"), "4-2", "rules[0].layers", ["rule 0 ('weights')", "invalid layers range 4-2"]),
        (("rules", 0, "pattern"), "model.layers.3.*", "rules[0].pattern", ["layer number in the pattern"]),
        (("rules", 0, "quantizer", "kv_window"), 128, "rules[0].quantizer.kv_window", ["KV cache only"]),
        (("rules", 0, "quantizer", "metadata"), {"zero_point_bits": 3}, "rules[0].quantizer.metadata.scale_bits", ["missing key 'scale_bits'"]),
        (("rules", 1, "name"), "weights", "rules[1].name", ["already used by rule 0"]),
        (("rules", 0, "colour"), "red", "rules[0].colour", ["unknown key 'colour' in rule"]),
    ],
)
def test_invalid_policy_names_rule_and_field(path, value, field, words):
    with pytest.raises(PolicyError) as error:
        Policy.from_dict(_with(path, value))

    assert error.value.field == field
    assert "policy 'atom-like'" in str(error.value)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize(
    "data, field, words",
    [
        ({"rules": []}, "name", ["every policy needs a name"]),
        ({"name": "x", "rules": {}}, "rules", ["give a list of rules"]),
        ({"name": "x", "rotation": "random"}, "rotation", ["invalid rotation='random'"]),
        ({"name": "x", "weight_method": "omniquant"}, "weight_method", ["invalid weight_method='omniquant'"]),
        ({"name": "x", "smoothquant_alpha": 1.5}, "smoothquant_alpha", ["lies in [0, 1]"]),
        ({"name": "x", "quantized_parameter_kinds": ["conv"]}, "quantized_parameter_kinds", ["['conv']"]),
        ({"name": "x", "full_precision_format": "fp17"}, "full_precision_format", ["unknown format 'fp17'"]),
        ({"name": "x", "owner": "me"}, "owner", ["unknown key 'owner' in policy"]),
        ("w4a16", "", ["expected a mapping"]),
    ],
)
def test_invalid_policy_fields(data, field, words):
    with pytest.raises(PolicyError) as error:
        Policy.from_dict(data)

    assert error.value.field == field
    for word in words:
        assert word in str(error.value)


def test_duplicate_yaml_key_rejected():
    text = "name: twice\nrules:\n  - roles: [weight]\n    quantizer: int4_g128\n    quantizer: int8_channel\n"

    with pytest.raises(PolicyError, match="duplicate key 'quantizer' at line 5"):
        Policy.from_yaml(text)


def test_malformed_yaml_rejected():
    with pytest.raises(PolicyError, match="invalid policy YAML"):
        Policy.from_yaml("name: [unclosed\n")


def test_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_policy(tmp_path / "nowhere.yaml")


def test_yaml_is_plain_data():
    # safe_load must read what to_yaml writes: no Python tags.
    data = yaml.safe_load(_every_feature_policy().to_yaml())

    assert data["rules"][1]["quantizer"]["metadata"] == {"scale_bits": 3, "zero_point_bits": 3, "second_level_group_size": 16, "second_level_bits": 16}
    assert data["rules"][0]["layers"] == "0,31"
