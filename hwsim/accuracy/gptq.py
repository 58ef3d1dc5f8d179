"""GPTQ weight rounding (Frantar et al., "GPTQ", ICLR 2023) with the formats of hwsim.

GPTQ rounds a weight matrix W [out, in] one input column at a time and
spreads each column's rounding error over the columns not yet rounded,
weighted by the inverse Hessian H = 2 X^T X of the layer's calibration
inputs X, which minimises ||X W^T - X Q^T||. This follows the reference
implementation: damping of 1% of the mean diagonal, the upper Cholesky
factor of H^-1, lazy updates in blocks of 128 columns, columns in their
natural order (no act-order), and dead inputs (zero diagonal) zeroed.

Each column is rounded with the same arithmetic as `hwsim.accuracy.torch_qdq`
against scale statistics fixed earlier. Per tensor or per output channel,
they come from the whole original matrix. Per group or block of K, they
come from the error-updated columns when the group starts (the reference
takes them from the matrix as updated block by block). Dialect formats are
not supported.

`gptq_llama` calibrates decoder layer by layer: the inputs of layer i come
from layers 0..i-1 with their GPTQ weights, and all linear layers of one
decoder layer see the inputs of the same pass (the reference's default,
not its "true sequential" option).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from hwsim import formats
from hwsim.accuracy.architectures import decoder_layers, require_llama
from hwsim.accuracy.torch_elements import element_values, pow2
from hwsim.accuracy.torch_qdq import group_statistics, qdq, quantize_groups, shared_exponents, tensor_scale
from hwsim.formats import kernels as k
from hwsim.formats.params import rounding_mode
from hwsim.formats.spec import DialectFormat, ScaledFormat

log = logging.getLogger(__name__)

BLOCK_SIZE = 128
DAMPING = 0.01


class ColumnRounder:
    """Rounds one column of a weight matrix at a time against scale statistics held between calls."""

    def __init__(self, fmt, weight: torch.Tensor, rounding: str = "nearest_even"):
        self.fmt = formats.get(fmt)
        self.rounding = rounding
        self.mode = rounding_mode(rounding)
        if isinstance(self.fmt, DialectFormat):
            raise ValueError(f"GPTQ does not support the dialect format {self.fmt.name}: its per-block dialect choice has no fixed statistics to round columns against")
        self.scaled = isinstance(self.fmt, ScaledFormat)
        self.group = None
        if self.scaled and self.fmt.granularity in ("group", "block"):
            self.group = int(self.fmt.block_size)
        self.g32 = torch.ones((), dtype=torch.float32, device=weight.device)
        if self.scaled:
            whole_amax = weight.detach().abs().amax().to(torch.float64)
            if self.fmt.tensor_scale is not None:
                self.g32 = tensor_scale(self.fmt, whole_amax)
            if self.fmt.granularity == "tensor":
                rows = weight.shape[0]
                self._set_statistics(whole_amax.expand(rows, 1), -whole_amax.expand(rows, 1), whole_amax.expand(rows, 1))
            elif self.group is None:
                self.start_group(weight)

    def start_group(self, columns: torch.Tensor) -> None:
        """Take the statistics of each row from `columns` (rows, group) for the columns that follow."""
        amax, lo, hi, _ = group_statistics(columns.to(torch.float64)[:, None, :])
        self._set_statistics(amax, lo, hi)

    def _set_statistics(self, amax, lo, hi) -> None:
        self.amax, self.lo, self.hi = amax, lo, hi
        if self.fmt.scale_rule in ("ocp", "ceil"):
            element = self.fmt.element
            self.exponent = shared_exponents(amax, element.emax, float(element.max_normal), self.fmt.scale, self.fmt.scale_rule)

    def __call__(self, column: torch.Tensor) -> torch.Tensor:
        """Rounded values of one float64 column (rows,)."""
        if not self.scaled:
            return qdq(column, self.fmt, rounding=self.rounding)
        x = column[:, None]
        if self.fmt.scale_rule in ("ocp", "ceil"):
            s = self.exponent
            return (element_values(x * pow2(-s), self.fmt.element, self.mode, None, 1) * pow2(s))[:, 0]
        return quantize_groups(x, self.amax, self.lo, self.hi, self.fmt, self.g32, self.mode, 1, None, torch.float64)[:, 0]


@torch.no_grad()
def gptq_weight(weight: torch.Tensor, hessian: torch.Tensor, fmt, rounding: str = "nearest_even",
                block_size: int = BLOCK_SIZE, damping: float = DAMPING) -> torch.Tensor:
    """Return a GPTQ-rounded copy of weight [out, in] for a Hessian [in, in] of the layer's inputs."""
    if rounding_mode(rounding) == k.STOCHASTIC:
        raise ValueError("GPTQ rounds to nearest and feeds the error forward; stochastic rounding is not supported")
    w = weight.detach().to(torch.float64).clone()
    h = hessian.detach().to(torch.float64).clone()
    rounder = ColumnRounder(fmt, w, rounding)
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damping * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    h_inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    quantized = torch.zeros_like(w)
    columns = w.shape[1]
    for start in range(0, columns, block_size):
        stop = min(start + block_size, columns)
        block = w[:, start:stop].clone()
        errors = torch.zeros_like(block)
        inverse_block = h_inverse[start:stop, start:stop]
        for i in range(stop - start):
            column = start + i
            if rounder.group is not None and column % rounder.group == 0:
                upcoming = torch.cat([block[:, i:], w[:, stop:]], dim=1)
                rounder.start_group(upcoming[:, : rounder.group])
            q = rounder(block[:, i])
            quantized[:, column] = q
            error = (block[:, i] - q) / inverse_block[i, i]
            block[:, i:] -= error[:, None] * inverse_block[i, i:][None, :]
            errors[:, i] = error
        w[:, stop:] -= errors @ h_inverse[start:stop, stop:]
    return quantized.to(weight.dtype)


