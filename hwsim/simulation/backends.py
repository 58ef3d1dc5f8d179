"""One interface over the accelerator models: matmul, attention and vector requests in, `KernelCost` out.

- GPUs use `hwsim.hardware.gpu.GPU` directly.
- NPUs use `hwsim.hardware.npu.NPU`, and the backend decides whether the
  model's weights (and KV cache) fit in SRAM.
- Systolic arrays use `hwsim.hardware.systolic.SystolicArray`: a matmul is
  one GEMM evaluation repeated over its batch, attention is two GEMMs per
  (sequence, KV head) with the query heads of a group stacked as rows, and
  vector work costs only its DRAM traffic, because the systolic specs
  describe no vector unit (its compute is not modelled).

`unsupported="emulate"` lets formats a device cannot take run converted:
tensor cores and NPUs convert on their vector units (see
`hwsim.hardware.precision`); a fixed systolic PE uses its "dequantize"
fallback; other systolic PEs compute on a substitute format that they take,
priced with one native multiply per converted element. Emulated values are
rounded, so the accuracy path must be asked what that does to the model.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import lru_cache

import numpy as np

from hwsim import formats as format_registry
from hwsim.hardware.energy import multiply_energy
from hwsim.hardware.gpu import GPU
from hwsim.hardware.kernels import AttentionRequest, KernelCost, MatmulRequest, VectorRequest, bound_of
from hwsim.hardware.npu import ACTIVATION_SRAM_SHARE, NPU
from hwsim.hardware.pe import UnsupportedFormatError, map_operands
from hwsim.hardware.spec import AcceleratorSpec
from hwsim.hardware.systolic import BUFFERS, SystolicArray

log = logging.getLogger(__name__)

# Formats tried, in order, when a systolic PE other than a fixed one cannot take an operand and emulation is allowed.
SUBSTITUTE_FORMATS = ("int8", "int4", "mxfp8_e4m3", "mxint8", "fp16", "bf16")


class GPUBackend:
    kind = "gpu"

    def __init__(self, spec: AcceleratorSpec, allow_emulation: bool) -> None:
        self.model = GPU(spec, allow_emulation=allow_emulation)
        self.spec = spec
        self.memory_levels = ("hbm", "l2", "shared_memory")
        self.capacity_bytes = spec.memory_level("hbm").capacity_bytes

    def prepare(self, weight_bytes: float, kv_bytes: float) -> None:
        """Nothing to place: a GPU keeps everything in HBM."""

    def matmul(self, request: MatmulRequest) -> KernelCost:
        return self.model.matmul(request)

    def attention(self, request: AttentionRequest) -> KernelCost:
        return self.model.attention(request)

    def vector(self, request: VectorRequest) -> KernelCost:
        return self.model.vector(request)


class NPUBackend:
    kind = "npu"

    def __init__(self, spec: AcceleratorSpec, allow_emulation: bool) -> None:
        self.model = NPU(spec, allow_emulation=allow_emulation)
        self.spec = spec
        self.memory_levels = ("dram", "sram")
        self.capacity_bytes = spec.memory_level("dram").capacity_bytes
        self.weights_on_chip = False
        self.kv_on_chip = False

    def prepare(self, weight_bytes: float, kv_bytes: float) -> None:
        """Decide what stays in SRAM: the weights if they fit in the share not kept for activations, then the KV cache."""
        budget = (1.0 - ACTIVATION_SRAM_SHARE) * self.model.sram_bytes
        self.weights_on_chip = weight_bytes <= budget
        self.kv_on_chip = self.weights_on_chip and weight_bytes + kv_bytes <= budget
        log.info("NPU %s: weights %s, KV cache %s", self.spec.name,
                 "in SRAM" if self.weights_on_chip else "streamed from DRAM", "in SRAM" if self.kv_on_chip else "in DRAM")

    def matmul(self, request: MatmulRequest) -> KernelCost:
        return self.model.matmul(request, weights_on_chip=self.weights_on_chip)

    def attention(self, request: AttentionRequest) -> KernelCost:
        return self.model.attention(request, kv_on_chip=self.kv_on_chip)

    def vector(self, request: VectorRequest) -> KernelCost:
        return self.model.vector(request, weights_on_chip=self.weights_on_chip)


class SystolicBackend:
    kind = "systolic_array"

    def __init__(self, spec: AcceleratorSpec, allow_emulation: bool) -> None:
        self.spec = spec
        self.allow_emulation = allow_emulation
        self.array = SystolicArray(spec)
        self._fallback_array: SystolicArray | None = None
        self.memory_levels = ("dram", *BUFFERS)
        self.capacity_bytes = spec.memory_level("dram").capacity_bytes
        dram = spec.memory_level("dram")
        self.dram_bandwidth_bytes_per_s = dram.bandwidth_bytes_per_array_cycle(spec.clock_hz) * spec.clock_hz
        self.dram = self.array.memory.level("dram")

    def prepare(self, weight_bytes: float, kv_bytes: float) -> None:
        """Nothing to place: the systolic model reads every GEMM operand from DRAM."""

    def _array_for(self, activation_format: str, weight_format: str):
        """Return the array model, the formats and the conversion energy per element to evaluate this pair with."""
        try:
            self.array.mapping(activation_format, weight_format)
            return self.array, activation_format, weight_format, 0.0, 0.0
        except UnsupportedFormatError:
            if not self.allow_emulation:
                raise
        pe = self.spec.pe
        if pe.kind == "fixed":
            if self._fallback_array is None:
                self._fallback_array = SystolicArray(replace(self.spec, pe=replace(pe, fallback="dequantize")))
            return self._fallback_array, activation_format, weight_format, 0.0, 0.0
        activation = self._substitute(activation_format, weight_format, "activation")
        weight = self._substitute(weight_format, activation, "weight")
        # Estimate: one int8 multiply per converted element, as the fixed PE's fallback charges one native multiply.
        energy = multiply_energy("int8", "int8", self.spec.technology).energy_j
        a_energy = energy if activation != activation_format else 0.0
        w_energy = energy if weight != weight_format else 0.0
        return self.array, activation, weight, a_energy, w_energy

    def _substitute(self, fmt: str, other: str, role: str) -> str:
        pe = self.spec.pe
        for candidate in (fmt, *SUBSTITUTE_FORMATS):
            pair = (candidate, other) if role == "activation" else (other, candidate)
            try:
                map_operands(pe, *pair, self.spec.technology)
                return candidate
            except UnsupportedFormatError:
                continue
        for candidate in SUBSTITUTE_FORMATS:
            try:
                map_operands(pe, candidate, candidate, self.spec.technology)
                return candidate
            except UnsupportedFormatError:
                continue
        raise UnsupportedFormatError(f"{role} format {fmt!r}: no substitute format runs on the {pe.kind} PE of {self.spec.name!r}")

    def _gemm(self, name, m, n, k, batch, activation_format, weight_format, output_format, a_bytes, b_bytes, c_bytes) -> KernelCost:
        """`batch` identical GEMMs; byte arguments are per GEMM and may be arrays over steps."""
        array, activation, weight, a_energy, w_energy = self._array_for(activation_format, weight_format)
        evaluation = array.evaluate(m, n, k, activation, weight, output_format,
                                    activation_bytes=a_bytes, weight_bytes=b_bytes, output_bytes=c_bytes)
        counts = evaluation.counts
        clock = self.spec.clock_hz
        latency = evaluation.cycles / clock * batch
        compute_s = counts["compute_cycles"] / clock * batch
        traffic = {"dram": (counts["dram_read_bytes"] * batch, counts["dram_write_bytes"] * batch)}
        for level, reads, writes in zip(BUFFERS, counts["buffer_read_bytes"], counts["buffer_write_bytes"]):
            traffic[level] = (reads * batch, writes * batch)
        energy = {key: value * batch for key, value in evaluation.energy_j.items()}
        if a_energy or w_energy:
            elements = np.asarray(m, dtype=np.float64) * k * a_energy + np.asarray(n, dtype=np.float64) * k * w_energy
            energy["compute"] = energy["compute"] + elements * batch
        memory_s = (traffic["dram"][0] + traffic["dram"][1]) / self.dram_bandwidth_bytes_per_s
        bound = np.where(counts["memory_bound"], "memory", "compute")
        notes = evaluation.mapping.notes
        if (activation, weight) != (activation_format, weight_format):
            notes = notes + (f"emulated: {activation_format} x {weight_format} computed as {activation} x {weight}",)
        return KernelCost(
            latency_s=_scalar(latency), compute_s=_scalar(compute_s), memory_s=_scalar(memory_s), overhead_s=0.0,
            energy_j={key: _scalar(value) for key, value in energy.items()},
            traffic={level: (_scalar(r), _scalar(w)) for level, (r, w) in traffic.items()},
            macs=_scalar(evaluation.macs * batch), utilization=_scalar(evaluation.utilization),
            bound=bound if bound.ndim else str(bound), notes=notes,
        )

    def matmul(self, request: MatmulRequest) -> KernelCost:
        b = request.batch
        cost = self._gemm(request.name, request.m, request.n, request.k, b, request.activation_format, request.weight_format,
                          request.output_format, request.activation_bytes / b, request.weight_bytes / b, request.output_bytes / b)
        if request.bias_bytes:
            # The systolic model has no epilogue: the bias is one more DRAM read after the GEMM.
            cost = _add(cost, self.vector(VectorRequest(request.name, 0.0, 0.0, 0.0, request.bias_bytes, 0.0)))
        return cost

    def attention(self, request: AttentionRequest) -> KernelCost:
        groups = request.batch_size * request.kv_heads
        rows = request.query_tokens * request.group_size
        keys = np.asarray(request.key_tokens, dtype=np.int64)
        act_bytes = _bytes_per_element(request.query_format)
        kv_per_group = np.asarray(request.kv_read_bytes, dtype=np.float64) / groups / 2
        scores_bytes = rows * keys * act_bytes
        scores = self._gemm(request.name, rows, keys, request.head_dim, groups, request.query_format, request.kv_format,
                            request.query_format, request.query_bytes / groups, kv_per_group, scores_bytes)
        context = self._gemm(request.name, rows, request.head_dim, keys, groups, request.query_format, request.kv_format,
                             request.output_format, scores_bytes, kv_per_group, request.output_bytes / groups)
        # The scores go to DRAM and come back as the context's A operand. The softmax between them is not priced.
        return _add(scores, context)

    def vector(self, request: VectorRequest) -> KernelCost:
        read = request.activation_bytes + request.weight_bytes
        write = request.output_bytes + request.kv_write_bytes
        latency = (read + write) / self.dram_bandwidth_bytes_per_s
        energy = {
            "compute": 0.0,
            "sram": 0.0,
            "dram": self.dram.access_energy_j(read, write),
            "static": self.spec.static_power_w * latency,
        }
        traffic = {"dram": (read, write), **{level: (0.0, 0.0) for level in BUFFERS}}
        return KernelCost(latency, 0.0, latency, 0.0, energy, traffic, 0.0, 0.0, bound_of(0.0, latency, 0.0),
                          ("no vector unit in the spec: only DRAM traffic is priced",))


def make_backend(spec: AcceleratorSpec, *, allow_emulation: bool):
    """Build the backend for the accelerator's kind."""
    backends = {"gpu": GPUBackend, "npu": NPUBackend, "systolic_array": SystolicBackend}
    return backends[spec.kind](spec, allow_emulation)


