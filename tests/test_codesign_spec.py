"""Sweep specs: validation errors that name the axis, points, and overrides on the base accelerator."""

from __future__ import annotations

import itertools

import pytest
import yaml

from hwsim.codesign.overrides import apply_overrides, base_document
from hwsim.codesign.spec import SweepSpec, SweepSpecError, load_sweep_spec, scenario_name
from hwsim.hardware.loading import preset_path
from hwsim.workload import Scenario


def base_spec(**changes) -> dict:
    spec = {
        "name": "test",
        "model": "smollm2-135m",
        "accelerator": "tpu-v1",
        "policies": ["w8a8", "w4a8"],
        "hardware": {"array_size": [16, 32], "sram_bytes": [65536, 262144], "clock_hz": ["7e8", 1.0e9]},
        "scenarios": [{"phase": "decode", "batch_size": 1, "context_tokens": 256, "generated_tokens": 4}],
        "objectives": {"latency_s": "min", "energy_j": "min"},
    }
    spec.update(changes)
    return spec


def errors_of(raw: dict) -> str:
    with pytest.raises(SweepSpecError) as caught:
        SweepSpec.from_dict(raw)
    return str(caught.value)


def test_points_are_the_product_in_index_order():
    spec = SweepSpec.from_dict(base_spec())
    points = spec.points()
    assert spec.dimensions == (1, 2, 2, 2, 2)
    assert spec.dimension_names == ("scenario", "array_size", "sram_bytes", "clock_hz", "policy")
    assert len(points) == 16
    expected = list(itertools.product([16, 32], [65536, 262144], [7e8, 1e9], ["w8a8", "w4a8"]))
    assert [(*(label for _, label in p.labels), p.policy) for p in points] == expected
    assert [p.index for p in points] == list(range(16))
    assert len({p.point_id for p in points}) == 16


def test_point_at_and_choices_round_trip():
    spec = SweepSpec.from_dict(base_spec())
    for index in range(spec.num_points):
        assert spec.point_from_choices(spec.choices_at(index)) == spec.point_at(index)


def test_yaml_number_strings_become_numbers():
    spec = SweepSpec.from_dict(base_spec())
    assert spec.hardware[2].labels == (7e8, 1e9)
    assert isinstance(spec.hardware[2].labels[0], float)


def test_overrides_equal_editing_the_yaml_by_hand():
    spec = SweepSpec.from_dict(base_spec())
    point = spec.point_at(10)  # array 32, sram 65536, clock 1e9, w8a8
    assert (point.policy, dict(point.labels)) == ("w8a8", {"array_size": 32, "sram_bytes": 65536, "clock_hz": 1e9})
    document = yaml.safe_load(preset_path("tpu-v1").read_text())
    document["systolic_array"]["rows"] = 32
    document["systolic_array"]["cols"] = 32
    for level in ("activation_buffer", "weight_buffer", "output_buffer"):
        document["memory"][level]["capacity_bytes"] = 65536
    document["clock_hz"] = 1e9
    assert apply_overrides(base_document("tpu-v1"), point.overrides) == document
    accelerator = point.accelerator_spec()
    assert (accelerator.systolic_array.rows, accelerator.systolic_array.cols) == (32, 32)
    assert accelerator.memory_level("weight_buffer").capacity_bytes == 65536
    assert accelerator.clock_hz == 1e9


def test_mapping_axis_replaces_the_pe():
    pe = {"kind": "fixed", "native_format": "fp16", "fallback": "dequantize", "accumulator": "fp32"}
    spec = SweepSpec.from_dict(base_spec(hardware={"pe": {"fp16-dequantize": pe}}))
    point = spec.point_at(0)
    assert point.labels == (("pe", "fp16-dequantize"),)
    assert point.accelerator_spec().pe.native_format == "fp16"


def test_scenario_labels():
    assert scenario_name(Scenario.decode(2, 128, 8)) == "decode-b2-c128-g8"
    assert scenario_name(Scenario.prefill(4, 512)) == "prefill-b4-c512"


