"""The parameter tensors of a model, the one list that parameter counts and weight bytes come from.

Names follow the Llama layout of transformers for every architecture
("layers.*.self_attn.q_proj.weight"), with "*" standing for every layer.
OPT's fc1 and fc2 are named up_proj and down_proj here, and BERT's
attention output dense is o_proj.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwsim.workload.model import ModelSpec
from hwsim.workload.ops import TensorSpec


@dataclass(frozen=True)
class Parameter:
    """One parameter tensor, stored `copies` times (once per layer for block parameters).

    Linear weights are [out, in], as torch.nn.Linear stores them. MoE
    expert weights carry the expert axis first, [experts, out, in], and
    are `routed`: each token uses experts_per_token of the experts.
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    copies: int = 1
    routed: bool = False

    @property
    def elements(self) -> int:
        """Elements over all copies."""
        return math.prod(self.shape) * self.copies

    def tensor(self, accessed_fraction: float = 1.0) -> TensorSpec:
        """Return the weight tensor of one copy, as an op reads it."""
        return TensorSpec(self.name, "weight", self.shape, "read", self.kind, accessed_fraction)


def parameters(spec: ModelSpec) -> tuple[Parameter, ...]:
    """List the parameter tensors of `spec`. A tied LM head is listed once, as the token embedding."""
    h = spec.hidden_size
    result = [Parameter("embed_tokens.weight", (spec.vocab_size, spec.token_embedding_size), "embedding")]
    if spec.position_embedding_rows:
        result.append(Parameter("embed_positions.weight", (spec.position_embedding_rows, h), "embedding"))
    if spec.token_type_rows:
        result.append(Parameter("embed_token_types.weight", (spec.token_type_rows, h), "embedding"))
    if spec.is_encoder:
        # BERT normalises the sum of the three embeddings.
        result += _norm("embed_norm", spec, copies=1)
    if spec.token_embedding_size != h:
        result.append(Parameter("project_in.weight", (h, spec.token_embedding_size), "linear_outside_blocks"))

    result += _norm("layers.*.attn_norm", spec, spec.num_layers)
    result += _attention_parameters(spec)
    result += _norm("layers.*.mlp_norm", spec, spec.num_layers)
    result += _mlp_parameters(spec)

    if spec.final_norm:
        result += _norm("final_norm", spec, copies=1)
    if spec.token_embedding_size != h:
        result.append(Parameter("project_out.weight", (spec.token_embedding_size, h), "linear_outside_blocks"))
    if spec.has_lm_head and not spec.tie_word_embeddings:
        result.append(Parameter("lm_head.weight", (spec.vocab_size, spec.token_embedding_size), "lm_head"))
    if spec.pooler:
        result.append(Parameter("pooler.weight", (h, h), "linear_outside_blocks"))
        result.append(Parameter("pooler.bias", (h,), "bias"))
    return tuple(result)


def parameter_count(spec: ModelSpec) -> int:
    """Parameters stored, each tied tensor once."""
    return sum(p.elements for p in parameters(spec))


def active_parameter_count(spec: ModelSpec) -> int:
    """Parameters one token uses: all but the experts it is not routed to.

    The embedding table counts whole, as published active counts do
    (Mixtral-8x7B: 12.9 B of 46.7 B).
    """
    total = 0
    for p in parameters(spec):
        if p.routed:
            total += p.elements // spec.num_experts * spec.experts_per_token
        else:
            total += p.elements
    return total


def embedding_parameter_count(spec: ModelSpec) -> int:
    """Parameters of the embedding tables and of an untied LM head, as "non-embedding" counts leave them out."""
    return sum(p.elements for p in parameters(spec) if p.kind in ("embedding", "lm_head"))


def parameter_lookup(spec: ModelSpec) -> dict[str, Parameter]:
    return {p.name: p for p in parameters(spec)}


def _norm(prefix: str, spec: ModelSpec, copies: int) -> list[Parameter]:
    result = [Parameter(f"{prefix}.weight", (spec.hidden_size,), "norm", copies)]
    if spec.norm == "layernorm":
        result.append(Parameter(f"{prefix}.bias", (spec.hidden_size,), "norm", copies))
    return result


def _linear(name: str, out_features: int, in_features: int, bias: bool, copies: int) -> list[Parameter]:
    result = [Parameter(f"{name}.weight", (out_features, in_features), "linear", copies)]
    if bias:
        result.append(Parameter(f"{name}.bias", (out_features,), "bias", copies))
    return result


def _attention_parameters(spec: ModelSpec) -> list[Parameter]:
    h, layers = spec.hidden_size, spec.num_layers
    if spec.fused_qkv:
        result = _linear("layers.*.self_attn.qkv_proj", spec.query_size + 2 * spec.kv_size, h, spec.qkv_bias, layers)
    else:
        result = _linear("layers.*.self_attn.q_proj", spec.query_size, h, spec.qkv_bias, layers)
        result += _linear("layers.*.self_attn.k_proj", spec.kv_size, h, spec.qkv_bias, layers)
        result += _linear("layers.*.self_attn.v_proj", spec.kv_size, h, spec.qkv_bias, layers)
    result += _linear("layers.*.self_attn.o_proj", h, spec.query_size, spec.o_bias, layers)
    return result


def _mlp_parameters(spec: ModelSpec) -> list[Parameter]:
    h, size, layers = spec.hidden_size, spec.intermediate_size, spec.num_layers
    if spec.is_moe:
        experts = spec.num_experts
        return [
            Parameter("layers.*.moe.router.weight", (experts, h), "router", layers),
            Parameter("layers.*.moe.experts.gate_proj.weight", (experts, size, h), "linear", layers, routed=True),
            Parameter("layers.*.moe.experts.up_proj.weight", (experts, size, h), "linear", layers, routed=True),
            Parameter("layers.*.moe.experts.down_proj.weight", (experts, h, size), "linear", layers, routed=True),
        ]
    if not spec.gated_mlp:
        return _linear("layers.*.mlp.up_proj", size, h, spec.mlp_bias, layers) + _linear("layers.*.mlp.down_proj", h, size, spec.mlp_bias, layers)
    if spec.fused_gate_up:
        result = _linear("layers.*.mlp.gate_up_proj", 2 * size, h, spec.mlp_bias, layers)
    else:
        result = _linear("layers.*.mlp.gate_proj", size, h, spec.mlp_bias, layers)
        result += _linear("layers.*.mlp.up_proj", size, h, spec.mlp_bias, layers)
    return result + _linear("layers.*.mlp.down_proj", h, size, spec.mlp_bias, layers)
