"""SmoothQuant migration for a Llama model (Xiao et al., "SmoothQuant", ICML 2023).

Activations have a few channels with large magnitudes and weights do not,
so SmoothQuant divides each input channel j of a linear layer by
s_j = max|X_j|**alpha / max|W_j|**(1 - alpha) and multiplies the weight
column by s_j, which leaves the product unchanged. The division is folded
into the RMSNorm weight in front, so it costs nothing at run time:
input_layernorm for q/k/v_proj (which share the input, so max|W_j| runs
over all three) and post_attention_layernorm for gate/up_proj. max|X_j|
comes from calibration text. Both maxima are clamped below at 1e-5, as the
reference implementation does. down_proj and o_proj keep their inputs.
"""

from __future__ import annotations

import torch

from hwsim.accuracy.architectures import decoder_layers, require_llama

_MIN_SCALE = 1e-5


@torch.no_grad()
def input_channel_amax(model: torch.nn.Module, linears: dict[str, torch.nn.Linear], batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Largest |x| per input channel of each named linear layer over the calibration batches (float64)."""
    amax: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).abs().amax(dim=0).to(torch.float64)
            amax[name] = torch.maximum(amax[name], x) if name in amax else x

        return hook

    handles = [linear.register_forward_pre_hook(record(name)) for name, linear in linears.items()]
    try:
        for batch in batches:
            model(batch.to(next(model.parameters()).device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return amax


def smooth_llama(model: torch.nn.Module, batches: list[torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """Fold SmoothQuant's per-channel factors into a Llama model in place; return them by norm name."""
    require_llama(model, "smoothquant")
    layers = decoder_layers(model)
    probes = {}
    for index, layer in enumerate(layers):
        probes[f"{index}.attention"] = layer.self_attn.q_proj
        probes[f"{index}.mlp"] = layer.mlp.gate_proj
    amax = input_channel_amax(model, probes, batches)

    factors = {}
    for index, layer in enumerate(layers):
        attention, feed_forward = layer.self_attn, layer.mlp
        pairs = (
            ("input_layernorm", layer.input_layernorm, [attention.q_proj, attention.k_proj, attention.v_proj], f"{index}.attention"),
            ("post_attention_layernorm", layer.post_attention_layernorm, [feed_forward.gate_proj, feed_forward.up_proj], f"{index}.mlp"),
        )
        for norm_name, norm, linears, probe in pairs:
            weight_amax = torch.cat([linear.weight.detach().abs() for linear in linears], dim=0).amax(dim=0).to(torch.float64)
            activation_amax = amax[probe].clamp(min=_MIN_SCALE)
            scale = (activation_amax.pow(alpha) / weight_amax.clamp(min=_MIN_SCALE).pow(1.0 - alpha)).clamp(min=_MIN_SCALE)
            norm.weight.data = (norm.weight.detach().to(torch.float64) / scale).to(norm.weight.dtype)
            for linear in linears:
                linear.weight.data = (linear.weight.detach().to(torch.float64) * scale[None, :]).to(linear.weight.dtype)
            factors[f"model.layers.{index}.{norm_name}"] = scale
    return factors
