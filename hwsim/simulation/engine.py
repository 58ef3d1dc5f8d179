"""`simulate`: a language model, a bit policy, an accelerator and scenarios in; latency, energy and traffic out.

For each scenario (a prefill, or a decode of several steps), the ops of the
workload get bytes in the policy's formats (`hwsim.simulation.pricing`) and
a cost from the accelerator's model (`hwsim.simulation.backends`). The
costs are then summed over each op's runs per pass and over the steps.
Ops run one after another: nothing overlaps across ops, and a pass takes
the sum of its ops' latencies.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from hwsim.hardware.kernels import ENERGY_COMPONENTS, AttentionRequest, KernelCost, MatmulRequest, VectorRequest
from hwsim.hardware.loading import load_accelerator, preset_directory, preset_names
from hwsim.hardware.spec import AcceleratorSpec
from hwsim.policy import UniformPolicy
from hwsim.simulation.backends import make_backend
from hwsim.simulation.pricing import PricedOp, kv_cache_bytes, price_phase, weight_bytes
from hwsim.simulation.report import MemoryFootprint, ModelDoesNotFitError, PhaseTotals, SimulationReport
from hwsim.workload.loading import load_model, shipped_config_paths, shipped_model_names
from hwsim.workload.model import ModelSpec
from hwsim.workload.scenario import Scenario

log = logging.getLogger(__name__)

UNSUPPORTED_CHOICES = ("raise", "emulate")
MEMORY_OVERFLOW_CHOICES = ("raise", "report")
MAIN_MEMORY_LEVEL = {"gpu": "hbm", "npu": "dram", "systolic_array": "dram"}


def _file_key(path: Path) -> tuple[str, int] | None:
    """Return a key that changes with the file (its path and modification time), or None if the file is missing."""
    try:
        return str(path), os.stat(path).st_mtime_ns
    except OSError:
        return None


@lru_cache(maxsize=1)
def _shipped_paths() -> dict[str, Path]:
    # The shipped configs are package data, which does not change while the process runs.
    return shipped_config_paths()


@lru_cache(maxsize=64)
def _load_model_file(name: str, key: tuple[str, int]) -> ModelSpec:
    return load_model(name)


@lru_cache(maxsize=64)
def _load_accelerator_file(name: str, key: tuple[str, int]) -> AcceleratorSpec:
    return load_accelerator(name)


def resolve_model(model) -> ModelSpec:
    """Return the ModelSpec of a spec, a shipped name, a config.json path or a hub id.

    An unknown name raises KeyError listing the shipped ones. Files are
    parsed once per version, and reports share the frozen specs.
    """
    if isinstance(model, ModelSpec):
        return model
    text = str(model)
    shipped = _shipped_paths().get(text.lower())
    key = _file_key(shipped if shipped is not None else Path(text))
    try:
        if key is not None:
            return _load_model_file(text, key)
        return load_model(model)
    except KeyError as error:
        message = error.args[0] if error.args else str(error)
        raise KeyError(f"{message}; shipped models: {', '.join(shipped_model_names())}") from None


def resolve_policy(policy):
    """Return the bit policy of an object with `format_for`, a text, or None (all fp16).

    A text is a uniform policy string such as 'w4a16-g128', a preset name
    such as 'atom-w4a4', or the path of a policy YAML file.
    """
    if policy is None:
        return UniformPolicy()
    if isinstance(policy, str):
        from hwsim.policy.resolve import is_uniform_text, resolve_policy as resolve_text

        return UniformPolicy.parse(policy) if is_uniform_text(policy) else resolve_text(policy)
    if not callable(getattr(policy, "format_for", None)):
        raise TypeError(
            f"invalid bit policy {policy!r}: pass a policy string such as 'w4a16-g128' or an object with a format_for(tensor) method"
        )
    return policy


def resolve_accelerator(accelerator) -> AcceleratorSpec:
    """Return the AcceleratorSpec of a spec, a preset name or a YAML path; unknown names raise KeyError listing the presets."""
    if isinstance(accelerator, AcceleratorSpec):
        return accelerator
    if isinstance(accelerator, (str, Path)):
        candidate = Path(accelerator)
        if candidate.suffix not in (".yaml", ".yml") and not candidate.exists():
            candidate = preset_directory() / f"{accelerator}.yaml"
        key = _file_key(candidate)
        if key is not None:
            return _load_accelerator_file(str(accelerator), key)
        return load_accelerator(accelerator)
    raise TypeError(
        f"invalid accelerator {accelerator!r}: pass a preset name ({', '.join(preset_names())}), a .yaml path or an AcceleratorSpec"
    )


def resolve_scenarios(scenario) -> tuple[Scenario, ...]:
    if isinstance(scenario, Scenario):
        return (scenario,)
    if isinstance(scenario, Iterable) and not isinstance(scenario, (str, bytes)):
        scenarios = tuple(scenario)
        if scenarios and all(isinstance(s, Scenario) for s in scenarios):
            return scenarios
    raise TypeError(
        f"invalid scenario {scenario!r}: pass a Scenario, such as Scenario.decode(batch_size=1, context_tokens=1024), "
        f"or a list of them, such as [Scenario.prefill(1, 2048), Scenario.decode(1, 2048, 256)]"
    )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"invalid {name}={value!r}: choose one of {', '.join(repr(c) for c in choices)}")


def simulate(
    model,
    policy,
    accelerator,
    scenario,
    *,
    unsupported: str = "raise",
    memory_overflow: str = "raise",
    allow_long_context: bool = False,
    causal_mask_halving: bool = True,
) -> SimulationReport:
    """Simulate `model` under bit `policy` on `accelerator` for one scenario or a list of them.

    - model: a shipped model name ("llama-3-8b"), a config.json path, a hub id or a ModelSpec;
    - policy: a policy string ("w4a16-g128", "w=mxfp4,a=mxfp8_e4m3"), a policy object with
      `format_for`, or None for fp16 everywhere;
    - accelerator: a preset name ("h100-sxm"), a .yaml path or an AcceleratorSpec;
    - scenario: a Scenario or a list, such as a prefill followed by a decode.

    `unsupported="emulate"` prices formats the hardware cannot take through
    the documented conversion (see `hwsim.simulation.backends`); "raise"
    raises UnsupportedFormatError. `memory_overflow="report"` returns a
    report with `fits` False when the model does not fit in the
    accelerator's main memory; "raise" raises ModelDoesNotFitError with the
    numbers.
    """
    _check_choice("unsupported", unsupported, UNSUPPORTED_CHOICES)
    _check_choice("memory_overflow", memory_overflow, MEMORY_OVERFLOW_CHOICES)
    spec = resolve_model(model)
    policy = resolve_policy(policy)
    accelerator_spec = resolve_accelerator(accelerator)
    scenarios = resolve_scenarios(scenario)
    for item in scenarios:
        item.check_fits(spec, allow_long_context=allow_long_context)

    backend = make_backend(accelerator_spec, allow_emulation=unsupported == "emulate")
    policy_label = str(getattr(policy, "label", policy))
    phases = [(item, price_phase(spec, policy, item, causal_mask_halving=causal_mask_halving)) for item in scenarios]

    memory = _footprint(spec, policy, scenarios, phases, backend, accelerator_spec)
    notes = []
    if not memory.fits:
        problem = (
            f"model {spec.name!r} under policy {policy_label} does not fit accelerator {accelerator_spec.name!r}: "
            f"it {memory.describe()}"
        )
        if memory_overflow == "raise":
            raise ModelDoesNotFitError(
                f"{problem}; use fewer bits, a smaller batch or context, or a larger accelerator, or pass "
                f"memory_overflow='report' (--allow-overflow) to estimate it anyway"
            )
        log.warning("%s; estimating it anyway because memory_overflow='report'", problem)
        notes.append(problem)
    backend.prepare(memory.weight_bytes, memory.kv_cache_bytes)

    rows, totals = [], []
    for item, priced in phases:
        phase_rows = [_row(item, op, _cost(backend, op.request)) | _roofs(backend, op.request) for op in priced]
        rows.extend(phase_rows)
        totals.append(_phase_totals(item, phase_rows))
    if len(totals) == 2 and [t.phase for t in totals] == ["prefill", "decode"]:
        totals.append(_generation_totals(*totals))
    # Columns built as lists are much cheaper for pandas than a list of row dicts.
    ops = pd.DataFrame({column: [row.get(column) for row in rows] for column in dict.fromkeys(k for row in rows for k in row)})
    totals_frame = pd.DataFrame([vars(t) for t in totals])
    totals_frame["peak_memory_bytes"] = memory.peak_bytes
    totals_frame["fits"] = memory.fits
    # The older name of energy_j_per_token, which sweeps and scripts written before the rename read.
    totals_frame["joules_per_token"] = totals_frame["energy_j_per_token"]
    report = SimulationReport(
        model=spec.name, accelerator=accelerator_spec.name, accelerator_kind=accelerator_spec.kind, policy=policy_label,
        ops=ops, totals=totals_frame, memory=memory, notes=tuple(notes),
    )
    log.info("simulated %s on %s under %s: %d op rows", spec.name, accelerator_spec.name, policy_label, len(ops))
    return report


def _cost(backend, request) -> KernelCost:
    if isinstance(request, MatmulRequest):
        return backend.matmul(request)
    if isinstance(request, AttentionRequest):
        return backend.attention(request)
    if isinstance(request, VectorRequest):
        return backend.vector(request)
    raise TypeError(f"unknown request type {type(request).__name__}")


def _roofs(backend, request) -> dict[str, float]:
    """Return the roofs of one op: `peak_flops_per_s` and `dram_bandwidth_bytes_per_s`.

    A matmul or attention gets the peak of the precision its compute plan
    runs on (the converted one when emulated), without the efficiency
    factors the cost models apply. Vector work gets the vector unit's peak,
    which is NaN on a systolic array because its spec describes no vector
    unit. The bandwidth is main memory's: HBM on a GPU, DRAM otherwise.
    """
    if isinstance(request, MatmulRequest):
        formats = (request.activation_format, request.weight_format)
    elif isinstance(request, AttentionRequest):
        formats = (request.query_format, request.kv_format)
    else:
        formats = None
    clock_hz = backend.spec.clock_hz
    if backend.kind == "gpu":
        gpu = backend.model
        peak = gpu.gpu.cuda_core_ops_per_s if formats is None else gpu.precisions[gpu.plan(*formats).precision]
        bandwidth = gpu.hbm_bandwidth_bytes_per_s
    elif backend.kind == "npu":
        npu = backend.model
        peak = npu.vector_ops_per_s if formats is None else 2.0 * npu.pes * npu.plan(*formats).macs_per_pe_cycle * clock_hz
        bandwidth = npu.dram_bandwidth_bytes_per_s
    else:
        peak = math.nan
        if formats is not None:
            array, activation, weight, _, _ = backend._array_for(*formats)
            peak = 2.0 * array.array.num_pes * array.mapping(activation, weight).macs_per_pe_cycle * clock_hz
        bandwidth = backend.dram_bandwidth_bytes_per_s
    return {"peak_flops_per_s": float(peak), "dram_bandwidth_bytes_per_s": float(bandwidth)}


def _footprint(spec, policy, scenarios, phases, backend, accelerator_spec) -> MemoryFootprint:
    longest = max(scenarios, key=lambda s: s.batch_size * s.tokens_per_sequence)
    activation = 0.0
    for _, priced in phases:
        for op in priced:
            request = op.request
            if isinstance(request, MatmulRequest):
                size = request.activation_bytes + request.output_bytes
            elif isinstance(request, AttentionRequest):
                size = request.query_bytes + request.output_bytes
            else:
                size = request.activation_bytes + request.output_bytes
            activation = max(activation, float(np.max(size)))
    level = MAIN_MEMORY_LEVEL[accelerator_spec.kind]
    return MemoryFootprint(
        weight_bytes=weight_bytes(spec, policy),
        kv_cache_bytes=kv_cache_bytes(spec, policy, longest.batch_size, longest.tokens_per_sequence),
        activation_bytes=activation,
        capacity_bytes=float(backend.capacity_bytes),
        memory_level=level,
    )


def _total(value, runs: int, steps: int) -> float:
    """Sum a per-run value over the runs of each step; an array gives one value per step."""
    if isinstance(value, (int, float)):
        return float(value) * runs * steps
    array = np.asarray(value, dtype=np.float64)
    if array.ndim:
        return float(array.sum()) * runs
    return float(array) * runs * steps


def _row(scenario: Scenario, op: PricedOp, cost: KernelCost) -> dict:
    steps = scenario.steps
    latency = np.asarray(cost.latency_s, dtype=np.float64)
    row = {
        "phase": scenario.phase,
        "op": op.name,
        "kind": op.kind,
        "layer": op.layer,
        "runs": op.runs * steps,
        "macs": _total(cost.macs, op.runs, steps),
        "latency_s": _total(latency, op.runs, steps),
        "compute_s": _total(cost.compute_s, op.runs, steps),
        "memory_s": _total(cost.memory_s, op.runs, steps),
        "overhead_s": _total(cost.overhead_s, op.runs, steps),
        "energy_j": _total(cost.total_energy_j, op.runs, steps),
    }
    for component in ENERGY_COMPONENTS:
        row[f"{component}_energy_j"] = _total(cost.energy_j.get(component, 0.0), op.runs, steps)
    for level, (reads, writes) in cost.traffic.items():
        row[f"{level}_read_bytes"] = _total(reads, op.runs, steps)
        row[f"{level}_write_bytes"] = _total(writes, op.runs, steps)
    utilization = np.asarray(cost.utilization, dtype=np.float64)
    if latency.ndim:
        row["utilization"] = float((utilization * latency).sum() / latency.sum())
        bounds = np.broadcast_to(np.asarray(cost.bound), latency.shape)
        share = {bound: float(latency[bounds == bound].sum()) for bound in np.unique(bounds)}
        row["bound"] = max(share, key=share.get)
    else:
        row["utilization"] = float(utilization)
        row["bound"] = str(cost.bound)
    row["note"] = "; ".join(cost.notes)
    return row


def _phase_totals(scenario: Scenario, rows: list[dict]) -> PhaseTotals:
    latency = sum(r["latency_s"] for r in rows)
    energies = {c: sum(r[f"{c}_energy_j"] for r in rows) for c in ENERGY_COMPONENTS}
    energy = sum(energies.values())
    batch = scenario.batch_size
    if scenario.phase == "prefill":
        tokens = batch * scenario.context_tokens
        first_token, per_token = latency, None
    else:
        tokens = batch * scenario.generated_tokens
        first_token, per_token = None, latency / scenario.generated_tokens
    return PhaseTotals(
        phase=scenario.phase, batch_size=batch, context_tokens=scenario.context_tokens, generated_tokens=scenario.generated_tokens,
        latency_s=latency, energy_j=energy, compute_energy_j=energies["compute"], sram_energy_j=energies["sram"],
        dram_energy_j=energies["dram"], static_energy_j=energies["static"], tokens=tokens, tokens_per_s=tokens / latency,
        energy_j_per_token=energy / tokens, average_power_w=energy / latency,
        time_to_first_token_s=first_token, time_per_output_token_s=per_token,
    )


def _generation_totals(prefill: PhaseTotals, decode: PhaseTotals) -> PhaseTotals:
    """Combine a prefill and the decode after it: generated tokens over the whole time, the first token after the prefill."""
    latency = prefill.latency_s + decode.latency_s
    energy = prefill.energy_j + decode.energy_j
    return PhaseTotals(
        phase="prefill+decode", batch_size=decode.batch_size, context_tokens=prefill.context_tokens,
        generated_tokens=decode.generated_tokens, latency_s=latency, energy_j=energy,
        compute_energy_j=prefill.compute_energy_j + decode.compute_energy_j, sram_energy_j=prefill.sram_energy_j + decode.sram_energy_j,
        dram_energy_j=prefill.dram_energy_j + decode.dram_energy_j, static_energy_j=prefill.static_energy_j + decode.static_energy_j,
        tokens=decode.tokens, tokens_per_s=decode.tokens / latency, energy_j_per_token=energy / decode.tokens,
        average_power_w=energy / latency, time_to_first_token_s=prefill.latency_s,
        time_per_output_token_s=decode.time_per_output_token_s,
    )
