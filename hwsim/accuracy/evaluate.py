"""Quality of a quantized model: WikiText-2 perplexity, embedding similarity, per-layer output error.

Perplexity follows the sliding-window recipe of the transformers
documentation: windows of `window` tokens start every `stride` tokens, and
each window scores only the tokens the previous window did not, with the
rest as context. The result names the tokenizer, window, stride and join
with the number. Embedding similarity is the cosine between the mean-pooled
token embeddings of the full-precision and the quantized encoder, with
padding masked out, as sentence-transformers pools all-MiniLM-L6-v2.
Perplexity and similarity results are cached on disk.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from hwsim.accuracy.config import AccuracyConfig
from hwsim.accuracy.data import (
    DATASET_NAME,
    WIKITEXT2_JOIN,
    calibration_batches,
    wikitext2_paragraphs,
    wikitext2_sha256,
    wikitext2_tokens,
)
from hwsim.accuracy.models import LoadedModel
from hwsim.accuracy.results_cache import ResultCache
from hwsim.accuracy.wrap import QuantizedModel, quantize_model

log = logging.getLogger(__name__)

# all-MiniLM-L6-v2's sentence_bert_config.json truncates inputs at 256 tokens.
EMBEDDING_MAX_TOKENS = 256


def _progress(enabled: bool):
    """tqdm that stays quiet when stderr is not a terminal (disable=None), or never shows when disabled."""
    def bar(iterable, **kwargs):
        return tqdm(iterable, disable=None if enabled else True, leave=False, **kwargs)

    return bar


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity on WikiText-2 with the settings it was measured under."""

    model: str
    model_id: str
    config: str
    perplexity: float
    nll_per_token: float
    tokens_scored: int
    tokens: int
    window: int
    stride: int
    tokenizer: str
    dataset: str
    join: str
    notes: tuple[str, ...]
    seconds: float
    cached: bool = False

    def summary(self) -> str:
        lines = [
            f"perplexity {self.perplexity:.4f} ({self.model}, {self.config})",
            f"  dataset: {self.dataset}, first {self.tokens} tokens, lines joined with {self.join}",
            f"  tokenizer: {self.tokenizer}, no BOS token added",
            f"  window {self.window} tokens, stride {self.stride} tokens, {self.tokens_scored} tokens scored",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        if self.cached:
            lines.append("  (from the result cache)")
        return "\n".join(lines)


@dataclass(frozen=True)
class SimilarityResult:
    """Cosine similarity of quantized against full-precision sentence embeddings."""

    model: str
    model_id: str
    config: str
    mean_cosine: float
    min_cosine: float
    sentences: int
    max_tokens: int
    pooling: str
    notes: tuple[str, ...]
    seconds: float
    cached: bool = False

    def summary(self) -> str:
        lines = [
            f"mean cosine similarity {self.mean_cosine:.6f}, min {self.min_cosine:.6f} ({self.model}, {self.config})",
            f"  {self.sentences} {DATASET_NAME} paragraphs, truncated at {self.max_tokens} tokens, {self.pooling}",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        if self.cached:
            lines.append("  (from the result cache)")
        return "\n".join(lines)


def _check_window(tokens, window, stride) -> None:
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 2):
        raise ValueError(f"invalid tokens={tokens!r}: score at least 2 tokens, or None for the whole split")
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"invalid window={window!r}: give a window of at least 2 tokens, such as 256")
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= window:
        raise ValueError(f"invalid stride={stride!r}: give 1 to window ({window}) tokens")


def _quantized_or_base(base: LoadedModel, config: AccuracyConfig, progress) -> tuple[torch.nn.Module, list[str]]:
    if config == AccuracyConfig():
        return base.model, []
    calibration = None
    if config.calibrated:
        calibration = calibration_batches(base.tokenizer, config.calibration_tokens)
    quantized = quantize_model(base, config, calibration=calibration, progress=progress)
    return quantized.model, quantized.notes


@torch.no_grad()
def negative_log_likelihood(model: torch.nn.Module, ids: torch.Tensor, window: int, stride: int, progress=None) -> tuple[float, int]:
    """(sum of -log p over scored tokens, number of scored tokens) of a 1-D token sequence, sliding windows."""
    device = next(model.parameters()).device
    total, scored, previous_end = 0.0, 0, 0
    starts = list(range(0, max(len(ids) - 1, 1), stride))
    for begin in (progress(starts, desc="perplexity windows") if progress else starts):
        end = min(begin + window, len(ids))
        new_tokens = end - previous_end
        inputs = ids[begin:end][None, :].to(device)
        labels = inputs.clone()
        labels[:, :-new_tokens] = -100
        logits = model(input_ids=inputs, use_cache=False).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="sum"
        )
        total += float(loss)
        scored += int((labels[0, 1:] != -100).sum())
        previous_end = end
        if end == len(ids):
            break
    return total, scored


