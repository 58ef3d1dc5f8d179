"""GPU model: roofline, tile and wave quantization, weight-only dequantization, fused attention, formats, power limit.

Expected values are derived by hand in each test from the spec's numbers,
which come from the preset files (each with its datasheet source) or from
a small spec written here.
"""

import copy
import math
import re

import pytest

from hwsim.hardware import load_accelerator
from hwsim.hardware.gpu import DEQUANT_FLOPS_PER_ELEMENT, GPU, MMA_ROWS
from hwsim.hardware.kernels import AttentionRequest, MatmulRequest, VectorRequest
from hwsim.hardware.loading import accelerator_from_dict, preset_directory
from hwsim.hardware.pe import UnsupportedFormatError
from hwsim.hardware.spec import SpecError

# A small GPU whose memory is fast enough that the GEMMs below are compute bound.
SMALL_GPU = {
    "name": "small-gpu",
    "kind": "gpu",
    "technology": {"node_nm": 7, "supply_voltage_v": 0.75},
    "clock_hz": 1.0e9,
    "static_power_w": 0.0,
    "gpu": {
        "sm_count": 4,
        "tensor_core_ops_per_s": {"fp16": 1.0e12, "int8": 2.0e12, "fp32": 1.0e11},
        "cuda_core_ops_per_s": 1.0e11,
        "tensor_core_efficiency": {"default": 0.5},
        "memory_efficiency": 1.0,
        "thread_block_tiles": [[128, 128]],
        "ctas_per_sm": 1,
        "kernel_launch_overhead_s": 2.0e-6,
        "board_power_w": 1.0e6,
    },
    "memory": {
        "hbm": {"kind": "dram", "capacity_bytes": 2**34, "bandwidth_bytes_per_s": 1.0e18},
        "l2": {"kind": "sram", "capacity_bytes": 2**22, "bandwidth_bytes_per_s": 1.0e18},
        "shared_memory": {"kind": "sram", "capacity_bytes": 2**20},
    },
}


def _gpu(**changes):
    raw = copy.deepcopy(SMALL_GPU)
    for path, value in changes.items():
        node = raw
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return GPU(accelerator_from_dict(raw))


def _fp16_gemm(m, n, k, weight_format="fp16", weight_bytes=None):
    return MatmulRequest("gemm", m, n, k, "fp16", weight_format, "fp16", 2.0 * m * k,
                         2.0 * n * k if weight_bytes is None else weight_bytes, 2.0 * m * n)


def test_decode_gemv_is_bytes_over_bandwidth_plus_launch():
    spec = load_accelerator("a100-sxm4-80gb")
    gpu = GPU(spec)
    n = k = 4096
    request = _fp16_gemm(1, n, k)
    cost = gpu.matmul(request)
    # One token through a 4096x4096 fp16 layer moves the weights, the input row and the output row once.
    moved_bytes = 2 * n * k + 2 * k + 2 * n
    bandwidth = 2.039e12 * 0.834  # A100 datasheet HBM bandwidth x the preset's measured fraction
    expected_s = moved_bytes / bandwidth + 0.875e-6
    assert cost.bound == "memory"
    assert cost.latency_s == pytest.approx(expected_s, rel=1e-12)


def test_compute_bound_gemm_one_full_wave():
    gpu = _gpu()
    k = 256
    # 4 tiles of 128x128 fill the 4 SMs once: time = 2 * 128 * 128 * k FLOPs per SM at 1e12 * 0.5 / 4.
    cost = gpu.matmul(_fp16_gemm(4 * 128, 128, k))
    per_sm_flops_per_s = 1.0e12 * 0.5 / 4
    expected_s = 2 * 128 * 128 * k / per_sm_flops_per_s + 2.0e-6
    assert cost.bound == "compute"
    assert cost.latency_s == pytest.approx(expected_s, rel=1e-12)


