"""Accelerator specs: presets, YAML validation with key paths, and the `hwsim accelerators` command."""

import argparse
import copy
import re

import pytest
import yaml

from hwsim.cli import accelerators_cmd
from hwsim.hardware.loading import (
    accelerator_from_dict,
    load_accelerator,
    parse_accelerator_yaml,
    preset_directory,
    preset_names,
)
from hwsim.hardware.spec import MemorySpec, PESpec, SpecError, SystolicArraySpec

MINIMAL = {
    "name": "tiny",
    "kind": "systolic_array",
    "technology": {"node_nm": 45, "supply_voltage_v": 0.9},
    "clock_hz": 1.0e9,
    "static_power_w": 0.1,
    "systolic_array": {"rows": 4, "cols": 4, "dataflow": "ws"},
    "pe": {"kind": "fixed", "native_format": "int8", "accumulator": "int32"},
    "memory": {
        "dram": {"kind": "dram", "capacity_bytes": 2**30, "bandwidth_bytes_per_cycle": 8},
        "activation_buffer": {"kind": "sram", "capacity_bytes": 4096},
        "weight_buffer": {"kind": "sram", "capacity_bytes": 4096},
        "output_buffer": {"kind": "sram", "capacity_bytes": 4096},
    },
}


def _with(path, value):
    raw = copy.deepcopy(MINIMAL)
    node = raw
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return raw


def _errors(raw):
    with pytest.raises(SpecError) as info:
        accelerator_from_dict(raw)
    return {error.path: error for error in info.value.errors}


def test_presets_are_listed():
    assert {"tpu-v1", "research-32x32"} <= set(preset_names())


def test_tpu_preset_matches_jouppi_2017():
    # Jouppi et al., ISCA 2017: 256x256 8-bit MACs at 700 MHz, 24 MiB unified buffer,
    # 4 MiB accumulators, 34 GB/s DDR3, 28 nm.
    spec = load_accelerator("tpu-v1")
    assert (spec.systolic_array.rows, spec.systolic_array.cols) == (256, 256)
    assert spec.systolic_array.dataflow == "ws"
    assert spec.clock_hz == 700e6
    assert spec.memory_level("activation_buffer").capacity_bytes == 24 * 2**20
    assert spec.memory_level("output_buffer").capacity_bytes == 4 * 2**20
    assert spec.memory_level("dram").bandwidth_bytes_per_s == 34e9
    assert spec.technology.node_nm == 28
    assert spec.pe.native_format == "int8"
    assert spec.pe.accumulator == "int32"


def test_research_preset_is_32x32_bit_fusion():
    spec = load_accelerator("research-32x32")
    assert (spec.systolic_array.rows, spec.systolic_array.cols) == (32, 32)
    assert spec.pe.kind == "bit_fusion"
    assert (spec.pe.brick_bits, spec.pe.max_bits) == (2, 8)


@pytest.mark.parametrize("name", ["tpu-v1", "research-32x32"])
def test_every_preset_number_names_its_source(name):
    text = (preset_directory() / f"{name}.yaml").read_text()
    number = re.compile(r"^\s*[A-Za-z_]+:\s*[-+]?[0-9][0-9_.eE+-]*\s*(#.*)?$")
    checked = 0
    for line in text.splitlines():
        match = number.match(line)
        if match:
            checked += 1
            comment = match.group(1) or ""
            assert len(comment.strip("# ")) > 5, f"number without a source in {name}.yaml: {line.strip()!r}"
    assert checked >= 10