def perplexity_key(model_id: str, config: AccuracyConfig, tokens: int | None, window: int, stride: int) -> dict:
    """Return the cache key of a perplexity: the model files (and so its tokenizer), the config and the evaluation settings."""
    return {
        "kind": "perplexity",
        "model_id": model_id,
        "config": config.to_dict(),
        "tokens": tokens,
        "window": window,
        "stride": stride,
        "dataset_sha256": wikitext2_sha256(),
        "join": WIKITEXT2_JOIN,
    }


def cached_perplexity(model_id: str, config: AccuracyConfig | None = None, *, tokens: int | None = 4096, window: int = 256,
                      stride: int | None = None, cache_dir=None) -> PerplexityResult | None:
    """Return the stored result of `evaluate_perplexity` with these arguments, or None, without loading a model."""
    stride = window if stride is None else stride
    stored = ResultCache(cache_dir).get(perplexity_key(model_id, config or AccuracyConfig(), tokens, window, stride))
    if stored is None:
        return None
    return PerplexityResult(**{**stored, "notes": tuple(stored["notes"]), "cached": True})


def evaluate_perplexity(base: LoadedModel, config: AccuracyConfig | None = None, *, tokens: int | None = 4096, window: int = 256,
                        stride: int | None = None, cache_dir=None, use_cache: bool = True, progress: bool = True) -> PerplexityResult:
    """Perplexity of `base` quantized by `config` on the first `tokens` tokens (None: all) of the WikiText-2 test split."""
    if base.kind != "causal_lm":
        raise ValueError(f"perplexity needs a causal language model; {base.name} is an encoder: use evaluate_embedding_similarity")
    config = config or AccuracyConfig()
    stride = window if stride is None else stride
    _check_window(tokens, window, stride)
    if use_cache:
        stored = cached_perplexity(base.model_id, config, tokens=tokens, window=window, stride=stride, cache_dir=cache_dir)
        if stored is not None:
            return stored
    all_ids = wikitext2_tokens(base.tokenizer)
    ids = all_ids if tokens is None else all_ids[:tokens]
    if tokens is not None and tokens > len(all_ids):
        raise ValueError(f"invalid tokens={tokens}: the split has {len(all_ids)} tokens with this tokenizer; give at most that, or None")
    key = perplexity_key(base.model_id, config, tokens, window, stride)
    cache = ResultCache(cache_dir, enabled=use_cache)

    calibrated = config.calibrated
    if calibrated and len(ids) + config.calibration_tokens > len(all_ids):
        log.warning("the evaluated tokens overlap the calibration tokens at the end of the split; lower tokens or calibration_tokens")
    bar = _progress(progress)
    start = time.perf_counter()
    model, notes = _quantized_or_base(base, config, bar)
    total, scored = negative_log_likelihood(model, ids, window, stride, bar)
    if not notes and base.weight_note:
        notes = [base.weight_note]
    result = PerplexityResult(
        model=base.name,
        model_id=base.model_id,
        config=config.label,
        perplexity=math.exp(total / scored),
        nll_per_token=total / scored,
        tokens_scored=scored,
        tokens=len(ids),
        window=window,
        stride=stride,
        tokenizer=base.tokenizer_name,
        dataset=f"{DATASET_NAME} (sha256 {wikitext2_sha256()[:12]})",
        join=repr(WIKITEXT2_JOIN),
        notes=tuple(notes),
        seconds=time.perf_counter() - start,
    )
    cache.put(key, {k: v for k, v in asdict(result).items() if k != "cached"})
    return result


