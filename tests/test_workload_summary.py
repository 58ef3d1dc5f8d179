"""Summaries: KV-cache bytes per token, weight bytes under bit policies, FLOPs per token."""

from __future__ import annotations

import functools

import pytest

from hwsim.policy import UniformPolicy
from hwsim.workload import flops_per_token, kv_cache_bytes_per_token, load_model, parameter_count, summarize, weight_bytes


@functools.cache
def spec(name):
    return load_model(name)


def test_kv_bytes_per_token_fp16_llama2_7b():
    # 2 (key and value) x 32 layers x 4096 (32 KV heads x 128) x 2 bytes.
    assert kv_cache_bytes_per_token(spec("llama-2-7b")) == 2 * 32 * 4096 * 2 == 524_288


def test_kv_bytes_per_token_fp16_llama3_8b():
    # Grouped-query attention: 8 KV heads x 128 = 1024 per layer, not 4096.
    assert kv_cache_bytes_per_token(spec("llama-3-8b")) == 2 * 32 * 8 * 128 * 2 == 131_072


@pytest.mark.parametrize(
    "name, expected",
    [
        ("llama-2-70b", 2 * 80 * 8 * 128 * 2),
        ("mistral-7b", 2 * 32 * 8 * 128 * 2),
        ("qwen2.5-7b", 2 * 28 * 4 * 128 * 2),
        ("smollm2-135m", 2 * 30 * 3 * 64 * 2),
        ("phi-3-mini", 2 * 32 * 32 * 96 * 2),
        ("opt-6.7b", 2 * 32 * 4096 * 2),
    ],
)
def test_kv_bytes_per_token_fp16(name, expected):
    assert kv_cache_bytes_per_token(spec(name)) == expected


def test_kv_bytes_int8_per_token_counts_scales():
    policy = UniformPolicy.parse("w16a16kv8")

    # int8_token: per layer, for key and value, each of 8 KV heads stores 128 codes of 8 bits
    # and one fp16 scale: 8 x (128 x 8 + 16) bits = 1040 bytes.
    assert kv_cache_bytes_per_token(spec("llama-3-8b"), policy) == 2 * 32 * 8 * (128 * 8 + 16) // 8 == 66_560


def test_kv_bytes_fp8_halve_fp16():
    policy = UniformPolicy(kv_cache="fp8_e4m3")

    assert kv_cache_bytes_per_token(spec("llama-3-8b"), policy) == 131_072 // 2


def test_encoder_has_no_kv_bytes():
    assert kv_cache_bytes_per_token(spec("all-minilm-l6-v2")) == 0


@pytest.mark.parametrize("name", ["llama-3-8b", "mixtral-8x7b", "smollm2-135m", "all-minilm-l6-v2"])
def test_fp16_weight_bytes_are_two_per_parameter(name):
    model = spec(name)

    assert weight_bytes(model) == 2 * parameter_count(model)


def test_w4a16_weight_bytes_llama2_7b():
    policy = UniformPolicy.parse("w4a16")  # int4 with an fp16 scale per 128 inputs: 4.125 bits
    # Linear matrices of the 32 blocks; 4096 and 11008 are multiples of 128, so no padding.
    linear = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    # Embedding, LM head and 65 RMSNorm scales stay fp16.
    other = 2 * 32000 * 4096 + 65 * 4096

    expected = linear * 33 // 64 + 2 * other

    assert weight_bytes(spec("llama-2-7b"), policy) == expected