def test_fingerprint_ignores_objectives_only():
    first = SweepSpec.from_dict(base_spec())
    other_objectives = SweepSpec.from_dict(base_spec(objectives={"latency_s": "min", "area_mm2": "min"}))
    other_axis = SweepSpec.from_dict(base_spec(hardware={"array_size": [16, 64]}))
    assert first.fingerprint() == other_objectives.fingerprint()
    assert first.fingerprint() != other_axis.fingerprint()


def test_unknown_axis_is_named_with_a_hint():
    message = errors_of(base_spec(hardware={"systolic_array.rowz": [16]}))
    assert "hardware axis 'systolic_array.rowz'" in message
    assert "did you mean 'rows'" in message


def test_unknown_top_level_axis_lists_shorthands():
    message = errors_of(base_spec(hardware={"arraysize": [16]}))
    assert "hardware axis 'arraysize'" in message
    assert "array_size" in message


def test_axis_value_of_wrong_type_is_named():
    message = errors_of(base_spec(hardware={"clock_hz": ["fast"]}))
    assert "hardware axis 'clock_hz'" in message
    assert "value 'fast'" in message
    assert "must be a number" in message


def test_missing_memory_level_is_named():
    message = errors_of(base_spec(hardware={"memory.l2_buffer.capacity_bytes": [1024]}))
    assert "hardware axis 'memory.l2_buffer.capacity_bytes'" in message
    assert "no memory level 'l2_buffer'" in message


def test_empty_and_duplicate_axis_values():
    assert "the list of values is empty" in errors_of(base_spec(hardware={"array_size": []}))
    assert "given more than once" in errors_of(base_spec(hardware={"array_size": [16, 16]}))


def test_bad_array_size_is_named():
    message = errors_of(base_spec(hardware={"array_size": [0]}))
    assert "hardware axis 'array_size'" in message
    assert "positive integer" in message


def test_reserved_axis_name():
    assert "results column" in errors_of(base_spec(hardware={"policy": [1]}))


def test_invalid_policy_is_named_by_position():
    message = errors_of(base_spec(policies=["w8a8", "w3a5b"]))
    assert "policies[1]" in message
    assert "'w3a5b'" in message


def test_invalid_scenario_is_named_by_position():
    message = errors_of(base_spec(scenarios=[{"phase": "decode", "batch_size": 0, "context_tokens": 8, "generated_tokens": 1}]))
    assert "scenarios[0]" in message
    assert "batch_size" in message


def test_invalid_objective_direction_and_constraint():
    message = errors_of(base_spec(objectives={"latency_s": "lowest"}, constraints=["area_mm2 << 3"]))
    assert "objectives.latency_s" in message
    assert "constraints[0]" in message


def test_every_error_is_reported_at_once():
    raw = base_spec(policies=["w9a9"], hardware={"array_size": [0], "clock_hz": ["x"]})
    assert "(3 error(s))" in errors_of(raw)


def test_unknown_top_level_key():
    assert "did you mean 'policies'" in errors_of(base_spec(polices=["w8a8"]))


def test_missing_required_key():
    raw = base_spec()
    del raw["objectives"]
    assert "objectives: missing" in errors_of(raw)


def test_constraints_parse_and_hold():
    spec = SweepSpec.from_dict(base_spec(constraints=["area_mm2 <= 20", "fits == true"]))
    area, fits = spec.constraints
    assert (area.name, area.operator, area.value) == ("area_mm2", "<=", 20.0)
    assert area.satisfied_by(20.0)
    assert not area.satisfied_by(20.5)
    assert fits.value is True
    assert fits.satisfied_by(True)
    assert not fits.satisfied_by(False)
    assert area.label == "area_mm2 <= 20"


def test_accuracy_metric_from_objectives():
    spec = SweepSpec.from_dict(base_spec(objectives={"weight_sqnr_db": "max", "latency_s": "min"}))
    assert spec.accuracy.metric == "weight_sqnr_db"
    assert "unknown metric 'perplexty'" in errors_of(base_spec(accuracy={"metric": "perplexty"}))


def test_yaml_duplicate_key_is_an_error(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(base_spec()) + "model: smollm2-135m\n")
    with pytest.raises(SweepSpecError, match="key 'model' is given twice"):
        load_sweep_spec(path)


def test_missing_spec_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_sweep_spec(tmp_path / "absent.yaml")
