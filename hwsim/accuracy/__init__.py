"""The accuracy path: the formats of hwsim applied to real transformers models, and what they do to quality.

    base = load_model("smollm2-135m")
    result = evaluate_perplexity(base, AccuracyConfig.from_policy("w8a8"), tokens=4096)
    print(result.summary())

`torch_qdq.qdq` is the torch twin of `hwsim.qdq`, bit for bit, on any device.
"""

from hwsim.accuracy.config import AccuracyConfig, Quantizer, quantizer_for
from hwsim.accuracy.data import calibration_batches
from hwsim.accuracy.evaluate import (
    PerplexityResult,
    SimilarityResult,
    evaluate_embedding_similarity,
    evaluate_perplexity,
    layer_errors,
)
from hwsim.accuracy.models import LoadedModel, load_model
from hwsim.accuracy.torch_qdq import qdq
from hwsim.accuracy.wrap import QuantizedModel, quantize_model

__all__ = [
    "AccuracyConfig",
    "LoadedModel",
    "PerplexityResult",
    "QuantizedModel",
    "Quantizer",
    "SimilarityResult",
    "calibration_batches",
    "evaluate_embedding_similarity",
    "evaluate_perplexity",
    "layer_errors",
    "load_model",
    "qdq",
    "quantize_model",
    "quantizer_for",
]
