"""`hwsim.simulate`: totals, decode in closed form, per-layer policies, memory footprint and bad input."""

import math

import numpy as np
import pytest

import hwsim
from hwsim.hardware import load_accelerator
from hwsim.hardware.pe import UnsupportedFormatError
from hwsim.policy import UniformPolicy
from hwsim.simulation import ModelDoesNotFitError, simulate
from hwsim.workload import Scenario, load_model, parameter_count


def test_simulate_is_exported_from_hwsim():
    assert hwsim.simulate is simulate


def test_phase_totals_sum_the_ops():
    report = simulate("smollm2-135m", "w16a16", "h100-sxm", [Scenario.prefill(2, 64), Scenario.decode(2, 64, 8)])
    for phase in ("prefill", "decode"):
        rows = report.ops[report.ops.phase == phase]
        totals = report.phase(phase)
        assert totals["latency_s"] == pytest.approx(rows.latency_s.sum(), rel=1e-12)
        assert totals["energy_j"] == pytest.approx(rows.energy_j.sum(), rel=1e-12)
        parts = sum(rows[f"{c}_energy_j"].sum() for c in ("compute", "sram", "dram", "static"))
        assert totals["energy_j"] == pytest.approx(parts, rel=1e-12)


def test_prefill_and_decode_token_metrics():
    report = simulate("smollm2-135m", "w16a16", "a100-sxm4-80gb", [Scenario.prefill(2, 64), Scenario.decode(2, 64, 8)])
    prefill, decode, both = report.phase("prefill"), report.phase("decode"), report.phase("prefill+decode")
    assert prefill["time_to_first_token_s"] == prefill["latency_s"]
    assert prefill["time_per_output_token_s"] is None
    assert prefill["tokens_per_s"] == pytest.approx(2 * 64 / prefill["latency_s"])
    assert decode["time_to_first_token_s"] is None
    assert decode["time_per_output_token_s"] == pytest.approx(decode["latency_s"] / 8)
    assert decode["tokens_per_s"] == pytest.approx(2 * 8 / decode["latency_s"])
    assert decode["energy_j_per_token"] == pytest.approx(decode["energy_j"] / 16)
    # A generation counts its generated tokens over the prefill and the decode together.
    assert both["tokens_per_s"] == pytest.approx(16 / (prefill["latency_s"] + decode["latency_s"]))
    assert both["time_to_first_token_s"] == prefill["latency_s"]


@pytest.mark.parametrize("accelerator", ["h100-sxm", "phone-npu-class", "tpu-v1"])
def test_decode_in_closed_form_equals_step_by_step(accelerator):
    # TPU v1 multiplies int8 only; the LM head stays fp16 under w8a8, so it runs through the dequantize fallback.
    policy = "w8a8kv8" if accelerator == "tpu-v1" else "w16a16"
    steps = 5
    whole = simulate("smollm2-135m", policy, accelerator, Scenario.decode(1, 100, steps), unsupported="emulate").phase("decode")
    # Step i attends to 100 + i cached positions; one-step decodes at those contexts must add up to the whole.
    by_step = [
        simulate("smollm2-135m", policy, accelerator, Scenario.decode(1, 100 + i, 1), unsupported="emulate").phase("decode")
        for i in range(steps)
    ]
    assert whole["latency_s"] == pytest.approx(sum(s["latency_s"] for s in by_step), rel=1e-9)
    assert whole["energy_j"] == pytest.approx(sum(s["energy_j"] for s in by_step), rel=1e-9)


def test_decode_of_one_token_reads_every_weight_once():
    report = simulate("llama-3-8b", "w16a16", "h100-sxm", Scenario.decode(1, 16, 1))
    ops = report.ops
    gemm_reads = ops[ops.kind.isin(["GEMV", "GEMM"])].hbm_read_bytes.sum()
    spec = load_model("llama-3-8b")
    # Every fp16 linear weight, the LM head included, is read once; the embedding table is only gathered (one row).
    embedding = spec.vocab_size * spec.hidden_size
    linear_weights = (parameter_count(spec) - embedding) * 2
    norms = (2 * spec.num_layers + 1) * spec.hidden_size * 2
    assert gemm_reads == pytest.approx(linear_weights - norms, rel=1e-3)


def test_memory_footprint_of_llama_3_8b_fp16():
    report = simulate("llama-3-8b", "w16a16", "h100-sxm", Scenario.decode(4, 1000, 24))
    spec = load_model("llama-3-8b")
    assert report.memory.weight_bytes == 2 * parameter_count(spec)
    # KV cache: 2 tensors x layers x KV heads x head dim x 2 bytes per position, 4 sequences of 1024 positions.
    kv_expected = 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * 2 * 4 * 1024
    assert report.memory.kv_cache_bytes == kv_expected
    assert report.memory.capacity_bytes == 80 * 2**30
    assert report.fits
    totals = report.phase("decode")
    assert totals["peak_memory_bytes"] == report.memory.peak_bytes
    assert totals["fits"] is True


