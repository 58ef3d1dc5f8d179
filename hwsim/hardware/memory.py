"""Memory hierarchy: energy per byte and bandwidth of DRAM, SRAM buffers and register files.

SRAM energy per access grows with the capacity of the macro that serves it.
Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm, 0.9 V), gives the
energy of one 64-bit access: 10 pJ for 8 KB, 20 pJ for 32 KB, 100 pJ for 1 MB
(read here as 2**13, 2**15 and 2**20 bytes). Between those points the model
interpolates linearly in log-log; below 8 KB it extends the 8-32 KB slope.
Buffers larger than 1 MiB are assumed banked into 1 MiB macros unless the spec
sets `bank_bytes`, because one access reads one bank. DRAM costs 1.3 to 2.6 nJ
per 64-bit access in the same table; the default takes the low end.

Energies given in a spec are used as they are. Estimated ones are scaled from
45 nm to the accelerator's node with the Stillmaker-Baas energy factors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwsim.hardware.energy import HOROWITZ_SOURCE, PJ
from hwsim.hardware.spec import AcceleratorSpec, MemorySpec
from hwsim.hardware.technology import REFERENCE_TECHNOLOGY, Technology, energy_scale_from_reference

# Horowitz ISSCC 2014, 45 nm: SRAM energy per 64-bit access, (capacity in bytes, pJ).
HOROWITZ_SRAM_PJ_PER_64BIT = ((8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0))
# Horowitz ISSCC 2014, 45 nm: DRAM energy per 64-bit access is 1.3 to 2.6 nJ.
HOROWITZ_DRAM_PJ_PER_64BIT = (1300.0, 2600.0)
DEFAULT_DRAM_PJ_PER_BYTE = HOROWITZ_DRAM_PJ_PER_64BIT[0] / 8
# Largest SRAM macro the Horowitz table covers; larger buffers are modelled as banks of this size.
DEFAULT_MAX_BANK_BYTES = 1024 * 1024


def sram_access_energy_pj_per_byte(bank_bytes: float) -> float:
    """Energy per byte of one access to an SRAM macro of `bank_bytes`, at 45 nm and 0.9 V (estimate between table points)."""
    if bank_bytes <= 0:
        raise ValueError(f"invalid SRAM bank size {bank_bytes!r} bytes: must be positive")
    points = HOROWITZ_SRAM_PJ_PER_64BIT
    if bank_bytes <= points[0][0]:
        (c0, e0), (c1, e1) = points[0], points[1]
    elif bank_bytes >= points[-1][0]:
        (c0, e0), (c1, e1) = points[-2], points[-1]
    else:
        index = next(i for i in range(len(points) - 1) if points[i][0] <= bank_bytes <= points[i + 1][0])
        (c0, e0), (c1, e1) = points[index], points[index + 1]
    slope = math.log(e1 / e0) / math.log(c1 / c0)
    pj_per_64bit = e0 * (bank_bytes / c0) ** slope
    return pj_per_64bit / 8


def is_horowitz_sram_point(bank_bytes: float) -> bool:
    return any(bank_bytes == capacity for capacity, _ in HOROWITZ_SRAM_PJ_PER_64BIT)


@dataclass(frozen=True)
class MemoryLevel:
    """A memory level with its energies resolved to joules per byte and their sources."""

    name: str
    kind: str
    capacity_bytes: int
    bandwidth_bytes_per_cycle: float
    read_energy_j_per_byte: float
    write_energy_j_per_byte: float
    energy_source: str
    energy_is_estimate: bool

    def access_energy_j(self, read_bytes, write_bytes):
        """Energy of reading `read_bytes` and writing `write_bytes` (numbers or numpy arrays)."""
        return read_bytes * self.read_energy_j_per_byte + write_bytes * self.write_energy_j_per_byte


def _estimated_energy_pj_per_byte(spec: MemorySpec) -> tuple[float, str, bool]:
    """Energy per byte at 45 nm for a level whose spec gives none, with its source and whether it is an estimate."""
    if spec.kind == "dram":
        return DEFAULT_DRAM_PJ_PER_BYTE, f"{HOROWITZ_SOURCE}: DRAM 1.3 nJ per 64-bit access (low end of 1.3-2.6 nJ)", False
    bank = spec.bank_bytes if spec.bank_bytes is not None else min(spec.capacity_bytes, DEFAULT_MAX_BANK_BYTES)
    energy = sram_access_energy_pj_per_byte(bank)
    if is_horowitz_sram_point(bank):
        return energy, f"{HOROWITZ_SOURCE}: SRAM {bank // 1024} KiB", False
    return energy, f"estimate: SRAM of {bank} B per bank, interpolated in the Horowitz ISSCC 2014 SRAM table (45 nm)", True


def resolve_memory_level(spec: MemorySpec, technology: Technology, clock_hz: float) -> MemoryLevel:
    """Memory level with energies in J per byte: from the spec when given, else estimated and scaled to the node."""
    bandwidth = spec.bandwidth_bytes_per_array_cycle(clock_hz)
    if spec.read_energy_pj_per_byte is not None and spec.write_energy_pj_per_byte is not None:
        return MemoryLevel(
            spec.name, spec.kind, spec.capacity_bytes, bandwidth,
            spec.read_energy_pj_per_byte * PJ, spec.write_energy_pj_per_byte * PJ, "accelerator spec", False,
        )
    estimate_pj, source, is_estimate = _estimated_energy_pj_per_byte(spec)
    if spec.kind == "dram":
        factor = 1.0  # DRAM energy is set by the DRAM device, not by the accelerator's logic node.
    else:
        factor = energy_scale_from_reference(technology)
        if technology != REFERENCE_TECHNOLOGY:
            prefix = "" if source.startswith("estimate") else "estimate: "
            source = f"{prefix}{source}, scaled to {technology.node_nm:g} nm (Stillmaker & Baas 2017)"
            is_estimate = True
    read_pj = spec.read_energy_pj_per_byte if spec.read_energy_pj_per_byte is not None else estimate_pj * factor
    write_pj = spec.write_energy_pj_per_byte if spec.write_energy_pj_per_byte is not None else estimate_pj * factor
    return MemoryLevel(spec.name, spec.kind, spec.capacity_bytes, bandwidth, read_pj * PJ, write_pj * PJ, source, is_estimate)


@dataclass(frozen=True)
class MemoryHierarchy:
    """The resolved memory levels of one accelerator, from DRAM inwards."""

    levels: tuple[MemoryLevel, ...]

    @classmethod
    def of(cls, accelerator: AcceleratorSpec) -> "MemoryHierarchy":
        return cls(tuple(resolve_memory_level(s, accelerator.technology, accelerator.clock_hz) for s in accelerator.memory))

    def level(self, name: str) -> MemoryLevel:
        for level in self.levels:
            if level.name == name:
                return level
        raise KeyError(f"no memory level {name!r}; levels: {', '.join(l.name for l in self.levels)}")

    def has_level(self, name: str) -> bool:
        return any(level.name == name for level in self.levels)

    def transfer_cycles(self, name: str, num_bytes):
        """Cycles to move `num_bytes` through level `name` at its bandwidth (0 for an unbounded level)."""
        bandwidth = self.level(name).bandwidth_bytes_per_cycle
        if math.isinf(bandwidth):
            return num_bytes * 0.0
        return num_bytes / bandwidth
