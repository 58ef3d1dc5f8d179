"""Accelerator specs: frozen dataclasses that validate every field they are given.

An `AcceleratorSpec` is the single source of truth for one accelerator: its
technology, memory hierarchy, processing elements and array. Units are in the
field names. Energies in specs are in pJ per byte, as datasheets and papers
give them, and `hwsim.hardware.memory` converts them to joules for the models.

Each dataclass checks all of its fields and raises one `SpecError` that lists
every bad field with its value and what is allowed. `hwsim.hardware.loading`
prefixes those field names with the YAML key path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from hwsim.hardware.technology import Technology

if TYPE_CHECKING:
    from hwsim.hardware.device_specs import GPUSpec, NPUSpec

PJ = 1e-12

Dataflow = Literal["os", "ws", "is"]
DATAFLOWS = ("os", "ws", "is")
DATAFLOW_NAMES = {"os": "output-stationary", "ws": "weight-stationary", "is": "input-stationary"}
MemoryKind = Literal["dram", "sram", "register_file"]
MEMORY_KINDS = ("dram", "sram", "register_file")
PEKind = Literal["fixed", "bit_fusion", "bit_serial", "block_scaled"]
PE_KINDS = ("fixed", "bit_fusion", "bit_serial", "block_scaled")
FALLBACKS = ("none", "dequantize")
ACCELERATOR_KINDS = ("systolic_array", "gpu", "npu")

# Memory levels the systolic-array model reads and writes, by name.
SYSTOLIC_MEMORY_LEVELS = ("dram", "activation_buffer", "weight_buffer", "output_buffer")


@dataclass(frozen=True)
class FieldError:
    """One invalid field: where it is, the value given and what is allowed."""

    path: str
    value: Any
    allowed: str

    def __str__(self) -> str:
        return f"{self.path}={self.value!r}: {self.allowed}"


class SpecError(ValueError):
    """Invalid accelerator spec; `errors` lists every bad field."""

    def __init__(self, errors: list[FieldError], source: str = "") -> None:
        self.errors = list(errors)
        self.source = source
        where = f" in {source}" if source else ""
        # One line, so that the command line can report it as one line on stderr.
        details = "; ".join(str(error) for error in self.errors)
        super().__init__(f"invalid accelerator spec{where} ({len(self.errors)} error(s)): {details}")

    def prefixed(self, prefix: str, source: str = "") -> "SpecError":
        errors = [FieldError(f"{prefix}.{e.path}" if prefix else e.path, e.value, e.allowed) for e in self.errors]
        return SpecError(errors, source or self.source)


class FieldChecker:
    """Collects field errors so that one exception can report all of them."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, path: str, value: Any, allowed: str) -> None:
        self.errors.append(FieldError(path, value, allowed))

    def positive_int(self, path: str, value: Any, fix: str = "") -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.add(path, value, f"must be a positive integer{'; ' + fix if fix else ''}")

    def positive_number(self, path: str, value: Any, fix: str = "") -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            self.add(path, value, f"must be a positive number{'; ' + fix if fix else ''}")

    def nonnegative_number(self, path: str, value: Any, fix: str = "") -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            self.add(path, value, f"must be a number >= 0{'; ' + fix if fix else ''}")

    def choice(self, path: str, value: Any, choices: tuple[str, ...]) -> None:
        if value not in choices:
            self.add(path, value, f"must be one of {', '.join(choices)}")

    def raise_if_any(self) -> None:
        if self.errors:
            raise SpecError(self.errors)