def test_model_that_does_not_fit_raises_with_numbers():
    # fp16 weights of Llama-2-70B are 2 bytes per parameter; the A100 has 80 GiB (85.899 GB) of HBM.
    weights_gb = 2 * parameter_count(load_model("llama-2-70b")) / 1e9
    with pytest.raises(ModelDoesNotFitError) as info:
        simulate("llama-2-70b", "w16a16", "a100-sxm4-80gb", Scenario.decode(1, 128, 1))
    message = str(info.value)
    assert f"weights {weights_gb:.3f} GB" in message
    assert "hbm holds 85.899 GB" in message
    assert "--allow-overflow" in message


def test_model_that_does_not_fit_can_be_reported():
    report = simulate("llama-2-70b", "w16a16", "a100-sxm4-80gb", Scenario.decode(1, 128, 1), memory_overflow="report")
    assert not report.fits
    assert report.to_dict()["fits"] is False
    assert "does not fit" in report.notes[0]


def test_unsupported_format_raises_or_emulates():
    with pytest.raises(UnsupportedFormatError, match="int4_token"):
        simulate("smollm2-135m", "w4a4", "h100-sxm", Scenario.decode(1, 16, 1))
    report = simulate("smollm2-135m", "w4a4", "h100-sxm", Scenario.decode(1, 16, 1), unsupported="emulate")
    assert report.ops.note.str.contains("emulated").any()


def test_unknown_model_lists_shipped_names():
    with pytest.raises(KeyError, match="shipped models: .*llama-3-8b"):
        simulate("llama-9", "w16a16", "h100-sxm", Scenario.decode(1, 16, 1))


def test_unknown_accelerator_lists_presets():
    with pytest.raises(KeyError, match="known presets: .*h100-sxm"):
        simulate("smollm2-135m", "w16a16", "h200", Scenario.decode(1, 16, 1))


@pytest.mark.parametrize("option, value", [("unsupported", "ignore"), ("memory_overflow", "warn")])
def test_invalid_choices_are_named(option, value):
    with pytest.raises(ValueError, match=f"invalid {option}={value!r}"):
        simulate("smollm2-135m", "w16a16", "h100-sxm", Scenario.decode(1, 16, 1), **{option: value})


def test_invalid_scenario_is_named():
    with pytest.raises(TypeError, match="Scenario.decode"):
        simulate("smollm2-135m", "w16a16", "h100-sxm", "decode")


def test_encoder_has_no_decode():
    with pytest.raises(ValueError, match="encoder"):
        simulate("all-minilm-l6-v2", "w16a16", "h100-sxm", Scenario.decode(1, 16, 1))


def test_objects_are_accepted_in_place_of_names():
    report = simulate(load_model("smollm2-135m"), UniformPolicy.parse("w4a16-g128"), load_accelerator("b200"), Scenario.prefill(1, 32))
    assert report.policy == "w=int4_g128,a=fp16,kv=fp16"
    assert report.accelerator == "b200"


class _LastLayerInFp16:
    """A policy that keeps the last layer's linear weights in fp16 and quantizes the others to int4."""

    def __init__(self, layers):
        self.layers = layers
        self.uniform = UniformPolicy.parse("w4a16-g128")

    def is_layer_uniform(self):
        return False

    def format_for(self, tensor, *, layer_index=None):
        if layer_index == self.layers - 1 and tensor.role == "weight":
            return "fp16"
        return self.uniform.format_for(tensor)


def test_layer_varying_policy_expands_layers():
    spec = load_model("smollm2-135m")
    policy = _LastLayerInFp16(spec.num_layers)
    report = simulate(spec, policy, "h100-sxm", Scenario.decode(1, 16, 1))
    names = set(report.ops.op)
    assert "layers.0.self_attn.q_proj" in names
    assert f"layers.{spec.num_layers - 1}.self_attn.q_proj" in names
    assert not any(name.startswith("layers.*") for name in names)
    rows = report.ops.set_index("op")
    first, last = rows.loc["layers.0.self_attn.q_proj"], rows.loc[f"layers.{spec.num_layers - 1}.self_attn.q_proj"]
    # fp16 weights are 16 bits per element against int4's 4 + 16/128.
    assert last.hbm_read_bytes > first.hbm_read_bytes
    assert "weight_only" in first.note
    assert "native at fp16" in last.note
    uniform = simulate(spec, "w4a16-g128", "h100-sxm", Scenario.decode(1, 16, 1))
    # Weights: one layer's linear matrices in fp16 (2 bytes per element) instead of int4 with one fp16 scale
    # per group of 128 input channels. A row's last, partial group is stored padded to 128 elements.
    extra = 0.0
    for parameter in _linear_parameters(spec):
        out_features, in_features = parameter.shape
        groups = math.ceil(in_features / 128)
        int4_bytes = out_features * (4 * 128 * groups + 16 * groups) / 8
        extra += 2 * out_features * in_features - int4_bytes
    assert report.memory.weight_bytes - uniform.memory.weight_bytes == pytest.approx(extra, rel=1e-9)


def _linear_parameters(spec):
    from hwsim.workload.parameters import parameters

    return [p for p in parameters(spec) if p.kind == "linear"]


