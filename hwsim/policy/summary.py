"""Headline storage numbers of a bit policy on one model: bits per parameter, per activation and per KV-cache element."""

from __future__ import annotations

from dataclasses import dataclass

from hwsim.policy.overhead import BitsBreakdown
from hwsim.policy.policy import Policy

# Context length for KV-cache bits when the caller gives none; shorter for models with a shorter maximum.
DEFAULT_CONTEXT_TOKENS = 4096


@dataclass(frozen=True)
class PolicySummary:
    """Storage of one policy on one model.

    linear_weights: the linear layers inside the blocks, the parameters
        that papers quote bits per parameter for.
    all_weights: every parameter, embeddings, norms and LM head included.
    activation_bits_per_element: one token's input to the first layer's q_proj.
    kv_key_bits_per_element, kv_value_bits_per_element: the first layer's
        cache at `context_tokens` tokens, a KV window included (0 for encoders).
    """

    policy: str
    model: str
    context_tokens: int
    linear_weights: BitsBreakdown
    all_weights: BitsBreakdown
    activation_bits_per_element: float
    kv_key_bits_per_element: float
    kv_value_bits_per_element: float

    @property
    def linear_bits_per_parameter(self) -> float:
        return self.linear_weights.bits_per_element

    @property
    def model_bits_per_parameter(self) -> float:
        return self.all_weights.bits_per_element


def summarize_policy(policy: Policy, spec, *, context_tokens: int | None = None) -> PolicySummary:
    """Work out the storage of `policy` on a `hwsim.workload.ModelSpec`."""
    from hwsim.workload.ops import TensorSpec

    if context_tokens is None:
        context_tokens = min(DEFAULT_CONTEXT_TOKENS, spec.max_position_embeddings)
    if isinstance(context_tokens, bool) or not isinstance(context_tokens, int) or context_tokens < 1:
        raise ValueError(f"invalid context_tokens={context_tokens!r}: give a positive number of tokens, such as 4096")
    linear = policy.parameter_bits(spec, parameter_kinds=("linear",))
    everything = policy.parameter_bits(spec)
    activation = TensorSpec("layers.*.self_attn.q_proj.input", "activation", (1, spec.hidden_size))
    activation_bits = policy.storage_bits(activation, layer_index=0).bits_per_element
    key_bits = value_bits = 0.0
    if not spec.is_encoder:
        shape = (1, spec.num_kv_heads, context_tokens, spec.head_dim)
        key_bits = policy.storage_bits(TensorSpec("key_cache", "kv_cache", shape), layer_index=0).bits_per_element
        value_bits = policy.storage_bits(TensorSpec("value_cache", "kv_cache", shape), layer_index=0).bits_per_element
    return PolicySummary(policy.name, spec.name, context_tokens, linear, everything, activation_bits, key_bits, value_bits)
