"""Systolic-array model: folds, fill and drain, reuse, stalls, precision-flexible PEs and energy, each derived by hand."""

import copy
import math

import numpy as np
import pytest

from hwsim.hardware.cost import GemmOp
from hwsim.hardware.energy import mac_energy, multiply_energy
from hwsim.hardware.loading import accelerator_from_dict, load_accelerator
from hwsim.hardware.pe import UnsupportedFormatError
from hwsim.hardware.systolic import SystolicArray

BASE = {
    "name": "test-array",
    "kind": "systolic_array",
    "technology": {"node_nm": 45, "supply_voltage_v": 0.9},
    "clock_hz": 1.0e9,
    "static_power_w": 0.5,
    "systolic_array": {"rows": 4, "cols": 4, "dataflow": "ws"},
    "pe": {"kind": "fixed", "native_format": "int8", "accumulator": "int32"},
    "memory": {
        "dram": {"kind": "dram", "capacity_bytes": 2**30, "bandwidth_bytes_per_cycle": 1000},
        "activation_buffer": {"kind": "sram", "capacity_bytes": 2**16},
        "weight_buffer": {"kind": "sram", "capacity_bytes": 2**16},
        "output_buffer": {"kind": "sram", "capacity_bytes": 2**16},
    },
}


def make_array(dataflow="ws", rows=4, cols=4, pe=None, memory=None, **top):
    raw = copy.deepcopy(BASE)
    raw["systolic_array"] = {"rows": rows, "cols": cols, "dataflow": dataflow}
    if pe is not None:
        raw["pe"] = pe
    for level, fields in (memory or {}).items():
        raw["memory"][level].update(fields)
    raw.update(top)
    return SystolicArray(accelerator_from_dict(raw))


@pytest.mark.parametrize(
    "dataflow,expected",
    [
        # M=10, N=6, K=7 on 4x4; a fold takes 2R + C + T - 2 cycles.
        ("os", 3 * 2 * (2 * 4 + 4 + 7 - 2)),  # rows M: 3 folds, cols N: 2 folds, time K = 7
        ("ws", 2 * 2 * (2 * 4 + 4 + 10 - 2)),  # rows K: 2 folds, cols N: 2 folds, time M = 10
        ("is", 2 * 3 * (2 * 4 + 4 + 6 - 2)),  # rows K: 2 folds, cols M: 3 folds, time N = 6
    ],
)
def test_compute_cycles_by_dataflow(dataflow, expected):
    cost = make_array(dataflow).cost(GemmOp(10, 6, 7))
    assert cost.compute_cycles == expected


def test_non_square_array_folds():
    # ws on 2 rows x 8 cols, M=5, N=20, K=9: ceil(9/2)=5 row folds, ceil(20/8)=3 column folds,
    # each 2*2 + 8 + 5 - 2 = 15 cycles.
    cost = make_array("ws", rows=2, cols=8).cost(GemmOp(5, 20, 9))
    assert cost.compute_cycles == 5 * 3 * 15


def test_gemv_far_cheaper_than_m256():
    spec = load_accelerator("research-32x32")
    for dataflow in ("os", "ws", "is"):
        array = make_array(dataflow, rows=32, cols=32, pe=dict(BASE["pe"]), memory={}, clock_hz=spec.clock_hz)
        gemv = array.cost(GemmOp(1, 1024, 1024))
        gemm = array.cost(GemmOp(256, 1024, 1024))
        fold = {"os": lambda m: 2 * 32 + 32 + 1024 - 2, "ws": lambda m: 2 * 32 + 32 + m - 2, "is": lambda m: 2 * 32 + 32 + 1024 - 2}[dataflow]
        folds = {"os": lambda m: math.ceil(m / 32) * 32, "ws": lambda m: 32 * 32, "is": lambda m: 32 * math.ceil(m / 32)}[dataflow]
        assert gemv.compute_cycles == folds(1) * fold(1)
        assert gemm.compute_cycles == folds(256) * fold(256)
        assert gemv.compute_cycles * 3 < gemm.compute_cycles, dataflow
        assert gemv.cycles * 3 < gemm.cycles, dataflow


