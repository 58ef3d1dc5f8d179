"""Policy rules: layer names, matching, and the format_for / quantizer_for interface on workload tensors and transformers names."""

from __future__ import annotations

import pytest

from hwsim.policy import Policy, PolicyError, Quantizer, Rule, Subset, UniformPolicy, split_layer_name
from hwsim.policy.names import parameter_kind_of, parse_layer_ranges
from hwsim.workload import Scenario, build_workload, load_model
from hwsim.workload.ops import TensorSpec


@pytest.mark.parametrize(
    "name, layer_index, expected",
    [
        ("model.layers.3.self_attn.q_proj", None, ("layers.*.self_attn.q_proj", 3)),
        ("layers.*.self_attn.q_proj", 3, ("layers.*.self_attn.q_proj", 3)),
        ("layers.*.self_attn.q_proj", None, ("layers.*.self_attn.q_proj", None)),
        ("model.decoder.layers.11.fc1", None, ("layers.*.fc1", 11)),
        ("encoder.layer.5.attention.self.query", None, ("layers.*.attention.self.query", 5)),
        ("transformer.h.0.attn.c_attn", None, ("layers.*.attn.c_attn", 0)),
        ("model.embed_tokens", None, ("embed_tokens", None)),
        ("lm_head", None, ("lm_head", None)),
        ("layers.12", None, ("layers.*", 12)),
    ],
)
def test_split_layer_name(name, layer_index, expected):
    assert split_layer_name(name, layer_index) == expected


def test_split_layer_name_rejects_conflicting_index():
    with pytest.raises(ValueError, match="is layer 3, but layer_index=4"):
        split_layer_name("model.layers.3.mlp.up_proj", 4)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("model.layers.0.self_attn.q_proj", "linear"),
        ("model.layers.0.mlp.gate_proj", "linear"),
        ("model.layers.0.block_sparse_moe.gate", "router"),
        ("model.layers.0.block_sparse_moe.experts.3.w1", "linear"),
        ("lm_head", "lm_head"),
        ("model.embed_tokens", "embedding"),
        ("model.layers.0.input_layernorm", "norm"),
        ("encoder.layer.0.attention.output.LayerNorm", "norm"),
        ("model.norm", "norm"),
        ("pooler.dense", "linear_outside_blocks"),
    ],
)
def test_parameter_kind_of(name, kind):
    assert parameter_kind_of(name) == kind


def test_layer_ranges_merge_and_sort():
    assert parse_layer_ranges("31,0-3,2-5") == ((0, 5), (31, 31))
    assert parse_layer_ranges([7, "1-2"]) == ((1, 2), (7, 7))
    assert parse_layer_ranges(((0, 3),)) == ((0, 3),)


@pytest.mark.parametrize("value, message", [("3-1", "range 3-1"), ("a-b", "'a-b'"), ([], "empty"), (True, "True")])
def test_layer_ranges_reject_bad_input(value, message):
    with pytest.raises(PolicyError, match=message):
        parse_layer_ranges(value)


def _layered_policy() -> Policy:
    return Policy(
        "layered",
        (
            Rule(("weight",), None, pattern="*.down_proj", layers="0", name="first down_proj fp16"),
            Rule(("weight",), Quantizer("int8_channel"), pattern="*.down_proj", name="down_proj int8"),
            Rule(("weight",), Quantizer("int3_g128"), layers="2-3", name="late layers 3-bit"),
            Rule(("weight",), Quantizer("int4_g128"), name="other weights"),
            Rule(("activation",), Quantizer("int8_token"), op_kinds=("GEMM", "GEMV"), name="linear inputs"),
            Rule(("kv_key",), Quantizer("int4_token"), name="keys"),
            Rule(("kv_value",), Quantizer("int8_token"), name="values"),
        ),
    )


@pytest.mark.parametrize(
    "layer_name, layer_index, expected",
    [
        ("model.layers.0.mlp.down_proj", None, None),
        ("layers.*.mlp.down_proj", 0, None),
        ("model.layers.1.mlp.down_proj", None, "int8_channel"),
        ("model.layers.2.mlp.down_proj", None, "int8_channel"),
        ("model.layers.2.self_attn.q_proj", None, "int3_g128"),
        ("layers.*.self_attn.q_proj", 3, "int3_g128"),
        ("layers.*.self_attn.q_proj", 1, "int4_g128"),
        ("model.layers.1.self_attn.q_proj", None, "int4_g128"),
    ],
)
def test_first_matching_rule_decides(layer_name, layer_index, expected):
    quantizer = _layered_policy().quantizer_for(layer_name, "weight", layer_index=layer_index)

    assert (quantizer.format if quantizer else None) == expected


