"""Accelerator-independent op description and cost result.

A `GemmOp` is C[M, N] = A[M, K] @ B[K, N] with A the activation, B the weight
and C the output, each with a format from the format registry. Bytes per
tensor come from the formats' storage accounting (scales and padding
included) unless the op overrides them. Every accelerator model returns an
`OpCost`: cycles and latency, energy by component, bytes read and written at
each memory level, utilisation and what bounds the op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hwsim import formats as format_registry

ENERGY_COMPONENTS = ("compute", "sram", "dram", "static")


def tensor_bytes(fmt, rows: int, cols: int) -> float:
    """Bytes to store a rows x cols tensor quantized along its last axis, scales and padding included."""
    spec = format_registry.get(fmt)
    return spec.storage_bits((rows, cols), axis=-1) / 8


@dataclass(frozen=True)
class GemmOp:
    """One GEMM C[m, n] = A[m, k] @ B[k, n]: A is the activation, B the weight, C the output.

    Quantization groups run along k for A and B (B stored as [n, k]) and
    along n for C. `*_bytes` override the sizes computed from the formats,
    for example for a compressed tensor. The `*_in_dram` flags mark whether a
    tensor starts (A, B) or ends (C) in DRAM. Set one False when the tensor
    stays on chip between ops.
    """

    m: int
    n: int
    k: int
    activation_format: str = "int8"
    weight_format: str = "int8"
    output_format: str = "int8"
    name: str = ""
    activation_bytes: float | None = None
    weight_bytes: float | None = None
    output_bytes: float | None = None
    activation_in_dram: bool = True
    weight_in_dram: bool = True
    output_in_dram: bool = True

    def __post_init__(self) -> None:
        for name in ("m", "n", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"invalid GEMM dimension {name}={value!r} in op {self.name or '(unnamed)'}: must be a positive integer")
        for name in ("activation_bytes", "weight_bytes", "output_bytes"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"invalid {name}={value!r} in op {self.name or '(unnamed)'}: must be a positive number of bytes")

    @property
    def macs(self) -> int:
        return self.m * self.n * self.k

    def bytes_per_tensor(self) -> tuple[float, float, float]:
        """Bytes of A, B and C, scale overhead included."""
        a = self.activation_bytes if self.activation_bytes is not None else tensor_bytes(self.activation_format, self.m, self.k)
        b = self.weight_bytes if self.weight_bytes is not None else tensor_bytes(self.weight_format, self.n, self.k)
        c = self.output_bytes if self.output_bytes is not None else tensor_bytes(self.output_format, self.m, self.n)
        return a, b, c


@dataclass(frozen=True)
class MemoryTraffic:
    """Bytes read from and written to one memory level during an op."""

    level: str
    read_bytes: float
    write_bytes: float


@dataclass(frozen=True)
class OpCost:
    """Cost of one op on one accelerator.

    `cycles` = `compute_cycles` + `stall_cycles` at `clock_hz`. `energy_j`
    maps each component (compute, sram, dram, static) to its energy, and the
    values sum to `total_energy_j`. `bound` is "memory" when moving the op's
    data through DRAM or a buffer takes longer than its compute cycles, else
    "compute". `area_mm2` is the accelerator's estimated area, when the model
    reports one.
    """

    name: str
    accelerator: str
    macs: int
    compute_cycles: float
    stall_cycles: float
    clock_hz: float
    energy_j: dict[str, float]
    traffic: tuple[MemoryTraffic, ...]
    utilization: float
    bound: str
    area_mm2: float | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def cycles(self) -> float:
        return self.compute_cycles + self.stall_cycles

    @property
    def latency_s(self) -> float:
        return self.cycles / self.clock_hz

    @property
    def total_energy_j(self) -> float:
        return float(sum(self.energy_j.values()))

    def traffic_at(self, level: str) -> MemoryTraffic:
        for item in self.traffic:
            if item.level == level:
                return item
        raise KeyError(f"op {self.name!r} has no traffic at memory level {level!r}")

    def to_row(self) -> dict[str, object]:
        """Flat dict for one row of a pandas DataFrame: SI units, one column per component and level."""
        row: dict[str, object] = {
            "op": self.name,
            "accelerator": self.accelerator,
            "macs": self.macs,
            "cycles": self.cycles,
            "compute_cycles": self.compute_cycles,
            "stall_cycles": self.stall_cycles,
            "latency_s": self.latency_s,
            "energy_j": self.total_energy_j,
            "utilization": self.utilization,
            "bound": self.bound,
            "area_mm2": self.area_mm2,
        }
        for component in ENERGY_COMPONENTS:
            row[f"{component}_energy_j"] = self.energy_j.get(component, 0.0)
        for item in self.traffic:
            row[f"{item.level}_read_bytes"] = item.read_bytes
            row[f"{item.level}_write_bytes"] = item.write_bytes
        return row
