"""How much each layer suffers from each candidate format: output error, Fisher information and Hessian traces.

All three work on a torch model on the CPU. They return tidy DataFrames
with one row per layer, and per format where a format is involved. Each
row carries the layer's module name and its layer index, ready for
`sensitivity_matrix` and `hwsim.policy.allocation`.

- `output_error`: the relative error of a layer's output when only its
  weight is quantized, on calibration inputs (scope="layer"), or of the
  model's output (scope="model").
- `fisher_information` and `fisher_sensitivity`: squared gradients of the
  loss, and the Fisher-weighted quantization error sum F * (w - q(w))^2.
- `hessian_traces` and `hawq_sensitivity`: Hutchinson estimates of each
  layer's Hessian trace, tr(H) = E[v^T H v] over Rademacher v, with
  Hessian-vector products through autograd, and HAWQ's measure
  tr(H) / n * ||w - q(w)||^2.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from hwsim.policy.names import split_layer_name
from hwsim.policy.quantizer import Quantizer
from hwsim.policy.subsets import qdq_tensor

log = logging.getLogger(__name__)

Candidate = str | Quantizer


def linear_layers(model: nn.Module, *, include: Callable[[str], bool] | None = None, skip_lm_head: bool = True) -> dict[str, nn.Linear]:
    """Map module names to the nn.Linear layers of `model`; the LM head is left out unless skip_lm_head=False."""
    layers = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if skip_lm_head and name.rsplit(".", 1)[-1] == "lm_head":
            continue
        if include is not None and not include(name):
            continue
        layers[name] = module
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layers left after filtering; check the include filter")
    return layers


def _quantizer(candidate: Candidate) -> Quantizer:
    return candidate if isinstance(candidate, Quantizer) else Quantizer(candidate)


def _label(candidate: Candidate) -> str:
    return candidate.format if isinstance(candidate, Quantizer) else candidate


def _layer_fields(name: str) -> dict:
    _, index = split_layer_name(name)
    return {"layer": name, "layer_index": index}


def _run(model: nn.Module, batch) -> torch.Tensor:
    output = model(**batch) if isinstance(batch, dict) else model(batch)
    if isinstance(output, torch.Tensor):
        return output
    for key in ("logits", "last_hidden_state"):
        value = getattr(output, key, None)
        if value is not None:
            return value
    raise TypeError(f"cannot find the output tensor of {type(output).__name__}: return a tensor, or an output with logits or last_hidden_state")


def capture_inputs(model: nn.Module, batches: Iterable, layers: dict[str, nn.Linear], *, max_tokens: int = 4096) -> dict[str, torch.Tensor]:
    """Run `batches` through `model` and keep up to `max_tokens` input rows [tokens, in] of each layer."""
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    counts = dict.fromkeys(layers, 0)

    def hook_for(name):
        def hook(module, inputs, output):
            if counts[name] >= max_tokens:
                return
            rows = inputs[0].detach().reshape(-1, inputs[0].shape[-1])[: max_tokens - counts[name]]
            captured[name].append(rows.to(torch.float32))
            counts[name] += rows.shape[0]

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in layers.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                _run(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name, rows in captured.items() if not rows]
    if missing:
        raise ValueError(f"layers {missing[:3]} saw no input: the batches never ran through them; check the model and the batches")
    return {name: torch.cat(rows) for name, rows in captured.items()}


def output_error(
    model: nn.Module,
    batches: Sequence,
    candidates: Sequence[Candidate],
    *,
    layers: dict[str, nn.Linear] | None = None,
    scope: str = "layer",
    max_tokens: int = 4096,
) -> pd.DataFrame:
    """Relative squared error ||y - y_q||^2 / ||y||^2 when one layer's weight takes each candidate.

    scope="layer": y = X W^T over the layer's calibration inputs X.
    scope="model": y is the model's output (logits or last hidden state)
        over `batches`, with only that layer quantized.
    Candidates are format names or Quantizers (with subsets picked from the
    weight itself, see `qdq_tensor`). Columns: layer, layer_index, format,
    output_error, weight_error (||w - q(w)||^2 / ||w||^2).
    """
    if scope not in ("layer", "model"):
        raise ValueError(f"invalid scope={scope!r}: use 'layer' (each layer's own output) or 'model' (the model's output)")
    if not candidates:
        raise ValueError("no candidate formats: pass at least one format name such as 'int4_g128'")
    layers = layers or linear_layers(model)
    rows = []
    if scope == "layer":
        inputs = capture_inputs(model, batches, layers, max_tokens=max_tokens)
    else:
        with torch.no_grad():
            references = [_run(model, batch).detach().to(torch.float64) for batch in batches]
    for name, module in layers.items():
        weight = module.weight.detach().to(torch.float32)
        for candidate in candidates:
            quantized = qdq_tensor(weight, _quantizer(candidate))
            weight_error = float(((weight - quantized).double() ** 2).sum() / (weight.double() ** 2).sum())
            if scope == "layer":
                x = inputs[name].double()
                reference = x @ weight.double().T
                error = float(((reference - x @ quantized.double().T) ** 2).sum() / (reference**2).sum())
            else:
                error = _model_output_error(model, module, quantized, batches, references)
            rows.append({**_layer_fields(name), "format": _label(candidate), "output_error": error, "weight_error": weight_error})
        log.debug("output error of %s done", name)
    return pd.DataFrame(rows)


def _model_output_error(model, module: nn.Linear, quantized: torch.Tensor, batches, references) -> float:
    original = module.weight.data.clone()
    module.weight.data.copy_(quantized.to(original.dtype))
    try:
        with torch.no_grad():
            squared = sum(float(((ref - _run(model, batch).double()) ** 2).sum()) for ref, batch in zip(references, batches))
    finally:
        module.weight.data.copy_(original)
    return squared / sum(float((ref**2).sum()) for ref in references)


def fisher_information(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    batches: Iterable,
    *,
    layers: dict[str, nn.Linear] | None = None,
) -> dict[str, torch.Tensor]:
    """Empirical Fisher diagonal of each layer's weight: the sum over batches of the squared gradient of loss_fn(model, batch).

    With batches of one sample this is the per-sample empirical Fisher;
    larger batches square the batch-mean gradient, the cheaper
    approximation that SqueezeLLM uses.
    """
    layers = layers or linear_layers(model)
    fisher = {name: torch.zeros_like(module.weight, dtype=torch.float64) for name, module in layers.items()}
    was_training = model.training
    model.eval()
    count = 0
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            loss.backward()
            for name, module in layers.items():
                if module.weight.grad is None:
                    raise ValueError(f"layer {name!r} got no gradient: the loss does not depend on it")
                fisher[name] += module.weight.grad.detach().to(torch.float64) ** 2
            count += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if count == 0:
        raise ValueError("no batches: pass at least one calibration batch")
    return fisher


def fisher_sensitivity(layers: dict[str, nn.Linear], fisher: dict[str, torch.Tensor], candidates: Sequence[Candidate]) -> pd.DataFrame:
    """Fisher-weighted quantization error sum F * (w - q(w))^2 per layer and candidate (a second-order estimate of the loss increase, times 2)."""
    rows = []
    for name, module in layers.items():
        weight = module.weight.detach().to(torch.float32)
        for candidate in candidates:
            error = (weight - qdq_tensor(weight, _quantizer(candidate))).double() ** 2
            rows.append({**_layer_fields(name), "format": _label(candidate), "fisher_sensitivity": float((fisher[name] * error).sum())})
    return pd.DataFrame(rows)


def hutchinson_trace(loss: torch.Tensor, parameters: Sequence[torch.Tensor], *, samples: int = 64, seed: int = 0) -> list[tuple[float, float]]:
    """Estimate tr(H) of `loss` for each tensor in `parameters` (its own diagonal block); return (mean, standard error) per tensor.

    Each sample draws Rademacher v (entries +-1), forms H v by differentiating
    the gradient along v, and averages v^T H v. A diagonal Hessian gives the
    exact trace in every sample, since v_i^2 = 1.
    """
    if samples < 2:
        raise ValueError(f"invalid samples={samples}: the standard error needs at least 2 samples")
    parameters = list(parameters)
    gradients = torch.autograd.grad(loss, parameters, create_graph=True)
    generator = torch.Generator().manual_seed(seed)
    estimates = np.zeros((samples, len(parameters)))
    for sample in range(samples):
        vectors = [torch.randint(0, 2, p.shape, generator=generator).to(p.dtype) * 2 - 1 for p in parameters]
        products = torch.autograd.grad(gradients, parameters, grad_outputs=vectors, retain_graph=True)
        for column, (vector, product) in enumerate(zip(vectors, products)):
            estimates[sample, column] = float((vector * product).sum())
    means = estimates.mean(axis=0)
    errors = estimates.std(axis=0, ddof=1) / math.sqrt(samples)
    return [(float(m), float(e)) for m, e in zip(means, errors)]


def hessian_traces(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    batch,
    *,
    layers: dict[str, nn.Linear] | None = None,
    samples: int = 64,
    seed: int = 0,
) -> pd.DataFrame:
    """Hutchinson estimates of the Hessian trace of each layer's weight on one calibration batch.

    The model must support second derivatives: load a transformers model
    with attn_implementation="eager", since torch's fused CPU attention has none.

    Columns: layer, layer_index, hessian_trace, trace_stderr, parameters,
    mean_trace (trace / parameters, HAWQ's per-parameter sensitivity).
    """
    layers = layers or linear_layers(model)
    was_training = model.training
    model.eval()
    try:
        loss = loss_fn(model, batch)
        weights = [module.weight for module in layers.values()]
        estimates = hutchinson_trace(loss, weights, samples=samples, seed=seed)
    except RuntimeError as error:
        if "derivative for" not in str(error):
            raise
        raise RuntimeError(
            f"Hessian-vector products need second derivatives, and an op of {type(model).__name__} has none ({error}); "
            "for a transformers model, load it with attn_implementation='eager'"
        ) from error
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    rows = []
    for (name, module), (trace, stderr) in zip(layers.items(), estimates):
        count = module.weight.numel()
        rows.append({**_layer_fields(name), "hessian_trace": trace, "trace_stderr": stderr, "parameters": count, "mean_trace": trace / count})
    return pd.DataFrame(rows)


def hawq_sensitivity(layers: dict[str, nn.Linear], traces: pd.DataFrame, candidates: Sequence[Candidate]) -> pd.DataFrame:
    """HAWQ-V3's sensitivity mean_trace * ||w - q(w)||^2 per layer and candidate, from `hessian_traces` output."""
    mean_trace = dict(zip(traces["layer"], traces["mean_trace"]))
    rows = []
    for name, module in layers.items():
        if name not in mean_trace:
            raise ValueError(f"no Hessian trace for layer {name!r}: run hessian_traces over the same layers")
        weight = module.weight.detach().to(torch.float32)
        for candidate in candidates:
            error = float(((weight - qdq_tensor(weight, _quantizer(candidate))).double() ** 2).sum())
            rows.append({**_layer_fields(name), "format": _label(candidate), "hawq_sensitivity": mean_trace[name] * error})
    return pd.DataFrame(rows)


def group_salience(weight: torch.Tensor, input_hessian_diagonal: torch.Tensor, group_size: int) -> torch.Tensor:
    """Sum w^2 * diag(X^T X) over each group of `group_size` input channels of a weight [out, in], the group's salience.

    Returns [out, ceil(in / group_size)], for salient-group subsets and
    per-group allocation.
    """
    if group_size <= 0:
        raise ValueError(f"invalid group_size={group_size}: give a positive group size such as 128")
    out_features, in_features = weight.shape
    groups = -(-in_features // group_size)
    salience = torch.zeros(out_features, groups * group_size, dtype=torch.float64)
    salience[:, :in_features] = weight.detach().to(torch.float64) ** 2 * input_hessian_diagonal.to(torch.float64)
    return salience.reshape(out_features, groups, group_size).sum(dim=-1)


def sensitivity_matrix(frame: pd.DataFrame, value: str, *, formats: Sequence[str] | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """Pivot a tidy sensitivity table into (layers, formats, matrix[layer][format]) for allocation.

    Layers keep their first-seen order; formats follow `formats` or their first-seen order.
    A missing (layer, format) pair raises, since the allocator needs every entry.
    """
    if value not in frame.columns:
        raise ValueError(f"column {value!r} not in the table; it has {', '.join(frame.columns)}")
    layers = list(dict.fromkeys(frame["layer"]))
    names = list(formats) if formats is not None else list(dict.fromkeys(frame["format"]))
    table = frame.pivot_table(index="layer", columns="format", values=value, aggfunc="first").reindex(index=layers, columns=names)
    if table.isna().any().any():
        missing = table.isna().stack()
        layer, fmt = missing[missing].index[0]
        raise ValueError(f"no {value} for layer {layer!r} and format {fmt!r}: compute every layer under every format")
    return layers, names, table.to_numpy(dtype=float)


def causal_lm_loss(model: nn.Module, batch) -> torch.Tensor:
    """Next-token cross entropy of a transformers causal LM on a batch of input ids (a tensor or a dict with input_ids)."""
    input_ids = batch["input_ids"] if isinstance(batch, dict) else batch
    return model(input_ids=input_ids, labels=input_ids).loss
