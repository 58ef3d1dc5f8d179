"""Sweep specs: what a co-design sweep varies, what it measures and which results it keeps.

A spec is a YAML file or a dict of the same shape:

    name: codesign-example
    model: smollm2-135m              # architecture config for the cost model
    accelerator: research-32x32      # base preset name or YAML file
    policies: [w8a8, w4a8, "w=mxfp4,a=mxfp8_e4m3"]
    hardware:                        # axes: a list of values, or a mapping label -> value
      array_size: [16, 32, 64]
      sram_bytes: [65536, 262144]
      pe:
        int8-dequantize: {kind: fixed, native_format: int8, fallback: dequantize, accumulator: int32}
    scenarios:
      - {phase: decode, batch_size: 1, context_tokens: 256, generated_tokens: 16}
    objectives: {perplexity: min, latency_s: min, energy_j: min, area_mm2: min}
    constraints: ["area_mm2 <= 20", "fits == true"]
    accuracy: {metric: perplexity, tokens: 1024, window: 256}
    evaluator: systolic              # default, systolic, simulate, or module:factory
    evaluator_options: {}
    chunk_size: 64                   # points per task and per checkpoint part

The points are the product of scenarios, hardware axes and policies. A
point's index is its position in that product, with scenarios outermost
and policies innermost, so consecutive points share their hardware and a
worker builds each accelerator once for all policies. A grid sweep and a
search agree on the index.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hwsim.codesign.overrides import axis_overrides, base_document, check_override
from hwsim.codesign.policies import resolve_policy
from hwsim.workload import Scenario

SPEC_KEYS = (
    "name", "description", "model", "accelerator", "policies", "hardware", "scenarios", "objectives",
    "constraints", "accuracy", "evaluator", "evaluator_options", "chunk_size",
)
REQUIRED_KEYS = ("model", "accelerator", "policies", "scenarios", "objectives")
DIRECTIONS = ("min", "max")
SCENARIO_KEYS = ("phase", "batch_size", "context_tokens", "generated_tokens")
ACCURACY_METRICS = ("perplexity", "embedding_similarity", "weight_sqnr_db")
# Columns every results table has; an axis may not take one of these names.
RESERVED_COLUMNS = ("point_index", "point_id", "policy", "scenario", "status", "error", "feasible", "pareto", "knee", "knee_distance")
CONSTRAINT_OPERATORS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq, "!=": operator.ne}
_CONSTRAINT_PATTERN = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")
_NUMBER_PATTERN = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class SweepSpecError(ValueError):
    """Invalid sweep spec; `errors` lists every problem, each naming its key or axis."""

    def __init__(self, errors: list[str], source: str = "") -> None:
        self.errors = list(errors)
        self.source = source
        where = f" {source}" if source else ""
        super().__init__(f"invalid sweep spec{where} ({len(self.errors)} error(s)): " + "; ".join(self.errors))


@dataclass(frozen=True)
class Objective:
    """One column to minimise or maximise."""

    name: str
    direction: str


@dataclass(frozen=True)
class Constraint:
    """A condition `name op value` that a feasible point meets, such as `area_mm2 <= 20`."""

    name: str
    operator: str
    value: float | bool

    @property
    def label(self) -> str:
        value = str(self.value).lower() if isinstance(self.value, bool) else f"{self.value:g}"
        return f"{self.name} {self.operator} {value}"

    def satisfied_by(self, values):
        """Test the constraint element-wise on a number, a numpy array or a pandas Series."""
        return CONSTRAINT_OPERATORS[self.operator](values, self.value)


@dataclass(frozen=True)
class Axis:
    """One hardware axis: its name, and for each value the column label and the key-path overrides."""

    name: str
    labels: tuple[Any, ...]
    overrides: tuple[tuple[tuple[str, Any], ...], ...]


@dataclass(frozen=True)
class Point:
    """One configuration of a sweep: a bit policy, hardware overrides on a base accelerator, a scenario.

    `labels` are (axis name, value label) pairs for the results table;
    `overrides` are (key path, value) pairs applied in order to the base
    accelerator YAML document.
    """

    index: int
    point_id: str
    model: str
    accelerator: str
    policy: str
    scenario: Scenario
    scenario_label: str
    labels: tuple[tuple[str, Any], ...]
    overrides: tuple[tuple[str, Any], ...]

    def accelerator_spec(self):
        """The validated `AcceleratorSpec` of this point (cached per process)."""
        from hwsim.codesign.overrides import build_accelerator

        return build_accelerator(self.accelerator, self.overrides)

    def bit_policy(self):
        """The `hwsim.policy.Policy` of this point."""
        return resolve_policy(self.policy)

    def columns(self) -> dict[str, Any]:
        """The identifying columns of this point's row in a results table."""
        return {"point_index": self.index, "point_id": self.point_id, "policy": self.policy, "scenario": self.scenario_label, **dict(self.labels)}


