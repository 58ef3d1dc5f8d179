"""Systolic-array accelerator: GEMM cost from a spec, for any dataflow and PE kind.

`SystolicArray(spec).cost(op)` returns an `OpCost`. The performance model in
`hwsim.hardware.systolic_counts` counts cycles and bytes. This module maps the
op's formats onto the PE (`hwsim.hardware.pe`), builds the energy table for
those formats and prices the counts, Accelergy style:

- compute: MACs x energy per MAC, plus block-scale handling per block, output
  scaling per output element, and the dequantize fallback per converted element;
- sram: bytes read and written at each on-chip buffer x its energy per byte;
- dram: bytes read and written at DRAM x its energy per byte;
- static: static power x latency.

`evaluate` runs the same model on numpy arrays of shapes, so a sweep over
thousands of GEMMs costs one vectorised call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from hwsim.hardware.area import AcceleratorArea, accelerator_area
from hwsim.hardware.cost import GemmOp, MemoryTraffic, OpCost, tensor_bytes
from hwsim.hardware.datatypes import parse_number_type
from hwsim.hardware.energy import EnergyEstimate, EnergyTable
from hwsim.hardware.memory import MemoryHierarchy
from hwsim.hardware.pe import PEMapping, map_operands
from hwsim.hardware.spec import AcceleratorSpec
from hwsim.hardware.systolic_counts import gemm_counts, minimum_buffer_bytes

log = logging.getLogger(__name__)

BUFFERS = ("activation_buffer", "weight_buffer", "output_buffer")


@dataclass(frozen=True)
class GemmEvaluation:
    """Counts and energies of GEMMs on one array, as numpy arrays of one shape (one element per GEMM)."""

    counts: dict[str, np.ndarray]
    energy_j: dict[str, np.ndarray]
    macs: np.ndarray
    peak_macs_per_cycle: float
    clock_hz: float
    mapping: PEMapping

    @property
    def cycles(self) -> np.ndarray:
        return self.counts["compute_cycles"] + self.counts["stall_cycles"]

    @property
    def latency_s(self) -> np.ndarray:
        return self.cycles / self.clock_hz

    @property
    def utilization(self) -> np.ndarray:
        """Useful MACs over the peak MACs of the array at these formats during the op."""
        return self.macs / (self.peak_macs_per_cycle * self.cycles)


class SystolicArray:
    """Cost model of one systolic-array accelerator spec."""

    def __init__(self, spec: AcceleratorSpec) -> None:
        if spec.kind != "systolic_array" or spec.systolic_array is None:
            raise ValueError(f"accelerator {spec.name!r} is of kind {spec.kind!r}; SystolicArray needs kind systolic_array")
        self.spec = spec
        self.array = spec.systolic_array
        self.memory = MemoryHierarchy.of(spec)
        self.accumulator = parse_number_type(spec.pe.accumulator)
        self._area: AcceleratorArea | None = None
        unused = [level.name for level in spec.memory if level.name not in ("dram", *BUFFERS)]
        if unused:
            log.warning("accelerator %s: the systolic-array model does not use memory level(s) %s", spec.name, ", ".join(unused))

    @property
    def name(self) -> str:
        return self.spec.name

    def area(self) -> AcceleratorArea:
        if self._area is None:
            self._area = accelerator_area(self.spec)
        return self._area

    def mapping(self, activation_format, weight_format) -> PEMapping:
        """Map the operand formats onto the PE; raise UnsupportedFormatError for formats it cannot take."""
        return map_operands(self.spec.pe, activation_format, weight_format, self.spec.technology)

    def energy_table(self, activation_format, weight_format) -> EnergyTable:
        """Energy per action for these operand formats: PE actions and one read and write per byte of each memory level."""
        mapping = self.mapping(activation_format, weight_format)
        estimates: dict[str, EnergyEstimate] = {
            "mac": mapping.mac,
            "block_scale": mapping.block,
            "output_scale": mapping.output_scale,
            "dequantize": mapping.dequantize,
        }
        for level in self.memory.levels:
            estimates[f"{level.name}_read_byte"] = EnergyEstimate(level.read_energy_j_per_byte, level.energy_source, level.energy_is_estimate)
            estimates[f"{level.name}_write_byte"] = EnergyEstimate(level.write_energy_j_per_byte, level.energy_source, level.energy_is_estimate)
        return EnergyTable.from_estimates(estimates)

    def _check_buffers(self, mapping: PEMapping, bytes_per_element: tuple[float, float, float]) -> None:
        minimums = minimum_buffer_bytes(self.array.rows, self.array.cols, self.array.dataflow, mapping.reduction_per_step, bytes_per_element)
        for name, minimum in zip(BUFFERS, minimums):
            capacity = self.memory.level(name).capacity_bytes
            if capacity < minimum:
                raise ValueError(
                    f"accelerator {self.name!r}: memory.{name}.capacity_bytes={capacity} is too small for one "
                    f"{self.array.rows}x{self.array.cols} {self.array.dataflow} fold with double buffering; "
                    f"it needs at least {int(np.ceil(minimum))} bytes"
                )

    def evaluate(
        self,
        m,
        n,
        k,
        activation_format="int8",
        weight_format="int8",
        output_format="int8",
        *,
        activation_bytes=None,
        weight_bytes=None,
        output_bytes=None,
        in_dram: tuple[bool, bool, bool] = (True, True, True),
    ) -> GemmEvaluation:
        """Cycles, bytes and energy of GEMMs with dimensions m, n, k (integers or numpy arrays of one shape)."""
        m, n, k = np.broadcast_arrays(*(np.asarray(x, dtype=np.int64) for x in (m, n, k)))
        if np.any(m <= 0) or np.any(n <= 0) or np.any(k <= 0):
            raise ValueError(f"GEMM dimensions must be positive integers; got m={m}, n={n}, k={k}")

        mapping = self.mapping(activation_format, weight_format)
        a_bytes = _tensor_bytes_array(activation_format, m, k) if activation_bytes is None else np.asarray(activation_bytes, float)
        b_bytes = _tensor_bytes_array(weight_format, n, k) if weight_bytes is None else np.asarray(weight_bytes, float)
        c_bytes = _tensor_bytes_array(output_format, m, n) if output_bytes is None else np.asarray(output_bytes, float)
        accumulator_bytes = self.accumulator.width / 8
        self._check_buffers(mapping, (float(np.max(a_bytes / (m * k))), float(np.max(b_bytes / (k * n))), accumulator_bytes))
        for flag, size, name in zip(in_dram, (a_bytes, b_bytes), BUFFERS[:2]):
            capacity = self.memory.level(name).capacity_bytes
            if not flag and np.any(size > capacity):
                raise ValueError(
                    f"a tensor of {float(np.max(size)):.0f} bytes marked as resident on chip does not fit "
                    f"memory.{name}.capacity_bytes={capacity}; mark it as in DRAM"
                )

        levels = [self.memory.level(name) for name in BUFFERS]
        dram = self.memory.level("dram")
        counts = gemm_counts(
            self.array.rows, self.array.cols, self.array.dataflow, m, n, k,
            reduction_per_step=mapping.reduction_per_step,
            cycles_per_step=mapping.cycles_per_step,
            a_bytes=a_bytes, b_bytes=b_bytes, c_bytes=c_bytes,
            accumulator_bytes_per_element=accumulator_bytes,
            buffer_bytes=tuple(float(level.capacity_bytes) for level in levels),
            dram_bytes_per_cycle=dram.bandwidth_bytes_per_cycle,
            sram_bytes_per_cycle=tuple(level.bandwidth_bytes_per_cycle for level in levels),
            in_dram=tuple(in_dram),
        )

        macs = (m * n * k).astype(np.float64)
        energy = self._price(counts, mapping, macs, m, n, k, a_bytes, b_bytes)
        peak = self.array.num_pes * mapping.macs_per_pe_cycle
        evaluation = GemmEvaluation(counts, energy, macs, peak, self.spec.clock_hz, mapping)
        energy["static"] = self.spec.static_power_w * evaluation.latency_s
        return evaluation

    def _price(self, counts, mapping: PEMapping, macs, m, n, k, a_bytes, b_bytes) -> dict[str, np.ndarray]:
        compute = macs * mapping.mac.energy_j
        if mapping.block_size is not None:
            blocks = (m * n * -(-k // mapping.block_size)).astype(np.float64)
            compute = compute + blocks * mapping.block.energy_j
        compute = compute + (m * n).astype(np.float64) * mapping.output_scale.energy_j
        converted = np.zeros_like(macs)
        if mapping.dequantize_activation:
            converted = converted + counts["array_read_bytes_a"] / (a_bytes / (m * k))
        if mapping.dequantize_weight:
            converted = converted + counts["array_read_bytes_b"] / (b_bytes / (k * n))
        compute = compute + converted * mapping.dequantize.energy_j
        sram = np.zeros_like(macs)
        for name, reads, writes in zip(BUFFERS, counts["buffer_read_bytes"], counts["buffer_write_bytes"]):
            sram = sram + self.memory.level(name).access_energy_j(reads, writes)
        dram = self.memory.level("dram").access_energy_j(counts["dram_read_bytes"], counts["dram_write_bytes"])
        return {"compute": compute, "sram": sram, "dram": dram}

    def cost(self, op: GemmOp) -> OpCost:
        """Cost of one GEMM op."""
        a_bytes, b_bytes, c_bytes = op.bytes_per_tensor()
        evaluation = self.evaluate(
            op.m, op.n, op.k, op.activation_format, op.weight_format, op.output_format,
            activation_bytes=a_bytes, weight_bytes=b_bytes, output_bytes=c_bytes,
            in_dram=(op.activation_in_dram, op.weight_in_dram, op.output_in_dram),
        )
        counts = evaluation.counts
        traffic = [MemoryTraffic("dram", float(counts["dram_read_bytes"]), float(counts["dram_write_bytes"]))]
        for name, reads, writes in zip(BUFFERS, counts["buffer_read_bytes"], counts["buffer_write_bytes"]):
            traffic.append(MemoryTraffic(name, float(reads), float(writes)))
        energy = {component: float(value) for component, value in evaluation.energy_j.items()}
        log.debug("op %s on %s: %s cycles", op.name, self.name, float(evaluation.cycles))
        return OpCost(
            name=op.name,
            accelerator=self.name,
            macs=op.macs,
            compute_cycles=float(counts["compute_cycles"]),
            stall_cycles=float(counts["stall_cycles"]),
            clock_hz=self.spec.clock_hz,
            energy_j=energy,
            traffic=tuple(traffic),
            utilization=float(evaluation.utilization),
            bound="memory" if bool(counts["memory_bound"]) else "compute",
            area_mm2=self.area().total_mm2,
            notes=evaluation.mapping.notes,
        )


def _tensor_bytes_array(fmt, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Storage bytes of rows x cols tensors, one per element of the (broadcast) arrays."""
    if rows.ndim == 0:
        return np.asarray(tensor_bytes(fmt, int(rows), int(cols)), dtype=np.float64)
    flat = [tensor_bytes(fmt, int(r), int(c)) for r, c in zip(rows.ravel(), cols.ravel())]
    return np.asarray(flat, dtype=np.float64).reshape(rows.shape)