@dataclass(frozen=True)
class MemorySpec:
    """One level of the memory hierarchy: DRAM or HBM, an on-chip SRAM buffer, or a register file.

    Bandwidth is given per second (DRAM, whose clock is not the array's) or
    per array cycle (on-chip buffers). Leave both unset for a buffer that
    always keeps up with the array. Energies left unset are estimated from
    the capacity (see `hwsim.hardware.memory`). `bank_bytes` is the size of
    one SRAM macro, which sets the energy per access of a large banked buffer.
    """

    name: str
    kind: MemoryKind
    capacity_bytes: int
    bandwidth_bytes_per_s: float | None = None
    bandwidth_bytes_per_cycle: float | None = None
    read_energy_pj_per_byte: float | None = None
    write_energy_pj_per_byte: float | None = None
    bank_bytes: int | None = None

    def __post_init__(self) -> None:
        check = FieldChecker()
        check.choice("kind", self.kind, MEMORY_KINDS)
        check.positive_int("capacity_bytes", self.capacity_bytes)
        if self.bandwidth_bytes_per_s is not None:
            check.positive_number("bandwidth_bytes_per_s", self.bandwidth_bytes_per_s, "a level that can move no data stalls forever")
        if self.bandwidth_bytes_per_cycle is not None:
            check.positive_number("bandwidth_bytes_per_cycle", self.bandwidth_bytes_per_cycle, "a level that can move no data stalls forever")
        if self.bandwidth_bytes_per_s is not None and self.bandwidth_bytes_per_cycle is not None:
            check.add("bandwidth_bytes_per_cycle", self.bandwidth_bytes_per_cycle, "give bandwidth_bytes_per_s or bandwidth_bytes_per_cycle, not both")
        if self.kind == "dram" and self.bandwidth_bytes_per_s is None and self.bandwidth_bytes_per_cycle is None:
            check.add("bandwidth_bytes_per_s", None, "DRAM needs a bandwidth: set bandwidth_bytes_per_s or bandwidth_bytes_per_cycle")
        for name in ("read_energy_pj_per_byte", "write_energy_pj_per_byte"):
            value = getattr(self, name)
            if value is not None:
                check.nonnegative_number(name, value, "an access cannot return energy")
        if self.bank_bytes is not None:
            check.positive_int("bank_bytes", self.bank_bytes)
        check.raise_if_any()

    def bandwidth_bytes_per_array_cycle(self, clock_hz: float) -> float:
        """Bandwidth in bytes per cycle of a clock at `clock_hz`; infinity when unset."""
        if self.bandwidth_bytes_per_cycle is not None:
            return float(self.bandwidth_bytes_per_cycle)
        if self.bandwidth_bytes_per_s is not None:
            return float(self.bandwidth_bytes_per_s) / clock_hz
        return math.inf


