"""UniformPolicy: parsing the short and per-role forms, and the format each tensor gets."""

from __future__ import annotations

import pytest

from hwsim import formats
from hwsim.policy import UniformPolicy
from hwsim.workload.ops import TensorSpec


@pytest.mark.parametrize(
    "text, weight, activation, kv_cache",
    [
        ("w16a16", "fp16", "fp16", "fp16"),
        ("w4a16", "int4_g128", "fp16", "fp16"),
        ("W4A16", "int4_g128", "fp16", "fp16"),
        ("w4a16-g128", "int4_g128", "fp16", "fp16"),
        ("w4a16-g64", "int4_g64", "fp16", "fp16"),
        ("w3a16", "int3_g128", "fp16", "fp16"),
        ("w8a8", "int8_channel", "int8_token", "fp16"),
        ("w8a8kv8", "int8_channel", "int8_token", "int8_token"),
        ("w8a8-g128", "int8_g128", "int8_token", "fp16"),
        ("w4a4kv4", "int4_g128", "int4_token", "int4_token"),
        ("w4a16kv2", "int4_g128", "fp16", "int2_token"),
        ("w16a16kv8", "fp16", "fp16", "int8_token"),
        ("w32a32", "fp32", "fp32", "fp16"),
        ("w=mxfp4,a=mxfp8_e4m3,kv=fp8_e4m3", "mxfp4", "mxfp8_e4m3", "fp8_e4m3"),
        ("weight=nvfp4, activation=fp8_e4m3", "nvfp4", "fp8_e4m3", "fp16"),
        ("kv=int4_token", "fp16", "fp16", "int4_token"),
    ],
)
def test_parse_maps_to_formats(text, weight, activation, kv_cache):
    policy = UniformPolicy.parse(text)

    assert (policy.weight, policy.activation, policy.kv_cache) == (weight, activation, kv_cache)


@pytest.mark.parametrize("text", ["w4a16", "w8a8kv8", "w=mxfp4,a=mxfp8_e4m3,kv=fp8_e4m3"])
def test_label_parses_back(text):
    policy = UniformPolicy.parse(text)

    assert UniformPolicy.parse(policy.label) == policy
    assert str(policy) == policy.label


def test_parsed_formats_resolve_in_registry():
    # Bits per element, scale overhead included: int4 + fp16 per 128 = 4.125; OCP MX FP4 = 4.25.
    assert formats.get(UniformPolicy.parse("w4a16").weight).bits_per_element == 4.125
    assert formats.get(UniformPolicy.parse("w=mxfp4").weight).bits_per_element == 4.25
    assert formats.get(UniformPolicy.parse("w16a16").weight).bits_per_element == 16.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "invalid bit policy ''"),
        ("w4", "invalid bit policy 'w4'"),
        ("4a16", "invalid bit policy '4a16'"),
        ("w12a16", "w12 is not supported"),
        ("w4a12", "a12 is not supported"),
        ("w4a16kv1", "kv1 is not supported"),
        ("w16a16-g128", "a group size applies to integer weights"),
        ("w4a16-g0", "group size after -g must be positive"),
        ("q=int4", "unknown role 'q'"),
        ("w=int4,w=int8", "role 'w' is given twice"),
        ("w=", "needs the form role=format"),
    ],
)
def test_parse_rejects_bad_text(text, message):
    with pytest.raises(ValueError, match=message):
        UniformPolicy.parse(text)


def test_unknown_format_name_rejected():
    with pytest.raises(KeyError, match="unknown format 'mxfp5'"):
        UniformPolicy.parse("w=mxfp5")


def test_format_for_each_role():
    policy = UniformPolicy.parse("w4a8kv4")

    linear = TensorSpec("layers.*.self_attn.q_proj.weight", "weight", (4096, 4096), parameter_kind="linear")
    lm_head = TensorSpec("lm_head.weight", "weight", (32000, 4096), parameter_kind="lm_head")
    embedding = TensorSpec("embed_tokens.weight", "weight", (1, 4096), parameter_kind="embedding")
    norm = TensorSpec("final_norm.weight", "weight", (4096,), parameter_kind="norm")
    activation = TensorSpec("x", "activation", (1, 4096))
    output = TensorSpec("y", "output", (1, 4096), "write")
    cache = TensorSpec("key_cache", "kv_cache", (1, 8, 10, 128))

    assert policy.format_for(linear) == "int4_g128"
    # AutoGPTQ and AutoAWQ leave these unquantized by default.
    assert policy.format_for(lm_head) == "fp16"
    assert policy.format_for(embedding) == "fp16"
    assert policy.format_for(norm) == "fp16"
    assert policy.format_for(activation) == "int8_token"
    assert policy.format_for(output) == "int8_token"
    assert policy.format_for(cache) == "int4_token"


def test_policy_is_frozen():
    policy = UniformPolicy()

    with pytest.raises(AttributeError):
        policy.weight = "int4_g128"


@pytest.mark.parametrize("text", ["w4a16", "w8a8kv8", "w=mxfp4,a=mxfp8_e4m3,kv=fp8_e4m3"])
def test_to_policy_keeps_formats(text):
    uniform = UniformPolicy.parse(text)
    policy = uniform.to_policy()

    tensors = [
        TensorSpec("layers.*.self_attn.q_proj.weight", "weight", (4096, 4096), parameter_kind="linear"),
        TensorSpec("lm_head.weight", "weight", (32000, 4096), parameter_kind="lm_head"),
        TensorSpec("x", "activation", (1, 4096)),
        TensorSpec("y", "output", (1, 4096), "write"),
        TensorSpec("key_cache", "kv_cache", (1, 8, 10, 128)),
        TensorSpec("value_cache", "kv_cache", (1, 8, 10, 128)),
    ]
    for tensor in tensors:
        assert policy.format_for(tensor) == uniform.format_for(tensor), tensor.name
    assert policy.name == uniform.label


def test_quantizer_for_transformers_names():
    uniform = UniformPolicy.parse("w4a8kv4")

    assert uniform.quantizer_for("model.layers.3.self_attn.q_proj", "weight").format == "int4_g128"
    assert uniform.quantizer_for("model.layers.3.self_attn.q_proj", "input").format == "int8_token"
    assert uniform.quantizer_for("model.layers.3.self_attn", "kv_cache").format == "int4_token"
    # The LM head stays in full precision, as format_for keeps it fp16.
    assert uniform.quantizer_for("lm_head", "weight") is None
    assert uniform.is_layer_uniform()
    assert uniform.format_for(TensorSpec("x", "activation", (1, 8)), layer_index=3) == "int8_token"
