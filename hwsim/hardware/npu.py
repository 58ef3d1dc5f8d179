"""Edge NPU: a weight-stationary MAC array with precision modes, a vector unit, SRAM and LPDDR, under a power envelope.

Performance model, per op:

- Matmuls and the two attention products run on the MAC array, in the mode
  that fits the operand formats (`resolve_npu_mode`). A weight tile of a
  mode with 2 MACs per PE per cycle spans 2 x array_rows reduction
  elements, and a mode with 0.5 takes two cycles per step. Weight tiles of
  (rows x cols) are double buffered, so each tile takes max(m, array_rows)
  cycles: m cycles to stream the activations, array_rows cycles to shift
  the next tile in. A one-token decode thus runs the array at
  1 / array_rows of its peak. The cycles over the clock times
  `mac_efficiency` give the compute time.
- Conversions that the array cannot do (int4 weights to fp16 for a W4A16
  layer, group scales on partial sums) run on the vector unit at
  `vector_ops_per_cycle`, as do elementwise ops, the softmax and norms.
- Weights stay in SRAM between passes when the caller says they fit
  (`weights_on_chip`); otherwise they stream from off-chip DRAM (LPDDR) on
  every pass. The KV cache always lives in DRAM. Activations stay in SRAM
  when an op's activations fit in half of it, else they spill to DRAM.
- An op takes max(compute time, vector time, DRAM bytes / DRAM bandwidth)
  plus `op_overhead_s`, and no less than its dynamic energy over
  `power_envelope_w` minus static power allows (`apply_power_limit`).

Energy: MACs at the mode's MAC energy (`hwsim.hardware.energy`), vector
operations at an fp16 multiply-add each, SRAM and DRAM bytes at their
energy per byte, static power over the latency.

What this model ignores: the on-chip interconnect, SRAM bandwidth limits
(unless the spec gives the sram level a bandwidth), compiler tiling across
ops, host transfers, and the accuracy effect of the mode it picks.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hwsim.hardware.cost import GemmOp, OpCost
from hwsim.hardware.energy import mac_energy
from hwsim.hardware.gpu import bytes_per_element, to_op_cost
from hwsim.hardware.kernels import AttentionRequest, KernelCost, MatmulRequest, VectorRequest, apply_power_limit, bound_of
from hwsim.hardware.memory import MemoryHierarchy
from hwsim.hardware.pe import UnsupportedFormatError
from hwsim.hardware.precision import (
    INTEGER_PRECISIONS,
    PRECISION_NUMBER_TYPES,
    OperandPrecision,
    accumulator_for,
    describe_precision,
    fits_precision,
)
from hwsim.hardware.spec import AcceleratorSpec

log = logging.getLogger(__name__)

# Estimate: converting one element takes about 2 vector operations (convert, then scale).
DEQUANT_OPS_PER_ELEMENT = 2.0
# One multiply-add rescales one partial sum by its block's scale.
RESCALE_OPS_PER_BLOCK = 2.0
# Estimate: an exp, rsqrt or SiLU evaluation costs about 4 vector operations.
NONLINEAR_OPS = 4.0
# Activations stay in SRAM when they fit in this share of it, and the rest is kept for weight tiles.
ACTIVATION_SRAM_SHARE = 0.5


@dataclass(frozen=True)
class NPUPlan:
    """The mode one operand pair runs in and the conversions it needs, as `ComputePlan` is for a GPU."""

    activation_precision: str
    weight_precision: str
    macs_per_pe_cycle: float
    convert_activation: bool
    convert_weight: bool
    path: str
    rescale_block_size: int | None
    activation: OperandPrecision
    weight: OperandPrecision

    @property
    def note(self) -> str:
        text = f"{self.path} in mode {self.activation_precision}x{self.weight_precision}"
        converted = [o.format_name for o, c in ((self.activation, self.convert_activation), (self.weight, self.convert_weight)) if c]
        if converted:
            text += f"; {', '.join(converted)} converted by the vector unit"
        return text


def resolve_npu_mode(activation_format, weight_format, modes, *, allow_emulation: bool = False, device: str = "the NPU") -> NPUPlan:
    """Choose the MAC-array mode for an operand pair.

    A mode whose activation and weight precisions are exactly the operands'
    runs natively. Otherwise the fastest mode that represents both exactly
    is chosen, keeping the activation's own precision when possible. When
    only the weight is converted, the path is weight-only. An activation of
    a precision some mode takes, widened to meet the weight, is a mixed
    path. Any other converted activation is emulation, which raises
    UnsupportedFormatError unless `allow_emulation`. When no mode represents
    the values exactly, emulation rounds them to the closest mode, which
    changes the numbers that enter the product.
    """
    activation = describe_precision(activation_format)
    weight = describe_precision(weight_format)
    exact = [m for m in modes if m[0] == activation.precision and m[1] == weight.precision]
    rounded = False
    if exact:
        chosen = max(exact, key=lambda m: m[2])
    else:
        fitting = [m for m in modes if fits_precision(activation.element, m[0]) and fits_precision(weight.element, m[1])]
        if fitting:
            chosen = max(fitting, key=lambda m: (m[0] == activation.precision, m[2]))
        elif allow_emulation:
            # No mode represents the values exactly, so emulation rounds both operands to the closest mode, as the
            # dequantize fallback of a fixed PE does, preferring a mode of the same kind (float or integer).
            chosen = max(modes, key=lambda m: (_same_kind(activation, m[0]), _same_kind(weight, m[1]), m[2]))
            rounded = True
        else:
            names = ", ".join(f"{a}x{w}" for a, w, _ in modes)
            raise UnsupportedFormatError(
                f"unsupported formats: no mode of {device} ({names}) represents activation format "
                f"{activation.format_name!r} and weight format {weight.format_name!r} exactly; allow emulation "
                f"(simulate(..., unsupported='emulate') or --emulate-unsupported) to price rounding them to a mode, "
                f"or choose formats that fit one of its modes"
            )
    convert_activation = activation.precision != chosen[0]
    convert_weight = weight.precision != chosen[1]
    offered = {m[0] for m in modes}
    if rounded:
        path = "emulated"
    elif convert_activation:
        path = "mixed" if activation.precision in offered else "emulated"
    else:
        path = "weight_only" if convert_weight else "native"
    if path == "emulated" and not allow_emulation:
        names = ", ".join(f"{a}x{w}" for a, w, _ in modes)
        raise UnsupportedFormatError(
            f"activation format {activation.format_name!r} is not a mode of {device} ({names}); running it means converting "
            f"activations to {chosen[0]} first. Allow emulation (simulate(..., unsupported='emulate') or --emulate-unsupported) "
            f"to price that, or choose formats of one of its modes"
        )
    blocks = []
    for operand, converted, target in ((activation, convert_activation, chosen[0]), (weight, convert_weight, chosen[1])):
        if operand.block_size is None:
            continue
        if converted and target not in INTEGER_PRECISIONS:
            continue  # the scale folds into the conversion to a float mode
        blocks.append(operand.block_size)
    rescale = min(blocks) if blocks else None
    return NPUPlan(chosen[0], chosen[1], chosen[2], convert_activation, convert_weight, path, rescale, activation, weight)


class NPU:
    """Cost model of one NPU spec (kind "npu")."""

    def __init__(self, spec: AcceleratorSpec, *, allow_emulation: bool = False) -> None:
        if spec.kind != "npu" or spec.npu is None:
            raise ValueError(f"accelerator {spec.name!r} is of kind {spec.kind!r}; NPU needs kind npu")
        self.spec = spec
        self.npu = spec.npu
        self.allow_emulation = allow_emulation
        self.memory = MemoryHierarchy.of(spec)
        self.dram = self.memory.level("dram")
        self.sram = self.memory.level("sram")
        dram_spec = spec.memory_level("dram")
        self.dram_bandwidth_bytes_per_s = float(dram_spec.bandwidth_bytes_per_array_cycle(spec.clock_hz) * spec.clock_hz)
        sram_bandwidth = spec.memory_level("sram").bandwidth_bytes_per_array_cycle(spec.clock_hz)
        self.sram_bandwidth_bytes_per_s = sram_bandwidth * spec.clock_hz
        self.vector_ops_per_s = self.npu.vector_ops_per_cycle * spec.clock_hz
        self.vector_op_energy_j = mac_energy("fp16", "fp16", "fp16", spec.technology).energy_j
        self.pes = self.npu.array_rows * self.npu.array_cols

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def capacity_bytes(self) -> int:
        return self.dram.capacity_bytes

    @property
    def sram_bytes(self) -> int:
        return self.sram.capacity_bytes

    @property
    def peak_macs_per_s(self) -> float:
        """MACs per second of the fastest mode."""
        return self.pes * max(m[2] for m in self.npu.modes) * self.spec.clock_hz

    def plan(self, activation_format, weight_format) -> NPUPlan:
        return _npu_plan(self.spec.name, self.npu.modes, str(activation_format), str(weight_format), self.allow_emulation)

    def _array_cycles(self, plan: NPUPlan, m, n, k, batch):
        """Cycles of `batch` [m, k] x [k, n] products on the weight-stationary array (see the module docstring)."""
        # A packing mode (2 MACs per PE) spans more reduction elements per tile, and a half-rate mode takes 2 cycles per step.
        rows = self.npu.array_rows * max(1.0, plan.macs_per_pe_cycle)
        tiles = batch * np.ceil(np.asarray(k, dtype=np.float64) / rows) * math.ceil(n / self.npu.array_cols)
        per_tile = np.maximum(np.asarray(m, dtype=np.float64), self.npu.array_rows)
        return tiles * per_tile / min(plan.macs_per_pe_cycle, 1.0)

    def _mac_energy_j(self, plan: NPUPlan) -> float:
        a, w = PRECISION_NUMBER_TYPES[plan.activation_precision], PRECISION_NUMBER_TYPES[plan.weight_precision]
        floats = plan.activation_precision not in INTEGER_PRECISIONS or plan.weight_precision not in INTEGER_PRECISIONS
        if floats and (plan.activation_precision in INTEGER_PRECISIONS or plan.weight_precision in INTEGER_PRECISIONS):
            # A mixed int x float mode multiplies at the float width.
            a = w = PRECISION_NUMBER_TYPES["fp16"]
        return mac_energy(a, w, accumulator_for("fp16" if floats else "int8"), self.spec.technology).energy_j

    def _finish(self, compute_s, vector_ops, dram_read, dram_write, sram_read, sram_write, macs, energy_compute, notes) -> KernelCost:
        vector_s = np.asarray(vector_ops, dtype=np.float64) / self.vector_ops_per_s
        busy_s = np.maximum(compute_s, vector_s)
        memory_s = (np.asarray(dram_read) + np.asarray(dram_write)) / self.dram_bandwidth_bytes_per_s
        if math.isfinite(self.sram_bandwidth_bytes_per_s):
            memory_s = np.maximum(memory_s, (np.asarray(sram_read) + np.asarray(sram_write)) / self.sram_bandwidth_bytes_per_s)
        overhead_s = self.npu.op_overhead_s
        latency = np.maximum(busy_s, memory_s) + overhead_s
        energy = {
            "compute": energy_compute + np.asarray(vector_ops, dtype=np.float64) * self.vector_op_energy_j,
            "sram": self.sram.access_energy_j(sram_read, sram_write),
            "dram": self.dram.access_energy_j(dram_read, dram_write),
            "static": self.spec.static_power_w * latency,
        }
        utilization = np.asarray(macs, dtype=np.float64) / (self.peak_macs_per_s * latency)
        cost = KernelCost(
            latency_s=_scalar(latency), compute_s=_scalar(busy_s), memory_s=_scalar(memory_s), overhead_s=overhead_s,
            energy_j={k: _scalar(v) for k, v in energy.items()},
            traffic={"dram": (_scalar(dram_read), _scalar(dram_write)), "sram": (_scalar(sram_read), _scalar(sram_write))},
            macs=_scalar(macs), utilization=_scalar(utilization), bound=bound_of(busy_s, memory_s, overhead_s), notes=tuple(notes),
        )
        return apply_power_limit(cost, self.npu.power_envelope_w, self.spec.static_power_w)

    def _activations_on_chip(self, activation_bytes) -> bool:
        return float(np.max(activation_bytes)) <= ACTIVATION_SRAM_SHARE * self.sram_bytes

    def matmul(self, request: MatmulRequest, *, weights_on_chip: bool = False) -> KernelCost:
        """Cost of `request.batch` matmuls; pass `weights_on_chip` when the weights stay in SRAM between passes."""
        plan = self.plan(request.activation_format, request.weight_format)
        cycles = self._array_cycles(plan, request.m, request.n, request.k, request.batch)
        compute_s = cycles / (self.spec.clock_hz * self.npu.mac_efficiency)
        vector_ops = self._conversion_ops(plan, request.batch * request.m * request.k, request.batch * request.n * request.k,
                                          request.macs)
        activations = request.activation_bytes + request.output_bytes
        on_chip = self._activations_on_chip(activations)
        parameters = request.weight_bytes + request.bias_bytes
        dram_read, dram_write = 0.0, 0.0
        if not weights_on_chip:
            dram_read += parameters
        if not on_chip:
            dram_read += request.activation_bytes
            dram_write += request.output_bytes
        # Every operand passes through SRAM on its way to the array; streamed weights are written there first.
        sram_read = parameters + request.activation_bytes
        sram_write = request.output_bytes + (0.0 if weights_on_chip else parameters)
        energy_compute = request.macs * self._mac_energy_j(plan)
        notes = [plan.note, "weights in SRAM" if weights_on_chip else "weights streamed from DRAM"]
        return self._finish(compute_s, vector_ops, dram_read, dram_write, sram_read, sram_write, request.macs, energy_compute, notes)

    def attention(self, request: AttentionRequest, *, kv_on_chip: bool = False) -> KernelCost:
        """Cost of one attention layer: scores and context on the array, softmax on the vector unit."""
        plan = self.plan(request.query_format, request.kv_format)
        rows = request.query_tokens * request.group_size
        batch = request.batch_size * request.kv_heads
        keys = np.asarray(request.key_tokens, dtype=np.float64)
        scores = self._array_cycles(plan, rows, 1, request.head_dim, 1) * batch * np.ceil(keys / self.npu.array_cols)
        context = self._array_cycles(plan, rows, request.head_dim, keys, batch)
        compute_s = (scores + context) / (self.spec.clock_hz * self.npu.mac_efficiency)
        macs = request.macs
        kv_elements = np.asarray(request.kv_read_bytes, dtype=np.float64) / bytes_per_element(request.kv_format)
        query_elements = request.query_bytes / bytes_per_element(request.query_format)
        vector_ops = (np.asarray(request.softmax_elementwise_ops, dtype=np.float64)
                      + NONLINEAR_OPS * np.asarray(request.softmax_nonlinear_ops, dtype=np.float64)
                      + self._conversion_ops(plan, query_elements, kv_elements, macs))
        kv_bytes = np.asarray(request.kv_read_bytes, dtype=np.float64)
        dram_read = 0.0 * kv_bytes if kv_on_chip else kv_bytes
        activations = request.query_bytes + request.output_bytes
        on_chip = self._activations_on_chip(activations)
        if not on_chip:
            dram_read = dram_read + request.query_bytes
        dram_write = 0.0 if on_chip else request.output_bytes
        sram_read = kv_bytes + request.query_bytes
        sram_write = request.output_bytes + (0.0 if kv_on_chip else kv_bytes)
        energy_compute = macs * self._mac_energy_j(plan)
        notes = ["attention: scores and context on the MAC array, softmax on the vector unit", plan.note]
        return self._finish(compute_s, vector_ops, dram_read, dram_write, sram_read, sram_write, macs, energy_compute, notes)

    def vector(self, request: VectorRequest, *, weights_on_chip: bool = False) -> KernelCost:
        """Cost of one elementwise or reduction op on the vector unit."""
        ops = request.elementwise_ops + NONLINEAR_OPS * request.nonlinear_ops
        activations = request.activation_bytes + request.output_bytes
        on_chip = self._activations_on_chip(activations)
        dram_read, dram_write = 0.0, request.kv_write_bytes
        if not weights_on_chip:
            dram_read += request.weight_bytes
        if not on_chip:
            dram_read += request.activation_bytes
            dram_write += request.output_bytes
        sram_read = request.activation_bytes + request.weight_bytes
        sram_write = request.output_bytes
        return self._finish(0.0, ops, dram_read, dram_write, sram_read, sram_write, 0.0, 0.0, ())

    def _conversion_ops(self, plan: NPUPlan, activation_elements, weight_elements, macs):
        ops = 0.0
        if plan.convert_activation:
            ops = ops + activation_elements * DEQUANT_OPS_PER_ELEMENT
        if plan.convert_weight:
            ops = ops + weight_elements * DEQUANT_OPS_PER_ELEMENT
        if plan.rescale_block_size:
            ops = ops + np.asarray(macs, dtype=np.float64) / plan.rescale_block_size * RESCALE_OPS_PER_BLOCK
        return ops

    def cost(self, op: GemmOp) -> OpCost:
        """Cost of one GEMM op with its weights streamed from DRAM, as every accelerator model returns it."""
        a_bytes, b_bytes, c_bytes = op.bytes_per_tensor()
        request = MatmulRequest(op.name, op.m, op.n, op.k, op.activation_format, op.weight_format, op.output_format,
                                a_bytes, b_bytes, c_bytes)
        return to_op_cost(self.matmul(request, weights_on_chip=not op.weight_in_dram), op.name, self.name, self.spec.clock_hz)


def _same_kind(operand: OperandPrecision, precision: str) -> bool:
    is_integer = operand.element is not None and operand.element.kind == "int"
    return is_integer == (precision in INTEGER_PRECISIONS)


@lru_cache(maxsize=4096)
def _npu_plan(device: str, modes: tuple, activation: str, weight: str, allow_emulation: bool) -> NPUPlan:
    return resolve_npu_mode(activation, weight, modes, allow_emulation=allow_emulation, device=f"NPU {device!r}")


def _scalar(value):
    array = np.asarray(value)
    return float(array) if array.ndim == 0 else array
