"""The architectures each enabler supports, and the Llama module layout the enablers rely on.

Every enabler here folds transforms into the weights around a pre-norm
decoder block with RMSNorm, which is the Llama layout (model_type "llama";
SmolLM2 is one): input_layernorm feeds q/k/v_proj, post_attention_layernorm
feeds gate/up_proj, and down_proj and o_proj write to the residual stream.
Other architectures raise, naming the method and the reason.
"""

from __future__ import annotations

import torch

LLAMA_MODEL_TYPES = ("llama",)

_REASONS = {
    "rotate": (
        "the rotation of the residual stream is folded into the linear layers around each RMSNorm, which needs pre-norm "
        "blocks with RMSNorm (rotation-invariant once its weight is folded away); LayerNorm subtracts the mean, and a "
        "post-norm block such as BERT's normalises the residual stream itself, so the rotation cannot be folded there"
    ),
    "smoothquant": (
        "the per-channel smoothing factors are folded into the RMSNorm weight in front of q/k/v_proj and gate/up_proj; "
        "this module maps those norms to their linear layers for the Llama layout only"
    ),
    "gptq": (
        "GPTQ calibrates one decoder layer at a time by calling the Llama decoder layer with the arguments the model "
        "passes it; other layouts need their own layer loop"
    ),
    "kv cache quantization": (
        "the KV cache is quantized where an attention module with k_proj, v_proj and a layer_idx writes it; "
        "encoder models such as BERT keep no KV cache"
    ),
}


def require_llama(model: torch.nn.Module, method: str) -> None:
    """Raise ValueError unless the model has the Llama layout that `method` needs."""
    model_type = str(getattr(getattr(model, "config", None), "model_type", "unknown"))
    if model_type in LLAMA_MODEL_TYPES and hasattr(model, "model") and hasattr(model.model, "layers"):
        return
    raise ValueError(
        f"{method} is implemented for the Llama architecture (model_type 'llama', such as SmolLM2) and this model has "
        f"model_type {model_type!r}: {_REASONS[method]}. Turn {method} off for this model."
    )


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    return model.model.layers


def untie_lm_head(model: torch.nn.Module) -> None:
    """Give the LM head its own weight when it shares the embedding's, so folding into one leaves the other alone."""
    head = model.get_output_embeddings()
    embedding = model.get_input_embeddings()
    if head is not None and head.weight is embedding.weight:
        head.weight = torch.nn.Parameter(head.weight.detach().clone())
    if getattr(model.config, "tie_word_embeddings", False):
        model.config.tie_word_embeddings = False


def fold_norm_into(norm: torch.nn.Module, linears: list[torch.nn.Linear]) -> None:
    """Multiply each linear layer's input columns by the norm's weight and set that weight to ones."""
    scale = norm.weight.detach().to(torch.float64)
    for linear in linears:
        weight = linear.weight.detach().to(torch.float64) * scale[None, :]
        linear.weight.data = weight.to(linear.weight.dtype)
    norm.weight.data = torch.ones_like(norm.weight)
