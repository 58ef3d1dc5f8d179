"""Presets of published schemes: each one's bits per parameter, worked out by hand from its stated configuration.

The weight is a Llama-2-7B q_proj, [4096, 4096] (N elements, 4096 rows of
4096 input channels). Scales are fp16 (16 bits) unless a format names
another scale format.
"""

from __future__ import annotations

import math

import pytest

from hwsim.policy import PRESETS, bits_per_parameter, get_preset, preset, preset_names, quantizer_bits
from hwsim.policy.presets import OWQ_FP16_FRACTION
from hwsim.policy.summary import summarize_policy
from hwsim.workload import load_model

ROWS = COLUMNS = 4096
N = ROWS * COLUMNS
INDEX_4096 = 12  # ceil(log2(4096)) bits to name one of 4096 channels or rows

# Bits per parameter of the [4096, 4096] weight, from each source's configuration.
EXPECTED_WEIGHT_BITS = {
    "fp16": 16,
    # int8 with one fp16 scale per output channel of 4096 weights.
    "w8a8-smoothquant": 8 + 16 / 4096,
    # int4 with one fp16 scale per 128.
    "w4a16-g128": 4 + 16 / 128,
    "w4a8-g128": 4 + 16 / 128,
    "quarot-w4a4kv4": 4 + 16 / 4096,
    # 128 int8 channels (8 + 16/128 each), 3968 = 31 * 128 int4 channels, and a 12-bit index per outlier channel.
    "atom-w4a4": (3968 * (4 + 16 / 128) + 128 * (8 + 16 / 128)) / 4096 + 128 * INDEX_4096 / N,
    # 512 = 4096/8 channels in int8 and 3584 in int4, each part with one fp16 scale per row.
    "resq-w4a4kv4": (3584 * 4 + 16 + 512 * 8 + 16) / 4096,
    # round(0.1 * 4096) = 410 rows in int8 (16-bit scale per 128); 3686 rows asymmetric int4 (16-bit scale, 4-bit zero per 128).
    "mixllm-w4.4a8": (3686 * (4 + (16 + 4) / 128) + 410 * (8 + 16 / 128)) / 4096 + 410 * INDEX_4096 / N,
    # SpQR's get_average_number_of_bits: wbits + (3 + 3)/16 + 2 * (16 + 16)/(16 * 16) + 32 * outlier share.
    "spqr-w3": 3 + (3 + 3) / 16 + 2 * (16 + 16) / (16 * 16) + 32 * round(0.01 * N) / N,
    "spqr-w4": 4 + (3 + 3) / 16 + 2 * (16 + 16) / (16 * 16) + 32 * round(0.01 * N) / N,
    # round(4096 * 0.01/13) = 3 fp16 columns; 4093 int3 columns with a 16-bit scale and 3-bit zero per row; 12-bit column index.
    "owq-w3": (4093 * 3 + 16 + 3 + 3 * 16) / 4096 + 3 * INDEX_4096 / N,
    # 8-entry fp16 lookup table per row; 0.45% outliers with a 16-bit value and a 32-bit index.
    "squeezellm-w3": 3 + 8 * 16 / 4096 + (16 + 32) * round(0.0045 * N) / N,
    "kivi-kv2": 16,
    # 4-bit codes, an 8-bit E8M0 scale and a 4-bit dialect index per 32.
    "blockdialect-w4a4": 4 + (8 + 4) / 32,
    # As many groups one bit up as one bit down: 3 bits, a 16-bit scale and a 2-bit format selector per 128.
    "slim-llm-w3": 3 + 16 / 128 + 2 / 128,
    "mxfp8": 8 + 8 / 32,
    "mxfp6": 6 + 8 / 32,
    "mxfp4": 4 + 8 / 32,
    # UE4M3 block scale stored in a byte per 16, plus one fp32 tensor scale.
    "nvfp4": 4 + 8 / 16 + 32 / N,
}


def test_every_preset_has_expected_bits():
    assert set(EXPECTED_WEIGHT_BITS) == set(preset_names())


@pytest.mark.parametrize("name", list(EXPECTED_WEIGHT_BITS))
def test_weight_bits_per_parameter(name):
    quantizer = preset(name).quantizer_for("model.layers.0.self_attn.q_proj", "weight")
    bits = 16.0 if quantizer is None else quantizer_bits(quantizer, (ROWS, COLUMNS)).bits_per_element

    assert bits == pytest.approx(EXPECTED_WEIGHT_BITS[name], rel=1e-12)


@pytest.mark.parametrize(
    "name, headline",
    [
        ("mxfp4", 4.25),
        ("w4a16-g128", 4.125),
        ("blockdialect-w4a4", 4.375),
        ("spqr-w3", 3.945),
        ("slim-llm-w3", 3.140625),
    ],
)
def test_headline_numbers(name, headline):
    quantizer = preset(name).quantizer_for("model.layers.0.self_attn.q_proj", "weight")

    # SpQR's 1% rounds to whole outliers, 167,772 of 16,777,216, which is 3e-7 bits under 3.945.
    assert quantizer_bits(quantizer, (ROWS, COLUMNS)).bits_per_element == pytest.approx(headline, abs=1e-6)


