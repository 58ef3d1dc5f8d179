"""Evaluators: the plug-in that turns one sweep point into a dict of objective values.

An evaluator is any picklable object with

    evaluate(point: hwsim.codesign.Point) -> dict[str, float | int | bool]

and three optional members. A `columns` tuple names the keys it returns,
so the spec's objectives can be checked before the sweep starts. The
engine calls `prepare(sweep_spec)` once in the driving process, before the
evaluator is sent to the workers. `evaluate_batch(points) -> list`
evaluates the points of one task together and returns, for each point,
its dict or the exception it raised. A point carries its
bit policy (`point.policy`, `point.bit_policy()`), its accelerator
(`point.accelerator_spec()`, the base YAML with the point's overrides) and
its `point.scenario`. Evaluators run in worker processes, so they should
keep expensive state in module-level caches, not in the object, which is
pickled with every task. An exception raised by `evaluate` is recorded as
that point's error; the sweep goes on.

Shipped evaluators, selected by the spec's `evaluator` key:

- "systolic": `SystolicCostEvaluator`, the systolic-array model on the
  workload's GEMMs (see `hwsim.codesign.systolic_cost`);
- "simulate": `SimulateEvaluator`, which calls
  `hwsim.simulate(model, policy, accelerator, scenario)` (about 10 ms a
  point, against well under 1 ms for "systolic");
- "default": "simulate" when `hwsim.simulate` is importable, else "systolic";
- "package.module:factory": a plug-in, built as factory(**evaluator_options).
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from hwsim.codesign.systolic_cost import SystolicCostEvaluator

log = logging.getLogger(__name__)


@runtime_checkable
class Evaluator(Protocol):
    """Turns one point into objective values."""

    def evaluate(self, point) -> Mapping[str, Any]: ...


def simulate_available() -> bool:
    """True when `hwsim.simulate` can be imported."""
    try:
        module = importlib.import_module("hwsim")
        return callable(getattr(module, "simulate", None))
    except ImportError:
        return False


# Columns of `hwsim.simulate`'s per-phase totals that a sweep keeps; the others describe the scenario.
SIMULATE_TOTAL_COLUMNS = (
    "latency_s", "energy_j", "compute_energy_j", "sram_energy_j", "dram_energy_j", "static_energy_j",
    "tokens_per_s", "joules_per_token", "average_power_w", "time_to_first_token_s", "time_per_output_token_s",
)
SIMULATE_MEMORY_COLUMNS = ("peak_memory_bytes", "weight_bytes", "kv_cache_bytes", "activation_bytes", "fits")


def report_objectives(report) -> dict[str, float | bool]:
    """Objective values of a `hwsim.simulate` report of one scenario: its phase totals and memory footprint.

    A total the report leaves empty for the phase (time to first token of a
    decode alone, time per output token of a prefill alone) is left out.
    """
    totals = report.totals
    if len(totals) != 1:
        raise ValueError(f"expected the totals of one scenario, got {len(totals)} rows ({', '.join(map(str, totals['phase']))})")
    row = totals.iloc[0]
    values: dict[str, float | bool] = {}
    for column in SIMULATE_TOTAL_COLUMNS:
        value = row.get(column)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            values[column] = float(value)
    memory = report.memory
    values.update(
        {
            "peak_memory_bytes": float(memory.peak_bytes),
            "weight_bytes": float(memory.weight_bytes),
            "kv_cache_bytes": float(memory.kv_cache_bytes),
            "activation_bytes": float(memory.activation_bytes),
            "fits": bool(memory.fits),
        }
    )
    return values


class SimulateEvaluator:
    """Objectives from `hwsim.simulate(model, policy, accelerator, scenario)`, plus the accelerator's area_mm2.

    Calls hwsim.simulate(point.model, point.bit_policy(), point.accelerator_spec(),
    point.scenario, unsupported=..., memory_overflow="report"), so a point that
    does not fit in memory gets fits=False instead of an error, and returns
    `report_objectives` of the report. unsupported="raise" records a format
    the accelerator cannot take as the point's error; "emulate" prices the
    conversion that hwsim.simulate documents. For systolic arrays it adds
    area_mm2 (an estimate, see `hwsim.hardware.area`) and
    pe_takes_policy_formats, which is False where "emulate" converts some of
    the policy's quantized formats (see `pe_takes_policy_formats`).
    """

    columns = (*SIMULATE_TOTAL_COLUMNS, *SIMULATE_MEMORY_COLUMNS, "area_mm2", "pe_takes_policy_formats")

    def __init__(self, unsupported: str = "raise") -> None:
        if unsupported not in ("raise", "emulate"):
            raise ValueError(f"invalid unsupported={unsupported!r}: choose 'raise' or 'emulate'")
        self.unsupported = unsupported
        self._model_specs: dict = {}

    def prepare(self, sweep) -> None:
        """Load the sweep's model in the driver, so that workers do not import transformers to load it again."""
        from hwsim.workload import load_model

        self._model_specs[sweep.model] = load_model(sweep.model)

    def evaluate(self, point) -> dict[str, float | bool]:
        import hwsim
        from hwsim.hardware import accelerator_area

        accelerator = point.accelerator_spec()
        model = self._model_specs.get(point.model, point.model)
        report = hwsim.simulate(model, point.bit_policy(), accelerator, point.scenario, unsupported=self.unsupported, memory_overflow="report")
        values = report_objectives(report)
        if accelerator.kind == "systolic_array":
            values["area_mm2"] = accelerator_area(accelerator).total_mm2
            pairs = operand_format_pairs(model, point.policy, point.scenario)
            values["pe_takes_policy_formats"] = pe_takes_policy_formats(accelerator.pe, pairs, accelerator.technology)
        return values