def test_research_array_dram_refetch():
    # research-32x32 is output-stationary with 64 KiB buffers. A (256x256 int8, 64 KiB) exceeds half
    # the activation buffer, so each of the 8 column folds reads it again: 8 * 65536 bytes. One column
    # fold's block of B is K x C = 256 * 32 = 8 KiB, within half the weight buffer, so B is read once.
    array = SystolicArray(load_accelerator("research-32x32"))
    cost = array.cost(GemmOp(256, 256, 256))
    assert cost.traffic_at("dram").read_bytes == 8 * 65536 + 65536
    assert cost.traffic_at("dram").write_bytes == 65536
    assert cost.compute_cycles == 8 * 8 * (2 * 32 + 32 + 256 - 2)


def test_weight_stationary_partial_sums_spill():
    # ws 4x4, M=256, N=4, K=8: 2 row folds. One column fold's partial sums are M x C int32 =
    # 256 * 4 * 4 = 4096 bytes, more than half of a 4096-byte output buffer, so the first row
    # fold's partial sums go to DRAM and come back: 4096 bytes each way, plus the int8 output.
    array = make_array("ws", memory={"output_buffer": {"capacity_bytes": 4096}})
    cost = array.cost(GemmOp(256, 4, 8))
    dram = cost.traffic_at("dram")
    assert dram.write_bytes == 256 * 4 + 4096
    assert dram.read_bytes == 256 * 8 + 8 * 4 + 4096
    # With a large output buffer the partial sums stay on chip.
    roomy = make_array("ws", memory={"output_buffer": {"capacity_bytes": 2**16}}).cost(GemmOp(256, 4, 8))
    assert roomy.traffic_at("dram").write_bytes == 256 * 4


def test_output_buffer_traffic_counts_partial_sums():
    # ws, M=10, N=6, K=7 on 4x4: 2 row folds, so each of the 60 int32 partial sums is written
    # twice and read back once by the array, then read once more to drain the int8 output to DRAM.
    cost = make_array("ws").cost(GemmOp(10, 6, 7))
    output = cost.traffic_at("output_buffer")
    assert output.write_bytes == 60 * 4 * 2
    assert output.read_bytes == 60 * 4 * 1 + 60


def test_stalls_with_low_bandwidth():
    # ws 4x4, M=8, N=4, K=4, 1 byte per cycle. Compute: one fold of 8 + 4 + 8 - 2 = 18 cycles.
    # DRAM moves A 32 + B 16 + C 32 = 80 bytes. The 4x4 weight tile (16 bytes) must arrive first
    # and the last output row (4 bytes) leaves after compute; the other 60 bytes overlap compute.
    array = make_array("ws", memory={"dram": {"bandwidth_bytes_per_cycle": 1}})
    cost = array.cost(GemmOp(8, 4, 4))
    assert cost.compute_cycles == 18
    assert cost.cycles == pytest.approx(16 + 60 + 4)
    assert cost.bound == "memory"
    fast = make_array("ws").cost(GemmOp(8, 4, 4))
    assert fast.cycles == pytest.approx(18 + (16 + 4) / 1000)
    assert fast.bound == "compute"


def test_sram_bandwidth_limits():
    # Array reads of the activation buffer: ws streams A once per column fold. M=64, N=4, K=4:
    # 256 bytes read plus 256 bytes filled from DRAM, at 2 bytes per cycle = 256 cycles > 4*2+4+64-2 = 74.
    array = make_array("ws", memory={"activation_buffer": {"bandwidth_bytes_per_cycle": 2}})
    cost = array.cost(GemmOp(64, 4, 4))
    assert cost.compute_cycles == 74
    assert cost.cycles >= 256
    assert cost.bound == "memory"


