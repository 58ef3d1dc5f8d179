"""GPU with tensor cores: latency, energy and traffic of matmuls, fused attention and vector kernels.

Performance model, per kernel:

- A GEMM is split into thread-block output tiles of one of the spec's
  `thread_block_tiles`; partial tiles are padded to a whole tile. The tiles
  run in waves of `sm_count * ctas_per_sm`, and every wave takes as long as
  one full tile at the per-slot share of the tensor-core peak times the
  achievable fraction (`tensor_core_efficiency`). When the tiles do not
  fill one wave, the kernel may split the reduction into up to 16 slices
  (split-K), paying for their fp32 partial sums in L2. The kernel picks
  the tile and split with the least time. A small-M GEMM (decode) thus
  pays for padding to the tile's rows, and a GEMM with few tiles pays for
  its last, partial wave.
- Operands that the tensor cores cannot take are converted by the CUDA
  cores (`hwsim.hardware.precision.resolve_matmul`): a weight-only kernel
  (W4A16) dequantizes each weight element once per row block of tiles that
  reads it, at DEQUANT_FLOPS_PER_ELEMENT; block scales the tensor cores do
  not apply cost RESCALE_FLOPS_PER_BLOCK per partial sum. CUDA-core work and
  tensor-core work of one kernel are added, because they share the SMs'
  issue slots.
- Attention runs as one fused FlashAttention-style kernel: scores, softmax
  and context on chip, so only Q, K, V and the output move through HBM. Its
  matrix rows (query tokens times the query heads that share a KV head) are
  padded to the 16 rows of the MMA instruction.
- Elementwise and reduction ops run on the CUDA cores at
  `cuda_core_ops_per_s`, with NONLINEAR_FLOPS per exp, rsqrt or SiLU.
- Each thread block loads its A and B tiles from L2 into shared memory, so
  a GEMM moves A through L2 once per column of tiles and B once per row of
  tiles, or once per cluster of `cluster_size` row blocks when a cluster
  multicasts B. Small tiles reuse less and need more L2 bandwidth, which is
  what makes large tiles faster once a GEMM is big.
- Each kernel takes max(compute time, HBM bytes / (bandwidth x
  `memory_efficiency`), L2 bytes / L2 bandwidth) plus
  `kernel_launch_overhead_s`, and no less than its dynamic energy over the
  board power allows (`apply_power_limit`).

Energy: tensor-core MACs (padded tiles included, because the hardware
computes them) at the MAC energy of the compute precision, CUDA-core FLOPs
at half an FP32 multiply-add, L2 and shared-memory traffic at their SRAM
energy per byte, HBM traffic at the DRAM energy per byte, static power over
the latency (see `hwsim.hardware.memory` and `hwsim.hardware.energy`).

What this model ignores: L2 hits between kernels (every kernel reads its
inputs from HBM once and writes its outputs once), HBM re-reads when a GEMM's
operands exceed L2, stream-K kernels, overlap between
consecutive kernels, kernel fusion beyond attention, register-file energy,
clock changes under load other than the power limit, and the precision of
the accumulator in the epilogue.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

import numpy as np

from hwsim import formats as format_registry
from hwsim.hardware.cost import GemmOp, MemoryTraffic, OpCost
from hwsim.hardware.energy import mac_energy
from hwsim.hardware.kernels import AttentionRequest, KernelCost, MatmulRequest, VectorRequest, apply_power_limit, bound_of
from hwsim.hardware.memory import MemoryHierarchy
from hwsim.hardware.precision import PRECISION_NUMBER_TYPES, ComputePlan, accumulator_for, resolve_matmul
from hwsim.hardware.spec import AcceleratorSpec

log = logging.getLogger(__name__)

# Estimate: converting one element takes a type conversion and one fused multiply-add that applies
# scale and zero point, which the CUDA cores issue as about 2 FP32 FLOPs.
DEQUANT_FLOPS_PER_ELEMENT = 2.0
# One fused multiply-add rescales one partial sum by its block's scale.
RESCALE_FLOPS_PER_BLOCK = 2.0
# Estimate: an exp, rsqrt, reciprocal or SiLU evaluation costs about 4 FP32 FLOPs of issue time.
NONLINEAR_FLOPS = 4.0
# Split-K factors a kernel may use when its tiles do not fill the GPU; each slice keeps at least
# MIN_SPLIT_K_DEPTH elements of the reduction and writes fp32 partial sums (PARTIAL_SUM_BYTES each).
SPLIT_K_FACTORS = (1, 2, 4, 8, 16)
MIN_SPLIT_K_DEPTH = 256
PARTIAL_SUM_BYTES = 4
# Rows of the smallest tensor-core MMA instruction (mma.m16n8k16), the padding unit of attention rows.
MMA_ROWS = 16
# FlashAttention-2 processes 128 query rows per thread block; K and V tiles are read once per block.
ATTENTION_QUERY_BLOCK = 128


def bytes_per_element(fmt) -> float:
    """Storage bytes per element of a format, scale overhead included."""
    return format_registry.get(fmt).bits_per_element / 8


class GPU:
    """Cost model of one GPU spec (kind "gpu").

    `allow_emulation` lets activation formats that the tensor cores do not
    take run after conversion by the CUDA cores; otherwise they raise
    UnsupportedFormatError.
    """

    def __init__(self, spec: AcceleratorSpec, *, allow_emulation: bool = False) -> None:
        if spec.kind != "gpu" or spec.gpu is None:
            raise ValueError(f"accelerator {spec.name!r} is of kind {spec.kind!r}; GPU needs kind gpu")
        self.spec = spec
        self.gpu = spec.gpu
        self.allow_emulation = allow_emulation
        self.memory = MemoryHierarchy.of(spec)
        self.hbm = self.memory.level("hbm")
        self.l2 = self.memory.level("l2")
        self.shared_memory = self.memory.level("shared_memory")
        self.hbm_bandwidth_bytes_per_s = _bandwidth(spec.memory_level("hbm"), spec.clock_hz)
        self.effective_bandwidth_bytes_per_s = self.hbm_bandwidth_bytes_per_s * self.gpu.memory_efficiency
        l2_spec = spec.memory_level("l2")
        self.l2_bandwidth_bytes_per_s = _bandwidth(l2_spec, spec.clock_hz)
        self.precisions = self.gpu.peak_ops_per_s
        self.flop_energy_j = mac_energy("fp32", "fp32", "fp32", spec.technology).energy_j / 2
        self._mac_energy_j: dict[str, float] = {}

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def capacity_bytes(self) -> int:
        return self.hbm.capacity_bytes

    def plan(self, activation_format, weight_format) -> ComputePlan:
        """Compute precision and conversions for this operand pair (see `resolve_matmul`)."""
        return _plan(self.spec.name, tuple(self.precisions.items()), self.gpu.block_scaled_precisions,
                     str(activation_format), str(weight_format), self.allow_emulation)

    def mac_energy_j(self, precision: str) -> float:
        """Energy of one tensor-core MAC at `precision`, with its accumulator, at the spec's technology."""
        if precision not in self._mac_energy_j:
            number = PRECISION_NUMBER_TYPES[precision]
            self._mac_energy_j[precision] = mac_energy(number, number, accumulator_for(precision), self.spec.technology).energy_j
        return self._mac_energy_j[precision]

    def _finish(self, compute_s, memory_s, macs, peak_ops_per_s, energy, traffic, notes) -> KernelCost:
        overhead_s = self.gpu.kernel_launch_overhead_s
        if isinstance(compute_s, float) and isinstance(memory_s, float):
            latency = max(compute_s, memory_s) + overhead_s
        else:
            latency = np.maximum(compute_s, memory_s) + overhead_s
        energy["static"] = self.spec.static_power_w * latency
        utilization = np.asarray(macs, dtype=np.float64) * 2 / (peak_ops_per_s * latency)
        cost = KernelCost(
            latency_s=_scalar(latency), compute_s=_scalar(compute_s), memory_s=_scalar(memory_s), overhead_s=overhead_s,
            energy_j={k: _scalar(v) for k, v in energy.items()}, traffic=traffic, macs=_scalar(macs),
            utilization=_scalar(utilization), bound=bound_of(compute_s, memory_s, overhead_s), notes=tuple(notes),
        )
        return apply_power_limit(cost, self.gpu.board_power_w, self.spec.static_power_w)

    def matmul(self, request: MatmulRequest) -> KernelCost:
        """Cost of `request.batch` GEMMs with the tile, wave and conversion model of this module."""
        plan = self.plan(request.activation_format, request.weight_format)
        peak = self.precisions[plan.precision]
        rate = peak * self.gpu.efficiency(plan.precision)
        slots = self.gpu.sm_count * self.gpu.ctas_per_sm
        m, n, k, batch = request.m, request.n, request.k, request.batch
        read = request.activation_bytes + request.weight_bytes + request.bias_bytes
        write = request.output_bytes
        hbm_s = (read + write) / self.effective_bandwidth_bytes_per_s
        best = None
        for tile_m, tile_n in self.gpu.thread_block_tiles:
            row_blocks, col_blocks = math.ceil(m / tile_m), math.ceil(n / tile_n)
            for split in SPLIT_K_FACTORS:
                if split > 1 and (batch * row_blocks * col_blocks * split > slots or k / split < MIN_SPLIT_K_DEPTH):
                    break
                ctas = batch * row_blocks * col_blocks * split
                waves = math.ceil(ctas / slots)
                tensor_s = waves * slots * 2.0 * tile_m * tile_n * math.ceil(k / split) / rate
                vector_flops = 0.0
                if plan.convert_weight:
                    vector_flops += batch * n * k * row_blocks * DEQUANT_FLOPS_PER_ELEMENT
                if plan.convert_activation:
                    vector_flops += batch * m * k * col_blocks * DEQUANT_FLOPS_PER_ELEMENT
                if plan.rescale_block_size:
                    vector_flops += batch * m * n * math.ceil(k / plan.rescale_block_size) * RESCALE_FLOPS_PER_BLOCK
                compute_s = tensor_s + vector_flops / self.gpu.cuda_core_ops_per_s
                # Split-K slices write fp32 partial sums and read them back to reduce them.
                partials = 2.0 * batch * m * n * PARTIAL_SUM_BYTES * (split - 1)
                l2_read = request.activation_bytes * col_blocks + request.weight_bytes * math.ceil(row_blocks / self.gpu.cluster_size)
                l2_s = (l2_read + write + partials) / self.l2_bandwidth_bytes_per_s
                time_s = max(compute_s, hbm_s, l2_s)
                # Among equally fast choices, a kernel with less padding spends less energy.
                padded_macs = float(ctas) * tile_m * tile_n * math.ceil(k / split)
                candidate = (time_s, padded_macs, split, tile_m, tile_n, ctas, compute_s, l2_s, l2_read + partials / 2, vector_flops)
                if best is None or candidate < best:
                    best = candidate
        _, tile_macs, split, tile_m, tile_n, ctas, compute_s, l2_s, l2_read, vector_flops = best

        memory_s = max(hbm_s, l2_s)
        traffic = {"hbm": (read, write), "l2": (l2_read, write), "shared_memory": (l2_read, l2_read)}
        energy = {
            "compute": tile_macs * self.mac_energy_j(plan.precision) + vector_flops * self.flop_energy_j,
            "sram": self.l2.access_energy_j(l2_read, write) + self.shared_memory.access_energy_j(l2_read, l2_read),
            "dram": self.hbm.access_energy_j(read, write),
        }
        split_note = f", split-K {split}" if split > 1 else ""
        notes = [plan.note, f"tile {tile_m}x{tile_n}{split_note}, {ctas} thread blocks"]
        log.debug("matmul %s on %s: %s, tile %dx%d", request.name, self.name, plan.note, tile_m, tile_n)
        return self._finish(compute_s, memory_s, request.macs, peak, energy, traffic, notes)

    def attention(self, request: AttentionRequest) -> KernelCost:
        """Cost of one fused attention kernel (arrays over decode steps allowed)."""
        plan = self.plan(request.query_format, request.kv_format)
        peak = self.precisions[plan.precision]
        rate = peak * self.gpu.efficiency(plan.precision)
        rows = request.query_tokens * request.group_size
        padding = math.ceil(rows / MMA_ROWS) * MMA_ROWS / rows
        macs = request.macs
        tensor_macs = macs * padding
        kv_elements = np.asarray(request.kv_read_bytes, dtype=np.float64) / bytes_per_element(request.kv_format)
        query_elements = request.query_bytes / bytes_per_element(request.query_format)
        vector_flops = np.asarray(request.softmax_elementwise_ops, dtype=np.float64) + NONLINEAR_FLOPS * np.asarray(
            request.softmax_nonlinear_ops, dtype=np.float64
        )
        if plan.convert_weight:
            vector_flops = vector_flops + kv_elements * DEQUANT_FLOPS_PER_ELEMENT
        if plan.convert_activation:
            vector_flops = vector_flops + query_elements * DEQUANT_FLOPS_PER_ELEMENT
        if plan.rescale_block_size:
            vector_flops = vector_flops + macs / plan.rescale_block_size * RESCALE_FLOPS_PER_BLOCK
        compute_s = 2.0 * tensor_macs / rate + vector_flops / self.gpu.cuda_core_ops_per_s

        kv_bytes = np.asarray(request.kv_read_bytes, dtype=np.float64)
        read = request.query_bytes + kv_bytes
        write = request.output_bytes
        # Each block of query rows reads the K and V tiles it attends to; a causal mask skips the rest.
        query_blocks = math.ceil(rows / ATTENTION_QUERY_BLOCK)
        attended = np.asarray(request.pairs, dtype=np.float64) / (request.query_tokens * np.asarray(request.key_tokens, dtype=np.float64))
        l2_read = request.query_bytes + kv_bytes * query_blocks * attended
        memory_s = np.maximum((read + write) / self.effective_bandwidth_bytes_per_s, (l2_read + write) / self.l2_bandwidth_bytes_per_s)
        traffic = {"hbm": (read, write), "l2": (l2_read, write), "shared_memory": (l2_read, l2_read)}
        energy = {
            "compute": tensor_macs * self.mac_energy_j(plan.precision) + vector_flops * self.flop_energy_j,
            "sram": self.l2.access_energy_j(l2_read, write) + self.shared_memory.access_energy_j(l2_read, l2_read),
            "dram": self.hbm.access_energy_j(read, write),
        }
        notes = ["fused attention kernel (FlashAttention style)", plan.note]
        return self._finish(compute_s, memory_s, macs, peak, energy, traffic, notes)

    def vector(self, request: VectorRequest) -> KernelCost:
        """Cost of one elementwise or reduction kernel on the CUDA cores."""
        flops = request.elementwise_ops + NONLINEAR_FLOPS * request.nonlinear_ops
        compute_s = flops / self.gpu.cuda_core_ops_per_s
        read = request.activation_bytes + request.weight_bytes
        write = request.output_bytes + request.kv_write_bytes
        memory_s = (read + write) / self.effective_bandwidth_bytes_per_s
        traffic = {"hbm": (read, write), "l2": (read, write), "shared_memory": (0.0, 0.0)}
        energy = {
            "compute": flops * self.flop_energy_j,
            "sram": self.l2.access_energy_j(read, write),
            "dram": self.hbm.access_energy_j(read, write),
        }
        return self._finish(compute_s, memory_s, 0.0, self.gpu.cuda_core_ops_per_s, energy, traffic, ())

    def cost(self, op: GemmOp) -> OpCost:
        """Cost of one GEMM op, as every accelerator model returns it."""
        a_bytes, b_bytes, c_bytes = op.bytes_per_tensor()
        request = MatmulRequest(op.name, op.m, op.n, op.k, op.activation_format, op.weight_format, op.output_format,
                                a_bytes, b_bytes, c_bytes)
        return to_op_cost(self.matmul(request), op.name, self.name, self.spec.clock_hz)