def test_transformers_and_workload_names_agree():
    policy = _layered_policy()

    for index in range(4):
        for module in ("self_attn.q_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj"):
            from_transformers = policy.quantizer_for(f"model.layers.{index}.{module}", "weight")
            from_workload = policy.quantizer_for(f"layers.*.{module}", "weight", layer_index=index)
            assert from_transformers == from_workload


def test_layer_dependent_policy_needs_index():
    policy = _layered_policy()

    assert not policy.is_layer_uniform()
    with pytest.raises(ValueError, match="pass layer_index="):
        policy.quantizer_for("layers.*.mlp.down_proj", "weight")


def test_op_kind_rule_needs_op_kind():
    policy = _layered_policy()

    assert policy.quantizer_for("model.layers.0.mlp.up_proj", "activation", op_kind="GEMM").format == "int8_token"
    assert policy.quantizer_for("model.layers.0.mlp.up_proj", "input", op_kind="gemv").format == "int8_token"
    assert policy.quantizer_for("model.layers.0.self_attn", "activation", op_kind="attention") is None
    # Without an op kind a rule that selects op kinds cannot match.
    assert policy.quantizer_for("model.layers.0.mlp.up_proj", "activation") is None


def test_kv_roles_and_aliases():
    policy = _layered_policy()

    assert policy.quantizer_for("model.layers.0.self_attn", "kv_key").format == "int4_token"
    assert policy.quantizer_for("model.layers.0.self_attn", "key").format == "int4_token"
    assert policy.quantizer_for("model.layers.0.self_attn", "value").format == "int8_token"
    with pytest.raises(ValueError, match="keys and values .* differently"):
        policy.quantizer_for("model.layers.0.self_attn", "kv_cache")


def test_unknown_role_rejected():
    with pytest.raises(ValueError, match="unknown tensor role 'bias'"):
        _layered_policy().quantizer_for("model.layers.0.mlp.up_proj", "bias")


def test_weights_outside_quantized_kinds_stay_full_precision():
    policy = Policy("all weights", (Rule(("weight",), Quantizer("int4_g128")),))

    assert policy.quantizer_for("lm_head", "weight") is None
    assert policy.quantizer_for("model.embed_tokens", "weight") is None
    assert policy.quantizer_for("model.layers.0.block_sparse_moe.gate", "weight") is None
    assert policy.quantizer_for("model.layers.0.block_sparse_moe.gate", "weight", parameter_kind="linear").format == "int4_g128"
    with_head = Policy("with head", policy.rules, quantized_parameter_kinds=("linear", "lm_head"))
    assert with_head.quantizer_for("lm_head", "weight").format == "int4_g128"


def test_regex_rule_matches_whole_canonical_name():
    policy = Policy("regex", (Rule(("weight",), Quantizer("int8_channel"), regex=r"layers\.\*\.self_attn\.(q|k)_proj"),))

    assert policy.quantizer_for("model.layers.5.self_attn.k_proj", "weight").format == "int8_channel"
    assert policy.quantizer_for("model.layers.5.self_attn.v_proj", "weight") is None
    # fullmatch: a prefix of the name is not enough.
    assert Policy("prefix", (Rule(("weight",), Quantizer("int8_channel"), regex=r"layers"),)).quantizer_for(
        "model.layers.5.self_attn.k_proj", "weight"
    ) is None


def test_pattern_with_model_prefix_is_rewritten():
    rule = Rule(("weight",), Quantizer("int8_channel"), pattern="model.layers.*.mlp.*")

    assert rule.pattern == "layers.*.mlp.*"
    assert Policy("p", (rule,)).quantizer_for("model.layers.2.mlp.up_proj", "weight").format == "int8_channel"


def test_pattern_with_layer_number_rejected():
    with pytest.raises(PolicyError, match="layer number in the pattern never matches") as error:
        Rule(("weight",), Quantizer("int8_channel"), pattern="model.layers.0.*")

    assert error.value.field == "pattern"


def _llama_tensors():
    spec = load_model("smollm2-135m")
    workload = build_workload(spec, Scenario.decode(batch_size=1, context_tokens=16, generated_tokens=1))
    return [(op, tensor) for op in workload.ops for tensor in op.tensors]