@dataclass(frozen=True)
class AccuracySettings:
    """Which accuracy metric to measure once per policy, on which model, with which evaluation options."""

    metric: str
    model: str | None = None
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep; build it with `SweepSpec.from_dict` or `load_sweep_spec`."""

    model: str
    accelerator: str
    policies: tuple[str, ...]
    scenarios: tuple[Scenario, ...]
    objectives: tuple[Objective, ...]
    hardware: tuple[Axis, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    accuracy: AccuracySettings | None = None
    evaluator: str = "default"
    evaluator_options: tuple[tuple[str, Any], ...] = ()
    chunk_size: int | None = None
    name: str = "sweep"
    description: str = ""
    source: str = field(default="", compare=False)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "") -> SweepSpec:
        """Validate a parsed YAML document; raise SweepSpecError listing every problem."""
        return _parse_spec(raw, source)

    @property
    def dimensions(self) -> tuple[int, ...]:
        """Sizes of the product, in the order of `dimension_names`."""
        return (len(self.scenarios), *(len(axis.labels) for axis in self.hardware), len(self.policies))

    @property
    def dimension_names(self) -> tuple[str, ...]:
        """The dimensions of the product, outermost first: scenario, each hardware axis, policy."""
        return ("scenario", *self.axis_names, "policy")

    @property
    def num_points(self) -> int:
        return math.prod(self.dimensions)

    @property
    def hardware_points(self) -> int:
        return math.prod(len(axis.labels) for axis in self.hardware)

    def point_at(self, index: int) -> Point:
        """The point at position `index` of the product."""
        return self.point_from_choices(self.choices_at(index))

    def choices_at(self, index: int) -> tuple[int, ...]:
        """The value position in each dimension (see `dimension_names`) of the point at `index`."""
        if not 0 <= index < self.num_points:
            raise IndexError(f"point index {index} is outside the sweep's {self.num_points} points")
        return _unravel(index, self.dimensions)

    def point_from_choices(self, choices: tuple[int, ...]) -> Point:
        """The point that takes value `choices[i]` of dimension i (see `dimension_names`)."""
        scenario = self.scenarios[choices[0]]
        policy = self.policies[choices[-1]]
        labels, overrides = [], []
        for axis, choice in zip(self.hardware, choices[1:-1]):
            labels.append((axis.name, axis.labels[choice]))
            overrides.extend(axis.overrides[choice])
        index = _ravel(choices, self.dimensions)
        scenario_label = scenario_name(scenario)
        identity = json.dumps(
            [self.model, self.accelerator, policy, scenario_label, [list(item) for item in overrides]], sort_keys=True, default=str
        )
        point_id = hashlib.sha256(identity.encode()).hexdigest()[:20]
        return Point(index, point_id, self.model, self.accelerator, policy, scenario, scenario_label, tuple(labels), tuple(overrides))

    def points(self) -> list[Point]:
        """Every point, in index order."""
        return [self.point_at(index) for index in range(self.num_points)]

    def fingerprint(self) -> str:
        """Hash of everything that changes a point's values: model, accelerator, axes, scenarios, evaluator, accuracy.

        Objectives and constraints are left out, so a sweep resumed with other
        objectives reuses the points it already has.
        """
        content = {
            "model": self.model,
            "accelerator": self.accelerator,
            "base_document": base_document(self.accelerator),
            "policies": list(self.policies),
            "scenarios": [scenario_name(s) for s in self.scenarios],
            "hardware": [[axis.name, list(axis.labels), [[list(o) for o in group] for group in axis.overrides]] for axis in self.hardware],
            "evaluator": self.evaluator,
            "evaluator_options": [list(item) for item in self.evaluator_options],
            "accuracy": dataclasses.asdict(self.accuracy) if self.accuracy else None,
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()

    @property
    def axis_names(self) -> tuple[str, ...]:
        return tuple(axis.name for axis in self.hardware)


def scenario_name(scenario: Scenario) -> str:
    """Short label such as 'decode-b1-c256-g16' or 'prefill-b4-c512'."""
    label = f"{scenario.phase}-b{scenario.batch_size}-c{scenario.context_tokens}"
    return f"{label}-g{scenario.generated_tokens}" if scenario.phase == "decode" else label


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec YAML file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep spec {str(path)!r} not found")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except _DuplicateKey as error:
        raise SweepSpecError([str(error)], str(path)) from None
    except yaml.YAMLError as error:
        raise SweepSpecError([f"invalid YAML: {error}"], str(path)) from None
    return SweepSpec.from_dict(raw, str(path))


class _DuplicateKey(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping instead of keeping the last."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise _DuplicateKey(f"key {key!r} is given twice in one mapping (lines {seen[key]} and {line}); keep one")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _unravel(index: int, dimensions: tuple[int, ...]) -> tuple[int, ...]:
    choices = []
    for size in reversed(dimensions):
        index, choice = divmod(index, size)
        choices.append(choice)
    return tuple(reversed(choices))


def _ravel(choices: tuple[int, ...], dimensions: tuple[int, ...]) -> int:
    index = 0
    for choice, size in zip(choices, dimensions):
        if not 0 <= choice < size:
            raise IndexError(f"choice {choice} is outside a dimension of {size} values")
        index = index * size + choice
    return index


def _number_or_text(value: Any) -> Any:
    """YAML 1.1 reads 8e9 as a string; turn such strings into numbers, keep everything else."""
    if isinstance(value, str) and _NUMBER_PATTERN.match(value.strip()):
        number = float(value)
        return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
    if isinstance(value, list):
        return [_number_or_text(item) for item in value]
    if isinstance(value, dict):
        return {key: _number_or_text(item) for key, item in value.items()}
    return value


def _column_label(value: Any) -> Any:
    """A value as it appears in a results column: numbers, strings and booleans as they are, others as JSON."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def _parse_axis(name: Any, raw: Any, base: dict, errors: list[str]) -> Axis | None:
    where = f"hardware axis {name!r}"
    if not isinstance(name, str) or not name:
        errors.append(f"{where}: axis names must be non-empty strings")
        return None
    if name in RESERVED_COLUMNS:
        errors.append(f"{where}: the name is a results column ({', '.join(RESERVED_COLUMNS)}); use the key path instead")
        return None
    if isinstance(raw, dict):
        labels, values = list(raw), [_number_or_text(value) for value in raw.values()]
    elif isinstance(raw, list):
        values = [_number_or_text(value) for value in raw]
        labels = [_column_label(value) for value in values]
    else:
        errors.append(f"{where}: give a list of values, or a mapping of labels to values, not {raw!r}")
        return None
    if not values:
        errors.append(f"{where}: the list of values is empty; give at least one value or drop the axis")
        return None
    if len(set(map(str, labels))) != len(labels):
        duplicates = sorted({str(label) for label in labels if list(map(str, labels)).count(str(label)) > 1})
        errors.append(f"{where}: values {', '.join(duplicates)} are given more than once; give each value once")
        return None
    kinds = {type(label) for label in labels}
    if len(kinds) > 1 and not kinds <= {int, float}:
        labels = [json.dumps(label) if not isinstance(label, str) else label for label in labels]
    groups = []
    for value in values:
        try:
            overrides = axis_overrides(name, value)
        except ValueError as error:
            errors.append(f"{where}: {error}")
            return None
        for path, item in overrides:
            problem = check_override(path, item, base)
            if problem:
                errors.append(f"{where}: value {value!r}: {problem}")
                return None
        groups.append(tuple(overrides))
    return Axis(name, tuple(labels), tuple(groups))


