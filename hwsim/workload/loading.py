"""Load a ModelSpec from a Hugging Face config.json, through `transformers.AutoConfig`.

`load_model` accepts a shipped model name ("llama-3-8b"), a config.json
file, a folder that contains one, or a Hugging Face hub id ("org/name")
where the machine can reach the hub. The shipped configs sit in the
top-level `models/` folder, which the wheel installs as the package
`hwsim._models`.

The required keys are checked on the raw JSON before transformers fills in
its class defaults, because a default such as LlamaConfig's
intermediate_size of 11008 would silently describe another model.
"""

from __future__ import annotations

import difflib
import importlib.resources
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from hwsim.workload.model import ModelSpec

log = logging.getLogger(__name__)

# model_type in config.json -> the keys that it must set.
_DECODER_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "vocab_size", "max_position_embeddings")
REQUIRED_KEYS = {
    "llama": _DECODER_KEYS,
    "mistral": _DECODER_KEYS,
    "qwen2": _DECODER_KEYS,
    "phi3": _DECODER_KEYS,
    "mixtral": _DECODER_KEYS + ("num_local_experts", "num_experts_per_tok"),
    "opt": ("hidden_size", "ffn_dim", "num_attention_heads", "num_hidden_layers", "vocab_size", "max_position_embeddings"),
    "bert": ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "vocab_size", "max_position_embeddings"),
}
SUPPORTED_MODEL_TYPES = tuple(sorted(REQUIRED_KEYS))
_LLAMA_LIKE = ("llama", "mistral", "mixtral", "qwen2", "phi3")
# OPT's learned position table has 2 rows more than max_position_embeddings
# (OPTLearnedPositionalEmbedding in transformers adds an offset of 2).
_OPT_POSITION_OFFSET = 2


@dataclass(frozen=True)
class ModelSource:
    """Origin of a shipped config: its repository and published parameter count, from models/SOURCES.md."""

    name: str
    repository: str
    published_parameters: str
    published_where: str


def shipped_config_paths() -> dict[str, Path]:
    """Map each shipped model name to its config.json file, sorted by name."""
    folder = _shipped_folder()
    paths = {entry.name[: -len(".json")]: Path(os.fspath(entry)) for entry in folder.iterdir() if entry.name.endswith(".json")}
    return dict(sorted(paths.items()))


def shipped_model_names() -> list[str]:
    return list(shipped_config_paths())


def model_sources() -> dict[str, ModelSource]:
    """Parse the table in models/SOURCES.md: one row per shipped config."""
    text = _shipped_folder().joinpath("SOURCES.md").read_text(encoding="utf-8")
    sources = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|") or len(cells) != 4 or cells[0] in ("name", "") or set(cells[0]) <= {"-", ":"}:
            continue
        name = cells[0].strip("`")
        sources[name] = ModelSource(name, cells[1].strip("`"), cells[2], cells[3])
    return sources


def load_model(source: str | os.PathLike) -> ModelSpec:
    """Load the architecture of a shipped model name, a config.json path or folder, or a hub id.

    Raises FileNotFoundError for a folder without config.json, KeyError for
    an unknown model name, and ValueError for a config with a missing key or
    an unsupported model_type.
    """
    path = Path(os.fspath(source)).expanduser()
    shipped = shipped_config_paths()
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"no config.json in folder {str(path)!r}: pass the config.json file or the folder that contains it")
        return _load_file(config_path, name=path.name)
    if path.is_file():
        name = path.parent.name if path.name == "config.json" else path.stem
        return _load_file(path, name=name)
    text = os.fspath(source)
    if text.lower() in shipped:
        return _load_file(shipped[text.lower()], name=text.lower())
    if text.count("/") == 1 and not text.endswith(".json") and not text.startswith((".", "/")):
        return _load_hub(text)
    close = difflib.get_close_matches(text.lower(), list(shipped), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise KeyError(
        f"unknown model {text!r}: it is neither a shipped model nor an existing path; {hint}"
        f"run `hwsim models list` for the shipped names, or pass a config.json path"
    )


def model_spec_from_config(config, name: str, raw: dict | None = None, source: str = "") -> ModelSpec:
    """Build a ModelSpec from a transformers config object.

    `raw` is the config.json dictionary. It is checked for the required keys,
    which class defaults would otherwise fill in. Pass None to skip the check.
    """
    model_type = getattr(config, "model_type", "") or (raw or {}).get("model_type", "")
    _check_supported(model_type, name)
    if raw is not None:
        missing = [key for key in REQUIRED_KEYS[model_type] if raw.get(key) is None]
        if missing:
            raise ValueError(
                f"config of model {name!r} is missing {', '.join(repr(k) for k in missing)}, which a {model_type!r} config must set; "
                f"add {'it' if len(missing) == 1 else 'them'} to config.json"
            )
    architectures = getattr(config, "architectures", None) or []
    common = dict(
        name=name,
        model_type=model_type,
        architecture=architectures[0] if architectures else "",
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        vocab_size=config.vocab_size,
        max_position_embeddings=config.max_position_embeddings,
        source=source,
    )
    if model_type in _LLAMA_LIKE:
        return _llama_like(config, model_type, common)
    if model_type == "opt":
        return _opt(config, common)
    return _bert(config, common)


def _llama_like(config, model_type: str, common: dict) -> ModelSpec:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    partial_rotary_factor = rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0)) or 1.0
    rotary_dim = int(head_dim * partial_rotary_factor) // 2 * 2
    attention_bias = bool(getattr(config, "attention_bias", False))
    experts = getattr(config, "num_local_experts", 0) if model_type == "mixtral" else 0
    return ModelSpec(
        **common,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        gated_mlp=True,
        norm="rmsnorm",
        position_embedding="rotary",
        rotary_dim=rotary_dim,
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        # Qwen2 always has biases on q, k and v but not on o (Qwen2Attention in transformers).
        qkv_bias=attention_bias or model_type == "qwen2",
        o_bias=attention_bias,
        mlp_bias=bool(getattr(config, "mlp_bias", False)),
        # Phi-3 stores q, k, v as one qkv_proj and gate, up as one gate_up_proj.
        fused_qkv=model_type == "phi3",
        fused_gate_up=model_type == "phi3",
        num_experts=experts,
        experts_per_token=getattr(config, "num_experts_per_tok", 0) if experts else 0,
        sliding_window=_sliding_window(config, common["name"]),
    )