def test_bit_fusion_fuses_narrow_operands():
    array = SystolicArray(load_accelerator("research-32x32"))
    # os on 32x32: K is the time axis. Bit Fusion runs (8/a) * (8/w) MACs per cycle:
    # int8 x int8: 1, so T = 256; int4 x int4: 4, T = 64; int2 x int2: 16, T = 16.
    for fmt, steps in (("int8", 256), ("int4", 64), ("int2", 16)):
        cost = array.cost(GemmOp(64, 64, 256, fmt, fmt, "int8"))
        assert cost.compute_cycles == 2 * 2 * (2 * 32 + 32 + steps - 2), fmt
    # int4 x int8 (activations 4-bit): 2 MACs per cycle.
    assert array.mapping("int4", "int8").reduction_per_step == 2
    # 16-bit weights exceed the 8-bit fusion unit and take 2 cycles per step.
    mapping = array.mapping("int8", "int16")
    assert (mapping.reduction_per_step, mapping.cycles_per_step) == (1, 2)
    assert array.cost(GemmOp(64, 64, 256, "int8", "int16")).compute_cycles == 4 * (2 * 32 + 32 + 512 - 2)


def test_bit_fusion_on_reduction_rows():
    # ws with Bit Fusion: K sits on the rows, and a 4-bit PE packs 4 reduction elements, so a fold
    # covers 4 * 4 = 16 rows of K. K=40: ceil(40/16) = 3 row folds (int8: ceil(40/4) = 10).
    pe = {"kind": "bit_fusion", "brick_bits": 2, "max_bits": 8, "fusion_energy_factor": 2.0, "accumulator": "int32"}
    array = make_array("ws", pe=pe)
    assert array.cost(GemmOp(9, 4, 40, "int4", "int4")).compute_cycles == 3 * (2 * 4 + 4 + 9 - 2)
    assert array.cost(GemmOp(9, 4, 40, "int8", "int8")).compute_cycles == 10 * (2 * 4 + 4 + 9 - 2)


def test_bit_fusion_energy_per_mac():
    # The fusion unit spends fusion_energy_factor x an int8 MAC per cycle, shared by its MACs.
    array = SystolicArray(load_accelerator("research-32x32"))
    int8_mac = mac_energy("int8", "int8", "int32").energy_j
    assert array.mapping("int8", "int8").mac.energy_j == pytest.approx(2.0 * int8_mac)
    assert array.mapping("int4", "int4").mac.energy_j == pytest.approx(2.0 * int8_mac / 4)


def test_bit_serial_weights():
    # Bit-serial weights, 1 bit per cycle: int4 weights take 4 cycles per step, int8 take 8.
    pe = {"kind": "bit_serial", "parallel_bits": 8, "serial_bits": 1, "max_serial_bits": 8, "accumulator": "int32"}
    array = make_array("os", pe=pe)
    assert array.cost(GemmOp(4, 4, 10, "int8", "int4")).compute_cycles == 2 * 4 + 4 + 4 * 10 - 2
    assert array.cost(GemmOp(4, 4, 10, "int8", "int8")).compute_cycles == 2 * 4 + 4 + 8 * 10 - 2
    pe2 = dict(pe, serial_bits=2)
    assert make_array("os", pe=pe2).cost(GemmOp(4, 4, 10, "int8", "int3")).compute_cycles == 2 * 4 + 4 + 2 * 10 - 2


MX_PE = {
    "kind": "block_scaled",
    "element_formats": ["fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp6_e3m2", "fp4_e2m1", "int8"],
    "scale_formats": ["e8m0"],
    "macs_per_cycle_by_element_bits": {8: 1, 6: 1, 4: 2},
    "accumulator": "fp32",
}


