"""KV-cache quantization: attention reads its keys and values through a qdq.

A forward pre-hook on each attention module replaces the cache argument
with a stand-in. Its `update` stores the new keys and values in the real
cache (when there is one) and returns what attention reads: every token in
the cache format except the quantizer's `kv_window` most recent ones,
which stay in full precision (KIVI's residual). The stored copy stays in
full precision, so a per-token format gives exactly the values of quantizing
each entry when it is written; a per-channel key scale covers all tokens
quantized so far, and a group format along tokens quantizes whole groups
only, leaving a partial group in full precision as KIVI does.

With a rotated model, keys are multiplied by the per-head Hadamard matrix
before their qdq and by its transpose after; q k^T then equals the scores
of rotating queries and keys both, as QuaRot does online after RoPE.

Works with the transformers 4.x and 5.x call conventions: the cache
argument is `cache`, `past_key_values` or `past_key_value`.
"""

from __future__ import annotations

import inspect

import torch

from hwsim import formats
from hwsim.accuracy.architectures import require_llama
from hwsim.formats.spec import DialectFormat, ScaledFormat

_CACHE_ARGUMENTS = ("cache", "past_key_values", "past_key_value")


def attention_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Attention modules that write a KV cache: those with k_proj, v_proj and a layer_idx, by name."""
    return {
        name: module
        for name, module in model.named_modules()
        if hasattr(module, "k_proj") and hasattr(module, "v_proj") and hasattr(module, "layer_idx")
    }


def _tokens_group(quantizer) -> int:
    """Tokens per scale group when keys are grouped along tokens (1 when every token may be quantized alone)."""
    if quantizer.axis != -2:
        return 1
    fmt = formats.get(quantizer.format)
    if isinstance(fmt, (ScaledFormat, DialectFormat)) and fmt.granularity in ("group", "block"):
        return int(fmt.block_size)
    return 1


class QuantizingCache:
    """Stands in for an attention module's cache argument; see the module docstring."""

    def __init__(self, inner, key_quantizer, value_quantizer, key_rotation: torch.Tensor | None):
        self._inner = inner
        self._key_quantizer = key_quantizer
        self._value_quantizer = value_quantizer
        self._key_rotation = key_rotation

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        if self._inner is not None:
            keys, values = self._inner.update(key_states, value_states, layer_idx, *args, **kwargs)
        else:
            keys, values = key_states, value_states
        if self._key_quantizer is not None:
            keys = self._quantize_older(keys, self._key_quantizer, self._key_rotation)
        if self._value_quantizer is not None:
            values = self._quantize_older(values, self._value_quantizer, None)
        return keys, values

    def _quantize_older(self, states: torch.Tensor, quantizer, rotation) -> torch.Tensor:
        tokens = states.shape[-2]
        group = _tokens_group(quantizer)
        count = (tokens - getattr(quantizer, "kv_window", 0)) // group * group
        if count <= 0:
            return states
        older = states[..., :count, :]
        if rotation is not None:
            matrix = rotation.to(device=states.device, dtype=torch.float64)
            older = (older.to(torch.float64) @ matrix).to(states.dtype)
            older = (quantizer(older).to(torch.float64) @ matrix.T).to(states.dtype)
        else:
            older = quantizer(older)
        if count == tokens:
            return older
        return torch.cat([older, states[..., count:, :]], dim=-2)

    def __getattr__(self, name):
        inner = self.__dict__.get("_inner")
        if inner is None:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (attention ran without a KV cache)")
        return getattr(inner, name)


def install_kv_quantization(model: torch.nn.Module, quantizers_for, key_rotation: torch.Tensor | None = None) -> list:
    """Hook every attention module; quantizers_for(name) gives (key quantizer, value quantizer). Return the hook handles.

    Each quantizer's `kv_window` most recent tokens stay in full precision.
    """
    modules = attention_modules(model)
    if not modules:
        require_llama(model, "kv cache quantization")
        raise ValueError("kv cache quantization found no attention module with k_proj, v_proj and layer_idx in this model")
    handles = []
    for name, module in modules.items():
        key_quantizer, value_quantizer = quantizers_for(name)
        if key_quantizer is None and value_quantizer is None:
            continue
        argument = _cache_argument(module)

        def hook(module, args, kwargs, key_quantizer=key_quantizer, value_quantizer=value_quantizer, argument=argument):
            present = next((a for a in _CACHE_ARGUMENTS if a in kwargs), argument)
            kwargs[present] = QuantizingCache(kwargs.get(present), key_quantizer, value_quantizer, key_rotation)
            return args, kwargs

        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    return handles


def _cache_argument(module: torch.nn.Module) -> str:
    parameters = inspect.signature(module.forward).parameters
    for argument in _CACHE_ARGUMENTS:
        if argument in parameters:
            return argument
    raise ValueError(
        f"attention module {type(module).__name__} takes none of the cache arguments {', '.join(_CACHE_ARGUMENTS)}; "
        f"this transformers version is not supported for KV cache quantization"
    )