def test_wave_quantization_one_extra_tile_doubles_time():
    gpu = _gpu()
    k = 256
    full = gpu.matmul(_fp16_gemm(4 * 128, 128, k))
    one_more = gpu.matmul(_fp16_gemm(5 * 128, 128, k))
    # Five tiles on four SMs take two waves; the launch overhead is paid once either way.
    wave_s = full.latency_s - 2.0e-6
    assert one_more.latency_s == pytest.approx(2 * wave_s + 2.0e-6, rel=1e-12)
    assert one_more.utilization == pytest.approx(full.utilization * (5 / 4) * (full.latency_s / one_more.latency_s), rel=1e-12)


def test_partial_tile_is_padded_to_a_whole_tile():
    gpu = _gpu()
    k = 256
    one_tile = gpu.matmul(_fp16_gemm(128, 128, k))
    one_row_more = gpu.matmul(_fp16_gemm(129, 128, k))
    # 129 rows need two 128-row tiles; both fit one wave, so the time is the same and the useful work barely grows.
    assert one_row_more.latency_s == pytest.approx(one_tile.latency_s, rel=1e-12)
    assert one_row_more.energy_j["compute"] == pytest.approx(2 * one_tile.energy_j["compute"], rel=1e-12)


def test_w4a16_pays_dequantization_on_cuda_cores():
    gpu = _gpu(gpu__thread_block_tiles=[[16, 128]])
    m, n, k = 16, 4 * 128, 256
    fp16 = gpu.matmul(_fp16_gemm(m, n, k))
    w4 = gpu.matmul(_fp16_gemm(m, n, k, "int4_g128", weight_bytes=n * k * 4.125 / 8))
    # Each weight element is converted once (one row block of 16 rows reads it), at 2 FLOPs on 1e11 FLOP/s CUDA cores.
    dequant_s = n * k * 1 * DEQUANT_FLOPS_PER_ELEMENT / 1.0e11
    assert DEQUANT_FLOPS_PER_ELEMENT == 2.0
    assert w4.latency_s == pytest.approx(fp16.latency_s + dequant_s, rel=1e-12)
    assert "weight_only at fp16" in w4.notes[0]


def test_w4a16_dequantizes_once_per_row_block():
    gpu = _gpu(gpu__thread_block_tiles=[[16, 128]])
    n, k = 128, 256
    small = gpu.matmul(_fp16_gemm(16, n, k, "int4_g128", weight_bytes=n * k * 0.5))
    large = gpu.matmul(_fp16_gemm(64, n, k, "int4_g128", weight_bytes=n * k * 0.5))
    # 64 rows are 4 row blocks of 16, each converting the whole weight again.
    dequant_small = n * k * DEQUANT_FLOPS_PER_ELEMENT / 1.0e11
    tensor_s = 2 * 16 * 128 * k / (1.0e12 * 0.5 / 4)
    assert small.latency_s == pytest.approx(tensor_s + dequant_small + 2.0e-6, rel=1e-12)
    assert large.latency_s == pytest.approx(tensor_s + 4 * dequant_small + 2.0e-6, rel=1e-12)


def test_native_int8_runs_at_the_int8_peak():
    gpu = _gpu()
    k = 256
    request = MatmulRequest("gemm", 4 * 128, 128, k, "int8_token", "int8_channel", "int8_token", 4 * 128 * k, 128 * k, 4 * 128 * 128)
    cost = gpu.matmul(request)
    expected_s = 2 * 128 * 128 * k / (2.0e12 * 0.5 / 4) + 2.0e-6
    assert cost.latency_s == pytest.approx(expected_s, rel=1e-12)
    assert cost.notes[0] == "native at int8"


def test_unsupported_activation_raises_or_emulates():
    spec = load_accelerator("a100-sxm4-80gb")
    request = MatmulRequest("gemm", 64, 4096, 4096, "fp8_e4m3", "fp8_e4m3", "fp16", 64 * 4096, 4096 * 4096, 2 * 64 * 4096)
    with pytest.raises(UnsupportedFormatError, match=r"fp8_e4m3.*(emulation|--emulate-unsupported)"):
        GPU(spec).matmul(request)
    emulated = GPU(spec, allow_emulation=True).matmul(request)
    # fp8 values fit fp16 and bf16 exactly, which run at the same A100 peak.
    assert re.match(r"emulated at (fp16|bf16);", emulated.notes[0])
    native_fp16 = GPU(spec).matmul(MatmulRequest("gemm", 64, 4096, 4096, "fp16", "fp16", "fp16", 2 * 64 * 4096, 2 * 4096 * 4096, 2 * 64 * 4096))
    assert emulated.compute_s > native_fp16.compute_s


