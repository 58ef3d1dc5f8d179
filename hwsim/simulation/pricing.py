"""Turn the ops of a workload into kernel requests, with the bytes of every tensor in its policy format.

A bit policy gives each tensor a format through `format_for(tensor)`. A
policy whose `is_layer_uniform()` returns False is asked per layer,
`format_for(tensor, layer_index=i)`, and then the aggregated "layers.*" ops
are expanded into one op per layer ("layers.3.self_attn.q_proj", run once
per pass). The three attention ops of a layer (scores, softmax, context) become
one `AttentionRequest` named "<layer>.self_attn.attention".

A decode is priced in closed form: a one-token pass is affine in the number
of cached positions c, so the requests are built at c = 1 and c = 2, and
the attention quantities that change (keys, pairs, KV bytes, softmax counts)
become numpy arrays over the steps' cached positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from hwsim import formats as format_registry
from hwsim.hardware.kernels import AttentionRequest, MatmulRequest, VectorRequest
from hwsim.workload.graph import forward_ops
from hwsim.workload.model import ModelSpec
from hwsim.workload.ops import Op, TensorSpec
from hwsim.workload.parameters import parameters
from hwsim.workload.scenario import Scenario

LAYER_PREFIX = "layers.*"
ATTENTION_OPS = ("self_attn.scores", "self_attn.softmax", "self_attn.context")
MATMUL_KINDS = ("GEMM", "GEMV")


@dataclass(frozen=True)
class PricedOp:
    """One op of a forward pass as a kernel request, run `runs` times per pass."""

    name: str
    kind: str
    runs: int
    request: object
    layer: int | None = None


@lru_cache(maxsize=65536)
def _storage_bytes(fmt: str, shape: tuple[int, ...]) -> float:
    return format_registry.get(fmt).storage_bits(shape, axis=-1) / 8


def tensor_bytes(tensor: TensorSpec, fmt: str) -> float:
    """Bytes of the part of `tensor` an op touches, stored in `fmt` with its scales."""
    if tensor.elements == 0:
        return 0.0
    return _storage_bytes(fmt, tuple(int(s) for s in tensor.shape)) * tensor.accessed_fraction


def is_layer_uniform(policy) -> bool:
    """Return whether `policy` gives every layer the same formats (policies without `is_layer_uniform` do)."""
    check = getattr(policy, "is_layer_uniform", None)
    return True if check is None else bool(check())


def format_of(policy, tensor: TensorSpec, layer: int | None) -> str:
    if layer is None:
        return str(policy.format_for(tensor))
    return str(policy.format_for(tensor, layer_index=layer))


class PassPricer:
    """Prices the ops of forward passes of one model under one policy."""

    def __init__(self, spec: ModelSpec, policy, batch_size: int) -> None:
        self.spec = spec
        self.policy = policy
        self.batch_size = batch_size
        self.per_layer = not is_layer_uniform(policy)

    def price(self, ops: tuple[Op, ...]) -> list[PricedOp]:
        """Requests for the ops of one pass, attention fused, layers expanded when the policy varies by layer."""
        by_name = {op.name: op for op in ops}
        priced: list[PricedOp] = []
        for op in ops:
            prefix, _, suffix = op.name.rpartition(".self_attn.")
            if suffix in ("softmax", "context"):
                continue
            layers = self._layers(op)
            for layer in layers:
                name = op.name if layer is None else op.name.replace(LAYER_PREFIX, f"layers.{layer}", 1)
                runs = op.count if layer is None else 1
                if suffix == "scores":
                    softmax = by_name[f"{prefix}.self_attn.softmax"]
                    context = by_name[f"{prefix}.self_attn.context"]
                    request = self._attention(name.replace(".scores", ".attention"), op, softmax, context, layer)
                    priced.append(PricedOp(request.name, "attention", runs, request, layer))
                elif op.kind in MATMUL_KINDS:
                    priced.append(PricedOp(name, op.kind, runs, self._matmul(name, op, layer), layer))
                else:
                    priced.append(PricedOp(name, op.kind, runs, self._vector(name, op, layer), layer))
        return priced

    def _layers(self, op: Op) -> list[int | None]:
        if self.per_layer and op.name.startswith(LAYER_PREFIX):
            return list(range(op.count))
        return [None]

    def _bytes(self, op: Op, layer, role: str, access: str = "read") -> tuple[float, str | None]:
        """Total bytes and the format of the first tensor of `op` with this role and access."""
        total, first = 0.0, None
        for tensor in op.tensors:
            if tensor.role == role and tensor.access == access:
                fmt = format_of(self.policy, tensor, layer)
                total += tensor_bytes(tensor, fmt)
                first = first or fmt
        return total, first

    def _matmul(self, name: str, op: Op, layer) -> MatmulRequest:
        activation_bytes, activation_format = self._bytes(op, layer, "activation")
        weight_bytes, weight_format, bias_bytes = 0.0, None, 0.0
        for tensor in op.tensors:
            if tensor.role != "weight":
                continue
            fmt = format_of(self.policy, tensor, layer)
            if tensor.parameter_kind == "bias":
                bias_bytes += tensor_bytes(tensor, fmt)
            else:
                weight_bytes += tensor_bytes(tensor, fmt)
                weight_format = weight_format or fmt
        output_bytes, output_format = self._bytes(op, layer, "output", "write")
        m, batch = op.m, op.batch
        if op.routing is not None:
            # A grouped GEMM over the experts that receive tokens, each with its share of the routed rows.
            batch = max(1, round(op.routing.expected_active_experts))
            m = max(1, math.ceil(op.m / batch))
        return MatmulRequest(name, m, op.n, op.k, activation_format, weight_format, output_format or activation_format,
                             activation_bytes, weight_bytes, output_bytes, batch, bias_bytes)

    def _vector(self, name: str, op: Op, layer) -> VectorRequest:
        activation_bytes, activation_format = self._bytes(op, layer, "activation")
        weight_bytes, _ = self._bytes(op, layer, "weight")
        output_bytes, output_format = self._bytes(op, layer, "output", "write")
        kv_bytes, _ = self._bytes(op, layer, "kv_cache", "write")
        return VectorRequest(name, float(op.elementwise_ops), float(op.nonlinear_ops), activation_bytes, weight_bytes,
                             output_bytes, kv_bytes, activation_format or output_format or "fp16")

    def _attention(self, name: str, scores: Op, softmax: Op, context: Op, layer) -> AttentionRequest:
        spec, batch = self.spec, self.batch_size
        query = next(t for t in scores.tensors if t.name == "query")
        query_format = format_of(self.policy, query, layer)
        kv_tensors = [t for t in (*scores.tensors, *context.tensors) if t.name in ("key", "value", "key_cache", "value_cache")]
        cache = [t for t in kv_tensors if t.role == "kv_cache"]
        kv_format = format_of(self.policy, cache[0] if cache else kv_tensors[0], layer)
        kv_bytes = sum(tensor_bytes(t, format_of(self.policy, t, layer)) for t in kv_tensors)
        output = next(t for t in context.tensors if t.role == "output")
        output_format = format_of(self.policy, output, layer)
        pairs = scores.macs // (batch * spec.num_attention_heads * spec.head_dim)
        return AttentionRequest(
            name=name, batch_size=batch, heads=spec.num_attention_heads, kv_heads=spec.num_kv_heads, head_dim=spec.head_dim,
            query_tokens=scores.m, key_tokens=scores.n, pairs=pairs, query_format=query_format, kv_format=kv_format,
            output_format=output_format, query_bytes=tensor_bytes(query, query_format), kv_read_bytes=kv_bytes,
            output_bytes=tensor_bytes(output, output_format), softmax_elementwise_ops=float(softmax.elementwise_ops),
            softmax_nonlinear_ops=float(softmax.nonlinear_ops),
        )


# Attention fields that grow with the cached positions of a decode step.
STEP_FIELDS = ("key_tokens", "pairs", "kv_read_bytes", "softmax_elementwise_ops", "softmax_nonlinear_ops")


def price_phase(spec: ModelSpec, policy, scenario: Scenario, *, causal_mask_halving: bool = True) -> list[PricedOp]:
    """Requests for one pass of a prefill, or for every step of a decode (attention fields as arrays over steps)."""
    pricer = PassPricer(spec, policy, scenario.batch_size)
    batch = scenario.batch_size
    if scenario.phase == "prefill":
        ops = forward_ops(spec, batch, scenario.context_tokens, 0, causal_mask_halving=causal_mask_halving)
        return pricer.price(ops)

    cached = scenario.cached_tokens_per_step(spec.sliding_window).astype(np.float64)
    at_one = pricer.price(forward_ops(spec, batch, 1, 1, causal_mask_halving=causal_mask_halving))
    at_two = pricer.price(forward_ops(spec, batch, 1, 2, causal_mask_halving=causal_mask_halving))
    priced = []
    for first, second in zip(at_one, at_two):
        assert first.name == second.name, "decode passes must list the same ops"
        if first.request == second.request:
            priced.append(first)
            continue
        assert first.kind == "attention", f"only attention grows with the cached positions, not {first.name}"
        # Each field is affine in c, so f(c) = f(1) + (f(2) - f(1)) * (c - 1) for the cached positions of every step.
        changes = {}
        for field_name in STEP_FIELDS:
            value_one = float(getattr(first.request, field_name))
            value_two = float(getattr(second.request, field_name))
            changes[field_name] = value_one + (value_two - value_one) * (cached - 1.0)
        priced.append(replace(first, request=replace(first.request, **changes)))
    return priced


def weight_bytes(spec: ModelSpec, policy) -> float:
    """Bytes of all parameters in their policy formats, each tied tensor once, per layer when the policy varies by layer."""
    per_layer = not is_layer_uniform(policy)
    total = 0.0
    for parameter in parameters(spec):
        tensor = parameter.tensor()
        if per_layer and parameter.name.startswith(LAYER_PREFIX):
            total += sum(tensor_bytes(tensor, format_of(policy, tensor, layer)) for layer in range(parameter.copies))
        else:
            total += tensor_bytes(tensor, format_of(policy, tensor, None)) * parameter.copies
    return total


def kv_cache_bytes(spec: ModelSpec, policy, batch_size: int, tokens: int) -> float:
    """Bytes of the KV cache of `batch_size` sequences of `tokens` positions, scales included (0 for an encoder)."""
    if spec.is_encoder:
        return 0.0
    positions = tokens if spec.sliding_window is None else min(tokens, spec.sliding_window)
    shape = (batch_size, spec.num_kv_heads, positions, spec.head_dim)
    total = 0.0
    for layer in range(spec.num_layers) if not is_layer_uniform(policy) else [None]:
        for name in ("key_cache", "value_cache"):
            tensor = TensorSpec(name, "kv_cache", shape, "write")
            total += tensor_bytes(tensor, format_of(policy, tensor, layer))
    return total if not is_layer_uniform(policy) else total * spec.num_layers