def test_block_scaled_pe_throughput_and_blocks():
    array = make_array("os", pe=MX_PE)
    # mxfp4 elements run 2 MACs per cycle, so K=64 takes 32 steps; mxfp8 takes 64.
    assert array.cost(GemmOp(4, 4, 64, "mxfp4", "mxfp4", "bf16")).compute_cycles == 2 * 4 + 4 + 32 - 2
    assert array.cost(GemmOp(4, 4, 64, "mxfp8_e4m3", "mxfp8_e4m3", "bf16")).compute_cycles == 2 * 4 + 4 + 64 - 2
    # Mixed mxfp8 x mxfp4 runs at the wider element's rate.
    assert array.mapping("mxfp8_e4m3", "mxfp4").reduction_per_step == 1
    mapping = array.mapping("mxfp4", "mxfp4")
    assert mapping.block_size == 32
    assert mapping.block.energy_j > 0
    cost = array.cost(GemmOp(4, 4, 64, "mxfp4", "mxfp4", "bf16"))
    blocks = 4 * 4 * 2
    expected = 4 * 4 * 64 * mapping.mac.energy_j + blocks * mapping.block.energy_j
    assert cost.energy_j["compute"] == pytest.approx(expected, rel=1e-12)


def test_block_scaled_pe_rejects_unscaled_operands():
    array = make_array("os", pe=MX_PE)
    with pytest.raises(UnsupportedFormatError, match=r"pe\.element_formats"):
        array.cost(GemmOp(4, 4, 64, "fp16", "mxfp4"))
    with pytest.raises(UnsupportedFormatError, match=r"pe\.scale_formats"):
        array.cost(GemmOp(4, 4, 64, "nvfp4", "nvfp4"))


def test_fixed_pe_rejects_format_it_cannot_take():
    array = make_array("ws")
    with pytest.raises(UnsupportedFormatError, match=r"pe\.native_format='int8'.*fallback: dequantize"):
        array.cost(GemmOp(4, 4, 4, "fp16", "int8"))
    with pytest.raises(UnsupportedFormatError, match="block-scale unit"):
        array.cost(GemmOp(4, 4, 128, "int8", "int4_g128"))


def test_bit_fusion_rejects_floats():
    with pytest.raises(UnsupportedFormatError, match=r"pe\.max_bits"):
        SystolicArray(load_accelerator("research-32x32")).cost(GemmOp(4, 4, 4, "fp8_e4m3", "int8"))


def test_dequantize_fallback_cost():
    # An fp16 PE with int4 weights in groups of 128 (W4A16): the weights are converted to fp16 at the
    # weight buffer port, one fp16 multiply per weight element the array reads.
    pe = {"kind": "fixed", "native_format": "fp16", "accumulator": "fp32", "fallback": "dequantize"}
    array = make_array("ws", pe=pe)
    op = GemmOp(8, 8, 256, "fp16", "int4_g128", "fp16")
    cost = array.cost(op)
    mapping = array.mapping("fp16", "int4_g128")
    assert mapping.dequantize_weight and not mapping.dequantize_activation
    # ws reads each weight once into the array: 8 * 256 conversions.
    expected = op.macs * mac_energy("fp16", "fp16", "fp32").energy_j + 8 * 256 * multiply_energy("fp16", "fp16").energy_j
    assert cost.energy_j["compute"] == pytest.approx(expected, rel=1e-12)
    # Weights move in their stored format: 4 + 16/128 bits per element.
    assert cost.traffic_at("weight_buffer").write_bytes == pytest.approx(8 * 256 * 4.125 / 8)


@pytest.mark.parametrize(
    "fmt,bits_per_element,extra_bytes",
    [("int8", 8, 0), ("int4_g128", 4.125, 0), ("mxfp4", 4.25, 0), ("nvfp4", 4.5, 4)],
)
def test_dram_bytes_scale_with_bits_per_element(fmt, bits_per_element, extra_bytes):
    # B is stationary in ws and read once; K=256 is a whole number of groups for every format.
    # nvfp4 adds one fp32 per-tensor scale (4 bytes).
    pe = {"kind": "fixed", "native_format": "fp16", "accumulator": "fp32", "fallback": "dequantize"}
    array = make_array("ws", pe=pe)
    cost = array.cost(GemmOp(4, 16, 256, "fp16", fmt, "fp16"))
    weight_bytes = 16 * 256 * bits_per_element / 8 + extra_bytes
    activation_bytes = 4 * 256 * 2
    assert cost.traffic_at("dram").read_bytes == pytest.approx(weight_bytes + activation_bytes)


