"""Build a quantized copy of a model from an `AccuracyConfig`.

The copy gets, in this order:
1. SmoothQuant migration and Hadamard rotations, folded into its weights;
2. weights quantized once: by GPTQ from calibration data, or by
   round-to-nearest (the config's rounding mode) with `hwsim.accuracy.torch_qdq`;
3. a forward pre-hook on every linear layer that quantizes its input on
   the fly (after the online Hadamard transform of a rotated down_proj);
4. optionally, chosen linear layers computed by `hwsim.arith.matmul`
   instead, bit-accurate, for spot checks of accumulator effects (the
   emulation quantizes the input itself, so these layers skip step 3);
5. KV-cache quantization hooks on the attention modules.
Which tensor gets which format is asked of `quantizer_for` only. The
embedding table is not a linear layer and stays in full precision.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from hwsim.accuracy.architectures import require_llama
from hwsim.accuracy.config import AccuracyConfig, matches, quantizer_for
from hwsim.accuracy.kv_cache import install_kv_quantization
from hwsim.accuracy.models import LoadedModel
from hwsim.accuracy.rotation import Rotation, rotate_llama

log = logging.getLogger(__name__)


@dataclass
class QuantizedModel:
    """A quantized copy of `base.model`, with what was done to it.

    rotation: the rotations folded into the weights, or None.
    gptq_layers: linear layers whose weights GPTQ rounded.
    notes: statements every result on this model carries.
    """

    base: LoadedModel
    config: AccuracyConfig
    model: torch.nn.Module
    rotation: Rotation | None = None
    gptq_layers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def output_map(self, layer_name: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Function taking this model's output of a linear layer back to the original model's basis, or None if it is the same."""
        if self.rotation is None:
            return None
        if layer_name.endswith(("self_attn.o_proj", "mlp.down_proj")):
            return self.rotation.unrotate_residual
        if layer_name.endswith("self_attn.v_proj"):
            return self.rotation.unrotate_heads
        return None


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]


def describe_layer_names(names: list[str]) -> str:
    """Layer names with block indices folded: 'model.layers.{0..29}.mlp.up_proj, lm_head'."""
    indices: dict[str, list[int]] = {}
    order: list[str] = []
    for name in names:
        match = re.search(r"\.(\d+)\.", name)
        key = name if match is None else name[: match.start()] + ".{}." + name[match.end():]
        if key not in indices:
            indices[key] = []
            order.append(key)
        if match is not None:
            indices[key].append(int(match.group(1)))
    parts = []
    for key in order:
        found = indices[key]
        parts.append(key if not found else key.replace("{}", f"{{{min(found)}..{max(found)}}}" if len(found) > 1 else str(found[0])))
    return ", ".join(parts)


def _check_patterns(config: AccuracyConfig, names: list[str], model_name: str) -> None:
    for field_name in ("keep", "arith_layers"):
        for pattern in getattr(config, field_name):
            if not matches_any(pattern, names):
                raise ValueError(
                    f"{field_name} pattern {pattern!r} matches no linear layer of {model_name}; "
                    f"its linear layers are: {describe_layer_names(names)}"
                )


def matches_any(pattern: str, names: list[str]) -> bool:
    return any(matches(name, (pattern,)) for name in names)


def _arith_matmul():
    """(hwsim.arith.matmul, hwsim.arith.MacSpec), or None when this installation lacks them."""
    try:
        from hwsim.arith import MacSpec, matmul
    except ImportError:
        return None
    return matmul, MacSpec


def _check_methods(config: AccuracyConfig, model: torch.nn.Module) -> None:
    if config.rotate:
        require_llama(model, "rotate")
    if config.smoothquant_alpha is not None:
        require_llama(model, "smoothquant")
    if config.gptq:
        require_llama(model, "gptq")
    if config.arith_layers and _arith_matmul() is None:
        raise ValueError("arith_layers needs hwsim.arith.matmul, which this installation of hwsim lacks; leave arith_layers empty")