# Formats that bit policies leave unquantized (`hwsim.policy.uniform.UNQUANTIZED_FORMAT` and the
# full-precision roles of the per-role form).
FULL_PRECISION_FORMATS = ("fp32", "fp16", "bf16")


@functools.lru_cache(maxsize=256)
def operand_format_pairs(model, policy_text: str, scenario) -> tuple[tuple[str, str], ...]:
    """Return the (activation, weight) format pairs of the matmul ops and the (query, KV cache) pairs of the attention ops that `hwsim.simulate` prices.

    model is a shipped model name or a `ModelSpec`. Cached per process.
    """
    from hwsim.codesign.policies import resolve_policy
    from hwsim.hardware.kernels import AttentionRequest, MatmulRequest
    from hwsim.simulation.engine import resolve_model
    from hwsim.simulation.pricing import price_phase

    pairs = {}
    for op in price_phase(resolve_model(model), resolve_policy(policy_text), scenario):
        request = op.request
        if isinstance(request, MatmulRequest):
            pairs[(request.activation_format, request.weight_format)] = None
        elif isinstance(request, AttentionRequest):
            pairs[(request.query_format, request.kv_format)] = None
    return tuple(pairs)


def pe_takes_policy_formats(pe, pairs, technology) -> bool:
    """Return whether `pe` takes every quantized format of the operand pairs as it is, natively or through its own dequantize fallback.

    A pair of two quantized formats is mapped as it is. In a pair with one
    full-precision operand (FULL_PRECISION_FORMATS), such as the fp16 LM
    head of a uniform policy, the quantized format is mapped against itself
    and the full-precision one is left out. False means that hwsim.simulate
    with unsupported="emulate" converts some quantized operand to another
    format, so the accuracy path, which applies the policy's formats, does
    not measure what the PE computes.

    NOTE: a dequantize fallback counts as taking the format even where the
    native format is narrower (mxfp4 dequantized to int8), and that rounding
    is not in the accuracy path either.
    """
    from hwsim.hardware.pe import UnsupportedFormatError, map_operands

    for activation, weight in pairs:
        quantized = [fmt for fmt in (activation, weight) if fmt not in FULL_PRECISION_FORMATS]
        if not quantized:
            continue
        first, second = (activation, weight) if len(quantized) == 2 else (quantized[0], quantized[0])
        try:
            map_operands(pe, first, second, technology)
        except UnsupportedFormatError:
            return False
    return True


