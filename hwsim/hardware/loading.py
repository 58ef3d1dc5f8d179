"""Load accelerator specs from YAML and validate them into frozen dataclasses.

`load_accelerator("tpu-v1")` reads a preset from `accelerators/` (the
`hwsim._accelerators` package in an installed wheel); a path to a .yaml file
loads that file. Every bad field is reported at once, each with its key path,
its value and what is allowed. An unknown key gets the closest known key as a
hint. A key given twice in one mapping is an error, not a silent overwrite.
"""

from __future__ import annotations

import difflib
import importlib.resources
import math
from pathlib import Path
from typing import Any

import yaml

from hwsim.hardware.device_specs import GPUSpec, NPUSpec
from hwsim.hardware.spec import (
    AcceleratorSpec,
    FieldError,
    MemorySpec,
    PESpec,
    SpecError,
    SystolicArraySpec,
)
from hwsim.hardware.technology import Technology

TOP_LEVEL_KEYS = {
    "name": str, "description": str, "kind": str, "sources": list, "technology": dict, "clock_hz": float,
    "static_power_w": float, "systolic_array": dict, "pe": dict, "memory": dict, "gpu": dict, "npu": dict,
}
# The section of each kind (pe and systolic_array, gpu, npu) is checked by AcceleratorSpec.
REQUIRED_TOP_LEVEL = ("name", "kind", "technology", "clock_hz", "static_power_w", "memory")
TECHNOLOGY_KEYS = {"node_nm": float, "supply_voltage_v": float, "flavor": str}
SYSTOLIC_KEYS = {"rows": int, "cols": int, "dataflow": str}
MEMORY_KEYS = {
    "kind": str, "capacity_bytes": int, "bandwidth_bytes_per_s": float, "bandwidth_bytes_per_cycle": float,
    "read_energy_pj_per_byte": float, "write_energy_pj_per_byte": float, "bank_bytes": int,
}
GPU_KEYS = {
    "sm_count": int, "tensor_core_ops_per_s": dict, "cuda_core_ops_per_s": float,
    "tensor_core_efficiency": dict, "memory_efficiency": float, "thread_block_tiles": list, "ctas_per_sm": int,
    "kernel_launch_overhead_s": float, "board_power_w": float, "block_scaled_precisions": list, "cluster_size": int,
}
GPU_OPTIONAL_KEYS = ("block_scaled_precisions", "cluster_size")
NPU_KEYS = {
    "array_rows": int, "array_cols": int, "modes": dict, "mac_efficiency": float, "vector_ops_per_cycle": float,
    "power_envelope_w": float, "op_overhead_s": float,
}
PE_KEYS = {
    "kind": str, "accumulator": str, "native_format": str, "fallback": str, "brick_bits": int, "max_bits": int,
    "fusion_energy_factor": float, "parallel_bits": int, "serial_bits": int, "max_serial_bits": int,
    "element_formats": list, "scale_formats": list, "macs_per_cycle_by_element_bits": dict,
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key repeated within one mapping."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise SpecError([FieldError(str(key), f"lines {seen[key]} and {line}", "key given twice in one mapping; keep one")])
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _coerce(path: str, value: Any, expected: type, errors: list[FieldError]) -> Any:
    """`value` converted to `expected`, or an error recorded; numbers written like 7e8 (a YAML string) become floats."""
    if expected is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                errors.append(FieldError(path, value, "must be a number"))
                return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(FieldError(path, value, "must be a number"))
            return None
        return float(value)
    if expected is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(FieldError(path, value, "must be an integer"))
            return None
        return value
    if not isinstance(value, expected):
        kind = {dict: "mapping of keys to values", list: "list", str: "string"}.get(expected, expected.__name__)
        errors.append(FieldError(path, value, f"must be a {kind}"))
        return None
    return value


def _section(path: str, raw: Any, schema: dict[str, type], errors: list[FieldError], required: tuple[str, ...] = ()) -> dict | None:
    """Keys of one mapping checked against `schema` and coerced; None if `raw` is not a mapping."""
    if not isinstance(raw, dict):
        errors.append(FieldError(path, raw, "must be a mapping of keys to values"))
        return None
    values = {}
    for key, value in raw.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            errors.append(FieldError(key_path, value, f"unknown key; {hint}known keys: {', '.join(sorted(schema))}"))
            continue
        coerced = _coerce(key_path, value, schema[key], errors)
        if coerced is not None:
            values[key] = coerced
    for key in required:
        if key not in raw:
            errors.append(FieldError(f"{path}.{key}" if path else key, None, "missing; this key is required"))
    return values


def _build(path: str, factory, values: dict, errors: list[FieldError]):
    try:
        return factory(**values)
    except SpecError as error:
        errors.extend(error.prefixed(path).errors)
    except TypeError as error:
        errors.append(FieldError(path, values, f"cannot build this section: {error}"))
    return None


def _number_mapping(path: str, raw: dict, errors: list[FieldError]) -> tuple[tuple[str, float], ...]:
    """Items of a mapping of names to numbers, each number coerced to float, sorted by name."""
    items = []
    for key, value in raw.items():
        number = _coerce(f"{path}.{key}", value, float, errors)
        if number is not None:
            items.append((str(key), number))
    return tuple(sorted(items))


def _gpu_section(raw: Any, errors: list[FieldError]) -> GPUSpec | None:
    required = tuple(k for k in GPU_KEYS if k not in GPU_OPTIONAL_KEYS)
    values = _section("gpu", raw, GPU_KEYS, errors, required)
    if values is None or any(key not in values for key in required):
        return None
    values["tensor_core_ops_per_s"] = _number_mapping("gpu.tensor_core_ops_per_s", values["tensor_core_ops_per_s"], errors)
    values["tensor_core_efficiency"] = _number_mapping("gpu.tensor_core_efficiency", values["tensor_core_efficiency"], errors)
    tiles = []
    for index, tile in enumerate(values["thread_block_tiles"]):
        if not (isinstance(tile, list) and len(tile) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in tile)):
            errors.append(FieldError(f"gpu.thread_block_tiles[{index}]", tile, "must be a [rows, cols] pair of integers"))
            continue
        tiles.append((tile[0], tile[1]))
    values["thread_block_tiles"] = tuple(tiles)
    values["block_scaled_precisions"] = tuple(str(p) for p in values.get("block_scaled_precisions", ()))
    return _build("gpu", GPUSpec, values, errors)