def _parse_scenario(index: int, raw: Any, errors: list[str]) -> Scenario | None:
    where = f"scenarios[{index}]"
    if not isinstance(raw, dict):
        errors.append(f"{where}: give a mapping such as {{phase: decode, batch_size: 1, context_tokens: 256, generated_tokens: 16}}")
        return None
    unknown = [key for key in raw if key not in SCENARIO_KEYS]
    if unknown:
        errors.append(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known keys: {', '.join(SCENARIO_KEYS)}")
        return None
    try:
        return Scenario(**{key: _number_or_text(value) for key, value in raw.items()})
    except (TypeError, ValueError) as error:
        errors.append(f"{where}: {error}")
        return None


def _parse_objectives(raw: Any, errors: list[str]) -> tuple[Objective, ...]:
    if isinstance(raw, list):
        raw = {name: "min" for name in raw}
    if not isinstance(raw, dict) or not raw:
        errors.append("objectives: give a mapping of column names to min or max, such as {latency_s: min, perplexity: min}")
        return ()
    objectives = []
    for name, direction in raw.items():
        if direction not in DIRECTIONS:
            errors.append(f"objectives.{name}: direction {direction!r} must be min or max")
            continue
        objectives.append(Objective(str(name), direction))
    return tuple(objectives)


def _parse_constraint(index: int, raw: Any, errors: list[str]) -> Constraint | None:
    where = f"constraints[{index}]"
    match = _CONSTRAINT_PATTERN.match(raw) if isinstance(raw, str) else None
    if match is None:
        errors.append(f"{where}: {raw!r} must read 'column operator value', such as 'area_mm2 <= 20' or 'fits == true'")
        return None
    name, op, text = match.groups()
    if text.lower() in ("true", "false"):
        value: float | bool = text.lower() == "true"
    else:
        try:
            value = float(text)
        except ValueError:
            errors.append(f"{where}: value {text!r} of {raw!r} must be a number, true or false")
            return None
    return Constraint(name, op, value)


def _parse_accuracy(raw: Any, objectives: tuple[Objective, ...], constraints: tuple[Constraint, ...], errors: list[str]) -> AccuracySettings | None:
    used = {o.name for o in objectives} | {c.name for c in constraints}
    if raw is None:
        metrics = [metric for metric in ACCURACY_METRICS if metric in used]
        if not metrics:
            return None
        raw = {"metric": metrics[0]}
    if not isinstance(raw, dict) or "metric" not in raw:
        errors.append(f"accuracy: give a mapping with a metric, one of {', '.join(ACCURACY_METRICS)}")
        return None
    metric = raw["metric"]
    if metric not in ACCURACY_METRICS:
        close = difflib.get_close_matches(str(metric), ACCURACY_METRICS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        errors.append(f"accuracy.metric: unknown metric {metric!r}; {hint}choose one of {', '.join(ACCURACY_METRICS)}")
        return None
    model = raw.get("model")
    if model is not None and not isinstance(model, str):
        errors.append(f"accuracy.model: {model!r} must be a model name such as smollm2-135m")
    options = tuple(sorted((str(key), _number_or_text(value)) for key, value in raw.items() if key not in ("metric", "model")))
    return AccuracySettings(metric, model, options)


def _parse_spec(raw: Any, source: str) -> SweepSpec:
    errors: list[str] = []
    if not isinstance(raw, dict):
        raise SweepSpecError(["the document must be a mapping with keys " + ", ".join(SPEC_KEYS)], source)
    for key in raw:
        if key not in SPEC_KEYS:
            close = difflib.get_close_matches(str(key), SPEC_KEYS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            errors.append(f"unknown key {key!r}; {hint}known keys: {', '.join(SPEC_KEYS)}")
    for key in REQUIRED_KEYS:
        if key not in raw:
            errors.append(f"{key}: missing; this key is required")
    if errors:
        raise SweepSpecError(errors, source)

    model = raw["model"]
    if not isinstance(model, str) or not model:
        errors.append(f"model: {model!r} must be a model name such as smollm2-135m, or a config.json path")
    else:
        from hwsim.workload import load_model

        try:
            load_model(model)
        except (KeyError, ValueError, FileNotFoundError) as error:
            errors.append(f"model: {error.args[0] if error.args else error}")

    accelerator = str(raw["accelerator"])
    base: dict = {}
    try:
        base = base_document(accelerator)
    except (KeyError, ValueError, FileNotFoundError) as error:
        errors.append(f"accelerator: {error.args[0] if isinstance(error, KeyError) and error.args else error}")

    policies = raw["policies"]
    if isinstance(policies, str):
        policies = [policies]
    if not isinstance(policies, list) or not policies:
        errors.append("policies: give a non-empty list of bit policies, such as [w8a8, w4a16]")
        policies = []
    policies = [str(p) for p in policies]
    for index, text in enumerate(policies):
        try:
            resolve_policy(text)
        except (ValueError, KeyError) as error:
            errors.append(f"policies[{index}]: {error.args[0] if error.args else error}")
    for text in sorted({p for p in policies if policies.count(p) > 1}):
        errors.append(f"policies: {text!r} is given more than once; give each policy once")

    hardware_raw = raw.get("hardware") or {}
    axes = []
    if not isinstance(hardware_raw, dict):
        errors.append("hardware: give a mapping of axis names to lists of values")
    elif base:
        for name, values in hardware_raw.items():
            axis = _parse_axis(name, values, base, errors)
            if axis is not None:
                axes.append(axis)

    scenarios_raw = raw["scenarios"]
    if isinstance(scenarios_raw, dict):
        scenarios_raw = [scenarios_raw]
    if not isinstance(scenarios_raw, list) or not scenarios_raw:
        errors.append("scenarios: give a non-empty list of scenarios")
        scenarios_raw = []
    scenarios = [s for s in (_parse_scenario(i, item, errors) for i, item in enumerate(scenarios_raw)) if s is not None]
    names = [scenario_name(s) for s in scenarios]
    for name in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"scenarios: {name} is given more than once; give each scenario once")

    objectives = _parse_objectives(raw["objectives"], errors)
    constraints_raw = raw.get("constraints") or []
    if isinstance(constraints_raw, str):
        constraints_raw = [constraints_raw]
    constraints = tuple(c for c in (_parse_constraint(i, item, errors) for i, item in enumerate(constraints_raw)) if c is not None)
    accuracy = _parse_accuracy(raw.get("accuracy"), objectives, constraints, errors)

    evaluator = raw.get("evaluator", "default")
    if not isinstance(evaluator, str) or not (evaluator in ("default", "systolic", "simulate") or ":" in evaluator):
        errors.append(f"evaluator: {evaluator!r} must be default, systolic, simulate, or 'module:factory' for a plug-in")
    evaluator_options = raw.get("evaluator_options") or {}
    if not isinstance(evaluator_options, dict):
        errors.append("evaluator_options: give a mapping of keyword arguments for the evaluator")
        evaluator_options = {}
    chunk_size = raw.get("chunk_size")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        errors.append(f"chunk_size: {chunk_size!r} must be a positive number of points per task")
    if errors:
        raise SweepSpecError(errors, source)
    return SweepSpec(
        model=model,
        accelerator=accelerator,
        policies=tuple(policies),
        scenarios=tuple(scenarios),
        objectives=objectives,
        hardware=tuple(axes),
        constraints=constraints,
        accuracy=accuracy,
        evaluator=evaluator,
        evaluator_options=tuple(sorted((str(k), v) for k, v in evaluator_options.items())),
        chunk_size=chunk_size,
        name=str(raw.get("name", "sweep")),
        description=str(raw.get("description", "")),
        source=source,
    )