def test_w4a16_weight_bytes_pad_partial_groups():
    policy = UniformPolicy.parse("w4a16")

    def int4_g128_bytes(rows, inputs):
        # Each row is padded to whole groups of 128; a group is 128 codes of 4 bits and an fp16 scale.
        groups = -(-inputs // 128)
        return rows * groups * (128 * 4 + 16) // 8

    # SmolLM2: q, o 576 x 576; k, v 192 x 576; gate, up 1536 x 576; down 576 x 1536. 576 = 4.5 groups.
    per_layer = 2 * int4_g128_bytes(576, 576) + 2 * int4_g128_bytes(192, 576) + 2 * int4_g128_bytes(1536, 576) + int4_g128_bytes(576, 1536)
    # Tied embedding 49152 x 576 and 61 RMSNorm scales of 576 in fp16.
    expected = 30 * per_layer + 2 * (49152 * 576 + 61 * 576)

    assert weight_bytes(spec("smollm2-135m"), policy) == expected


def test_w8_weight_bytes_use_per_channel_scales():
    policy = UniformPolicy.parse("w8a8")  # int8, one fp16 scale per output channel

    def int8_channel_bytes(rows, inputs):
        return rows * (inputs * 8 + 16) // 8

    per_layer = 4 * int8_channel_bytes(4096, 4096) + 2 * int8_channel_bytes(11008, 4096) + int8_channel_bytes(4096, 11008)
    expected = 32 * per_layer + 2 * (2 * 32000 * 4096 + 65 * 4096)

    assert weight_bytes(spec("llama-2-7b"), policy) == expected


def test_mxfp4_weights_take_4_25_bits():
    policy = UniformPolicy.parse("w=mxfp4")
    linear = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    other = 2 * 32000 * 4096 + 65 * 4096

    # OCP MX: 32 FP4 codes share one 8-bit scale, 4 + 8/32 = 4.25 bits.
    assert weight_bytes(spec("llama-2-7b"), policy) == linear * 17 // 32 + 2 * other


def test_moe_weight_bytes_count_all_experts():
    policy = UniformPolicy.parse("w4a16")
    mixtral = spec("mixtral-8x7b")
    # 8 experts x 3 matrices, plus attention, per layer; 4096 and 14336 are multiples of 128.
    linear = 32 * (8 * 3 * 4096 * 14336 + 2 * 4096 * 4096 + 2 * 4096 * 1024)
    # Embedding, LM head, router (8 x 4096 per layer) and 65 RMSNorm scales in fp16.
    other = 2 * 32000 * 4096 + 32 * 8 * 4096 + 65 * 4096

    assert weight_bytes(mixtral, policy) == linear * 33 // 64 + 2 * other


def test_flops_per_token_near_twice_matrix_parameters():
    llama2 = spec("llama-2-7b")

    flops = flops_per_token(llama2, context_tokens=1)
    # The usual estimate: 2 FLOPs per parameter that multiplies, so all but the embedding table.
    estimate = 2 * (parameter_count(llama2) - 32000 * 4096)

    assert flops == pytest.approx(estimate, rel=0.001)
    assert flops > estimate


def test_flops_per_token_grows_with_context():
    llama2 = spec("llama-2-7b")

    short = flops_per_token(llama2, context_tokens=1)
    long = flops_per_token(llama2, context_tokens=4096)

    # 4095 more keys, each costing 2 x 2 FLOPs (scores and context) x 32 heads x 128 x 32 layers,
    # plus 5 softmax ops per score x 32 heads x 32 layers.
    assert long - short == 4095 * 32 * 32 * (4 * 128 + 5)


def test_encoder_flops_per_token_is_pass_over_tokens():
    minilm = spec("all-minilm-l6-v2")

    per_token = flops_per_token(minilm, context_tokens=128)

    # About 2 FLOPs per parameter of the blocks (embedding tables are gathers, the pooler runs once).
    blocks = 6 * (4 * 384 * 384 + 2 * 384 * 1536)
    assert per_token > 2 * blocks
    assert per_token < 3 * blocks


def test_summarize_llama3_8b():
    summary = summarize(spec("llama-3-8b"), UniformPolicy.parse("w4a16kv8"), context_tokens=2048)

    assert summary.parameters == 8_030_261_248
    assert summary.active_parameters == summary.parameters
    assert summary.embedding_parameters == 2 * 128256 * 4096
    assert summary.context_tokens == 2048
    assert summary.policy == "w=int4_g128,a=fp16,kv=int8_token"
    assert summary.kv_cache_bytes_per_token == 66_560
    assert summary.flops_per_token == flops_per_token(spec("llama-3-8b"), 2048)


def test_summarize_default_context_fits_model():
    summary = summarize(spec("opt-6.7b"))

    assert summary.context_tokens == 2048


def test_summarize_encoder_default_context():
    summary = summarize(spec("all-minilm-l6-v2"))

    assert summary.context_tokens == 512
    assert summary.kv_cache_bytes_per_token == 0
