"""Ops and the tensors they touch: frozen specs with counts and no bytes.

Bytes come from a bit policy, which gives each tensor a format; the format
then counts its scale overhead with `storage_bits(shape)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

OpKind = Literal["GEMM", "GEMV", "attention", "elementwise", "reduction"]
TensorRole = Literal["weight", "activation", "kv_cache", "output"]
Access = Literal["read", "write"]

OP_KINDS = ("GEMM", "GEMV", "attention", "elementwise", "reduction")
TENSOR_ROLES = ("weight", "activation", "kv_cache", "output")
# Kinds of weight tensor, which a bit policy may treat differently:
# - linear: matrices of the linear layers inside the blocks, MoE experts included;
# - router: the MoE router; lm_head: the LM head;
# - linear_outside_blocks: OPT's project_in and project_out, BERT's pooler;
# - embedding: token, position and token-type tables;
# - norm: norm scales and shifts; bias: biases of linear layers.
PARAMETER_KINDS = ("linear", "router", "lm_head", "linear_outside_blocks", "embedding", "norm", "bias")


@dataclass(frozen=True)
class TensorSpec:
    """One tensor an op reads or writes.

    `shape` is the layout that storage is counted on, with the scale axis
    last: [out, in] for a linear weight (per-channel scales per output
    channel, groups along the input), [batch, kv heads, tokens, head dim]
    for the KV cache (per-token scales per head and token). For a
    partly read tensor, `accessed_fraction` is the expected share of
    `shape` that the op reads; MoE expert weights use it.
    """

    name: str
    role: TensorRole
    shape: tuple[int, ...]
    access: Access = "read"
    parameter_kind: str = ""
    accessed_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.role not in TENSOR_ROLES:
            raise ValueError(f"tensor {self.name!r}: invalid role {self.role!r}; choose one of {', '.join(TENSOR_ROLES)}")
        if self.access not in ("read", "write"):
            raise ValueError(f"tensor {self.name!r}: invalid access {self.access!r}; choose 'read' or 'write'")
        if any(int(s) != s or s < 0 for s in self.shape):
            raise ValueError(f"tensor {self.name!r}: invalid shape {self.shape}; dimensions must be non-negative integers")
        if self.role == "weight" and self.parameter_kind not in PARAMETER_KINDS:
            raise ValueError(
                f"weight tensor {self.name!r}: invalid parameter_kind {self.parameter_kind!r}; choose one of {', '.join(PARAMETER_KINDS)}"
            )
        if not 0.0 <= self.accessed_fraction <= 1.0:
            raise ValueError(f"tensor {self.name!r}: accessed_fraction={self.accessed_fraction} must be between 0 and 1")

    @property
    def elements(self) -> int:
        """Elements in `shape`."""
        return math.prod(self.shape)

    @property
    def accessed_elements(self) -> float:
        """Expected elements the op reads or writes: `elements` times `accessed_fraction`."""
        return self.elements * self.accessed_fraction


@dataclass(frozen=True)
class MoERouting:
    """Routing of one MoE layer, under the assumption that the router spreads tokens uniformly.

    Each of `tokens` picks `top_k` distinct experts out of `experts`. Real
    routers are skewed, so the expected counts are a lower bound on the load
    of the busiest expert.
    """

    experts: int
    top_k: int
    tokens: int

    @property
    def expected_tokens_per_expert(self) -> float:
        """tokens * top_k / experts."""
        return self.tokens * self.top_k / self.experts

    @property
    def expected_active_experts(self) -> float:
        """Experts that receive at least one token: experts * (1 - (1 - top_k/experts)**tokens)."""
        return self.experts * (1.0 - (1.0 - self.top_k / self.experts) ** self.tokens)


@dataclass(frozen=True)
class Op:
    """One op of a forward pass, run `count` times per pass (once per layer for block ops).

    For GEMM, GEMV and attention ops, each of `batch` products multiplies an
    [m, k] matrix by a [k, n] matrix. For elementwise and reduction ops, `m`
    rows of `n` elements go in and `k` is 0. All counts are for one run:

    - `macs`: multiply-accumulates;
    - `elementwise_ops`: adds, multiplies and compares outside the MACs;
    - `nonlinear_ops`: evaluations of a nonlinear function (exp, SiLU,
      GELU, ReLU, tanh, rsqrt, reciprocal, sin and cos), each counted once.
    """

    name: str
    kind: OpKind
    m: int
    n: int
    k: int = 0
    batch: int = 1
    macs: int = 0
    elementwise_ops: int = 0
    nonlinear_ops: int = 0
    tensors: tuple[TensorSpec, ...] = ()
    count: int = 1
    routing: MoERouting | None = field(default=None)

    def __post_init__(self) -> None:
        if self.kind not in OP_KINDS:
            raise ValueError(f"op {self.name!r}: invalid kind {self.kind!r}; choose one of {', '.join(OP_KINDS)}")
        for label in ("m", "n", "k", "batch", "macs", "elementwise_ops", "nonlinear_ops", "count"):
            if getattr(self, label) < 0:
                raise ValueError(f"op {self.name!r}: {label}={getattr(self, label)} must not be negative")

    @property
    def flops(self) -> int:
        """Floating-point operations of one run: 2 per MAC plus the elementwise ops.

        Nonlinear function evaluations are counted apart, in `nonlinear_ops`,
        because hardware runs them on other units than the adders and multipliers.
        """
        return 2 * self.macs + self.elementwise_ops
