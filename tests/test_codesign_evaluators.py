"""Evaluators: the systolic workload cost against per-op brute force, hwsim.simulate, and error recording."""

from __future__ import annotations

import math

import pytest

from hwsim.codesign.evaluators import SimulateEvaluator, build_evaluator, evaluate_points, load_plugin, simulate_available
from hwsim.codesign.policies import resolve_policy
from hwsim.codesign.spec import SweepSpec
from hwsim.codesign.systolic_cost import SystolicCostEvaluator
from hwsim.hardware import GemmOp, SystolicArray, accelerator_area
from hwsim.workload import build_workload, load_model, weight_bytes

SCENARIO = {"phase": "decode", "batch_size": 1, "context_tokens": 256, "generated_tokens": 4}


def make_spec(policies=("w8a8",), hardware=None) -> SweepSpec:
    return SweepSpec.from_dict({
        "model": "smollm2-135m",
        "accelerator": "tpu-v1",
        "policies": list(policies),
        "hardware": hardware if hardware is not None else {"array_size": [32], "pe.fallback": ["dequantize", "none"]},
        "scenarios": [SCENARIO],
        "objectives": {"latency_s": "min", "energy_j": "min"},
    })


def brute_force_cost(point) -> tuple[float, float]:
    """Latency and energy summed op by op through SystolicArray.cost, each op's GEMM times its runs."""
    model = load_model(point.model)
    policy = resolve_policy(point.policy)
    workload = build_workload(model, point.scenario)
    array = SystolicArray(point.accelerator_spec())
    latency_s = energy_j = 0.0
    for op, counts in zip(workload.ops, workload.totals):
        if op.kind not in ("GEMM", "GEMV", "attention") or op.macs == 0:
            continue
        activation = next(t for t in op.tensors if t.role == "activation")
        second = next((t for t in op.tensors if t.role == "weight"), None) or next(t for t in op.tensors if t.role == "kv_cache")
        output = next(t for t in op.tensors if t.role == "output")
        gemm = GemmOp(op.m, op.n, op.k, policy.format_for(activation, op=op), policy.format_for(second, op=op), policy.format_for(output, op=op))
        cost = array.cost(gemm)
        runs = counts.macs / (op.m * op.n * op.k)
        latency_s += cost.latency_s * runs
        energy_j += cost.total_energy_j * runs
    return latency_s, energy_j


@pytest.mark.parametrize("policy", ["w8a8", "w4a8", "mxfp4"])
def test_systolic_cost_matches_per_op_brute_force(policy):
    point = make_spec([policy]).point_at(0)
    values = SystolicCostEvaluator().evaluate(point)
    latency_s, energy_j = brute_force_cost(point)
    assert values["latency_s"] == pytest.approx(latency_s, rel=1e-12)
    assert values["energy_j"] == pytest.approx(energy_j, rel=1e-12)
    components = sum(values[f"{c}_energy_j"] for c in ("compute", "sram", "dram", "static"))
    assert components == pytest.approx(values["energy_j"], rel=1e-12)
    assert values["latency_per_token_s"] == pytest.approx(latency_s / 4, rel=1e-12)
    assert values["area_mm2"] == accelerator_area(point.accelerator_spec()).total_mm2


def test_systolic_memory_bytes():
    point = make_spec(["w8a8"]).point_at(0)
    values = SystolicCostEvaluator().evaluate(point)
    # fp16 KV cache: keys and values, 30 layers, 3 KV heads of 64, 256 + 4 positions, 2 bytes each.
    assert values["kv_cache_bytes"] == 2 * 30 * 3 * 64 * 260 * 2
    # weight_bytes of the workload summary rounds each tensor up to whole bytes; the sweep counts bits.
    summary_bytes = weight_bytes(load_model("smollm2-135m"), resolve_policy("w8a8"))
    assert values["weight_bytes"] == pytest.approx(summary_bytes, abs=20)
    assert values["memory_bytes"] == values["weight_bytes"] + values["kv_cache_bytes"]
    assert values["fits"] is True


def test_unsupported_format_is_recorded_as_error():
    points = make_spec(["w8a8"]).points()
    rows = evaluate_points(SystolicCostEvaluator(), points)
    assert [row["status"] for row in rows] == ["ok", "error"]
    assert rows[1]["error"].startswith("UnsupportedFormatError: weight format 'fp16'")
    assert rows[0]["error"] is None


class ReturnsNaN:
    def evaluate(self, point):
        return {"latency_s": math.nan}


class ReturnsText:
    def evaluate(self, point):
        return {"latency_s": "fast"}