class _Captured(Exception):
    """Stops the model after the first decoder layer's inputs are recorded."""


@torch.no_grad()
def _first_layer_inputs(model, batches) -> list[tuple[torch.Tensor, dict]]:
    layer = decoder_layers(model)[0]
    captured = []

    def hook(module, args, kwargs):
        captured.append((args[0], dict(kwargs)))
        raise _Captured

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            try:
                model(batch.to(next(model.parameters()).device), use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
    return captured


def _run_layer(layer, hidden, kwargs) -> torch.Tensor:
    output = layer(hidden, **kwargs)
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def gptq_llama(model: torch.nn.Module, batches: list[torch.Tensor], weight_quantizer: Callable[[str], object],
               progress: Callable | None = None) -> list[str]:
    """Round the weights of every linear layer in the decoder layers with GPTQ, in place; return their names.

    weight_quantizer(name) gives a layer's `Quantizer` (format and rounding)
    or None to leave it alone. Forward pre-hooks already on the layers (the
    online Hadamard transform of a rotated model) apply to the inputs that
    GPTQ records.
    """
    require_llama(model, "gptq")
    module_names = {module: name for name, module in model.named_modules()}
    inputs = _first_layer_inputs(model, batches)
    done = []
    layers = decoder_layers(model)
    iterator = progress(layers, desc="GPTQ layers") if progress else layers
    for layer in iterator:
        targets = {}
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear):
                quantizer = weight_quantizer(module_names[module])
                if quantizer is not None:
                    targets[module_names[module]] = (module, quantizer)
        hessians = {name: None for name in targets}
        counts = dict.fromkeys(targets, 0)

        def accumulate(name):
            def hook(module, args):
                x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
                product = x.T @ x
                hessians[name] = product if hessians[name] is None else hessians[name] + product
                counts[name] += x.shape[0]

            return hook

        handles = [module.register_forward_pre_hook(accumulate(name)) for name, (module, _) in targets.items()]
        try:
            for hidden, kwargs in inputs:
                _run_layer(layer, hidden, kwargs)
        finally:
            for handle in handles:
                handle.remove()
        for name, (module, quantizer) in targets.items():
            hessian = hessians[name] * (2.0 / counts[name])
            module.weight.data = gptq_weight(module.weight, hessian, quantizer.format, quantizer.rounding)
            done.append(name)
        inputs = [(_run_layer(layer, hidden, kwargs), kwargs) for hidden, kwargs in inputs]
    log.info("GPTQ rounded %d linear layers", len(done))
    return done