def test_buffer_too_small_for_one_tile():
    # ws 4x4 int8: the stationary 4x4 weight tile needs 16 bytes, twice for double buffering.
    array = make_array("ws", memory={"weight_buffer": {"capacity_bytes": 31}})
    with pytest.raises(ValueError, match=r"memory\.weight_buffer\.capacity_bytes=31 .* at least 32 bytes"):
        array.cost(GemmOp(4, 4, 4))


def test_bad_gemm_dimensions():
    with pytest.raises(ValueError, match="k=0"):
        GemmOp(4, 4, 0)
    with pytest.raises(ValueError, match="m must be|positive"):
        make_array("ws").evaluate(np.array([1, 0]), 4, 4)


def test_resident_tensor_skips_dram():
    array = make_array("ws")
    cost = array.cost(GemmOp(8, 4, 4, activation_in_dram=False, output_in_dram=False))
    assert cost.traffic_at("dram").read_bytes == 16
    assert cost.traffic_at("dram").write_bytes == 0
    with pytest.raises(ValueError, match="resident on chip"):
        make_array("ws", memory={"activation_buffer": {"capacity_bytes": 64}}).cost(GemmOp(64, 4, 4, activation_in_dram=False))


def test_energy_components_and_static():
    array = make_array("ws")
    cost = array.cost(GemmOp(10, 6, 7))
    assert set(cost.energy_j) == {"compute", "sram", "dram", "static"}
    assert cost.energy_j["static"] == pytest.approx(0.5 * cost.latency_s)
    assert cost.energy_j["compute"] == pytest.approx(420 * mac_energy("int8", "int8", "int32").energy_j)
    # DRAM: A 70 + B 42 bytes read, C 60 bytes written, 162.5 pJ per byte (Horowitz 1.3 nJ per 64 bits).
    assert cost.energy_j["dram"] == pytest.approx((70 + 42 + 60) * 162.5e-12)
    assert cost.total_energy_j == pytest.approx(sum(cost.energy_j.values()))


def test_utilization():
    array = make_array("ws")
    cost = array.cost(GemmOp(10, 6, 7))
    assert cost.utilization == pytest.approx(420 / (16 * cost.cycles))
    assert 0 < cost.utilization <= 1


def test_vectorised_matches_single_ops():
    array = SystolicArray(load_accelerator("tpu-v1"))
    rng = np.random.default_rng(0)
    m, n, k = (rng.integers(1, 3000, size=20) for _ in range(3))
    batch = array.evaluate(m, n, k)
    for i in range(20):
        single = array.cost(GemmOp(int(m[i]), int(n[i]), int(k[i])))
        assert batch.cycles[i] == pytest.approx(single.cycles)
        assert batch.energy_j["dram"][i] == pytest.approx(single.energy_j["dram"])


def test_op_cost_row():
    row = make_array("ws").cost(GemmOp(10, 6, 7, name="proj")).to_row()
    assert row["op"] == "proj"
    for column in ("cycles", "latency_s", "compute_energy_j", "dram_read_bytes", "output_buffer_write_bytes", "bound", "area_mm2"):
        assert column in row


def test_op_cost_carries_area():
    array = SystolicArray(load_accelerator("research-32x32"))
    assert array.cost(GemmOp(8, 8, 8)).area_mm2 == pytest.approx(array.area().total_mm2)


def test_unused_memory_level_logged(caplog):
    raw = copy.deepcopy(BASE)
    raw["memory"]["register_file"] = {"kind": "register_file", "capacity_bytes": 64}
    with caplog.at_level("WARNING", logger="hwsim.hardware.systolic"):
        SystolicArray(accelerator_from_dict(raw))
    assert "register_file" in caplog.text
