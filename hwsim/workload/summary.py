"""Per-model summaries: parameters, FLOPs per token, weight bytes and KV-cache bytes per token.

Bytes come from the format that a bit policy gives each tensor, through
`Format.storage_bits(shape, axis=-1)`, so scale overhead is counted exactly:
per group, per channel, per token or per tensor. A tensor takes whole bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwsim import formats
from hwsim.policy import UniformPolicy
from hwsim.workload.model import ModelSpec
from hwsim.workload.ops import TensorSpec
from hwsim.workload.parameters import active_parameter_count, embedding_parameter_count, parameter_count, parameters
from hwsim.workload.scenario import Scenario
from hwsim.workload.workload import build_workload


@dataclass(frozen=True)
class ModelSummary:
    """Headline numbers of one model under one bit policy.

    `flops_per_token` is for the last token of a context of `context_tokens`
    tokens on a decoder, which attends to all of them, itself included
    (batch 1). For an encoder it is a forward pass of `context_tokens` tokens
    divided by that count. Encoders have no KV cache, so their
    `kv_cache_bytes_per_token` is 0.
    """

    name: str
    model_type: str
    parameters: int
    active_parameters: int
    embedding_parameters: int
    context_tokens: int
    flops_per_token: int
    policy: str
    weight_bytes: int
    kv_cache_bytes_per_token: int


def tensor_bytes(tensor: TensorSpec, policy) -> int:
    """Bytes to store `tensor` whole in the format `policy.format_for(tensor)`, rounded up to a byte."""
    fmt = formats.get(policy.format_for(tensor))
    return math.ceil(fmt.storage_bits(tensor.shape, axis=-1) / 8)


def weight_bytes(spec: ModelSpec, policy=None) -> int:
    """Bytes of all parameters, each tied tensor once; the default policy stores everything in fp16."""
    policy = policy or UniformPolicy()
    return sum(tensor_bytes(p.tensor(), policy) * p.copies for p in parameters(spec))


def kv_cache_bytes_per_token(spec: ModelSpec, policy=None) -> int:
    """KV-cache bytes that one token of one sequence adds over all layers.

    It is what one decode step writes: for each layer a key and a value of
    [KV heads, head dim], with the scales of the policy's KV format. For
    fp16 that is 2 * layers * KV heads * head dim * 2 bytes.
    """
    if spec.is_encoder:
        return 0
    policy = policy or UniformPolicy()
    step = build_workload(spec, Scenario.decode(batch_size=1, context_tokens=1, generated_tokens=1))
    total = 0
    for op in step.ops:
        for tensor in op.tensors:
            if tensor.role == "kv_cache" and tensor.access == "write":
                total += op.count * tensor_bytes(tensor, policy)
    return total


def flops_per_token(spec: ModelSpec, context_tokens: int, *, causal_mask_halving: bool = True) -> int:
    """FLOPs of one token in a context of `context_tokens` tokens (see ModelSummary)."""
    if spec.is_encoder:
        workload = build_workload(spec, Scenario.prefill(1, context_tokens), causal_mask_halving=causal_mask_halving)
        return workload.total().flops // context_tokens
    if context_tokens == 1:
        # A first token has nothing cached: a one-token prefill is the same pass.
        scenario = Scenario.prefill(1, 1)
    else:
        scenario = Scenario.decode(1, context_tokens - 1, 1)
    return build_workload(spec, scenario, causal_mask_halving=causal_mask_halving).total().flops


def summarize(spec: ModelSpec, policy=None, context_tokens: int | None = None) -> ModelSummary:
    """Summarise `spec` under `policy` (default all fp16).

    `context_tokens` defaults to 2048 tokens, or max_position_embeddings
    when that is shorter.
    """
    policy = policy or UniformPolicy()
    context = context_tokens if context_tokens is not None else min(2048, spec.max_position_embeddings)
    return ModelSummary(
        name=spec.name,
        model_type=spec.model_type,
        parameters=parameter_count(spec),
        active_parameters=active_parameter_count(spec),
        embedding_parameters=embedding_parameter_count(spec),
        context_tokens=context,
        flops_per_token=flops_per_token(spec, context),
        policy=str(policy),
        weight_bytes=weight_bytes(spec, policy),
        kv_cache_bytes_per_token=kv_cache_bytes_per_token(spec, policy),
    )