def _npu_section(raw: Any, errors: list[FieldError]) -> NPUSpec | None:
    values = _section("npu", raw, NPU_KEYS, errors, tuple(NPU_KEYS))
    if values is None or len(values) < len(NPU_KEYS):
        return None
    modes = []
    for key, macs in _number_mapping("npu.modes", values["modes"], errors):
        activation, separator, weight = key.partition("x")
        if not separator:
            errors.append(FieldError(f"npu.modes.{key}", key, "mode names are <activation precision>x<weight precision>, such as int8xint4"))
            continue
        modes.append((activation, weight, macs))
    values["modes"] = tuple(modes)
    return _build("npu", NPUSpec, values, errors)


def accelerator_from_dict(raw: Any, source: str = "") -> AcceleratorSpec:
    """Validate a parsed YAML document into an AcceleratorSpec; raise SpecError listing every bad field."""
    errors: list[FieldError] = []
    top = _section("", raw, TOP_LEVEL_KEYS, errors, REQUIRED_TOP_LEVEL)
    if top is None:
        raise SpecError(errors, source)

    # A missing section is reported once, by the top-level check, not once per key inside it.
    technology = None
    tech_values = None
    if "technology" in top:
        tech_values = _section("technology", top["technology"], TECHNOLOGY_KEYS, errors, ("node_nm", "supply_voltage_v"))
    if tech_values is not None:
        try:
            technology = Technology(**tech_values)
        except ValueError as error:
            errors.append(FieldError("technology", tech_values, str(error)))

    systolic = None
    if "systolic_array" in top:
        values = _section("systolic_array", top["systolic_array"], SYSTOLIC_KEYS, errors, tuple(SYSTOLIC_KEYS))
        if values is not None and len(values) == len(SYSTOLIC_KEYS):
            systolic = _build("systolic_array", SystolicArraySpec, values, errors)

    pe = None
    pe_values = None
    if "pe" in top:
        pe_values = _section("pe", top["pe"], PE_KEYS, errors, ("kind", "accumulator"))
    if pe_values is not None:
        for key in ("element_formats", "scale_formats"):
            if key in pe_values:
                pe_values[key] = tuple(str(item) for item in pe_values[key])
        if "macs_per_cycle_by_element_bits" in pe_values:
            pe_values["macs_per_cycle_by_element_bits"] = tuple(sorted(pe_values["macs_per_cycle_by_element_bits"].items()))
        if "kind" in pe_values and "accumulator" in pe_values:
            pe = _build("pe", PESpec, pe_values, errors)

    gpu = _gpu_section(top["gpu"], errors) if "gpu" in top else None
    npu = _npu_section(top["npu"], errors) if "npu" in top else None

    memory = []
    raw_memory = top.get("memory", {})
    if not isinstance(raw_memory, dict):
        errors.append(FieldError("memory", raw_memory, "must be a mapping of level names to levels"))
        raw_memory = {}
    for level_name, raw_level in raw_memory.items():
        path = f"memory.{level_name}"
        values = _section(path, raw_level, MEMORY_KEYS, errors, ("kind", "capacity_bytes"))
        if values is not None and "kind" in values and "capacity_bytes" in values:
            level = _build(path, MemorySpec, {"name": str(level_name), **values}, errors)
            if level is not None:
                memory.append(level)

    if errors:
        raise SpecError(errors, source)
    spec = _build(
        "",
        AcceleratorSpec,
        {
            "name": top["name"], "kind": top["kind"], "technology": technology, "clock_hz": top["clock_hz"],
            "static_power_w": top["static_power_w"], "memory": tuple(memory), "pe": pe, "systolic_array": systolic,
            "description": top.get("description", ""), "sources": tuple(str(s) for s in top.get("sources", [])),
            "gpu": gpu, "npu": npu,
        },
        errors,
    )
    if errors:
        raise SpecError([FieldError(e.path.lstrip("."), e.value, e.allowed) for e in errors], source)
    return spec