def test_json_round_trip():
    import json

    report = simulate("smollm2-135m", "w16a16", "h100-sxm", Scenario.decode(1, 16, 2))
    data = json.loads(report.to_json())
    assert data["phases"]["decode"]["time_to_first_token_s"] is None
    assert math.isclose(data["phases"]["decode"]["latency_s"], report.phase("decode")["latency_s"])
    assert data["fits"] is True
    assert data["peak_memory_bytes"] == report.memory.peak_bytes


def test_op_rows_carry_units_and_levels():
    report = simulate("smollm2-135m", "w16a16", "phone-npu-class", Scenario.decode(1, 16, 2))
    for column in ("latency_s", "energy_j", "compute_energy_j", "sram_energy_j", "dram_energy_j", "static_energy_j",
                   "dram_read_bytes", "sram_read_bytes", "utilization", "bound"):
        assert column in report.ops.columns
    assert np.all(report.ops.latency_s > 0)
    assert set(report.ops.bound) <= {"compute", "memory", "overhead", "power"}


def test_energy_per_token_keeps_its_older_name():
    report = simulate("smollm2-135m", "w16a16", "h100-sxm", [Scenario.prefill(1, 32), Scenario.decode(1, 32, 4)])
    # A prefill counts its 32 prompt tokens, a decode its 4 generated ones.
    assert report.phase("prefill")["energy_j_per_token"] == pytest.approx(report.phase("prefill")["energy_j"] / 32)
    assert report.phase("decode")["energy_j_per_token"] == pytest.approx(report.phase("decode")["energy_j"] / 4)
    assert report.totals["joules_per_token"].tolist() == report.totals["energy_j_per_token"].tolist()
    prefill = report.phase("prefill")
    data = report.to_dict()
    assert data["phases"]["prefill"]["joules_per_token"] == prefill["energy_j_per_token"]


def test_phase_totals_dataclass_keeps_older_name():
    from hwsim.simulation import PhaseTotals

    fields = {name: 1.0 for name in PhaseTotals.__dataclass_fields__}
    totals = PhaseTotals(**{**fields, "phase": "decode", "energy_j_per_token": 0.25})
    assert totals.joules_per_token == 0.25


# Roofs by accelerator, each from its spec file: (activation format, weight format, GEMM peak FLOP/s, bandwidth).
ROOF_CASES = [
    # accelerators/h100-sxm.yaml: fp16 tensor cores 989.4 TFLOPS dense, HBM3 3.35 TB/s.
    ("h100-sxm", "w16a16", 989.4e12, 3.35e12),
    # accelerators/h100-sxm.yaml: int8 tensor cores 1,978.9 TOPS dense.
    ("h100-sxm", "w8a8", 1978.9e12, 3.35e12),
    # accelerators/tpu-v1.yaml: 256 x 256 int8 MACs at 700 MHz, 2 FLOPs each; DDR3 at 34 GB/s.
    ("tpu-v1", "w8a8kv8", 2 * 256 * 256 * 700e6, 34e9),
    # accelerators/phone-npu-class.yaml: 128 x 128 MACs at 35e12 / (2 x 16384) Hz; fp16 mode at half rate; LPDDR5 51.2 GB/s.
    ("phone-npu-class", "w16a16", 35e12 / 2, 51.2e9),
]


@pytest.mark.parametrize(("accelerator", "policy", "peak", "bandwidth"), ROOF_CASES)
def test_op_rows_carry_their_roofs(accelerator, policy, peak, bandwidth):
    report = simulate("smollm2-135m", policy, accelerator, Scenario.prefill(1, 64), unsupported="emulate")
    ops = report.ops
    gemms = ops[ops.kind == "GEMM"]
    # Every block linear layer runs in the policy's precision; the LM head stays fp16 in w8a8 and may differ.
    blocks = gemms[gemms.op.str.startswith("layers.")]
    np.testing.assert_allclose(blocks.peak_flops_per_s, peak, rtol=1e-9)
    np.testing.assert_allclose(ops.dram_bandwidth_bytes_per_s, bandwidth, rtol=1e-9)
    # No op runs faster than its roof: attained FLOP/s stays under the peak.
    matmuls = ops[ops.macs > 0]
    assert np.all(2 * matmuls.macs / matmuls.latency_s <= matmuls.peak_flops_per_s * (1 + 1e-9))


def test_vector_roof_of_a_systolic_array_is_missing():
    ops = simulate("smollm2-135m", "w8a8kv8", "tpu-v1", Scenario.prefill(1, 16), unsupported="emulate").ops
    vector = ops[ops.macs == 0]
    assert len(vector) > 0
    # tpu-v1's spec describes no vector unit, so vector work has no compute roof.
    assert vector.peak_flops_per_s.isna().all()
    # accelerators/h100-sxm.yaml: FP32 67 TFLOPS on the CUDA cores.
    gpu = simulate("smollm2-135m", "w16a16", "h100-sxm", Scenario.prefill(1, 16)).ops
    np.testing.assert_allclose(gpu[gpu.macs == 0].peak_flops_per_s, 67e12)
