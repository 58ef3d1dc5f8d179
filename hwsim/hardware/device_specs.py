"""Specs of the GPU and edge-NPU accelerator kinds, validated like the rest of `AcceleratorSpec`.

A GPU spec gives what the tensor-core model in `hwsim.hardware.gpu` needs:
peak rates per compute precision, the CUDA-core rate for vector work, the thread-block tiles its GEMM kernels use, achievable
fractions of peak, the kernel launch overhead and the board power. An NPU
spec gives the MAC array, its modes (activation x weight precision), the
vector unit, a power envelope and a per-op dispatch overhead. Memory levels
live in the accelerator's `memory` section as for every kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwsim.hardware.precision import PRECISIONS
from hwsim.hardware.spec import FieldChecker

DEFAULT_EFFICIENCY_KEY = "default"
# Memory levels each kind's model reads, by name.
GPU_MEMORY_LEVELS = ("hbm", "l2", "shared_memory")
NPU_MEMORY_LEVELS = ("dram", "sram")


def _check_fraction(check: FieldChecker, path: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        check.add(path, value, "must be a fraction in (0, 1]")


@dataclass(frozen=True)
class GPUSpec:
    """A GPU with tensor cores.

    `tensor_core_ops_per_s` maps a compute precision to its dense peak in
    operations per second (two per multiply-accumulate), as datasheets give
    it; "fp32" there, when present, means FP32 math on the CUDA cores.
    `tensor_core_efficiency` maps a precision, or "default", to the fraction
    of that peak a large compute-bound GEMM reaches. `thread_block_tiles`
    lists the (rows, cols) output tiles a GEMM kernel may pick, one tile
    per thread block, `ctas_per_sm` thread blocks at a time per SM.
    `cluster_size` thread blocks along the rows form a cluster that loads
    each weight tile from L2 once and multicasts it (Hopper and later; 1
    means no clusters).
    """

    sm_count: int
    tensor_core_ops_per_s: tuple[tuple[str, float], ...]
    cuda_core_ops_per_s: float
    tensor_core_efficiency: tuple[tuple[str, float], ...]
    memory_efficiency: float
    thread_block_tiles: tuple[tuple[int, int], ...]
    ctas_per_sm: int
    kernel_launch_overhead_s: float
    board_power_w: float
    block_scaled_precisions: tuple[str, ...] = ()
    cluster_size: int = 1

    def __post_init__(self) -> None:
        check = FieldChecker()
        check.positive_int("sm_count", self.sm_count)
        check.positive_int("ctas_per_sm", self.ctas_per_sm)
        check.positive_int("cluster_size", self.cluster_size)

        if not self.tensor_core_ops_per_s:
            check.add("tensor_core_ops_per_s", self.tensor_core_ops_per_s, "give at least one precision and its peak")
        for precision, rate in self.tensor_core_ops_per_s:
            check.choice(f"tensor_core_ops_per_s.{precision}", precision, PRECISIONS)
            check.positive_number(f"tensor_core_ops_per_s.{precision}", rate)
        for name in ("cuda_core_ops_per_s", "board_power_w"):
            check.positive_number(name, getattr(self, name))
        check.nonnegative_number("kernel_launch_overhead_s", self.kernel_launch_overhead_s)
        _check_fraction(check, "memory_efficiency", self.memory_efficiency)

        keys = [key for key, _ in self.tensor_core_efficiency]
        if DEFAULT_EFFICIENCY_KEY not in keys:
            check.add("tensor_core_efficiency", self.tensor_core_efficiency,
                      f"needs a {DEFAULT_EFFICIENCY_KEY!r} entry for precisions without their own")
        for key, value in self.tensor_core_efficiency:
            if key != DEFAULT_EFFICIENCY_KEY:
                check.choice(f"tensor_core_efficiency.{key}", key, PRECISIONS)
            _check_fraction(check, f"tensor_core_efficiency.{key}", value)

        if not self.thread_block_tiles:
            check.add("thread_block_tiles", self.thread_block_tiles, "give at least one [rows, cols] tile")
        for rows, cols in self.thread_block_tiles:
            check.positive_int("thread_block_tiles.rows", rows)
            check.positive_int("thread_block_tiles.cols", cols)
        offered = dict(self.tensor_core_ops_per_s)
        for precision in self.block_scaled_precisions:
            if precision not in offered:
                check.add("block_scaled_precisions", precision, "must be a precision listed in tensor_core_ops_per_s")
        check.raise_if_any()

    @property
    def peak_ops_per_s(self) -> dict[str, float]:
        return dict(self.tensor_core_ops_per_s)

    def efficiency(self, precision: str) -> float:
        values = dict(self.tensor_core_efficiency)
        return values.get(precision, values[DEFAULT_EFFICIENCY_KEY])


@dataclass(frozen=True)
class NPUSpec:
    """An edge NPU: a weight-stationary MAC array, a vector unit, SRAM and off-chip LPDDR, within a power envelope.

    `modes` lists (activation precision, weight precision, MACs per PE per
    cycle): 1 for the array's base mode, 2 when a PE packs two narrow MACs,
    0.5 when a MAC takes two cycles. `array_rows` x `array_cols` PEs hold
    one weight tile; `mac_efficiency` is the fraction of the array's peak
    that a compute-bound layer reaches.
    """

    array_rows: int
    array_cols: int
    modes: tuple[tuple[str, str, float], ...]
    mac_efficiency: float
    vector_ops_per_cycle: float
    power_envelope_w: float
    op_overhead_s: float

    def __post_init__(self) -> None:
        check = FieldChecker()
        check.positive_int("array_rows", self.array_rows)
        check.positive_int("array_cols", self.array_cols)
        if not self.modes:
            check.add("modes", self.modes, "give at least one mode such as int8xint8: 1")
        for activation, weight, macs in self.modes:
            key = f"modes.{activation}x{weight}"
            check.choice(key, activation, PRECISIONS)
            check.choice(key, weight, PRECISIONS)
            check.positive_number(key, macs)
        _check_fraction(check, "mac_efficiency", self.mac_efficiency)
        check.positive_number("vector_ops_per_cycle", self.vector_ops_per_cycle)
        check.positive_number("power_envelope_w", self.power_envelope_w)
        check.nonnegative_number("op_overhead_s", self.op_overhead_s)
        check.raise_if_any()
