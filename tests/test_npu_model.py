"""Edge-NPU model: modes, weight-stationary cycles, weights in SRAM or streamed, power envelope, presets.

Expected values are derived by hand in each test from the spec's numbers.
"""

import copy

import pytest

from hwsim.hardware import load_accelerator
from hwsim.hardware.kernels import MatmulRequest, VectorRequest
from hwsim.hardware.loading import accelerator_from_dict
from hwsim.hardware.npu import DEQUANT_OPS_PER_ELEMENT, NONLINEAR_OPS, NPU, resolve_npu_mode
from hwsim.hardware.pe import UnsupportedFormatError
from hwsim.hardware.spec import SpecError

# A 4x4 array at 1 GHz with fast memory, so that the matmuls below are compute bound.
SMALL_NPU = {
    "name": "small-npu",
    "kind": "npu",
    "technology": {"node_nm": 28, "supply_voltage_v": 0.9},
    "clock_hz": 1.0e9,
    "static_power_w": 0.0,
    "npu": {
        "array_rows": 4,
        "array_cols": 4,
        "modes": {"int8xint8": 1, "int8xint4": 2, "fp16xfp16": 0.5},
        "mac_efficiency": 1.0,
        "vector_ops_per_cycle": 2.0,
        "power_envelope_w": 1.0e6,
        "op_overhead_s": 1.0e-6,
    },
    "memory": {
        "dram": {"kind": "dram", "capacity_bytes": 2**30, "bandwidth_bytes_per_s": 1.0e18},
        "sram": {"kind": "sram", "capacity_bytes": 2**20},
    },
}


def _npu(**changes):
    raw = copy.deepcopy(SMALL_NPU)
    for path, value in changes.items():
        node = raw
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return NPU(accelerator_from_dict(raw), allow_emulation=True)


def _int8(m, n, k, weight_format="int8_channel", weight_bytes=None):
    return MatmulRequest("matmul", m, n, k, "int8_token", weight_format, "int8_token", m * k, n * k if weight_bytes is None else weight_bytes, m * n)


def test_gemv_pays_one_tile_load_per_tile():
    npu = _npu()
    # n = k = 8 on a 4x4 array: 2 x 2 weight tiles; one row streams in 1 cycle but loading a tile takes 4.
    cost = npu.matmul(_int8(1, 8, 8))
    assert cost.latency_s == pytest.approx(4 * 4 / 1.0e9 + 1.0e-6, rel=1e-12)


def test_long_stream_hides_tile_loads():
    npu = _npu()
    cost = npu.matmul(_int8(10, 8, 8))
    # 10 rows stream through each of the 4 tiles: 40 cycles, the next tile loading meanwhile.
    assert cost.latency_s == pytest.approx(4 * 10 / 1.0e9 + 1.0e-6, rel=1e-12)
    assert cost.utilization == pytest.approx(10 * 8 * 8 / (16 * 2 * 1.0e9 * cost.latency_s), rel=1e-12)


def test_int4_weights_pack_twice_the_reduction():
    npu = _npu()
    cost = npu.matmul(_int8(10, 8, 8, "int4_channel", weight_bytes=8 * 8 / 2))
    # A tile of mode int8xint4 spans 2 x 4 = 8 reduction elements, so the product is 1 x 2 tiles of 10 cycles.
    assert cost.notes[0] == "native in mode int8xint4"
    assert cost.latency_s == pytest.approx(2 * 10 / 1.0e9 + 1.0e-6, rel=1e-12)


def test_fp16_mode_takes_two_cycles_per_step():
    npu = _npu()
    request = MatmulRequest("matmul", 10, 8, 8, "fp16", "fp16", "fp16", 2 * 80, 2 * 64, 2 * 80)
    cost = npu.matmul(request)
    assert cost.latency_s == pytest.approx(2 * 4 * 10 / 1.0e9 + 1.0e-6, rel=1e-12)