@torch.no_grad()
def sentence_embeddings(model: torch.nn.Module, tokenizer, sentences: list[str], batch_size: int = 16, max_tokens: int = EMBEDDING_MAX_TOKENS) -> torch.Tensor:
    """Embed sentences as their mean-pooled last hidden states, padding masked out (sentence-transformers' mean pooling): float32 [sentences, hidden]."""
    device = next(model.parameters()).device
    pooled = []
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer(sentences[start:start + batch_size], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt").to(device)
        hidden = model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"][..., None].to(hidden.dtype)
        pooled.append((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9))
    return torch.cat(pooled)


def similarity_key(model_id: str, config: AccuracyConfig, sentences: int) -> dict:
    """Return the cache key of an embedding similarity (inputs are truncated at EMBEDDING_MAX_TOKENS or the tokenizer's limit)."""
    return {
        "kind": "embedding_similarity",
        "model_id": model_id,
        "config": config.to_dict(),
        "sentences": sentences,
        "max_tokens": EMBEDDING_MAX_TOKENS,
        "dataset_sha256": wikitext2_sha256(),
    }


def cached_embedding_similarity(model_id: str, config: AccuracyConfig, *, sentences: int = 64, cache_dir=None) -> SimilarityResult | None:
    """Return the stored result of `evaluate_embedding_similarity` with these arguments, or None, without loading a model."""
    stored = ResultCache(cache_dir).get(similarity_key(model_id, config, sentences))
    if stored is None:
        return None
    return SimilarityResult(**{**stored, "notes": tuple(stored["notes"]), "cached": True})


def evaluate_embedding_similarity(base: LoadedModel, config: AccuracyConfig, *, sentences: int = 64, batch_size: int = 16,
                                  cache_dir=None, use_cache: bool = True, progress: bool = True) -> SimilarityResult:
    """Mean and min cosine similarity between full-precision and quantized embeddings of WikiText-2 paragraphs."""
    if base.kind != "encoder":
        raise ValueError(f"embedding similarity needs an encoder; {base.name} is a causal language model: use evaluate_perplexity")
    if isinstance(sentences, bool) or not isinstance(sentences, int) or sentences < 1:
        raise ValueError(f"invalid sentences={sentences!r}: give a positive number of paragraphs, such as 64")
    max_tokens = min(EMBEDDING_MAX_TOKENS, int(getattr(base.tokenizer, "model_max_length", EMBEDDING_MAX_TOKENS)))
    if use_cache:
        stored = cached_embedding_similarity(base.model_id, config, sentences=sentences, cache_dir=cache_dir)
        if stored is not None:
            return stored
    key = similarity_key(base.model_id, config, sentences)
    cache = ResultCache(cache_dir, enabled=use_cache)

    start = time.perf_counter()
    texts = wikitext2_paragraphs(sentences)
    reference = sentence_embeddings(base.model, base.tokenizer, texts, batch_size, max_tokens)
    model, notes = _quantized_or_base(base, config, _progress(progress))
    embeddings = sentence_embeddings(model, base.tokenizer, texts, batch_size, max_tokens)
    cosine = torch.nn.functional.cosine_similarity(reference.double(), embeddings.double(), dim=-1)
    result = SimilarityResult(
        model=base.name,
        model_id=base.model_id,
        config=config.label,
        mean_cosine=float(cosine.mean()),
        min_cosine=float(cosine.min()),
        sentences=len(texts),
        max_tokens=max_tokens,
        pooling="mean pooling over tokens, padding masked",
        notes=tuple(notes),
        seconds=time.perf_counter() - start,
    )
    cache.put(key, {k: v for k, v in asdict(result).items() if k != "cached"})
    return result


@torch.no_grad()
def layer_errors(quantized: QuantizedModel, inputs: dict) -> pd.DataFrame:
    """MSE and SQNR (dB) of every linear layer's output, quantized copy against the original, on one input.

    inputs: keyword arguments of the model's forward, such as {"input_ids": ids}.
    Outputs of a rotated model are rotated back first (`QuantizedModel.output_map`).
    """
    reference = _linear_outputs(quantized.base.model, inputs)
    measured = _linear_outputs(quantized.model, inputs)
    rows = []
    for name, expected in reference.items():
        actual = measured[name]
        output_map = quantized.output_map(name)
        if output_map is not None:
            actual = output_map(actual)
        error = (actual.double() - expected.double())
        signal_power = float(expected.double().pow(2).sum())
        noise_power = float(error.pow(2).sum())
        sqnr_db = math.inf if noise_power == 0 else 10.0 * math.log10(signal_power / noise_power)
        rows.append({"layer": name, "mse": float(error.pow(2).mean()), "sqnr_db": sqnr_db, "elements": expected.numel()})
    return pd.DataFrame(rows, columns=["layer", "mse", "sqnr_db", "elements"])


def _linear_outputs(model: torch.nn.Module, inputs: dict) -> dict[str, torch.Tensor]:
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            handles.append(module.register_forward_hook(lambda m, a, out, name=name: outputs.__setitem__(name, out.detach())))
    try:
        model(**inputs, use_cache=False) if "use_cache" in _forward_arguments(model) else model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _forward_arguments(model: torch.nn.Module) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)