def _opt(config, common: dict) -> ModelSpec:
    return ModelSpec(
        **common,
        num_kv_heads=config.num_attention_heads,
        head_dim=config.hidden_size // config.num_attention_heads,
        intermediate_size=config.ffn_dim,
        hidden_act=config.activation_function,
        gated_mlp=False,
        norm="layernorm",
        position_embedding="learned",
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
        qkv_bias=bool(getattr(config, "enable_bias", True)),
        o_bias=bool(getattr(config, "enable_bias", True)),
        mlp_bias=bool(getattr(config, "enable_bias", True)),
        pre_norm=bool(config.do_layer_norm_before),
        embedding_size=getattr(config, "word_embed_proj_dim", None) or config.hidden_size,
        position_embedding_rows=config.max_position_embeddings + _OPT_POSITION_OFFSET,
        final_norm=bool(config.do_layer_norm_before and not getattr(config, "_remove_final_layer_norm", False)),
    )


def _bert(config, common: dict) -> ModelSpec:
    return ModelSpec(
        **common,
        num_kv_heads=config.num_attention_heads,
        head_dim=config.hidden_size // config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        gated_mlp=False,
        norm="layernorm",
        position_embedding="learned",
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        is_encoder=True,
        pre_norm=False,
        position_embedding_rows=config.max_position_embeddings,
        token_type_rows=getattr(config, "type_vocab_size", 2),
        final_norm=False,
        # BertModel adds the pooler (dense + tanh on the first token) unless built with add_pooling_layer=False.
        pooler=True,
    )


def _sliding_window(config, name: str) -> int | None:
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types and window is not None:
        kinds = set(layer_types)
        if kinds == {"full_attention"}:
            return None
        if kinds != {"sliding_attention"}:
            # TODO: model mixed layers (Qwen2 with use_sliding_window and max_window_layers < num_hidden_layers, Gemma 2).
            raise ValueError(
                f"model {name!r} mixes sliding-window and full-attention layers ({sorted(kinds)}), which hwsim does not model yet; "
                f"set use_sliding_window to false or one attention type for all layers"
            )
    return window


def _check_supported(model_type: str, name: str) -> None:
    if not model_type:
        raise ValueError(f"config of model {name!r} is missing 'model_type'; add it to config.json (one of {', '.join(SUPPORTED_MODEL_TYPES)})")
    if model_type not in REQUIRED_KEYS:
        raise ValueError(
            f"unsupported architecture {model_type!r} (model_type of model {name!r}); "
            f"hwsim supports the model types {', '.join(SUPPORTED_MODEL_TYPES)}"
        )


def _load_file(path: Path, name: str) -> ModelSpec:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON in {str(path)!r}: {error}; fix the file") from error
    if not isinstance(raw, dict):
        raise ValueError(f"invalid config {str(path)!r}: expected a JSON object, got {type(raw).__name__}")
    # Check before AutoConfig, whose own messages about an unknown model_type do not list what hwsim supports.
    _check_supported(raw.get("model_type", ""), name)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path))
    log.debug("loaded %s from %s", name, path)
    return model_spec_from_config(config, name=name, raw=raw, source=str(path))


def _load_hub(model_id: str) -> ModelSpec:
    # NOTE: only the offline failure of this path has been run; no config has been fetched from the hub yet.
    from transformers import AutoConfig, PretrainedConfig

    try:
        raw, _ = PretrainedConfig.get_config_dict(model_id)
    except OSError as error:
        raise ValueError(
            f"could not fetch the config of hub model {model_id!r} ({error}); "
            f"pass a local config.json path or a shipped name from `hwsim models list`"
        ) from error
    _check_supported(raw.get("model_type", ""), model_id)
    config = AutoConfig.from_pretrained(model_id)
    return model_spec_from_config(config, name=model_id, raw=raw, source=f"hub:{model_id}")


def _shipped_folder():
    """Return the folder of shipped configs: package data of a wheel install, else the repository's models/ folder."""
    try:
        folder = importlib.resources.files("hwsim._models")
        if any(entry.name.endswith(".json") for entry in folder.iterdir()):
            return folder
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    return Path(__file__).resolve().parents[2] / "models"