def test_block_scaled_fp4_is_native_on_b200_only():
    request = MatmulRequest("gemm", 256, 4096, 4096, "mxfp4", "mxfp4", "bf16", 256 * 4096 * 4.25 / 8, 4096 * 4096 * 4.25 / 8, 2 * 256 * 4096)
    b200 = GPU(load_accelerator("b200"))
    plan = b200.plan("mxfp4", "mxfp4")
    assert (plan.precision, plan.path, plan.rescale_block_size) == ("fp4", "native", None)
    assert b200.matmul(request).notes[0] == "native at fp4"
    with pytest.raises(UnsupportedFormatError, match="mxfp4"):
        GPU(load_accelerator("h100-sxm")).matmul(request)
    weight_only = GPU(load_accelerator("h100-sxm")).plan("bf16", "mxfp4")
    assert (weight_only.precision, weight_only.path) == ("bf16", "weight_only")


def test_int4_group_scales_rescale_partial_sums():
    plan = GPU(load_accelerator("a100-sxm4-80gb")).plan("int4_token", "int4_g128")
    # A100 tensor cores take int4 but not group scales, so every 128-element partial sum is rescaled.
    assert (plan.precision, plan.path, plan.rescale_block_size) == ("int4", "native", 128)


def test_fused_attention_moves_only_q_kv_and_output():
    gpu = GPU(load_accelerator("h100-sxm"))
    batch, heads, kv_heads, head_dim, keys = 1, 32, 8, 128, 1024
    kv_bytes = 2 * batch * kv_heads * keys * head_dim * 2
    request = AttentionRequest(
        "attention", batch, heads, kv_heads, head_dim, 1, keys, keys, "fp16", "fp16", "fp16",
        query_bytes=2 * heads * head_dim, kv_read_bytes=kv_bytes, output_bytes=2 * heads * head_dim,
        softmax_elementwise_ops=5 * heads * keys, softmax_nonlinear_ops=heads * keys + heads,
    )
    cost = gpu.attention(request)
    reads, writes = cost.traffic["hbm"]
    assert reads == pytest.approx(kv_bytes + 2 * heads * head_dim)
    assert writes == pytest.approx(2 * heads * head_dim)
    # Decode attention is memory bound: the KV cache over the effective HBM bandwidth, plus the launch.
    expected_s = (reads + writes) / (3.35e12 * 0.953) + 0.875e-6
    assert cost.bound == "memory"
    assert cost.latency_s == pytest.approx(expected_s, rel=1e-12)
    # The 4 query heads of a group fill 4 of the 16 rows of an MMA, so the tensor cores do 4x the useful MACs.
    assert MMA_ROWS == 16
    assert cost.macs == pytest.approx(2 * heads * keys * head_dim)


def test_vector_op_runs_on_cuda_cores():
    gpu = _gpu()
    request = VectorRequest("norm", elementwise_ops=4.0e6, nonlinear_ops=0.0, activation_bytes=0.0, weight_bytes=0.0, output_bytes=0.0)
    cost = gpu.vector(request)
    assert cost.latency_s == pytest.approx(4.0e6 / 1.0e11 + 2.0e-6, rel=1e-12)


def test_power_limit_stretches_latency():
    gpu = _gpu(gpu__board_power_w=1.0e-3)
    cost = gpu.matmul(_fp16_gemm(4 * 128, 128, 256))
    dynamic_j = cost.energy_j["compute"] + cost.energy_j["sram"] + cost.energy_j["dram"]
    # With 1 mW to spend and no static power, the kernel takes its dynamic energy / 1 mW.
    assert cost.bound == "power"
    assert cost.latency_s == pytest.approx(dynamic_j / 1.0e-3, rel=1e-12)