@torch.no_grad()
def quantize_model(base: LoadedModel, config: AccuracyConfig, *, calibration: list[torch.Tensor] | None = None,
                   progress: Callable | None = None) -> QuantizedModel:
    """Return a quantized copy of base.model; base.model itself is left unchanged.

    calibration: token batches (LongTensor [1, tokens]) for SmoothQuant and GPTQ.
    """
    names = linear_layer_names(base.model)
    _check_patterns(config, names, base.name)
    _check_methods(config, base.model)
    if config.calibrated and not calibration:
        raise ValueError(
            "SmoothQuant, GPTQ and policy subsets chosen from calibration data need calibration batches: "
            "pass calibration=[token tensors], or use hwsim.accuracy.calibration_batches"
        )

    model = copy.deepcopy(base.model)
    model.eval()
    quantized = QuantizedModel(base=base, config=config, model=model)
    if base.weight_note and config.weight is not None:
        quantized.notes.append(base.weight_note)

    if config.smoothquant_alpha is not None:
        from hwsim.accuracy.smoothquant import smooth_llama

        smooth_llama(model, calibration, config.smoothquant_alpha)
    if config.rotate:
        quantized.rotation = rotate_llama(model, config.seed)

    modules = dict(model.named_modules())
    output_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    lm_head_name = next((name for name in names if modules[name] is output_head), None)

    if quantized.rotation is not None:
        for name in names:
            if name.endswith("mlp.down_proj"):
                modules[name].register_forward_pre_hook(_input_hook(quantized.rotation.mlp))
    scores = {}
    if config.policy is not None:
        scores = _subset_calibration(model, config, names, modules, lm_head_name, calibration)

    def weight_quantizer(name):
        return quantizer_for(config, name, "weight", lm_head_name=lm_head_name, calibration=scores)
    if config.gptq:
        from hwsim.accuracy.gptq import gptq_llama

        quantized.gptq_layers = gptq_llama(model, calibration, weight_quantizer, progress)
    for name in names:
        quantizer = weight_quantizer(name)
        if quantizer is not None and name not in quantized.gptq_layers:
            module = modules[name]
            module.weight.data = quantizer(module.weight.data)

    shared = _SharedInputs()
    for name in names:
        quantizer = quantizer_for(config, name, "input", lm_head_name=lm_head_name, calibration=scores)
        if matches(name, config.arith_layers):
            _install_arith(modules[name], quantizer, weight_quantizer(name), config)
        elif quantizer is not None:
            modules[name].register_forward_pre_hook(_input_hook(lambda x, quantizer=quantizer: shared(quantizer, x)))

    # A policy's KV rules have nothing to apply to in an encoder, while a config that names KV formats for one is an error.
    if _quantizes_kv(config) and not (config.policy is not None and base.kind == "encoder"):
        key_rotation = quantized.rotation.head if quantized.rotation is not None else None
        install_kv_quantization(
            model,
            lambda name: (quantizer_for(config, name, "key"), quantizer_for(config, name, "value")),
            key_rotation=key_rotation,
        )
    log.info("quantized %s with %s", base.name, config.label)
    return quantized


def _quantizes_kv(config: AccuracyConfig) -> bool:
    if config.policy is None:
        return config.key is not None or config.value is not None
    return any(rule.quantizer is not None and set(rule.roles) & {"kv_key", "kv_value"} for rule in config.policy.rules)


def _subset_calibration(model, config: AccuracyConfig, names, modules, lm_head_name, batches) -> dict:
    """(scores, basis) of each policy subset chosen from calibration data, keyed by (layer name, role)."""
    from hwsim.accuracy.policy_path import input_scores, needs_calibration, needs_fisher, weight_scores
    from hwsim.policy.sensitivity import capture_inputs, causal_lm_loss, fisher_information

    plans = {}
    for name in names:
        rules = {role: quantizer_for(config, name, role, lm_head_name=lm_head_name) for role in ("weight", "input")}
        rules = {role: getattr(q, "quantizer", None) for role, q in rules.items()}
        if any(needs_calibration(q) for q in rules.values()):
            plans[name] = rules
    if not plans:
        return {}
    inputs = capture_inputs(model, batches, {name: modules[name] for name in plans})
    fisher_layers = {name: modules[name] for name, rules in plans.items() if needs_fisher(rules["weight"])}
    fisher = {}
    if fisher_layers:
        with torch.enable_grad():
            fisher = fisher_information(model, causal_lm_loss, batches, layers=fisher_layers)
    scores = {}
    for name, rules in plans.items():
        if rules["weight"] is not None:
            scores[(name, "weight")] = weight_scores(rules["weight"], modules[name].weight, inputs[name], fisher.get(name))
        if rules["input"] is not None:
            shared = scores.get((name, "weight"), (None, None))[1]
            if shared is not None and rules["input"].subset.kind == "pca_subspace":
                # Weights and inputs of a layer share the principal directions, so X W^T stays the same before rounding.
                scores[(name, "input")] = (None, shared)
            else:
                scores[(name, "input")] = input_scores(rules["input"], inputs[name])
    log.info("chose policy subsets of %d linear layers from calibration data", len(plans))
    return scores


class _SharedInputs:
    """The last input each quantizer saw and its qdq, so layers fed one tensor (q/k/v_proj, gate/up_proj) quantize it once."""

    def __init__(self):
        self._last: dict = {}

    def __call__(self, quantizer, x: torch.Tensor) -> torch.Tensor:
        last = self._last.get(quantizer)
        if last is not None and last[0] is x and last[1] == x._version:
            return last[2]
        y = quantizer(x)
        self._last[quantizer] = (x, x._version, y)
        return y


def _input_hook(transform):
    def hook(module, args):
        return (transform(args[0]), *args[1:])

    return hook


def _install_arith(module: torch.nn.Linear, input_quantizer, weight_quantizer, config: AccuracyConfig) -> None:
    """Compute the layer with hwsim.arith.matmul: operands in the layer's input and weight formats, K along in_features.

    The weight is quantized already. Quantizing it again in the same format
    along the same axis returns the same values, so matmul's own qdq leaves it.
    """
    matmul, mac_spec = _arith_matmul()
    mac = mac_spec(
        a=input_quantizer.format if input_quantizer else "fp32",
        b=weight_quantizer.format if weight_quantizer else "fp32",
        accumulator=config.arith_accumulator,
        order=config.arith_order,
    )

    def hook(module, args, output):
        x = args[0].detach()
        a = x.reshape(-1, x.shape[-1]).to(torch.float32).cpu().numpy()
        b = module.weight.detach().to(torch.float32).T.contiguous().cpu().numpy()
        y = torch.from_numpy(np.asarray(matmul(a, b, mac).values)).to(device=output.device, dtype=output.dtype)
        if module.bias is not None:
            y = y + module.bias
        return y.reshape(output.shape)

    module.register_forward_hook(hook)