def test_w4a16_dequantizes_on_the_vector_unit():
    npu = _npu()
    n = k = 64
    request = MatmulRequest("matmul", 1, n, k, "fp16", "int4_g128", "fp16", 2 * k, n * k * 4.125 / 8, 2 * n)
    cost = npu.matmul(request)
    # The fp16 mode runs the product; the vector unit converts every weight element at 2 ops, 2 ops per cycle.
    vector_s = n * k * DEQUANT_OPS_PER_ELEMENT / (2.0 * 1.0e9)
    array_s = (k // 4) * (n // 4) * 4 * 2 / 1.0e9
    assert cost.notes[0].startswith("weight_only in mode fp16xfp16")
    assert cost.latency_s == pytest.approx(max(vector_s, array_s) + 1.0e-6, rel=1e-12)


def test_streamed_weights_bound_a_decode_by_dram():
    npu = NPU(load_accelerator("edge-tpu-class"))
    n = k = 4096
    cost = npu.matmul(_int8(1, n, k), weights_on_chip=False)
    # int8 weights over the assumed 500 MB/s host link; the activations stay in SRAM.
    assert cost.bound == "memory"
    assert cost.latency_s == pytest.approx(n * k / 5.0e8, rel=1e-12)
    on_chip = npu.matmul(_int8(1, n, k), weights_on_chip=True)
    assert on_chip.traffic["dram"][0] == 0.0
    assert on_chip.latency_s < cost.latency_s


def test_power_envelope_stretches_latency():
    npu = _npu(npu__power_envelope_w=1.0e-3)
    cost = npu.matmul(_int8(10, 8, 8))
    dynamic_j = cost.energy_j["compute"] + cost.energy_j["sram"] + cost.energy_j["dram"]
    assert cost.bound == "power"
    assert cost.latency_s == pytest.approx(dynamic_j / 1.0e-3, rel=1e-12)


def test_vector_op_on_the_vector_unit():
    npu = _npu()
    cost = npu.vector(VectorRequest("act", elementwise_ops=100.0, nonlinear_ops=100.0, activation_bytes=0.0, weight_bytes=0.0, output_bytes=0.0))
    assert cost.latency_s == pytest.approx((100 + NONLINEAR_OPS * 100) / 2.0e9 + 1.0e-6, rel=1e-12)


def test_mode_resolution():
    modes = (("int8", "int8", 1.0), ("int8", "int4", 2.0), ("fp16", "fp16", 0.5))
    assert resolve_npu_mode("int8_token", "int4_g128", modes).path == "native"
    assert resolve_npu_mode("int8_token", "int4_g128", modes).rescale_block_size == 128
    weight_only = resolve_npu_mode("fp16", "int4_g128", modes)
    assert (weight_only.activation_precision, weight_only.weight_precision, weight_only.path) == ("fp16", "fp16", "weight_only")
    with pytest.raises(UnsupportedFormatError, match="bf16"):
        resolve_npu_mode("bf16", "bf16", modes)
    emulated = resolve_npu_mode("bf16", "bf16", modes, allow_emulation=True)
    assert (emulated.activation_precision, emulated.path) == ("fp16", "emulated")


def test_edge_tpu_class_takes_int8_only():
    npu = NPU(load_accelerator("edge-tpu-class"))
    with pytest.raises(UnsupportedFormatError, match="int8xint8"):
        npu.plan("fp16", "fp16")


def test_edge_tpu_class_preset_matches_coral_figures():
    spec = load_accelerator("edge-tpu-class")
    peak_ops_per_s = 2 * spec.npu.array_rows * spec.npu.array_cols * spec.clock_hz
    assert peak_ops_per_s == pytest.approx(4.0e12)  # Coral: 4 TOPS
    assert spec.npu.power_envelope_w == 2.0  # Coral: 2 W
    assert spec.memory_level("sram").capacity_bytes == 8 * 2**20  # Coral: about 8 MB of SRAM


def test_phone_npu_class_preset_peak():
    spec = load_accelerator("phone-npu-class")
    peak_ops_per_s = 2 * spec.npu.array_rows * spec.npu.array_cols * spec.clock_hz
    assert peak_ops_per_s == pytest.approx(35.0e12)  # Apple A17 Pro Neural Engine: 35 trillion operations per second


def test_npu_spec_errors_name_the_field():
    raw = copy.deepcopy(SMALL_NPU)
    raw["npu"]["modes"] = {"int8xint9": 1, "fp16": 1}
    raw["npu"]["mac_efficiency"] = 0
    with pytest.raises(SpecError) as info:
        accelerator_from_dict(raw)
    paths = {error.path for error in info.value.errors}
    assert "npu.modes.int8xint9" in paths
    assert "npu.modes.fp16" in paths
    assert "npu.mac_efficiency" in paths
