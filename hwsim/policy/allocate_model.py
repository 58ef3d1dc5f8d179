"""Weight bit allocation on a real model under an average-bits budget, beside the uniform policies of that budget.

`allocate_model` runs the whole pipeline:

1. The cost spec (`hwsim.workload`) lists the linear layers in the blocks.
   Their storage under each candidate format, with scales and padded
   groups, gives the smallest feasible budget, so a budget under it fails
   before the model loads.
2. `allocate_weights` runs calibration batches from the end of the
   WikiText-2 test split through the transformers model, measures each
   layer's sensitivity to each candidate (`hwsim.policy.sensitivity`) and
   picks one candidate per layer with the least total sensitivity within
   the budget (`hwsim.policy.allocation.allocate`).
3. `compare_policies` measures the WikiText-2 perplexity (`hwsim.accuracy`)
   and the cost (`hwsim.simulate`) of the allocated policy and of the
   uniform policies of the candidates whose bits fit the budget.

Only weights are allocated. Activations and the KV cache follow the base
policy when one is given, and otherwise stay in full precision (fp16 in
the cost model, the model's own fp32 in the accuracy path). Sensitivities
are measured with activations in full precision either way.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hwsim import formats
from hwsim.policy.names import split_layer_name
from hwsim.policy.policy import Policy, bits_per_parameter
from hwsim.policy.quantizer import Quantizer
from hwsim.policy.rules import Rule

if TYPE_CHECKING:
    import pandas as pd

    from hwsim.policy.allocation import Allocation

log = logging.getLogger(__name__)

# Candidate weight formats. Their bits per parameter on SmolLM2-135M, whose 576-wide inputs pad groups of
# 128 to 640, are: int3_g128 3.39, mxfp4 4.25, int4_g128 4.47, int4_g32 4.5, nvfp4 4.50006 and int8_channel
# 8.02. NVFP4's FP32 per-tensor scale adds 32 bits per tensor.
DEFAULT_CANDIDATES = ("int3_g128", "mxfp4", "int4_g128", "int4_g32", "nvfp4", "int8_channel")
# Sensitivity measures: the column of the tidy table that each one fills. "fisher" is the default because
# it estimates each layer's loss increase, so its sum over layers estimates the model's. Relative output
# errors weigh a small k_proj the same as a large down_proj.
SENSITIVITY_MEASURES = {
    "fisher": "fisher_sensitivity",
    "output_error": "output_error",
    "model_output_error": "output_error",
}
DEFAULT_CALIBRATION_TOKENS = 512
CALIBRATION_BATCH_TOKENS = 256
# Upper limit on the fp32 layer inputs that one calibration pass captures: SmolLM2-135M's 210 layers take
# 599,040 bytes per token, so up to 1792 calibration tokens run in one pass.
CAPTURE_BYTES_PER_PASS = 2**30


@dataclass(frozen=True, eq=False)
class ModelAllocation:
    """The allocated policy of one model, with the tables it was chosen from.

    matrix: sensitivity [layers, candidates], in the order of
        allocation.layers and candidates.
    storage_bits: stored bits [layers, candidates], scales and padding included.
    base_policy: the rules for activations and the KV cache, tried after
        the allocated weight rules; None keeps them in full precision.
    """

    model: str
    budget_bits: float
    candidates: tuple[str, ...]
    sensitivity_measure: str
    calibration_tokens: int
    allocation: Allocation
    policy: Policy
    base_policy: Policy | None
    matrix: np.ndarray
    storage_bits: np.ndarray

    def uniform_sensitivity(self, candidate: str) -> float:
        """Total sensitivity of giving every layer `candidate`."""
        return float(self.matrix[:, self.candidates.index(candidate)].sum())


@dataclass(frozen=True, eq=False)
class AllocationReport:
    """An allocation and its comparison: one row per policy, the allocated one first (see `compare_policies`)."""

    allocated: ModelAllocation
    comparison: pd.DataFrame
    notes: tuple[str, ...]


def check_candidates(candidates: Sequence[str]) -> tuple[str, ...]:
    """Return the candidate format names as a tuple, raising ValueError on an empty, repeated or unknown one."""
    if isinstance(candidates, str) or not candidates:
        raise ValueError(f"invalid candidates {candidates!r}: give a list of weight formats such as int3_g128, int4_g128, int8_channel")
    names = tuple(candidates)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"candidate {repeated[0]!r} is listed twice; give each weight format once")
    for name in names:
        # Raises KeyError with close matches for an unknown name.
        formats.get(name)
    return names


def minimum_budget_bits(shapes: Sequence[tuple[int, ...]], candidates: Sequence[str]) -> float:
    """Return the smallest average bits per parameter over weights of `shapes`: every layer in its cheapest candidate."""
    from hwsim.policy.allocation import storage_costs

    costs = storage_costs(shapes, candidates)
    return float(costs.min(axis=1).sum()) / sum(int(np.prod(shape)) for shape in shapes)


def check_budget(spec, budget_bits: float, candidates: Sequence[str]) -> None:
    """Raise ValueError, naming the smallest feasible budget, when no choice of candidates fits `budget_bits` on `spec`."""
    from hwsim.policy.allocation import model_weight_layers

    if isinstance(budget_bits, bool) or not isinstance(budget_bits, (int, float)) or not math.isfinite(budget_bits) or budget_bits <= 0:
        raise ValueError(f"invalid budget of {budget_bits!r} bits per parameter: give a positive number, such as 4.5")
    shapes = [shape for _, shape in model_weight_layers(spec)]
    smallest = minimum_budget_bits(shapes, candidates)
    if budget_bits < smallest:
        # Round up, so that the budget the message names is feasible.
        shown = math.ceil(round(smallest * 1e4, 6)) / 1e4
        raise ValueError(
            f"budget of {budget_bits:g} bits per parameter is below {shown:.4f}, the smallest feasible budget for {spec.name} "
            f"with candidates {', '.join(candidates)}; give at least {shown:.4f}, or add a cheaper candidate such as int2_g128"
        )


def uniform_weight_policy(candidate: str, *, base: Policy | None = None) -> Policy:
    """Return the policy that gives every linear layer's weight `candidate`, tried before `base`'s rules."""
    rule = Rule(("weight",), Quantizer(candidate), name=f"weights: {candidate}")
    name = f"uniform-{candidate}"
    description = f"every linear layer's weight in {candidate}"
    if base is None:
        return Policy(name, (rule,), description=description)
    return base.with_rules([rule], name=name, description=description)


def _progress(enabled: bool):
    from tqdm.auto import tqdm

    def bar(iterable=None, **kwargs):
        # disable=None shows the bar on a terminal only, so pipes and CI stay quiet.
        return tqdm(iterable, disable=None if enabled else True, leave=False, **kwargs)

    return bar


def _layers_by_block(layers: dict) -> list[dict]:
    """Split {name: module} into one dict per layer index, in order; layers outside the blocks form their own group."""
    groups: dict[int | None, dict] = {}
    for name, module in layers.items():
        _, index = split_layer_name(name)
        groups.setdefault(index, {})[name] = module
    return list(groups.values())


def _capture_passes(blocks: list[dict], tokens: int) -> list[dict]:
    """Merge consecutive blocks into passes whose captured fp32 inputs stay within CAPTURE_BYTES_PER_PASS (at least one block each)."""
    passes, current, current_bytes = [], {}, 0
    for block in blocks:
        block_bytes = 4 * tokens * sum(module.in_features for module in block.values())
        if current and current_bytes + block_bytes > CAPTURE_BYTES_PER_PASS:
            passes.append(current)
            current, current_bytes = {}, 0
        current.update(block)
        current_bytes += block_bytes
    if current:
        passes.append(current)
    return passes


def layer_output_errors(model, batches: list, candidates: Sequence[str], *, layers: dict | None = None, progress: bool = True):
    """Return each linear layer's relative output error ||X W^T - X Q^T||^2 / ||X W^T||^2 under each candidate Q = q(W).

    The same quantity as `hwsim.policy.sensitivity.output_error` with
    scope="layer", and the same columns, but the calibration inputs X are
    captured for many layers in one forward pass, as many as fit in
    CAPTURE_BYTES_PER_PASS, and the layers then run one by one under a
    progress bar. layers: {name: nn.Linear}, by default every linear
    layer but the LM head.
    """
    import pandas as pd
    import torch

    from hwsim.policy.sensitivity import capture_inputs, linear_layers
    from hwsim.policy.subsets import qdq_tensor

    bar = _progress(progress)
    layers = layers or linear_layers(model)
    tokens = sum(int(batch.numel()) for batch in batches)
    passes = _capture_passes(_layers_by_block(layers), tokens)
    rows = []
    with bar(total=len(layers), desc="sensitivity (layers)") as counter:
        for group in passes:
            inputs = capture_inputs(model, batches, group, max_tokens=tokens)
            for name, module in group.items():
                x = inputs.pop(name).double()
                weight = module.weight.detach().to(torch.float32)
                reference_norm = float(((x @ weight.double().T) ** 2).sum())
                weight_norm = float((weight.double() ** 2).sum())
                _, index = split_layer_name(name)
                for candidate in candidates:
                    difference = (weight - qdq_tensor(weight, Quantizer(candidate))).double()
                    rows.append({
                        "layer": name,
                        "layer_index": index,
                        "format": candidate,
                        "output_error": float(((x @ difference.T) ** 2).sum()) / reference_norm,
                        "weight_error": float((difference**2).sum()) / weight_norm,
                    })
                counter.update(1)
    return pd.DataFrame(rows)


def measure_sensitivity(model, batches: list, candidates: Sequence[str], measure: str, *, progress: bool = True):
    """Return the tidy sensitivity table (layer, layer_index, format, and the measure's column) of every linear layer.

    "output_error" is each layer's relative output error on its own
    calibration inputs (`layer_output_errors`). "model_output_error" is the
    relative error of the model's logits with only that layer quantized,
    the slowest, because it takes one forward pass per layer and candidate.
    "fisher" is the Fisher-weighted quantization error.
    """
    import pandas as pd

    from hwsim.policy.sensitivity import causal_lm_loss, fisher_information, fisher_sensitivity, linear_layers, output_error

    if measure not in SENSITIVITY_MEASURES:
        raise ValueError(f"unknown sensitivity measure {measure!r}: choose one of {', '.join(SENSITIVITY_MEASURES)}")
    if measure == "output_error":
        return layer_output_errors(model, batches, candidates, progress=progress)
    bar = _progress(progress)
    blocks = _layers_by_block(linear_layers(model))
    frames = []
    if measure == "fisher":
        fisher = fisher_information(model, causal_lm_loss, bar(batches, desc="Fisher information (batches)"))
        for block in bar(blocks, desc="sensitivity (blocks)"):
            frames.append(fisher_sensitivity(block, fisher, candidates))
        return pd.concat(frames, ignore_index=True)
    for block in bar(blocks, desc="sensitivity (blocks)"):
        frames.append(output_error(model, batches, candidates, layers=block, scope="model"))
    return pd.concat(frames, ignore_index=True)


@contextlib.contextmanager
def _solver_output_to_stderr() -> Iterator[None]:
    """Send what C code writes to file descriptor 1 to stderr, so that stdout keeps only the results.

    HiGHS, under scipy.optimize.milp (scipy 1.17), writes debug lines such as
    "HighsMipSolverData::transformNewIntegerFeasibleSolution" to stdout.
    """
    try:
        stdout_fd = sys.__stdout__.fileno()
        stderr_fd = sys.__stderr__.fileno()
    except (AttributeError, OSError, ValueError):
        # No real file descriptors (an embedded interpreter): nothing to redirect.
        yield
        return
    sys.__stdout__.flush()
    saved = os.dup(stdout_fd)
    try:
        os.dup2(stderr_fd, stdout_fd)
        yield
    finally:
        os.dup2(saved, stdout_fd)
        os.close(saved)


def _check_layers_match(layers: dict, spec) -> None:
    from hwsim.policy.allocation import model_weight_layers

    expected = {split_layer_name(name): tuple(shape) for name, shape in model_weight_layers(spec)}
    found = {split_layer_name(name): tuple(module.weight.shape) for name, module in layers.items()}
    if found != expected:
        differing = sorted(set(found.items()) ^ set(expected.items()), key=str)
        raise ValueError(
            f"the linear layers of the model differ from those of the cost spec {spec.name!r} (first difference: {differing[0]}); "
            "give the cost model the config.json that matches the checkpoint"
        )


def allocate_weights(
    base,
    spec,
    budget_bits: float,
    *,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    method: str = "ilp",
    sensitivity: str = "fisher",
    calibration_tokens: int = DEFAULT_CALIBRATION_TOKENS,
    base_policy: Policy | None = None,
    progress: bool = True,
) -> ModelAllocation:
    """Allocate a weight format per linear layer of `base` (a `hwsim.accuracy.LoadedModel`) within `budget_bits` on average.

    spec: the model's `hwsim.workload.ModelSpec`, whose linear layers must
        match the checkpoint's. The budget counts their stored bits, scales
        and padded groups included, as `bits_per_parameter` does.
    calibration_tokens: tokens from the end of the WikiText-2 test split,
        in batches of 256.
    base_policy: rules for activations and the KV cache, tried after the
        allocated weight rules.
    """
    from hwsim.accuracy import calibration_batches
    from hwsim.policy.allocation import METHODS, allocate, average_bits_budget, storage_costs
    from hwsim.policy.sensitivity import linear_layers, sensitivity_matrix

    candidates = check_candidates(candidates)
    if method not in METHODS:
        raise ValueError(f"unknown allocation method {method!r}: choose one of {', '.join(METHODS)}")
    if sensitivity not in SENSITIVITY_MEASURES:
        raise ValueError(f"unknown sensitivity measure {sensitivity!r}: choose one of {', '.join(SENSITIVITY_MEASURES)}")
    check_budget(spec, budget_bits, candidates)
    layers = linear_layers(base.model)
    _check_layers_match(layers, spec)

    batches = calibration_batches(base.tokenizer, calibration_tokens, CALIBRATION_BATCH_TOKENS)
    used_tokens = len(batches) * CALIBRATION_BATCH_TOKENS
    log.info("measuring %s of %d layers under %d candidates on %d calibration tokens", sensitivity, len(layers), len(candidates), used_tokens)
    frame = measure_sensitivity(base.model, batches, candidates, sensitivity, progress=progress)
    names, _, matrix = sensitivity_matrix(frame, SENSITIVITY_MEASURES[sensitivity], formats=candidates)

    shapes = [tuple(layers[name].weight.shape) for name in names]
    storage = storage_costs(shapes, candidates)
    with _solver_output_to_stderr():
        allocation = allocate(names, candidates, matrix, storage, average_bits_budget(shapes, budget_bits), method=method)
    description = (
        f"{method} allocation of weight formats for {spec.name} at {budget_bits:g} bits per parameter: least total "
        f"{sensitivity} over {len(names)} linear layers on {used_tokens} calibration tokens, candidates {', '.join(candidates)}"
    )
    policy = allocation.to_policy(f"allocated-{method}-{budget_bits:g}bits", base=base_policy, description=description)
    return ModelAllocation(spec.name, float(budget_bits), candidates, sensitivity, used_tokens, allocation, policy, base_policy, matrix, storage)


def uniform_candidates(spec, budget_bits: float, candidates: Sequence[str], *, base_policy: Policy | None = None) -> list[str]:
    """Return the candidates whose uniform policy fits the budget, by stored or by nominal bits per parameter.

    Stored bits include padded groups and per-tensor scales, so a format
    named at the budget (nvfp4's 4.5 bits) can exceed it by a little. Such
    a candidate is kept for the comparison, and its row is marked over budget.
    """
    kept = []
    for candidate in candidates:
        stored = bits_per_parameter(uniform_weight_policy(candidate, base=base_policy), spec)
        if stored <= budget_bits or formats.get(candidate).bits_per_element <= budget_bits:
            kept.append(candidate)
    return kept


def policy_cost(spec, policy: Policy, accelerator, *, batch: int = 1, context: int = 1024, generated: int = 128) -> tuple[dict, tuple[str, ...]]:
    """Return the prefill latency and the decode time and energy per output token of `policy`, with the simulator's notes.

    Keys: prefill_latency_s (a prefill of `context` tokens per sequence),
    decode_s_per_token and decode_j_per_token (a decode of `generated` tokens
    after `context` cached ones). Formats that the accelerator lacks are
    priced through their documented emulation, and a model that does not
    fit in memory is priced anyway, with a note.
    """
    from hwsim.simulation import simulate
    from hwsim.workload import Scenario

    report = simulate(
        spec, policy, accelerator, [Scenario.prefill(batch, context), Scenario.decode(batch, context, generated)],
        unsupported="emulate", memory_overflow="report",
    )
    totals = report.totals.set_index("phase")
    cost = {
        "prefill_latency_s": float(totals.loc["prefill", "latency_s"]),
        "decode_s_per_token": float(totals.loc["decode", "time_per_output_token_s"]),
        "decode_j_per_token": float(totals.loc["decode", "joules_per_token"]),
    }
    notes = tuple(report.notes)
    if not report.memory.fits:
        notes += (f"{policy.name} does not fit in the memory of {report.accelerator}: {report.memory.describe()}",)
    return cost, notes


def compare_policies(
    base,
    spec,
    allocated: ModelAllocation,
    uniform: Sequence[str],
    *,
    accelerator="h100-sxm",
    tokens: int = 4096,
    window: int = 256,
    batch: int = 1,
    context: int = 1024,
    generated: int = 128,
    cache_dir=None,
    use_cache: bool = True,
    progress: bool = True,
):
    """Measure the allocated policy and the uniform policies of the `uniform` candidates: one row each, allocated first.

    Columns: policy, kind (allocated or uniform), bits_per_parameter (of the
    linear layers in the blocks), within_budget, sensitivity (the total
    that the allocation minimizes), perplexity (first `tokens` tokens of
    WikiText-2, windows of `window`), and the `policy_cost` keys. Also
    returns the notes of the perplexity results and of the simulator.
    """
    import pandas as pd

    from hwsim.accuracy import AccuracyConfig, evaluate_perplexity

    rows, notes = [], []
    entries = [(allocated.policy, "allocated", allocated.allocation.sensitivity)]
    for candidate in uniform:
        policy = uniform_weight_policy(candidate, base=allocated.base_policy)
        entries.append((policy, "uniform", allocated.uniform_sensitivity(candidate)))
    for policy, kind, sensitivity in _progress(progress)(entries, desc="policies"):
        stored = bits_per_parameter(policy, spec)
        result = evaluate_perplexity(
            base, AccuracyConfig.from_policy(policy), tokens=tokens, window=window, cache_dir=cache_dir, use_cache=use_cache, progress=progress
        )
        cost, cost_notes = policy_cost(spec, policy, accelerator, batch=batch, context=context, generated=generated)
        rows.append({
            "policy": policy.name,
            "kind": kind,
            "bits_per_parameter": stored,
            "within_budget": stored <= allocated.budget_bits,
            "sensitivity": sensitivity,
            "perplexity": result.perplexity,
            **cost,
        })
        notes += [*result.notes, *cost_notes]
    return pd.DataFrame(rows), tuple(dict.fromkeys(notes))


def allocate_model(
    model: str,
    budget_bits: float,
    *,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    method: str = "ilp",
    sensitivity: str = "fisher",
    calibration_tokens: int = DEFAULT_CALIBRATION_TOKENS,
    cost_model: str | None = None,
    base_policy: Policy | None = None,
    accelerator="h100-sxm",
    tokens: int = 4096,
    window: int = 256,
    batch: int = 1,
    context: int = 1024,
    generated: int = 128,
    cache_dir=None,
    use_cache: bool = True,
    progress: bool = True,
) -> AllocationReport:
    """Allocate weight formats for `model` within `budget_bits` per parameter, and compare it with the uniform policies of that budget.

    model: a name that `hwsim.accuracy.load_model` loads ("smollm2-135m").
    cost_model: the `hwsim.workload.load_model` source of its cost spec
        (default: `model`). See `allocate_weights` and `compare_policies`
        for the other arguments.
    """
    from hwsim.accuracy import load_model
    from hwsim.workload import load_model as load_cost_spec

    candidates = check_candidates(candidates)
    spec = load_cost_spec(cost_model or model)
    # Fails before the model loads when the budget is below every layer's cheapest candidate.
    check_budget(spec, budget_bits, candidates)
    base = load_model(model)
    allocated = allocate_weights(
        base, spec, budget_bits, candidates=candidates, method=method, sensitivity=sensitivity,
        calibration_tokens=calibration_tokens, base_policy=base_policy, progress=progress,
    )
    uniform = uniform_candidates(spec, budget_bits, candidates, base_policy=base_policy)
    comparison, notes = compare_policies(
        base, spec, allocated, uniform, accelerator=accelerator, tokens=tokens, window=window, batch=batch,
        context=context, generated=generated, cache_dir=cache_dir, use_cache=use_cache, progress=progress,
    )
    return AllocationReport(allocated, comparison, notes)