def parse_accelerator_yaml(text: str, source: str = "") -> AcceleratorSpec:
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except SpecError as error:
        raise SpecError(error.errors, source) from None
    except yaml.YAMLError as error:
        raise SpecError([FieldError("(document)", source, f"invalid YAML: {error}")], source) from error
    return accelerator_from_dict(raw, source)


def preset_directory() -> Path:
    """Folder of the accelerator presets: the installed package data, else `accelerators/` of a source checkout."""
    try:
        packaged = importlib.resources.files("hwsim._accelerators")
        if packaged.is_dir():
            return Path(str(packaged))
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "accelerators"


def preset_names() -> list[str]:
    """Names of the accelerator presets, sorted."""
    directory = preset_directory()
    return sorted(path.stem for path in directory.glob("*.yaml")) if directory.is_dir() else []


def preset_path(name: str) -> Path:
    path = preset_directory() / f"{name}.yaml"
    if not path.exists():
        names = preset_names()
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise KeyError(f"unknown accelerator {name!r}: {hint}known presets: {', '.join(names)}; or pass a path to a .yaml file")
    return path


def load_accelerator(name_or_path: str | Path) -> AcceleratorSpec:
    """Spec of a preset name ("tpu-v1") or of a YAML file path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.exists():
            raise FileNotFoundError(f"accelerator file {str(candidate)!r} not found")
        path = candidate
    else:
        path = preset_path(str(name_or_path))
    return parse_accelerator_yaml(path.read_text(), source=str(path))