def test_gpu_spec_errors_name_the_field():
    raw = copy.deepcopy(SMALL_GPU)
    raw["gpu"]["tensor_core_efficiency"] = {"fp16": 1.5}
    raw["gpu"]["tensor_core_ops_per_s"]["fp5"] = 1.0
    raw["gpu"]["thread_block_tiles"] = [[128]]
    with pytest.raises(SpecError) as info:
        accelerator_from_dict(raw)
    paths = {error.path for error in info.value.errors}
    assert "gpu.tensor_core_efficiency" in paths
    assert "gpu.tensor_core_efficiency.fp16" in paths
    assert "gpu.tensor_core_ops_per_s.fp5" in paths
    assert "gpu.thread_block_tiles[0]" in paths


def test_gpu_needs_its_memory_levels():
    raw = copy.deepcopy(SMALL_GPU)
    del raw["memory"]["l2"]
    with pytest.raises(SpecError, match="memory.l2"):
        accelerator_from_dict(raw)


def test_gpu_section_on_a_systolic_array_is_rejected():
    raw = copy.deepcopy(SMALL_GPU)
    raw["kind"] = "systolic_array"
    with pytest.raises(SpecError, match="applies to kind gpu only"):
        accelerator_from_dict(raw)


@pytest.mark.parametrize(
    "name, precision, ops_per_s",
    [
        ("a100-sxm4-80gb", "fp16", 312e12),  # A100 datasheet, dense
        ("a100-sxm4-80gb", "int8", 624e12),
        ("a100-sxm4-80gb", "int4", 1248e12),
        ("h100-sxm", "bf16", 989.4e12),  # H100 SXM5 datasheet, dense
        ("h100-sxm", "fp8", 1978.9e12),
        ("b200", "fp8", 4500e12),  # HGX B200 per GPU, dense
        ("b200", "fp4", 9000e12),
    ],
)
def test_presets_carry_datasheet_peaks(name, precision, ops_per_s):
    assert load_accelerator(name).gpu.peak_ops_per_s[precision] == ops_per_s


# Datasheet capacities in GB of DRAM, which are binary units (2^30 bytes).
@pytest.mark.parametrize("name, bandwidth, capacity", [("a100-sxm4-80gb", 2.039e12, 80 * 2**30), ("h100-sxm", 3.35e12, 80 * 2**30), ("b200", 8.0e12, 192 * 2**30)])
def test_presets_carry_datasheet_memory(name, bandwidth, capacity):
    hbm = load_accelerator(name).memory_level("hbm")
    assert hbm.bandwidth_bytes_per_s == bandwidth
    assert hbm.capacity_bytes == capacity


def test_h100_has_no_int4_tensor_cores():
    assert "int4" not in load_accelerator("h100-sxm").gpu.peak_ops_per_s


@pytest.mark.parametrize("name", ["a100-sxm4-80gb", "h100-sxm", "b200", "edge-tpu-class", "phone-npu-class"])
def test_new_preset_numbers_name_their_source(name):
    text = (preset_directory() / f"{name}.yaml").read_text()
    number = re.compile(r"^\s*[A-Za-z0-9_]+:\s*[-+]?[0-9][0-9_.eE+-]*\s*(#.*)?$")
    checked = 0
    for line in text.splitlines():
        match = number.match(line)
        if match:
            checked += 1
            comment = match.group(1) or ""
            assert len(comment.strip("# ")) > 5, f"number without a source in {name}.yaml: {line.strip()!r}"
    assert checked >= 10


def test_tile_choice_avoids_padding_for_small_batches():
    gpu = GPU(load_accelerator("h100-sxm"))
    cost = gpu.matmul(_fp16_gemm(8, 4096, 4096))
    # A decode batch of 8 rows is padded to the 16 rows of the smallest tile, not to 128.
    assert "tile 16x" in cost.notes[1]
    assert math.isclose(cost.macs, 8 * 4096 * 4096)