class Interrupts:
    def evaluate(self, point):
        raise KeyboardInterrupt


def test_invalid_values_are_recorded_as_errors():
    point = make_spec().point_at(0)
    assert evaluate_points(ReturnsNaN(), [point])[0]["error"] == "ValueError: the evaluator returned latency_s=NaN; raise an exception with the reason instead"
    assert "objective values must be numbers or booleans" in evaluate_points(ReturnsText(), [point])[0]["error"]


def test_keyboard_interrupt_stops_the_chunk():
    with pytest.raises(KeyboardInterrupt):
        evaluate_points(Interrupts(), make_spec().points())


@pytest.mark.skipif(not simulate_available(), reason="hwsim.simulate is not part of this hwsim")
def test_simulate_evaluator_equals_direct_call():
    import hwsim

    point = make_spec(["w8a8"]).point_at(0)
    values = SimulateEvaluator().evaluate(point)
    report = hwsim.simulate("smollm2-135m", resolve_policy("w8a8"), point.accelerator_spec(), point.scenario, memory_overflow="report")
    totals = report.totals.iloc[0]
    assert values["latency_s"] == totals["latency_s"]
    assert values["energy_j"] == totals["energy_j"]
    assert values["time_per_output_token_s"] == totals["time_per_output_token_s"]
    assert "time_to_first_token_s" not in values
    assert values["peak_memory_bytes"] == report.memory.peak_bytes
    assert values["fits"] is True
    assert values["area_mm2"] == accelerator_area(point.accelerator_spec()).total_mm2


def test_build_evaluator_choices():
    assert isinstance(build_evaluator("systolic"), SystolicCostEvaluator)
    expected = SimulateEvaluator if simulate_available() else SystolicCostEvaluator
    assert isinstance(build_evaluator("default"), expected)
    with pytest.raises(ValueError, match="takes no evaluator_options"):
        build_evaluator("systolic", {"speed": 1})


def test_plugin_loading():
    evaluator = load_plugin("hwsim.codesign.systolic_cost:SystolicCostEvaluator", {})
    assert isinstance(evaluator, SystolicCostEvaluator)
    with pytest.raises(ValueError, match="module 'no_such_module' cannot be imported"):
        load_plugin("no_such_module:factory", {})
    with pytest.raises(ValueError, match="has no attribute 'Missing'"):
        load_plugin("hwsim.codesign.systolic_cost:Missing", {})
    with pytest.raises(ValueError, match="write 'package.module:factory'"):
        load_plugin("hwsim.codesign", {})


def test_batch_pricing_matches_the_model_point_by_point():
    spec = SweepSpec.from_dict({
        "model": "smollm2-135m",
        "accelerator": "tpu-v1",
        "policies": ["w8a8", "w4a8", "mxfp4"],
        "hardware": {
            "array_size": [4, [16, 8], 64],
            "sram_bytes": [256, 65536, 4194304],
            "dram_bandwidth_bytes_per_s": [1e9, 1e11],
            "clock_hz": [5e8, 1e9],
            "dataflow": ["ws", "os", "is"],
            "pe.fallback": ["dequantize", "none"],
        },
        "scenarios": [SCENARIO],
        "objectives": {"latency_s": "min", "energy_j": "min"},
    })
    evaluator = SystolicCostEvaluator()
    points = spec.points()
    outcomes = evaluator.evaluate_batch(points)
    kinds = {"ok": 0, "error": 0}
    for point, outcome in zip(points, outcomes):
        try:
            expected = evaluator.evaluate_with_model(point)
        except Exception as error:  # noqa: BLE001 - the batch must return the same error
            assert isinstance(outcome, Exception), point
            assert f"{type(outcome).__name__}: {outcome}" == f"{type(error).__name__}: {error}"
            kinds["error"] += 1
            continue
        assert not isinstance(outcome, Exception), (point, outcome)
        assert outcome.keys() == expected.keys()
        for key, value in expected.items():
            assert outcome[key] == pytest.approx(value, rel=1e-12), (point.labels, key)
        kinds["ok"] += 1
    # Both kinds occur: 256-byte buffers cannot hold a fold of the larger arrays, and fallback none rejects fp16.
    assert kinds["ok"] > 100
    assert kinds["error"] > 100


def test_buffers_with_bandwidth_take_the_model_path():
    spec = make_spec(["w8a8"], hardware={"memory.weight_buffer.bandwidth_bytes_per_cycle": [8.0], "pe.fallback": ["dequantize"]})
    point = spec.point_at(0)
    evaluator = SystolicCostEvaluator()
    assert evaluator.evaluate(point) == evaluator.evaluate_with_model(point)