def test_load_by_path(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    spec = load_accelerator(path)
    assert spec.name == "tiny"
    assert spec.systolic_array.num_pes == 16


def test_unknown_preset_suggests_close_name():
    with pytest.raises(KeyError, match="did you mean 'tpu-v1'"):
        load_accelerator("tpu-v2")


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_accelerator("nowhere.yaml")


def test_zero_pes_names_rows_and_cols():
    errors = _errors(_with("systolic_array", {"rows": 0, "cols": 0, "dataflow": "ws"}))
    assert errors["systolic_array.rows"].value == 0
    assert "at least one PE" in errors["systolic_array.rows"].allowed
    assert "systolic_array.cols" in errors


def test_zero_bandwidth_names_the_field():
    errors = _errors(_with("memory.dram.bandwidth_bytes_per_cycle", 0))
    error = errors["memory.dram.bandwidth_bytes_per_cycle"]
    assert error.value == 0
    assert "positive number" in error.allowed


def test_negative_energy_names_the_field():
    errors = _errors(_with("memory.weight_buffer.read_energy_pj_per_byte", -1.0))
    error = errors["memory.weight_buffer.read_energy_pj_per_byte"]
    assert error.value == -1.0
    assert ">= 0" in error.allowed


def test_all_bad_fields_reported_at_once():
    raw = _with("systolic_array", {"rows": -2, "cols": 4, "dataflow": "xs"})
    raw["clock_hz"] = 0
    raw["memory"]["weight_buffer"]["capacity_bytes"] = 0
    raw["pe"]["kind"] = "analog"
    with pytest.raises(SpecError) as info:
        accelerator_from_dict(raw)
    paths = {error.path for error in info.value.errors}
    assert {"systolic_array.rows", "systolic_array.dataflow", "memory.weight_buffer.capacity_bytes", "pe.kind"} <= paths
    message = str(info.value)
    assert "systolic_array.dataflow='xs': must be one of os, ws, is" in message
    assert "pe.kind='analog'" in message


def test_unknown_key_suggests_known_one():
    raw = copy.deepcopy(MINIMAL)
    raw["systolic_array"]["colums"] = 4
    errors = _errors(raw)
    assert "did you mean 'cols'" in errors["systolic_array.colums"].allowed


def test_missing_required_key():
    raw = copy.deepcopy(MINIMAL)
    del raw["clock_hz"]
    errors = _errors(raw)
    assert "required" in errors["clock_hz"].allowed


def test_missing_memory_level_for_systolic_array():
    raw = copy.deepcopy(MINIMAL)
    del raw["memory"]["output_buffer"]
    errors = _errors(raw)
    assert "memory.output_buffer" in errors


def test_duplicate_key_rejected():
    text = yaml.safe_dump(MINIMAL).replace("rows: 4", "rows: 4\n  rows: 8")
    with pytest.raises(SpecError, match="rows.*given twice"):
        parse_accelerator_yaml(text)


def test_numbers_with_unsigned_exponent_accepted():
    # PyYAML reads 7e8 as a string; the loader converts it.
    text = yaml.safe_dump(MINIMAL).replace("clock_hz: 1000000000.0", "clock_hz: 7e8")
    assert parse_accelerator_yaml(text).clock_hz == 7e8


def test_wrong_type_named():
    errors = _errors(_with("memory.dram.capacity_bytes", "lots"))
    assert "integer" in errors["memory.dram.capacity_bytes"].allowed


def test_pe_kind_needs_its_fields():
    with pytest.raises(SpecError) as info:
        PESpec(kind="bit_fusion", accumulator="int32")
    assert {e.path for e in info.value.errors} == {"brick_bits", "max_bits", "fusion_energy_factor"}


def test_dequantize_fallback_only_for_fixed_pe():
    with pytest.raises(SpecError, match="fallback"):
        PESpec(kind="bit_serial", accumulator="int32", parallel_bits=8, serial_bits=1, max_serial_bits=8, fallback="dequantize")


def test_memory_spec_rejects_both_bandwidths():
    with pytest.raises(SpecError, match="not both"):
        MemorySpec("dram", "dram", 2**30, bandwidth_bytes_per_s=1e9, bandwidth_bytes_per_cycle=8)


def test_systolic_spec_rejects_bad_dataflow():
    with pytest.raises(SpecError, match="dataflow='rs'"):
        SystolicArraySpec(4, 4, "rs")


def _run_cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="hwsim")
    accelerators_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    status = args.func(args)
    return status, capsys.readouterr().out


def test_cli_list(capsys):
    status, out = _run_cli(["accelerators", "list"], capsys)
    assert status == 0
    assert "tpu-v1" in out
    assert "research-32x32" in out
    assert "256x256" in out


def test_cli_show(capsys):
    status, out = _run_cli(["accelerators", "show", "tpu-v1"], capsys)
    assert status == 0
    assert "weight-stationary" in out
    assert "activation_buffer" in out
    assert "mac" in out
    assert "mm^2" in out


def test_cli_show_formats(capsys):
    status, out = _run_cli(["accelerators", "show", "research-32x32", "--activation", "int4", "--weight", "int4"], capsys)
    assert status == 0
    # Bit Fusion: a 2-bit-brick PE fused to 8x8 runs (8/4) * (8/4) = 4 MACs per cycle on 4-bit operands.
    assert "4 MAC per PE per cycle" in out