def load_plugin(reference: str, options: Mapping[str, Any]):
    """Build the evaluator that 'package.module:factory' names, as factory(**options)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"invalid evaluator {reference!r}: write 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"evaluator {reference!r}: module {module_name!r} cannot be imported ({error}); check the name and PYTHONPATH") from None
    factory = getattr(module, attribute, None)
    if factory is None:
        raise ValueError(f"evaluator {reference!r}: module {module_name!r} has no attribute {attribute!r}")
    evaluator = factory(**options)
    if not callable(getattr(evaluator, "evaluate", None)):
        raise ValueError(f"evaluator {reference!r}: {type(evaluator).__name__} has no evaluate(point) method")
    return evaluator


def build_evaluator(name: str, options: Mapping[str, Any] | None = None):
    """Build the evaluator that a spec's `evaluator` and `evaluator_options` name."""
    options = dict(options or {})
    if name == "default":
        name = "simulate" if simulate_available() else "systolic"
        log.info("default evaluator: %s", name)
    if name == "systolic":
        if options:
            raise ValueError(f"evaluator 'systolic' takes no evaluator_options; remove {', '.join(options)}")
        return SystolicCostEvaluator()
    if name == "simulate":
        if not simulate_available():
            raise ValueError("evaluator 'simulate' needs hwsim.simulate, which this hwsim does not have; use evaluator: systolic")
        try:
            return SimulateEvaluator(**options)
        except TypeError as error:
            raise ValueError(f"invalid evaluator_options {options} for evaluator 'simulate': {error}; it takes unsupported") from None
    return load_plugin(name, options)


def _check_values(values: Any) -> dict[str, float | int | bool]:
    if not isinstance(values, Mapping):
        raise TypeError(f"the evaluator returned {type(values).__name__}; evaluate(point) must return a dict of objective values")
    checked: dict[str, float | int | bool] = {}
    for key, value in values.items():
        if isinstance(value, bool) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            checked[str(key)] = value
        elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            checked[str(key)] = value.item()
        else:
            raise TypeError(f"the evaluator returned {key}={value!r}; objective values must be numbers or booleans")
        number = checked[str(key)]
        if isinstance(number, float) and math.isnan(number):
            raise ValueError(f"the evaluator returned {key}=NaN; raise an exception with the reason instead")
    return checked


def evaluate_points(evaluator, points) -> list[dict[str, Any]]:
    """Evaluate points one by one; a point that raises gets status "error" and its error text, and the rest go on.

    Runs in worker processes. Exceptions that are not `Exception` (such as
    KeyboardInterrupt) stop the whole chunk.
    """
    batch = getattr(evaluator, "evaluate_batch", None)
    outcomes = batch(points) if callable(batch) else None
    if outcomes is not None and len(outcomes) != len(points):
        raise ValueError(f"{type(evaluator).__name__}.evaluate_batch returned {len(outcomes)} results for {len(points)} points")
    rows = []
    for position, point in enumerate(points):
        try:
            outcome = outcomes[position] if outcomes is not None else evaluator.evaluate(point)
            if isinstance(outcome, Exception):
                raise outcome
            values = _check_values(outcome)
        except Exception as error:  # noqa: BLE001 - any failure of a plug-in is recorded as that point's result
            rows.append({"point_id": point.point_id, "status": "error", "error": f"{type(error).__name__}: {error}"})
            continue
        rows.append({"point_id": point.point_id, "status": "ok", "error": None, **values})
    return rows


def accuracy_key(accuracy) -> str:
    """Name of an accuracy evaluator's settings: its `key`, else its class name."""
    return str(getattr(accuracy, "key", type(accuracy).__qualname__))


def evaluate_accuracy(accuracy, policy_text: str) -> dict[str, Any]:
    """Measure the accuracy of one policy as one row; an exception is recorded as the row's error."""
    row = {"policy": policy_text, "accuracy_key": accuracy_key(accuracy)}
    try:
        values = _check_values(accuracy.evaluate_policy(policy_text))
    except Exception as error:  # noqa: BLE001 - recorded and joined onto the policy's points
        return {**row, "accuracy_status": "error", "accuracy_error": f"{type(error).__name__}: {error}"}
    return {**row, "accuracy_status": "ok", "accuracy_error": None, **values}
