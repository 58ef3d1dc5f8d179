"""Kernel-level requests that the LM simulation sends to an accelerator model, and their costs.

Three kinds of work cover a transformer forward pass:

- `MatmulRequest`: `batch` products of [m, k] activations by [k, n] weights
  (linear layers, the LM head, grouped MoE experts);
- `AttentionRequest`: the scores, softmax and context of one attention layer,
  which a GPU runs as one fused FlashAttention-style kernel;
- `VectorRequest`: elementwise and reduction work (norms, residual adds,
  activation functions, rotary embedding, KV-cache writes, gathers).

Bytes are given per tensor role because accelerators keep different roles
in different places (weights may stay in an NPU's SRAM, the KV cache stays
off chip). Shapes and counts may be numpy arrays of one shape, one element
per decode step, so that a whole decode is priced in one vectorised call.

Every model returns a `KernelCost` with arrays (or floats) of that shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ENERGY_COMPONENTS = ("compute", "sram", "dram", "static")


@dataclass(frozen=True)
class MatmulRequest:
    """`batch` products C[m, n] = A[m, k] @ B[k, n]; byte counts are totals over the batch.

    `weight_bytes` is the weight matrix alone; a bias, added in the
    epilogue, is `bias_bytes`.
    """

    name: str
    m: int
    n: int
    k: int
    activation_format: str
    weight_format: str
    output_format: str
    activation_bytes: float
    weight_bytes: float
    output_bytes: float
    batch: int = 1
    bias_bytes: float = 0.0

    @property
    def macs(self) -> float:
        return float(self.batch) * self.m * self.n * self.k


@dataclass(frozen=True)
class AttentionRequest:
    """One attention layer over `batch_size` sequences: scores, softmax and context.

    `pairs` counts the (query, key) pairs per sequence and head that are
    computed (the causal mask halves a prompt's), and `key_tokens` the keys
    that the last query row attends to. Both may be arrays over decode steps, as may the KV
    bytes read and the softmax counts.
    """

    name: str
    batch_size: int
    heads: int
    kv_heads: int
    head_dim: int
    query_tokens: int
    key_tokens: object
    pairs: object
    query_format: str
    kv_format: str
    output_format: str
    query_bytes: float
    kv_read_bytes: object
    output_bytes: float
    softmax_elementwise_ops: object
    softmax_nonlinear_ops: object

    @property
    def macs(self):
        """Multiply-accumulates of the scores and the context products together."""
        return 2.0 * self.batch_size * self.heads * np.asarray(self.pairs, dtype=np.float64) * self.head_dim

    @property
    def group_size(self) -> int:
        """Query heads that share one KV head (1 for multi-head attention)."""
        return max(1, self.heads // max(1, self.kv_heads))


@dataclass(frozen=True)
class VectorRequest:
    """Elementwise or reduction work: counts of one run and the bytes it reads and writes, by role."""

    name: str
    elementwise_ops: float
    nonlinear_ops: float
    activation_bytes: float
    weight_bytes: float
    output_bytes: float
    kv_write_bytes: float = 0.0
    element_format: str = "fp16"


@dataclass
class KernelCost:
    """Cost of one request: time, energy by component, bytes by memory level, utilisation and bound.

    Values are floats or numpy arrays of one shape. `compute_s` and
    `memory_s` are the times the compute units and the memory system need,
    and `overhead_s` is the fixed launch or dispatch time. `latency_s` is
    the time the kernel takes. `bound` names what sets the latency: "compute",
    "memory", "overhead" or "power".
    """

    latency_s: object
    compute_s: object
    memory_s: object
    overhead_s: object
    energy_j: dict[str, object]
    traffic: dict[str, tuple[object, object]]
    macs: object
    utilization: object
    bound: object
    notes: tuple[str, ...] = field(default=())

    @property
    def total_energy_j(self):
        return sum(self.energy_j.get(component, 0.0) for component in ENERGY_COMPONENTS)


def bound_of(compute_s, memory_s, overhead_s):
    """Name what dominates: "compute" or "memory", or "overhead" when the fixed cost exceeds both."""
    if all(isinstance(x, (int, float)) for x in (compute_s, memory_s, overhead_s)):
        if overhead_s > max(compute_s, memory_s):
            return "overhead"
        return "compute" if compute_s >= memory_s else "memory"
    compute_s, memory_s, overhead_s = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (compute_s, memory_s, overhead_s)))
    bound = np.where(compute_s >= memory_s, "compute", "memory")
    bound = np.where(overhead_s > np.maximum(compute_s, memory_s), "overhead", bound)
    return bound if bound.ndim else str(bound)


def apply_power_limit(cost: KernelCost, power_limit_w: float, static_power_w: float) -> KernelCost:
    """Stretch the latency where the dynamic energy would exceed the power left above static power.

    A device held to `power_limit_w` cannot draw more on average, so a kernel
    whose dynamic energy over its latency exceeds `power_limit_w -
    static_power_w` takes energy / that power instead, and is "power" bound.
    Static energy is recomputed for the new latency.
    """
    budget_w = power_limit_w - static_power_w
    if budget_w <= 0:
        raise ValueError(
            f"static power {static_power_w} W is not below the power limit {power_limit_w} W; lower static_power_w in the accelerator spec"
        )
    dynamic_j = sum(np.asarray(cost.energy_j[c], dtype=np.float64) for c in ("compute", "sram", "dram"))
    latency = np.asarray(cost.latency_s, dtype=np.float64)
    limited = dynamic_j / budget_w
    throttled = limited > latency
    if not np.any(throttled):
        return cost
    new_latency = np.maximum(latency, limited)
    cost.bound = np.where(throttled, "power", np.asarray(cost.bound)) if np.ndim(new_latency) else "power"
    cost.utilization = np.asarray(cost.utilization) * latency / new_latency
    cost.latency_s = new_latency if np.ndim(new_latency) else float(new_latency)
    cost.energy_j = dict(cost.energy_j, static=static_power_w * new_latency)
    return cost
