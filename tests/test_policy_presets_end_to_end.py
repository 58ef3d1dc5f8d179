"""Every preset through both sides of hwsim: `hwsim simulate` for cost and the accuracy path on SmolLM2-135M.

The accuracy side runs on SmolLM2-135M-Instruct cut to its first
decoder layer (real weights, real tokenizer), so each preset, GPTQ and
calibration included, takes seconds. The perplexity of the cut model means
nothing, but every quantizer, subset, rotation and KV window of the preset
runs. studies/presets.py measures the whole model.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from hwsim.accuracy import AccuracyConfig, calibration_batches, evaluate_perplexity, load_model, quantize_model  # noqa: E402
from hwsim.accuracy.models import LoadedModel  # noqa: E402
from hwsim.accuracy.policy_path import SubsetQdq  # noqa: E402
from hwsim.cli import main  # noqa: E402
from hwsim.policy import UniformPolicy, preset, preset_names  # noqa: E402
from hwsim.policy.resolve import is_uniform_text  # noqa: E402

pytestmark = pytest.mark.slow

LAYERS = 1
TOKENS = 128
CALIBRATION_TOKENS = 256


@pytest.fixture(scope="module")
def cut_smollm2() -> LoadedModel:
    torch.manual_seed(0)
    base = load_model("smollm2-135m")
    model = copy.deepcopy(base.model)
    model.model.layers = model.model.layers[:LAYERS]
    model.config.num_hidden_layers = LAYERS
    return dataclasses.replace(base, model=model, model_id=f"{base.model_id}-first-{LAYERS}-layers")


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_runs_through_hwsim_simulate(name, capsys):
    status = main(["simulate", "--model", "smollm2-135m", "--policy", name, "--accelerator", "h100-sxm",
                   "--emulate-unsupported", "--context", "256", "--json"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    # A preset named like a uniform string ("w4a16-g128") reads as that string, with the same formats.
    expected = UniformPolicy.parse(name).label if is_uniform_text(name) else name
    assert report["policy"] == expected


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_runs_through_the_accuracy_path(name, cut_smollm2):
    config = AccuracyConfig.from_policy(preset(name), calibration_tokens=CALIBRATION_TOKENS)
    result = evaluate_perplexity(cut_smollm2, config, tokens=TOKENS, window=TOKENS, use_cache=False, progress=False)
    assert math.isfinite(result.perplexity)
    assert result.perplexity > 1.0
    assert result.config.startswith(f"policy={name}")


def _quantized(base, name):
    config = AccuracyConfig.from_policy(preset(name), calibration_tokens=CALIBRATION_TOKENS)
    calibration = calibration_batches(base.tokenizer, CALIBRATION_TOKENS) if config.calibrated else None
    return quantize_model(base, config, calibration=calibration)


def test_atom_weights_keep_128_int8_channels(cut_smollm2):
    """q_proj [576, 576]: the 128 input channels of largest calibration amax in int8 (one group of 128 per row),
    the other 448 in int4 groups of 128, 128, 128 and 64, formed after the kept channels move out (Atom's reorder)."""
    from hwsim.policy.sensitivity import capture_inputs
    from hwsim.policy.subsets import channel_amax

    name = "model.layers.0.self_attn.q_proj"
    batches = calibration_batches(cut_smollm2.tokenizer, CALIBRATION_TOKENS)
    module = dict(cut_smollm2.model.named_modules())[name]
    inputs = capture_inputs(cut_smollm2.model, batches, {name: module})[name]
    kept = torch.zeros(576, dtype=torch.bool)
    kept[torch.topk(channel_amax(inputs).double(), 128).indices] = True

    quantized = _quantized(cut_smollm2, "atom-w4a4")
    weight = dict(quantized.model.named_modules())[name].weight.detach()
    assert name in quantized.gptq_layers
    for row in weight[:8]:
        rest = row[~kept]
        for start, stop in ((0, 128), (128, 256), (256, 384), (384, 448)):
            # Symmetric int4 has 16 codes, so a group has at most 16 distinct values.
            assert len(torch.unique(rest[start:stop])) <= 16
        # int8 has 255 codes; 128 weights on that grid take far more than int4's 16 values.
        assert 16 < len(torch.unique(row[kept])) <= 128


def test_kivi_window_and_key_axis(cut_smollm2):
    config = AccuracyConfig.from_policy("kivi-kv2")
    from hwsim.accuracy.config import quantizer_for

    key = quantizer_for(config, "model.layers.0.self_attn", "key")
    value = quantizer_for(config, "model.layers.0.self_attn", "value")
    assert (key.format, key.axis, key.kv_window) == ("int2_asym_g32", -2, 128)
    assert (value.format, value.axis, value.kv_window) == ("int2_asym_g32", -1, 128)
    # Weights and activations stay in full precision under KIVI.
    assert quantizer_for(config, "model.layers.0.mlp.up_proj", "weight") is None


def test_policy_subset_inputs_get_calibration_scores(cut_smollm2):
    quantized = _quantized(cut_smollm2, "resq-w4a4kv4")
    assert quantized.rotation is not None
    hooks = dict(quantized.model.named_modules())["model.layers.0.mlp.up_proj"]._forward_pre_hooks
    assert hooks, "ResQ quantizes the inputs of up_proj"
    from hwsim.accuracy.config import quantizer_for

    config = quantized.config
    plain = quantizer_for(config, "model.layers.0.mlp.up_proj", "input")
    assert isinstance(plain, SubsetQdq) and plain.quantizer.subset.kind == "pca_subspace"


def test_accuracy_cli_reads_policy_yaml(tmp_path, capsys):
    path = tmp_path / "mxfp4.yaml"
    path.write_text(preset("mxfp4").to_yaml())
    status = main(["accuracy", "--policy", str(path), "--tokens", "64", "--window", "64", "--no-cache", "--json"])
    assert status == 0
    assert json.loads(capsys.readouterr().out)["config"] == "policy=mxfp4"