@pytest.mark.parametrize("text", ["w4a16", "w8a8kv8", "w4a4kv4", "w=mxfp4,a=mxfp8_e4m3,kv=fp8_e4m3"])
def test_from_uniform_gives_same_formats_on_workload(text):
    uniform = UniformPolicy.parse(text)
    policy = Policy.from_uniform(uniform)

    pairs = _llama_tensors()
    assert len(pairs) > 50
    for op, tensor in pairs:
        assert policy.format_for(tensor) == uniform.format_for(tensor), tensor.name
        assert policy.format_for(tensor, op=op) == uniform.format_for(tensor), (op.name, tensor.name)
    assert policy.is_layer_uniform()


def test_format_for_uses_op_name_and_kind():
    policy = _layered_policy()
    by_name = {(op.name, tensor.name): (op, tensor) for op, tensor in _llama_tensors()}

    op, weight = by_name[("layers.*.mlp.down_proj", "layers.*.mlp.down_proj.weight")]
    assert policy.format_for(weight, layer_index=0, op=op) == "fp16"
    assert policy.format_for(weight, layer_index=5, op=op) == "int8_channel"
    op, weight = by_name[("layers.*.self_attn.q_proj", "layers.*.self_attn.q_proj.weight")]
    assert policy.format_for(weight, layer_index=2, op=op) == "int3_g128"
    assert policy.format_for(weight, layer_index=9) == "int4_g128"
    op, activation = by_name[("layers.*.self_attn.q_proj", "layers.*.self_attn.q_proj.input")]
    assert policy.format_for(activation, layer_index=0, op=op) == "int8_token"
    # Without the op, its kind is unknown, so the GEMM-only rule does not apply.
    assert policy.format_for(activation, layer_index=0) == "fp16"
    op, key_cache = by_name[("layers.*.self_attn.scores", "key_cache")]
    assert policy.format_for(key_cache, layer_index=0, op=op) == "int4_token"
    op, value_cache = by_name[("layers.*.self_attn.context", "value_cache")]
    assert policy.format_for(value_cache, layer_index=0, op=op) == "int8_token"
    op, lm_head = by_name[("lm_head", "embed_tokens.weight")]
    assert policy.format_for(lm_head, op=op) == "fp16"


def test_kv_tensor_without_key_or_value_in_name():
    policy = _layered_policy()
    cache = TensorSpec("cache", "kv_cache", (1, 3, 16, 64))

    with pytest.raises(ValueError, match="names neither keys nor values"):
        policy.format_for(cache, layer_index=0)
    shared = Policy("shared", (Rule(("kv_cache",), Quantizer("int8_token")),))
    assert shared.format_for(cache) == "int8_token"


def test_workload_summary_accepts_policy():
    from hwsim.workload import weight_bytes

    spec = load_model("smollm2-135m")
    uniform = UniformPolicy.parse("w4a16")

    assert weight_bytes(spec, Policy.from_uniform(uniform)) == weight_bytes(spec, uniform)


@pytest.mark.parametrize(
    "kwargs, field, message",
    [
        ({"roles": ("kv_cache",), "quantizer": Quantizer("int4_g128", subset=Subset("outlier_channels", "int8_g128", count=4))}, "quantizer.subset", "does not apply to the KV cache"),
        ({"roles": ("activation",), "quantizer": Quantizer("int4_g128", subset=Subset("output_features", "int8_g128", fraction=0.1))}, "quantizer.subset", "weights only"),
        ({"roles": ("weight",), "quantizer": Quantizer("int4_g128", kv_window=8)}, "quantizer.kv_window", "KV cache only"),
        ({"roles": ("weight",), "quantizer": None, "pattern": "*", "regex": ".*"}, "regex", "not both"),
        ({"roles": ("weight",), "quantizer": None, "regex": "("}, "regex", "invalid regex"),
        ({"roles": ("weights",), "quantizer": None}, "roles", "invalid role 'weights'"),
        ({"roles": (), "quantizer": None}, "roles", "invalid roles"),
        ({"roles": ("weight",), "quantizer": None, "op_kinds": ("matmul",)}, "op_kinds", "invalid op kind 'matmul'"),
    ],
)
def test_rule_validation_names_field(kwargs, field, message):
    with pytest.raises(PolicyError, match=message) as error:
        Rule(**kwargs)

    assert error.value.field == field
