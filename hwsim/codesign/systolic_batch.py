"""One workload priced on many systolic arrays at once, as arrays of (hardware point x op).

Accelerators that share their PE, technology, dataflow and buffer kinds,
and differ only in array size, buffer capacities, clock, static power and
DRAM bandwidth, go through one call of `hwsim.hardware.systolic_counts.gemm_counts`
per format triple. The counts are priced as `SystolicArray.evaluate` prices
them: compute (MACs, block scales, output scales, dequantize fallback),
SRAM and DRAM bytes times their energy per byte, and static power times
latency.

NOTE: the pricing repeats `SystolicArray.evaluate` and `_price` of
`hwsim.hardware.systolic`; tests/test_codesign_evaluators.py compares the
two on many points, and a change there must be made here too.

A point that the model would reject (buffers too small for one fold, a
format the PE cannot take) is flagged in `needs_model`. The caller then
prices it with `SystolicArray` itself, which raises the error with its
message.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from hwsim.hardware.area import accelerator_area
from hwsim.hardware.datatypes import parse_number_type
from hwsim.hardware.memory import resolve_memory_level
from hwsim.hardware.pe import UnsupportedFormatError, map_operands
from hwsim.hardware.spec import AcceleratorSpec, MemorySpec
from hwsim.hardware.systolic_counts import gemm_counts, minimum_buffer_bytes

BUFFERS = ("activation_buffer", "weight_buffer", "output_buffer")
ENERGY_COMPONENTS = ("compute", "sram", "dram", "static")


def structure_key(spec: AcceleratorSpec) -> tuple | None:
    """What accelerators must share to be priced in one batch; None for a spec that this module leaves to `SystolicArray`.

    Buffers with a bandwidth limit are left out because their bandwidth per
    cycle would differ with the clock of each point.
    """
    if spec.kind != "systolic_array" or spec.systolic_array is None:
        return None
    if not all(spec.has_memory_level(name) for name in ("dram", *BUFFERS)):
        return None
    for name in BUFFERS:
        level = spec.memory_level(name)
        if level.bandwidth_bytes_per_s is not None or level.bandwidth_bytes_per_cycle is not None:
            return None
    return (spec.pe, spec.technology, spec.systolic_array.dataflow)


@functools.lru_cache(maxsize=4096)
def _level_energies(level: MemorySpec, technology) -> tuple[float, float]:
    """Read and write energy per byte of one level; they do not depend on the clock."""
    resolved = resolve_memory_level(level, technology, 1.0)
    return resolved.read_energy_j_per_byte, resolved.write_energy_j_per_byte


@functools.lru_cache(maxsize=4096)
def _area_mm2(spec: AcceleratorSpec) -> float:
    return accelerator_area(spec).total_mm2


@dataclass(frozen=True)
class BatchCosts:
    """Per-point totals over a workload, one element per accelerator of the batch."""

    latency_s: np.ndarray
    energy_j: dict[str, np.ndarray]
    macs: np.ndarray
    peak_mac_cycles: np.ndarray
    area_mm2: np.ndarray
    needs_model: np.ndarray


def _column(values) -> np.ndarray:
    return np.asarray(values)[:, None]


def _weighted_sum(values, runs: np.ndarray, count: int) -> np.ndarray:
    """Sum over ops of values times runs, for each point; values of shape (ops,) are the same for every point."""
    return np.broadcast_to((np.asarray(values) * runs).sum(axis=-1), (count,))


def price_batch(groups, specs: list[AcceleratorSpec]) -> BatchCosts:
    """Totals of the GEMM groups of one workload on each accelerator of `specs`, which share one `structure_key`."""
    count = len(specs)
    first = specs[0]
    pe, technology, dataflow = first.pe, first.technology, first.systolic_array.dataflow
    rows = np.array([spec.systolic_array.rows for spec in specs], dtype=np.int64)
    cols = np.array([spec.systolic_array.cols for spec in specs], dtype=np.int64)
    clock_hz = np.array([spec.clock_hz for spec in specs], dtype=np.float64)
    static_power_w = np.array([spec.static_power_w for spec in specs], dtype=np.float64)
    buffer_levels = [[spec.memory_level(name) for spec in specs] for name in BUFFERS]
    capacities = [np.array([level.capacity_bytes for level in levels], dtype=np.float64) for levels in buffer_levels]
    buffer_energies = [np.array([_level_energies(level, technology) for level in levels]) for levels in buffer_levels]
    dram_levels = [spec.memory_level("dram") for spec in specs]
    dram_bytes_per_cycle = np.array([level.bandwidth_bytes_per_array_cycle(spec.clock_hz) for level, spec in zip(dram_levels, specs)])
    dram_energies = np.array([_level_energies(level, technology) for level in dram_levels])
    accumulator_bytes = parse_number_type(pe.accumulator).width / 8

    latency_s = np.zeros(count)
    energy_j = {component: np.zeros(count) for component in ENERGY_COMPONENTS}
    macs_total = np.zeros(count)
    peak_mac_cycles = np.zeros(count)
    needs_model = np.zeros(count, dtype=bool)
    for group in groups:
        try:
            mapping = map_operands(pe, group.activation_format, group.weight_format, technology)
        except UnsupportedFormatError:
            needs_model[:] = True
            break
        m, n, k = group.m, group.n, group.k
        bytes_per_element = (
            float(np.max(group.activation_bytes / (m * k))), float(np.max(group.weight_bytes / (k * n))), accumulator_bytes,
        )
        for index in range(count):
            minimums = minimum_buffer_bytes(int(rows[index]), int(cols[index]), dataflow, mapping.reduction_per_step, bytes_per_element)
            if any(capacity[index] < minimum for capacity, minimum in zip(capacities, minimums)):
                needs_model[index] = True

        counts = gemm_counts(
            _column(rows), _column(cols), dataflow, m, n, k,
            reduction_per_step=mapping.reduction_per_step,
            cycles_per_step=mapping.cycles_per_step,
            a_bytes=group.activation_bytes, b_bytes=group.weight_bytes, c_bytes=group.output_bytes,
            accumulator_bytes_per_element=accumulator_bytes,
            buffer_bytes=tuple(_column(capacity) for capacity in capacities),
            dram_bytes_per_cycle=_column(dram_bytes_per_cycle),
        )
        macs = (m * n * k).astype(np.float64)
        compute = macs * mapping.mac.energy_j
        if mapping.block_size is not None:
            blocks = (m * n * -(-k // mapping.block_size)).astype(np.float64)
            compute = compute + blocks * mapping.block.energy_j
        compute = compute + (m * n).astype(np.float64) * mapping.output_scale.energy_j
        converted = np.zeros_like(macs)
        if mapping.dequantize_activation:
            converted = converted + counts["array_read_bytes_a"] / (group.activation_bytes / (m * k))
        if mapping.dequantize_weight:
            converted = converted + counts["array_read_bytes_b"] / (group.weight_bytes / (k * n))
        compute = compute + converted * mapping.dequantize.energy_j
        sram = np.zeros_like(macs)
        for energies, reads, writes in zip(buffer_energies, counts["buffer_read_bytes"], counts["buffer_write_bytes"]):
            sram = sram + (reads * _column(energies[:, 0]) + writes * _column(energies[:, 1]))
        dram = counts["dram_read_bytes"] * _column(dram_energies[:, 0]) + counts["dram_write_bytes"] * _column(dram_energies[:, 1])
        cycles = counts["compute_cycles"] + counts["stall_cycles"]
        latency = cycles / _column(clock_hz)
        static = _column(static_power_w) * latency

        runs = group.runs
        latency_s += _weighted_sum(latency, runs, count)
        for component, values in (("compute", compute), ("sram", sram), ("dram", dram), ("static", static)):
            energy_j[component] += _weighted_sum(values, runs, count)
        macs_total += _weighted_sum(macs, runs, count)
        peak_mac_cycles += _weighted_sum(cycles, runs, count) * (rows * cols * mapping.macs_per_pe_cycle)
    area_mm2 = np.array([_area_mm2(spec) for spec in specs])
    return BatchCosts(latency_s, energy_j, macs_total, peak_mac_cycles, area_mm2, needs_model)
