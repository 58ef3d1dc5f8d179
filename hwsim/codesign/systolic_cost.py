"""Cost of a whole LM workload on a systolic array, cheap enough for sweeps of 100,000 points.

`SystolicCostEvaluator` prices the GEMM, GEMV and attention ops of
`hwsim.workload.build_workload(model, scenario)` with the systolic-array
model of `hwsim.hardware`. What depends only on the policy and the
scenario (the ops, each operand's format and bytes) is built once per
process and cached. The points of a chunk that differ only in sizes,
clock and bandwidth are then priced together, as arrays of (point x op),
by `hwsim.codesign.systolic_batch`. Other points go through
`SystolicArray.evaluate` one by one.

Per op, the GEMM of the op's first forward pass is priced and multiplied by
the number of such GEMMs over the scenario (the op's MACs over the whole
scenario divided by the MACs of one GEMM). Attention products run one GEMM
per head, with the KV cache as the second operand.

What it ignores:
- elementwise ops, norms and softmax, which cost nothing here;
- the keys that each decode step adds: a later step's attention is priced
  as the first step's GEMM scaled by MACs, so the fold rounding of the
  longer GEMM is off;
- sharing of one KV head among the query heads of grouped-query
  attention, because each head's GEMM reads its keys;
- activations in the memory footprint, and overlap of one op with the next.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from hwsim.codesign.policies import resolve_policy
from hwsim.codesign.systolic_batch import ENERGY_COMPONENTS, price_batch, structure_key
from hwsim.hardware import SystolicArray
from hwsim.hardware.cost import tensor_bytes
from hwsim.workload import ModelSpec, Scenario, TensorSpec, build_workload, load_model

log = logging.getLogger(__name__)

PRICED_OP_KINDS = ("GEMM", "GEMV", "attention")


@dataclass(frozen=True)
class GemmGroup:
    """GEMMs that share one (activation, weight, output) format triple, one array element per op.

    `runs` is how many GEMMs of each shape the scenario runs.
    """

    activation_format: str
    weight_format: str
    output_format: str
    m: np.ndarray
    n: np.ndarray
    k: np.ndarray
    runs: np.ndarray
    activation_bytes: np.ndarray
    weight_bytes: np.ndarray
    output_bytes: np.ndarray


@dataclass(frozen=True)
class WorkloadCosts:
    """Inputs of the cost of one (model, scenario, policy) that do not depend on the hardware."""

    groups: tuple[GemmGroup, ...]
    tokens: int
    weight_bytes: float
    kv_cache_bytes: float


def _operands(op) -> tuple[TensorSpec, TensorSpec, TensorSpec]:
    """Find the A (activation), B (weight or KV cache) and C (output) tensors of a GEMM, GEMV or attention op."""
    activation = next(t for t in op.tensors if t.role == "activation")
    second = next((t for t in op.tensors if t.role == "weight"), None)
    if second is None:
        second = next(t for t in op.tensors if t.role == "kv_cache")
    output = next(t for t in op.tensors if t.role == "output")
    return activation, second, output


def _layer_shares(op, policy) -> list[tuple[int | None, float]]:
    """(layer index, share of the op's runs) pairs: one entry for all layers when the policy treats them alike."""
    if policy.is_layer_uniform() or not op.name.startswith("layers.*"):
        return [(None, 1.0)]
    return [(index, 1.0 / op.count) for index in range(op.count)]


def _kv_cache_bytes(spec, scenario: Scenario, policy) -> float:
    """Bytes of the KV cache at the end of the scenario, under the policy's KV formats and windows."""
    if spec.is_encoder:
        return 0.0
    shape = (scenario.batch_size, spec.num_kv_heads, scenario.tokens_per_sequence, spec.head_dim)
    total_bits = 0
    for name in ("layers.*.self_attn.key_cache", "layers.*.self_attn.value_cache"):
        tensor = TensorSpec(name, "kv_cache", shape)
        if policy.is_layer_uniform():
            total_bits += policy.storage_bits(tensor).total_bits * spec.num_layers
        else:
            total_bits += sum(policy.storage_bits(tensor, layer_index=i).total_bits for i in range(spec.num_layers))
    return total_bits / 8


@functools.lru_cache(maxsize=256)
def workload_costs(spec: ModelSpec, scenario: Scenario, policy_text: str) -> WorkloadCosts:
    """Ops grouped by operand formats, with bytes per tensor, for one model, scenario and policy (cached per process)."""
    policy = resolve_policy(policy_text)
    workload = build_workload(spec, scenario)
    collected: dict[tuple[str, str, str], list[tuple[int, int, int, float]]] = {}
    for op, counts in zip(workload.ops, workload.totals):
        if op.kind not in PRICED_OP_KINDS or op.macs == 0:
            continue
        activation, second, output = _operands(op)
        gemms = counts.macs / (op.m * op.n * op.k)
        for layer_index, share in _layer_shares(op, policy):
            formats = tuple(policy.format_for(t, layer_index=layer_index, op=op) for t in (activation, second, output))
            collected.setdefault(formats, []).append((op.m, op.n, op.k, gemms * share))
    groups = []
    for (a_format, b_format, c_format), rows in collected.items():
        m, n, k = (np.array([row[i] for row in rows], dtype=np.int64) for i in range(3))
        runs = np.array([row[3] for row in rows], dtype=np.float64)
        groups.append(
            GemmGroup(
                a_format, b_format, c_format, m, n, k, runs,
                np.array([tensor_bytes(a_format, int(x), int(y)) for x, y in zip(m, k)]),
                np.array([tensor_bytes(b_format, int(x), int(y)) for x, y in zip(n, k)]),
                np.array([tensor_bytes(c_format, int(x), int(y)) for x, y in zip(m, n)]),
            )
        )
    tokens = scenario.batch_size * (scenario.generated_tokens if scenario.phase == "decode" else scenario.context_tokens)
    weight_bytes = policy.parameter_bits(spec).total_bits / 8
    return WorkloadCosts(tuple(groups), tokens, weight_bytes, _kv_cache_bytes(spec, scenario, policy))


@functools.lru_cache(maxsize=1024)
def _systolic_array(spec) -> SystolicArray:
    return SystolicArray(spec)


def _point_values(costs: WorkloadCosts, spec, latency_s: float, energy_j: dict[str, float], macs: float,
                  peak_mac_cycles: float, area_mm2: float) -> dict[str, float | bool]:
    total_energy_j = sum(energy_j[component] for component in ENERGY_COMPONENTS)
    memory_bytes = costs.weight_bytes + costs.kv_cache_bytes
    values: dict[str, float | bool] = {
        "latency_s": latency_s,
        "latency_per_token_s": latency_s / costs.tokens,
        "energy_j": total_energy_j,
        "energy_per_token_j": total_energy_j / costs.tokens,
    }
    values.update({f"{component}_energy_j": energy_j[component] for component in ENERGY_COMPONENTS})
    values.update(
        {
            "area_mm2": area_mm2,
            "weight_bytes": costs.weight_bytes,
            "kv_cache_bytes": costs.kv_cache_bytes,
            "memory_bytes": memory_bytes,
            "fits": bool(memory_bytes <= spec.memory_level("dram").capacity_bytes),
            "macs": macs,
            "utilization": macs / peak_mac_cycles if peak_mac_cycles else 0.0,
        }
    )
    return values


class SystolicCostEvaluator:
    """Latency, energy, area and memory of a point's workload on its systolic array.

    Returns, in SI units: latency_s and energy_j over the whole scenario,
    and the same per token processed (latency_per_token_s,
    energy_per_token_j). A token is one generated token of one sequence in
    decode, and one prompt token in prefill. Also returned: energy by
    component, area_mm2 of the PE array and SRAM (an estimate, see
    `hwsim.hardware.area`), weight, KV-cache and total memory bytes, fits
    (memory_bytes within the DRAM capacity), MACs, and utilization (MACs
    over the array's peak MACs during those cycles).

    `evaluate_batch` prices the points of one chunk together
    (`hwsim.codesign.systolic_batch`); `evaluate` is a batch of one, so a
    point gets the same values either way.
    """

    columns = (
        "latency_s", "latency_per_token_s", "energy_j", "energy_per_token_j",
        *(f"{component}_energy_j" for component in ENERGY_COMPONENTS),
        "area_mm2", "weight_bytes", "kv_cache_bytes", "memory_bytes", "fits", "macs", "utilization",
    )

    def __init__(self) -> None:
        self._model_specs: dict[str, ModelSpec] = {}

    def prepare(self, sweep) -> None:
        """Load the sweep's model in the driver, so that workers receive it with the evaluator instead of loading it.

        Loading a model config imports transformers, which takes seconds in every fresh worker process.
        """
        self._model_specs[sweep.model] = load_model(sweep.model)

    def _costs(self, point) -> WorkloadCosts:
        model_spec = self._model_specs.get(point.model) or load_model(point.model)
        return workload_costs(model_spec, point.scenario, point.policy)

    def evaluate(self, point) -> dict[str, float | bool]:
        outcome = self.evaluate_batch([point])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def evaluate_batch(self, points) -> list[dict[str, float | bool] | Exception]:
        """Values of each point, or the exception that point raised, in the order of `points`."""
        outcomes: list = [None] * len(points)
        specs: list = [None] * len(points)
        batches: dict[tuple, list[int]] = {}
        for index, point in enumerate(points):
            try:
                specs[index] = point.accelerator_spec()
            except Exception as error:  # noqa: BLE001 - an invalid accelerator is this point's error
                outcomes[index] = error
                continue
            key = structure_key(specs[index])
            if key is None:
                outcomes[index] = self._outcome_with_model(point)
            else:
                batches.setdefault((point.model, point.scenario, point.policy, key), []).append(index)
        for indices in batches.values():
            first = points[indices[0]]
            try:
                costs = self._costs(first)
            except Exception as error:  # noqa: BLE001 - a workload that cannot be built fails all its points
                for index in indices:
                    outcomes[index] = error
                continue
            priced = price_batch(costs.groups, [specs[index] for index in indices])
            for position, index in enumerate(indices):
                if priced.needs_model[position]:
                    outcomes[index] = self._outcome_with_model(points[index])
                    continue
                energy_j = {component: float(priced.energy_j[component][position]) for component in ENERGY_COMPONENTS}
                outcomes[index] = _point_values(
                    costs, specs[index], float(priced.latency_s[position]), energy_j, float(priced.macs[position]),
                    float(priced.peak_mac_cycles[position]), float(priced.area_mm2[position]),
                )
        return outcomes

    def _outcome_with_model(self, point):
        try:
            return self.evaluate_with_model(point)
        except Exception as error:  # noqa: BLE001 - returned as this point's error
            return error

    def evaluate_with_model(self, point) -> dict[str, float | bool]:
        """Values of one point from `SystolicArray.evaluate`, the model that `price_batch` vectorises; raises its errors."""
        costs = self._costs(point)
        spec = point.accelerator_spec()
        array = _systolic_array(spec)
        latency_s = 0.0
        energy_j = dict.fromkeys(ENERGY_COMPONENTS, 0.0)
        macs = 0.0
        peak_mac_cycles = 0.0
        for group in costs.groups:
            evaluation = array.evaluate(
                group.m, group.n, group.k, group.activation_format, group.weight_format, group.output_format,
                activation_bytes=group.activation_bytes, weight_bytes=group.weight_bytes, output_bytes=group.output_bytes,
            )
            latency_s += float((evaluation.latency_s * group.runs).sum())
            for component in ENERGY_COMPONENTS:
                energy_j[component] += float((evaluation.energy_j[component] * group.runs).sum())
            macs += float((evaluation.macs * group.runs).sum())
            peak_mac_cycles += float((evaluation.cycles * group.runs).sum()) * evaluation.peak_macs_per_cycle
        return _point_values(costs, spec, latency_s, energy_j, macs, peak_mac_cycles, array.area().total_mm2)