@dataclass(frozen=True)
class PESpec:
    """A processing element: which operand formats it takes and how many MACs per cycle.

    kind:
    - "fixed": one multiplier built for `native_format`; operands whose values
      fit it run at one MAC per cycle at the native energy. With
      `fallback="dequantize"`, other operands are converted to the native
      format at the buffer read port, at one native multiply per element read.
    - "bit_fusion": integer BitBricks of `brick_bits` that fuse up to
      `max_bits` x `max_bits` (Bit Fusion, Sharma et al., ISCA 2018). Operands
      of a and w bits, rounded up to powers of two, run (max/a) x (max/w)
      MACs per cycle. Wider operands take several cycles.
    - "bit_serial": activations in parallel up to `parallel_bits`, weights
      `serial_bits` per cycle, so one MAC takes ceil(w / serial_bits) cycles.
    - "block_scaled": block-scaled (MX-style) operands whose elements are in
      `element_formats` and scales in `scale_formats`;
      `macs_per_cycle_by_element_bits` maps element width to MACs per cycle.
    """

    kind: PEKind
    accumulator: str
    native_format: str | None = None
    fallback: str = "none"
    brick_bits: int | None = None
    max_bits: int | None = None
    fusion_energy_factor: float | None = None
    parallel_bits: int | None = None
    serial_bits: int | None = None
    max_serial_bits: int | None = None
    element_formats: tuple[str, ...] = ()
    scale_formats: tuple[str, ...] = ()
    macs_per_cycle_by_element_bits: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        from hwsim.hardware.datatypes import parse_number_type

        check = FieldChecker()
        check.choice("kind", self.kind, PE_KINDS)
        try:
            parse_number_type(self.accumulator)
        except ValueError as error:
            check.add("accumulator", self.accumulator, str(error))
        check.choice("fallback", self.fallback, FALLBACKS)
        required = {
            "fixed": ("native_format",),
            "bit_fusion": ("brick_bits", "max_bits", "fusion_energy_factor"),
            "bit_serial": ("parallel_bits", "serial_bits", "max_serial_bits"),
            "block_scaled": ("element_formats", "scale_formats", "macs_per_cycle_by_element_bits"),
        }.get(self.kind, ())
        for name in required:
            if getattr(self, name) in (None, ()):
                check.add(name, getattr(self, name), f"required for a {self.kind} PE")
        if self.fallback == "dequantize" and self.kind != "fixed":
            check.add("fallback", self.fallback, "the dequantize fallback needs a native_format, so it applies to fixed PEs only")
        for name in ("brick_bits", "max_bits", "parallel_bits", "serial_bits", "max_serial_bits"):
            if getattr(self, name) is not None:
                check.positive_int(name, getattr(self, name))
        if self.fusion_energy_factor is not None:
            check.positive_number("fusion_energy_factor", self.fusion_energy_factor)
        if isinstance(self.brick_bits, int) and isinstance(self.max_bits, int) and self.brick_bits > 0 and self.max_bits > 0:
            if self.max_bits % self.brick_bits or not _is_power_of_two(self.max_bits // self.brick_bits):
                check.add("max_bits", self.max_bits, f"must be brick_bits ({self.brick_bits}) times a power of two")
        for bits, macs in self.macs_per_cycle_by_element_bits:
            if isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0:
                check.add("macs_per_cycle_by_element_bits", bits, "keys must be positive element widths in bits")
            if isinstance(macs, bool) or not isinstance(macs, int) or macs <= 0:
                check.add(f"macs_per_cycle_by_element_bits.{bits}", macs, "must be a positive integer number of MACs per cycle")
        check.raise_if_any()


@dataclass(frozen=True)
class SystolicArraySpec:
    """Rows x cols PEs fed from three double-buffered SRAM buffers; the dataflow is one parameter."""

    rows: int
    cols: int
    dataflow: Dataflow

    def __post_init__(self) -> None:
        check = FieldChecker()
        check.positive_int("rows", self.rows, "an array needs at least one PE")
        check.positive_int("cols", self.cols, "an array needs at least one PE")
        check.choice("dataflow", self.dataflow, DATAFLOWS)
        check.raise_if_any()

    @property
    def num_pes(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class AcceleratorSpec:
    """One accelerator: technology, clock, static power, memory hierarchy and the section of its kind.

    A systolic array needs `pe` and `systolic_array`, a GPU needs `gpu`
    (`hwsim.hardware.device_specs.GPUSpec`) and an NPU needs `npu`
    (`NPUSpec`). For a GPU, `clock_hz` is the clock its datasheet peaks
    assume.
    """

    name: str
    kind: str
    technology: Technology
    clock_hz: float
    static_power_w: float
    memory: tuple[MemorySpec, ...]
    pe: PESpec | None = None
    systolic_array: SystolicArraySpec | None = None
    description: str = ""
    sources: tuple[str, ...] = field(default=())
    gpu: GPUSpec | None = None
    npu: NPUSpec | None = None

    def __post_init__(self) -> None:
        check = FieldChecker()
        if not self.name:
            check.add("name", self.name, "must be a non-empty string")
        check.choice("kind", self.kind, ACCELERATOR_KINDS)
        check.positive_number("clock_hz", self.clock_hz)
        check.nonnegative_number("static_power_w", self.static_power_w, "leakage power cannot be negative")
        names = [level.name for level in self.memory]
        for name in sorted({n for n in names if names.count(n) > 1}):
            check.add(f"memory.{name}", name, "memory level names must be unique")
        if self.kind == "systolic_array":
            if self.systolic_array is None:
                check.add("systolic_array", None, "required for kind systolic_array")
            if self.pe is None:
                check.add("pe", None, "required for kind systolic_array")
            self._check_levels(check, names, SYSTOLIC_MEMORY_LEVELS, "a systolic array")
        elif self.kind == "gpu":
            from hwsim.hardware.device_specs import GPU_MEMORY_LEVELS

            if self.gpu is None:
                check.add("gpu", None, "required for kind gpu")
            self._check_levels(check, names, GPU_MEMORY_LEVELS, "a GPU")
        elif self.kind == "npu":
            from hwsim.hardware.device_specs import NPU_MEMORY_LEVELS

            if self.npu is None:
                check.add("npu", None, "required for kind npu")
            self._check_levels(check, names, NPU_MEMORY_LEVELS, "an NPU")
        # Each kind's section is named after the kind.
        for section in ACCELERATOR_KINDS:
            if getattr(self, section) is not None and self.kind != section:
                check.add(section, "(given)", f"applies to kind {section} only; this accelerator is of kind {self.kind}")
        check.raise_if_any()

    @staticmethod
    def _check_levels(check: FieldChecker, names: list[str], required: tuple[str, ...], what: str) -> None:
        for level in required:
            if level not in names:
                check.add(f"memory.{level}", None, f"missing: {what} needs memory levels {', '.join(required)}")

    def memory_level(self, name: str) -> MemorySpec:
        for level in self.memory:
            if level.name == name:
                return level
        raise KeyError(f"accelerator {self.name!r} has no memory level {name!r}; it has {', '.join(l.name for l in self.memory)}")

    def has_memory_level(self, name: str) -> bool:
        return any(level.name == name for level in self.memory)


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0
