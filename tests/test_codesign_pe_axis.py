"""A PE axis in a sweep: whole PE mappings as axis values, and which PEs take a policy's quantized formats."""

from __future__ import annotations

import pytest

from hwsim.codesign import SweepSpec, load_sweep_spec, run_sweep
from hwsim.codesign.evaluators import SimulateEvaluator, evaluate_points, operand_format_pairs, pe_takes_policy_formats, simulate_available
from hwsim.hardware.spec import PESpec
from hwsim.hardware.technology import REFERENCE_TECHNOLOGY
from hwsim.workload import Scenario

pytestmark = pytest.mark.skipif(not simulate_available(), reason="hwsim.simulate is not part of this hwsim")

INT8_PE = {"kind": "fixed", "native_format": "int8", "accumulator": "int32"}
FP16_DEQUANTIZE_PE = {"kind": "fixed", "native_format": "fp16", "fallback": "dequantize", "accumulator": "fp32"}
MX_PE = {
    "kind": "block_scaled",
    "element_formats": ["fp8_e4m3", "fp4_e2m1"],
    "scale_formats": ["e8m0", "ue4m3"],
    "macs_per_cycle_by_element_bits": {8: 1, 4: 2},
    "accumulator": "fp32",
}
POLICIES = ["w8a8", "w4a16", "w=mxfp4,a=mxfp8_e4m3", "w=nvfp4,a=nvfp4"]
SCENARIO = {"phase": "decode", "batch_size": 1, "context_tokens": 64, "generated_tokens": 2}


def make_spec(pes: dict, policies=POLICIES, unsupported: str = "emulate") -> SweepSpec:
    return SweepSpec.from_dict({
        "name": "pe-axis",
        "model": "smollm2-135m",
        "accelerator": "research-32x32",
        "policies": list(policies),
        "hardware": {"pe": pes},
        "scenarios": [SCENARIO],
        "objectives": {"joules_per_token": "min", "area_mm2": "min"},
        "constraints": ["pe_takes_policy_formats == true"],
        "evaluator": "simulate",
        "evaluator_options": {"unsupported": unsupported},
    })


def test_pe_mapping_from_yaml_keeps_integer_keys(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "model: smollm2-135m\n"
        "accelerator: research-32x32\n"
        "policies: [w=mxfp4,a=mxfp8_e4m3]\n"
        "hardware:\n"
        "  pe:\n"
        "    mx: {kind: block_scaled, element_formats: [fp8_e4m3, fp4_e2m1], scale_formats: [e8m0],\n"
        "         macs_per_cycle_by_element_bits: {8: 1, 4: 2}, accumulator: fp32}\n"
        "scenarios: [{phase: decode, batch_size: 1, context_tokens: 64, generated_tokens: 2}]\n"
        "objectives: {energy_j: min, area_mm2: min}\n"
    )
    pe = load_sweep_spec(path).point_at(0).accelerator_spec().pe
    assert pe.kind == "block_scaled"
    assert pe.macs_per_cycle_by_element_bits == ((4, 2), (8, 1))


def test_accelerator_is_built_once_per_overrides():
    spec = make_spec({"mx": MX_PE})
    first, second = spec.point_at(0), spec.point_at(1)
    assert first.overrides == second.overrides
    assert first.accelerator_spec() is second.accelerator_spec()


def test_operand_pairs_of_w8a8():
    # Linear layers: int8 per-token activations times int8 per-channel weights. The LM head
    # (fp16 weights) and attention (fp16 KV cache) both pair int8 activations with fp16.
    pairs = operand_format_pairs("smollm2-135m", "w8a8", Scenario.decode(batch_size=1, context_tokens=64, generated_tokens=2))
    assert set(pairs) == {("int8_token", "int8_channel"), ("int8_token", "fp16")}


# (PE label, policy, whether the PE takes the policy's quantized formats as they are, and why)
CASES = [
    ("int8", "w8a8", True),  # int8 values; per-channel and per-token scales are applied after accumulation
    ("int8", "w4a16", False),  # int4_g128 has a scale per 128 elements, and the PE has no block-scale unit or fallback
    ("int8", "w=mxfp4,a=mxfp8_e4m3", False),  # a scale per 32 elements, as above
    ("mx", "w=mxfp4,a=mxfp8_e4m3", True),  # E2M1 and E4M3 elements with E8M0 scales are listed
    ("mx", "w=nvfp4,a=nvfp4", True),  # E2M1 elements with UE4M3 scales are listed
    ("mx", "w8a8", False),  # per-token and per-channel int8 are not block-scaled
    ("mx", "w4a16", False),  # int4 is not a listed element
    *[("fp16-dequantize", policy, True) for policy in POLICIES],  # the fallback converts any operand to fp16
]


@pytest.fixture(scope="module")
def pe_rows():
    spec = make_spec({"int8": INT8_PE, "mx": MX_PE, "fp16-dequantize": FP16_DEQUANTIZE_PE})
    evaluator = SimulateEvaluator(unsupported="emulate")
    evaluator.prepare(spec)
    points = spec.points()
    rows = evaluate_points(evaluator, points)
    return {(dict(point.labels)["pe"], point.policy): row for point, row in zip(points, rows)}


@pytest.mark.parametrize(("pe", "policy", "expected"), CASES)
def test_pe_takes_policy_formats(pe_rows, pe, policy, expected):
    row = pe_rows[(pe, policy)]
    assert row["status"] == "ok", row["error"]
    assert row["pe_takes_policy_formats"] is expected


def test_full_precision_pairs_need_nothing():
    pe = PESpec(kind="fixed", native_format="int8", accumulator="int32")
    assert pe_takes_policy_formats(pe, [("fp16", "fp16"), ("fp16", "fp32")], REFERENCE_TECHNOLOGY)


def test_int8_pe_raises_on_fp16_lm_head():
    # Without emulation, the fp16 LM head of w8a8 stops the point, although the int8 PE takes int8.
    spec = make_spec({"int8": INT8_PE}, ["w8a8"], unsupported="raise")
    evaluator = SimulateEvaluator(unsupported="raise")
    evaluator.prepare(spec)
    (row,) = evaluate_points(evaluator, spec.points())
    assert row["status"] == "error"
    assert "'fp16'" in row["error"]


def test_constraint_selects_points_the_pe_takes(tmp_path):
    spec = make_spec({"int8": INT8_PE, "mx": MX_PE}, ["w8a8", "w=mxfp4,a=mxfp8_e4m3"])
    table = run_sweep(spec, tmp_path / "points.parquet", executor="local", progress=False).table
    feasible = {(row.pe, row.policy) for row in table[table["feasible"]].itertuples()}
    assert feasible == {("int8", "w8a8"), ("mx", "w=mxfp4,a=mxfp8_e4m3")}
    assert not table.loc[~table["feasible"], "pareto"].any()
