"""A workload: the ops of a model in a scenario, with counts summed over all decode steps.

A decode of T tokens would be T forward passes, each one key longer than
the last. Instead of building T graphs, `build_workload` uses the fact that
a one-token pass is affine in the number of cached positions c: every
count is a + b*c. It builds the pass at c = 1 and c = 2 to read off a and b
per op, and sums over the steps in closed form, T*a + b*sum(c_i), with
sum(c_i) from numpy. The tests check this against one graph per step.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from hwsim.workload.graph import forward_ops
from hwsim.workload.model import ModelSpec
from hwsim.workload.ops import Op
from hwsim.workload.scenario import Scenario


@dataclass(frozen=True)
class OpCounts:
    """Counts of one op summed over its runs; element counts are by role and access.

    Element counts are floats because MoE expert weights are an expectation
    over the routing (see MoERouting).
    """

    calls: int = 0
    macs: int = 0
    flops: int = 0
    elementwise_ops: int = 0
    nonlinear_ops: int = 0
    weight_elements: float = 0.0
    activation_elements: float = 0.0
    output_elements: float = 0.0
    kv_cache_read_elements: float = 0.0
    kv_cache_write_elements: float = 0.0

    @classmethod
    def of(cls, op: Op) -> OpCounts:
        """Counts of `op` over its `count` runs in one pass."""
        elements = {"weight": 0.0, "activation": 0.0, "output": 0.0, "kv_cache_read": 0.0, "kv_cache_write": 0.0}
        for tensor in op.tensors:
            key = f"kv_cache_{tensor.access}" if tensor.role == "kv_cache" else tensor.role
            elements[key] += tensor.accessed_elements
        runs = op.count
        return cls(
            calls=runs,
            macs=runs * op.macs,
            flops=runs * op.flops,
            elementwise_ops=runs * op.elementwise_ops,
            nonlinear_ops=runs * op.nonlinear_ops,
            **{f"{key}_elements": runs * value for key, value in elements.items()},
        )

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


COUNT_COLUMNS = tuple(f.name for f in fields(OpCounts))


@dataclass(frozen=True)
class Workload:
    """The ops of `spec` in `scenario`.

    `ops` are the ops of the first forward pass: the prefill, or the first
    decode step. `totals` holds, per op in the same order, its counts summed
    over the whole scenario. `step_base` and `step_slope` give the counts of
    decode step i over all ops as step_base + step_slope * cached_tokens[i].
    """

    spec: ModelSpec
    scenario: Scenario
    ops: tuple[Op, ...]
    totals: tuple[OpCounts, ...]
    step_base: OpCounts
    step_slope: OpCounts
    causal_mask_halving: bool = True
    all_logits: bool = False

    def cached_tokens_per_step(self) -> np.ndarray:
        """Positions read from the KV cache per sequence at each step (int64)."""
        return self.scenario.cached_tokens_per_step(self.spec.sliding_window)

    def step_ops(self, step: int) -> tuple[Op, ...]:
        """Build the ops of decode step `step` (from 0) with its exact shapes; step 0 of a prefill is the prefill."""
        if not 0 <= step < self.scenario.steps:
            raise ValueError(f"invalid step={step}: the scenario has steps 0 to {self.scenario.steps - 1}")
        if self.scenario.phase == "prefill":
            return self.ops
        cached = int(self.cached_tokens_per_step()[step])
        return forward_ops(self.spec, self.scenario.batch_size, 1, cached, causal_mask_halving=self.causal_mask_halving)

    def to_frame(self) -> pd.DataFrame:
        """Tabulate the ops, one row each: kind, the shape of its first run, and its counts summed over the scenario.

        Shape columns (m, n, k, batch) describe the first pass; for attention
        in decode, the key count n or k grows by one per step. MoE columns
        are 0 for ops without routing.
        """
        rows = []
        for op, counts in zip(self.ops, self.totals):
            routing = op.routing
            rows.append(
                {
                    "op": op.name,
                    "kind": op.kind,
                    "count": op.count,
                    "m": op.m,
                    "n": op.n,
                    "k": op.k,
                    "batch": op.batch,
                    **counts.as_dict(),
                    "experts": routing.experts if routing else 0,
                    "top_k": routing.top_k if routing else 0,
                    "expected_tokens_per_expert": routing.expected_tokens_per_expert if routing else 0.0,
                }
            )
        return pd.DataFrame(rows)

    def tensor_frame(self) -> pd.DataFrame:
        """Tabulate the tensors of each op of the first pass: role, shape and element counts of one run."""
        rows = []
        for op in self.ops:
            for tensor in op.tensors:
                rows.append(
                    {
                        "op": op.name,
                        "count": op.count,
                        "tensor": tensor.name,
                        "role": tensor.role,
                        "access": tensor.access,
                        "parameter_kind": tensor.parameter_kind,
                        "shape": tensor.shape,
                        "elements": tensor.elements,
                        "accessed_elements": tensor.accessed_elements,
                    }
                )
        return pd.DataFrame(rows)

    def total(self) -> OpCounts:
        """Counts summed over all ops and steps."""
        return _sum_counts(self.totals)

    def steps_frame(self) -> pd.DataFrame:
        """Tabulate the steps, one row each: cached positions per sequence and the counts of that step over all ops."""
        cached = self.cached_tokens_per_step()
        frame = pd.DataFrame({"step": np.arange(len(cached)), "cached_tokens": cached})
        for column in COUNT_COLUMNS:
            base, slope = getattr(self.step_base, column), getattr(self.step_slope, column)
            frame[column] = base + slope * cached
        return frame


def build_workload(
    spec: ModelSpec,
    scenario: Scenario,
    *,
    causal_mask_halving: bool = True,
    all_logits: bool = False,
    allow_long_context: bool = False,
) -> Workload:
    """Build the workload of `spec` in `scenario`.

    `causal_mask_halving` counts only the attention pairs that the causal
    mask keeps (see `forward_ops`). `all_logits` runs the prefill's LM head
    on every position, as a perplexity evaluation does, in place of the last
    position only. `allow_long_context` is passed to `Scenario.check_fits`.
    """
    scenario.check_fits(spec, allow_long_context=allow_long_context)
    batch = scenario.batch_size
    if scenario.phase == "prefill":
        logits = scenario.context_tokens if all_logits else 1
        ops = forward_ops(spec, batch, scenario.context_tokens, 0, causal_mask_halving=causal_mask_halving, logits_per_sequence=logits)
        totals = tuple(OpCounts.of(op) for op in ops)
        return Workload(spec, scenario, ops, totals, _sum_counts(totals), OpCounts(), causal_mask_halving, all_logits)

    cached = scenario.cached_tokens_per_step(spec.sliding_window)
    steps = scenario.steps
    # The sum is exact in int64 for any context a model supports.
    cached_sum = int(cached.sum())
    first = forward_ops(spec, batch, 1, int(cached[0]), causal_mask_halving=causal_mask_halving)
    with_one_cached = forward_ops(spec, batch, 1, 1, causal_mask_halving=causal_mask_halving)
    with_two_cached = forward_ops(spec, batch, 1, 2, causal_mask_halving=causal_mask_halving)
    names = [op.name for op in first]
    assert [op.name for op in with_one_cached] == [op.name for op in with_two_cached] == names, "decode passes must list the same ops"

    totals, bases, slopes = [], [], []
    for op_one_cached, op_two_cached in zip(with_one_cached, with_two_cached):
        counts_one, counts_two = OpCounts.of(op_one_cached), OpCounts.of(op_two_cached)
        slope = _combine(counts_two, counts_one, 1, -1)
        base = _combine(counts_one, slope, 1, -1)
        totals.append(_combine(base, slope, steps, cached_sum))
        bases.append(base)
        slopes.append(slope)
    return Workload(spec, scenario, first, tuple(totals), _sum_counts(bases), _sum_counts(slopes), causal_mask_halving, all_logits)


def _combine(left: OpCounts, right: OpCounts, left_factor: int, right_factor: int) -> OpCounts:
    """left_factor * left + right_factor * right, field by field."""
    return OpCounts(**{name: left_factor * getattr(left, name) + right_factor * getattr(right, name) for name in COUNT_COLUMNS})


def _sum_counts(counts) -> OpCounts:
    total = OpCounts()
    for item in counts:
        total = _combine(total, item, 1, 1)
    return total