def to_op_cost(cost: KernelCost, name: str, accelerator: str, clock_hz: float) -> OpCost:
    """Convert a scalar KernelCost to an OpCost: cycles at `clock_hz`, compute cycles being the compute units' busy time."""
    latency_cycles = float(cost.latency_s) * clock_hz
    compute_cycles = min(float(cost.compute_s) * clock_hz, latency_cycles)
    traffic = tuple(MemoryTraffic(level, float(r), float(w)) for level, (r, w) in cost.traffic.items())
    return OpCost(
        name=name, accelerator=accelerator, macs=int(round(float(cost.macs))), compute_cycles=compute_cycles,
        stall_cycles=latency_cycles - compute_cycles, clock_hz=clock_hz,
        energy_j={k: float(v) for k, v in cost.energy_j.items()}, traffic=traffic,
        utilization=float(cost.utilization), bound=str(cost.bound), notes=cost.notes,
    )


@lru_cache(maxsize=4096)
def _plan(device: str, precisions: tuple, block_scaled: tuple, activation: str, weight: str, allow_emulation: bool) -> ComputePlan:
    return resolve_matmul(activation, weight, dict(precisions), block_scaled, allow_emulation=allow_emulation, device=f"GPU {device!r}")


def _bandwidth(level, clock_hz: float) -> float:
    """Bandwidth of a memory level spec in bytes per second; a level without one raises."""
    if level.bandwidth_bytes_per_s is not None:
        return float(level.bandwidth_bytes_per_s)
    if level.bandwidth_bytes_per_cycle is not None:
        return float(level.bandwidth_bytes_per_cycle) * clock_hz
    raise ValueError(f"memory level {level.name!r} has no bandwidth; the GPU model needs bandwidth_bytes_per_s for hbm and l2")


def _scalar(value):
    array = np.asarray(value)
    return float(array) if array.ndim == 0 else array