def test_mixllm_element_bits_are_4_4():
    # W4.4: 10% of output features in 8 bits, 90% in 4 bits, before scales.
    breakdown = quantizer_bits(preset("mixllm-w4.4a8").quantizer_for("model.layers.0.mlp.up_proj", "weight"), (4000, 4096))
    high_rows, low_rows = 400, 3600

    assert (high_rows * 8 + low_rows * 4) / 4000 == pytest.approx(4.4)
    assert breakdown.element_bits == low_rows * 4096 * 4
    assert breakdown.outlier_bits == high_rows * 4096 * 8 + high_rows * 32 * 16


def test_owq_effective_bits_match_its_rule():
    # OWQ's effective bits: wbits + (16 - wbits) * share of fp16 weights, scales left out.
    columns = round(COLUMNS * OWQ_FP16_FRACTION)
    breakdown = quantizer_bits(preset("owq-w3").quantizer_for("model.layers.0.mlp.up_proj", "weight"), (ROWS, COLUMNS))
    effective = (breakdown.element_bits + breakdown.outlier_bits) / N

    assert columns == 3
    assert effective == pytest.approx(3 + 13 * columns / COLUMNS)
    # Whole columns only: within one column's worth of the stated 3.01.
    assert abs(effective - 3.01) < 13 / COLUMNS


def test_kivi_kv_bits_with_window():
    # 4096 tokens: 3968 in 2-bit codes with a 16-bit scale and 16-bit minimum per 32, and the latest 128 in fp16.
    spec = load_model("llama-2-7b")
    summary = summarize_policy(preset("kivi-kv2"), spec, context_tokens=4096)
    expected = (3968 * (2 + 32 / 32) + 128 * 16) / 4096

    assert summary.kv_key_bits_per_element == pytest.approx(expected)
    assert summary.kv_value_bits_per_element == pytest.approx(expected)
    # Shorter than the window, the cache stays fp16.
    short = summarize_policy(preset("kivi-kv2"), spec, context_tokens=100)
    assert short.kv_key_bits_per_element == 16


def test_kivi_keys_group_over_tokens():
    keys = preset("kivi-kv2").quantizer_for("model.layers.0.self_attn", "kv_key")
    values = preset("kivi-kv2").quantizer_for("model.layers.0.self_attn", "kv_value")

    assert keys.axis == -2
    assert values.axis == -1
    assert keys.kv_window == values.kv_window == 128


@pytest.mark.parametrize(
    "name, activation_bits",
    [
        ("w8a8-smoothquant", 8 + 16 / 4096),
        ("quarot-w4a4kv4", 4 + 16 / 4096),
        # The outlier channel list is stored once per layer, with the weights, so it is not counted per token.
        ("atom-w4a4", (3968 * (4 + 16 / 128) + 128 * (8 + 16 / 128)) / 4096),
        ("resq-w4a4kv4", (3584 * 4 + 16 + 512 * 8 + 16) / 4096),
        ("mxfp4", 4.25),
        ("w4a16-g128", 16),
    ],
)
def test_activation_bits_per_element(name, activation_bits):
    summary = summarize_policy(preset(name), load_model("llama-2-7b"))

    assert summary.activation_bits_per_element == pytest.approx(activation_bits)


def test_quarot_kv_bits():
    # Asymmetric int4 with a 16-bit scale and a 4-bit zero point per head of 128 channels.
    summary = summarize_policy(preset("quarot-w4a4kv4"), load_model("llama-2-7b"))

    assert summary.kv_key_bits_per_element == pytest.approx(4 + (16 + 4) / 128)


def test_model_bits_weight_over_layer_shapes():
    # Llama-2-7B linear layers: q, k, v, o [4096, 4096]; gate, up [11008, 4096]; down [4096, 11008].
    spec = load_model("llama-2-7b")
    shapes = [(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)]
    policy = preset("atom-w4a4")
    quantizer = policy.quantizer_for("model.layers.0.self_attn.q_proj", "weight")
    expected_bits = sum(quantizer_bits(quantizer, shape).total_bits for shape in shapes) / sum(math.prod(s) for s in shapes)

    assert bits_per_parameter(policy, spec) == pytest.approx(expected_bits, rel=1e-12)
    # down_proj has 11008 input channels, so its 128 int8 channels cost less per parameter than q_proj's.
    assert bits_per_parameter(policy, spec) < EXPECTED_WEIGHT_BITS["atom-w4a4"]


def test_preset_metadata_is_complete():
    for name, entry in PRESETS.items():
        assert entry.name == name
        for text in (entry.source, entry.configuration, entry.reproduced, entry.approximated):
            assert text.strip(), name
        assert entry.citation


def test_unknown_preset_suggests_names():
    with pytest.raises(KeyError, match="did you mean 'atom-w4a4'"):
        get_preset("atom-w4")


def test_preset_options_for_accuracy_path():
    assert preset("quarot-w4a4kv4").rotation == "hadamard"
    assert preset("resq-w4a4kv4").rotation == "hadamard"
    assert preset("w8a8-smoothquant").smoothquant_alpha == 0.5
    assert preset("w4a16-g128").weight_method == "gptq"
    assert preset("mxfp4").rotation is None