def _add(first: KernelCost, second: KernelCost) -> KernelCost:
    """Two kernels run back to back."""
    latency = np.asarray(first.latency_s) + np.asarray(second.latency_s)
    weights = np.asarray(first.latency_s) / latency
    return KernelCost(
        latency_s=_scalar(latency),
        compute_s=_scalar(np.asarray(first.compute_s) + np.asarray(second.compute_s)),
        memory_s=_scalar(np.asarray(first.memory_s) + np.asarray(second.memory_s)),
        overhead_s=first.overhead_s + second.overhead_s,
        energy_j={k: _scalar(np.asarray(first.energy_j[k]) + np.asarray(second.energy_j[k])) for k in first.energy_j},
        traffic={level: (_scalar(np.asarray(first.traffic[level][0]) + np.asarray(second.traffic[level][0])),
                         _scalar(np.asarray(first.traffic[level][1]) + np.asarray(second.traffic[level][1])))
                 for level in first.traffic},
        macs=_scalar(np.asarray(first.macs) + np.asarray(second.macs)),
        utilization=_scalar(np.asarray(first.utilization) * weights + np.asarray(second.utilization) * (1 - weights)),
        bound=np.where(np.asarray(first.latency_s) >= np.asarray(second.latency_s), first.bound, second.bound)
        if np.ndim(latency) else (first.bound if first.latency_s >= second.latency_s else second.bound),
        notes=tuple(dict.fromkeys(first.notes + second.notes)),
    )


@lru_cache(maxsize=256)
def _bytes_per_element(fmt: str) -> float:
    return format_registry.get(fmt).bits_per_element / 8


def _scalar(value):
    array = np.asarray(value)
    return float(array) if array.ndim == 0 else array
