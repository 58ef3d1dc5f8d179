"""Every shipped model runs on every preset accelerator, with totals that are finite and positive."""

import math

import pytest

from hwsim.hardware import load_accelerator, preset_names
from hwsim.simulation import simulate
from hwsim.workload import Scenario, load_model, shipped_model_names

# Integer-only accelerators take the int8 policy; the rest run fp16. Emulation covers the fp16 parts
# (LM head, norms) that an int8-only array cannot multiply, and overflow reporting covers models
# larger than an accelerator's memory.
INTEGER_ONLY = {"tpu-v1", "research-32x32", "edge-tpu-class"}


@pytest.mark.parametrize("accelerator", preset_names())
@pytest.mark.parametrize("model", shipped_model_names())
def test_model_runs_on_preset(model, accelerator):
    spec = load_model(model)
    scenarios = [Scenario.prefill(1, 16)]
    if not spec.is_encoder:
        scenarios.append(Scenario.decode(1, 16, 2))
    policy = "w8a8kv8" if accelerator in INTEGER_ONLY else "w16a16"
    report = simulate(spec, policy, accelerator, scenarios, unsupported="emulate", memory_overflow="report")
    for row in report.totals.to_dict("records"):
        for key in ("latency_s", "energy_j", "tokens_per_s", "energy_j_per_token"):
            assert math.isfinite(row[key]), (model, accelerator, row["phase"], key)
            assert row[key] > 0, (model, accelerator, row["phase"], key)
    assert report.fits == (report.memory.peak_bytes <= report.memory.capacity_bytes)
    assert report.accelerator_kind == load_accelerator(accelerator).kind


def test_presets_cover_every_kind():
    kinds = {load_accelerator(name).kind for name in preset_names()}
    assert kinds == {"systolic_array", "gpu", "npu"}
