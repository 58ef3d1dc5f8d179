"""Hardware axes of a sweep: overrides applied to a base accelerator YAML document.

An axis is a key path into the accelerator YAML (`clock_hz`,
`systolic_array.rows`, `memory.weight_buffer.capacity_bytes`, `pe` for a
whole PE mapping, `pe.native_format`). It may also be one of the
shorthands in `AXIS_SHORTHANDS`, which set several paths at once:
`array_size` sets rows and cols, and `sram_bytes` sets all three buffers. A value replaces whatever
the base document has at its path. A mapping value replaces the whole
mapping, so `pe: {kind: fixed, ...}` changes the PE type without keys of
the old PE left over.

Checks here are per value: the path exists in the accelerator schema and
the value has the type that the schema requires. Whether a combination of values
makes a valid accelerator (a block-scaled PE needs element formats, a
buffer must hold one fold) is known only for a whole point, so an invalid
combination becomes a recorded error of that point.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
from pathlib import Path
from typing import Any, Callable

import yaml

from hwsim.hardware.loading import (
    MEMORY_KEYS,
    PE_KEYS,
    SYSTOLIC_KEYS,
    TECHNOLOGY_KEYS,
    TOP_LEVEL_KEYS,
    accelerator_from_dict,
    parse_accelerator_yaml,
    preset_path,
)
from hwsim.hardware.spec import AcceleratorSpec

# On-chip buffers of the systolic-array model.
BUFFER_LEVELS = ("activation_buffer", "weight_buffer", "output_buffer")

_SECTION_SCHEMAS = {"technology": TECHNOLOGY_KEYS, "systolic_array": SYSTOLIC_KEYS, "pe": PE_KEYS}


def _array_size(value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        rows, cols = value
    else:
        rows = cols = value
    for number in (rows, cols):
        if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
            raise ValueError(f"array_size={value!r}: give a positive integer N for an N x N array, or [rows, cols]")
    return [("systolic_array.rows", rows), ("systolic_array.cols", cols)]


def _sram_bytes(value: Any) -> list[tuple[str, Any]]:
    return [(f"memory.{level}.capacity_bytes", value) for level in BUFFER_LEVELS]


# Shorthand axis name -> function from one value to (key path, value) overrides.
AXIS_SHORTHANDS: dict[str, Callable[[Any], list[tuple[str, Any]]]] = {
    "array_size": _array_size,
    "sram_bytes": _sram_bytes,
    "dram_bandwidth_bytes_per_s": lambda value: [("memory.dram.bandwidth_bytes_per_s", value)],
    "dataflow": lambda value: [("systolic_array.dataflow", value)],
    "native_format": lambda value: [("pe.native_format", value)],
    "element_formats": lambda value: [("pe.element_formats", value)],
}


def axis_overrides(axis: str, value: Any) -> list[tuple[str, Any]]:
    """Key-path overrides that one value of `axis` stands for."""
    shorthand = AXIS_SHORTHANDS.get(axis)
    if shorthand is not None:
        return shorthand(value)
    return [(axis, value)]


@functools.lru_cache(maxsize=64)
def _base_document_json(name_or_path: str) -> str:
    candidate = Path(name_or_path)
    path = candidate if candidate.suffix in (".yaml", ".yml") or candidate.exists() else preset_path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"accelerator file {str(path)!r} not found")
    text = path.read_text()
    # Full validation once, with the loader's error messages (duplicate keys included).
    parse_accelerator_yaml(text, source=str(path))
    return json.dumps(yaml.safe_load(text))


def base_document(name_or_path: str) -> dict:
    """Return a fresh copy of the parsed YAML document of an accelerator preset name or file."""
    return json.loads(_base_document_json(str(name_or_path)))


def apply_overrides(document: dict, overrides: tuple[tuple[str, Any], ...], *, in_place: bool = False) -> dict:
    """Return `document` with each (key path, value) set in order, mappings on the way created; a copy unless `in_place`."""
    result = document if in_place else copy.deepcopy(document)
    for path, value in overrides:
        keys = path.split(".")
        node = result
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[keys[-1]] = value if in_place else copy.deepcopy(value)
    return result


# Validated specs by (base, overrides as JSON), oldest dropped first past MAX_CACHED_ACCELERATORS.
# The JSON text is only the key: the spec is built from the overrides themselves, because JSON
# turns integer mapping keys, such as those of pe.macs_per_cycle_by_element_bits, into strings.
_ACCELERATORS: dict[tuple[str, str], AcceleratorSpec] = {}
MAX_CACHED_ACCELERATORS = 4096


def build_accelerator(base: str, overrides: tuple[tuple[str, Any], ...]) -> AcceleratorSpec:
    """Validated spec of `base` with `overrides`; cached per process, since many points share hardware."""
    overrides_json = json.dumps([list(item) for item in overrides], sort_keys=True)
    key = (str(base), overrides_json)
    spec = _ACCELERATORS.get(key)
    if spec is None:
        document = apply_overrides(base_document(base), overrides)
        spec = accelerator_from_dict(document, source=f"{base} with overrides {overrides_json}")
        if len(_ACCELERATORS) >= MAX_CACHED_ACCELERATORS:
            _ACCELERATORS.pop(next(iter(_ACCELERATORS)))
        _ACCELERATORS[key] = spec
    return spec


def _type_problem(value: Any, expected: type) -> str | None:
    """Why `value` is not of the schema type `expected`, or None when it is."""
    if expected is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return "must be a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return "must be a finite number"
        return None
    if expected is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            return "must be an integer"
        return None
    if expected is dict and not isinstance(value, dict):
        return "must be a mapping of keys to values"
    if expected is list and not isinstance(value, (list, tuple)):
        return "must be a list"
    if expected is str and not isinstance(value, str):
        return "must be a string"
    return None


def _unknown_key(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {key!r}; {hint}known keys: {', '.join(sorted(known))}"


def _mapping_problem(value: Any, schema: dict[str, type]) -> str | None:
    if not isinstance(value, dict):
        return "must be a mapping of keys to values"
    for key, item in value.items():
        if key not in schema:
            return _unknown_key(str(key), schema)
        problem = _type_problem(item, schema[key])
        if problem:
            return f"{key}={item!r} {problem}"
    return None


def check_override(path: str, value: Any, base: dict) -> str | None:
    """Why setting `path` to `value` on the document `base` cannot work, or None when the value fits the schema."""
    keys = path.split(".")
    top = keys[0]
    if top not in TOP_LEVEL_KEYS:
        shorthands = ", ".join(sorted(AXIS_SHORTHANDS))
        return f"{_unknown_key(top, TOP_LEVEL_KEYS)}; or a shorthand axis: {shorthands}"
    if top == "memory":
        levels = base.get("memory", {})
        if len(keys) == 1:
            if not isinstance(value, dict):
                return "must be a mapping of level names to levels"
            for level, spec in value.items():
                problem = _mapping_problem(spec, MEMORY_KEYS)
                if problem:
                    return f"memory level {level!r}: {problem}"
            return None
        level = keys[1]
        if len(keys) == 2:
            problem = _mapping_problem(value, MEMORY_KEYS)
            return f"memory level {level!r}: {problem}" if problem else None
        if level not in levels:
            return f"the base accelerator has no memory level {level!r}; it has {', '.join(levels)}"
        if len(keys) > 3 or keys[2] not in MEMORY_KEYS:
            return _unknown_key(".".join(keys[2:]), MEMORY_KEYS)
        return _type_problem(value, MEMORY_KEYS[keys[2]])
    if top in _SECTION_SCHEMAS:
        schema = _SECTION_SCHEMAS[top]
        if len(keys) == 1:
            return _mapping_problem(value, schema)
        if len(keys) > 2 or keys[1] not in schema:
            return _unknown_key(".".join(keys[1:]), schema)
        return _type_problem(value, schema[keys[1]])
    if len(keys) > 1:
        return f"{top!r} has no keys below it"
    return _type_problem(value, TOP_LEVEL_KEYS[top])
