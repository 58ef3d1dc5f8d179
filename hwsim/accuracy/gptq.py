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


class UniformPlan:
    """Every column in one format: the plan of plain GPTQ.

    A plan decides how each column is rounded. `prepare(w)` reads the whole
    matrix before rounding starts. `start(column, upcoming)` runs before
    each column, and `upcoming()` returns the error-updated columns from
    this one on. `round(column, values)` returns the rounded column.
    """

    def __init__(self, fmt, rounding: str = "nearest_even"):
        self.fmt = fmt
        self.rounding = rounding

    def prepare(self, w: torch.Tensor) -> None:
        self.rounder = ColumnRounder(self.fmt, w, self.rounding)

    def start(self, column: int, upcoming: Callable[[], torch.Tensor]) -> None:
        group = self.rounder.group
        if group is not None and column % group == 0:
            self.rounder.start_group(upcoming()[:, :group])

    def round(self, column: int, values: torch.Tensor) -> torch.Tensor:
        return self.rounder(values)


class SegmentPlan:
    """Consecutive column ranges in their own formats, each grouped from its own first column.

    segments: (start, stop, format) covering the columns in order. This is
    the plan of reordered outlier channels (the kept channels last) and of
    a projected high-variance subspace (the kept directions first).
    """

    def __init__(self, segments, rounding: str = "nearest_even"):
        self.segments = [(int(start), int(stop), fmt) for start, stop, fmt in segments]
        self.rounding = rounding

    def prepare(self, w: torch.Tensor) -> None:
        if self.segments[0][0] != 0 or self.segments[-1][1] != w.shape[1]:
            raise ValueError(f"segments {self.segments} do not cover the {w.shape[1]} columns")
        self.rounders = [ColumnRounder(fmt, w[:, start:stop], self.rounding) if stop > start else None
                         for start, stop, fmt in self.segments]

    def _segment(self, column: int) -> int:
        return next(i for i, (start, stop, _) in enumerate(self.segments) if start <= column < stop)

    def start(self, column: int, upcoming: Callable[[], torch.Tensor]) -> None:
        index = self._segment(column)
        start, stop, _ = self.segments[index]
        rounder = self.rounders[index]
        if rounder.group is not None and (column - start) % rounder.group == 0:
            rounder.start_group(upcoming()[:, : min(rounder.group, stop - column)])

    def round(self, column: int, values: torch.Tensor) -> torch.Tensor:
        return self.rounders[self._segment(column)](values)


class MaskPlan:
    """A dense format, with masked elements kept in an element format (sparse fp16 outliers).

    Masked elements are left out (set to 0) of the dense format's scale
    statistics, as `hwsim.policy.subsets.qdq_tensor` does.
    """

    def __init__(self, fmt, mask: torch.Tensor, keep_format: str, rounding: str = "nearest_even"):
        if formats.get(keep_format).kind != "float":
            raise ValueError(f"GPTQ keeps masked elements in an element format such as fp16; got {keep_format!r}")
        self.fmt = fmt
        self.mask = mask
        self.keep_format = keep_format
        self.rounding = rounding

    def prepare(self, w: torch.Tensor) -> None:
        self.rounder = ColumnRounder(self.fmt, w.masked_fill(self.mask, 0.0), self.rounding)

    def start(self, column: int, upcoming: Callable[[], torch.Tensor]) -> None:
        group = self.rounder.group
        if group is not None and column % group == 0:
            columns = upcoming()[:, :group]
            self.rounder.start_group(columns.masked_fill(self.mask[:, column : column + columns.shape[1]], 0.0))

    def round(self, column: int, values: torch.Tensor) -> torch.Tensor:
        kept = qdq(values, self.keep_format, rounding=self.rounding)
        return torch.where(self.mask[:, column], kept, self.rounder(values))


class GroupChoicePlan:
    """Each scale group of each row in one of several formats of the same group size (salient groups).

    assignment: [rows, groups] codes; formats_by_code maps each code to a format.
    """

    def __init__(self, formats_by_code: dict[int, str], assignment: torch.Tensor, rounding: str = "nearest_even"):
        self.formats_by_code = dict(formats_by_code)
        self.assignment = assignment
        self.rounding = rounding

    def prepare(self, w: torch.Tensor) -> None:
        self.rounders = {code: ColumnRounder(fmt, w, self.rounding) for code, fmt in self.formats_by_code.items()}
        groups = {rounder.group for rounder in self.rounders.values()}
        if len(groups) != 1 or None in groups:
            raise ValueError(f"group choices need formats of one group size, got {self.formats_by_code}")
        self.group = groups.pop()

    def start(self, column: int, upcoming: Callable[[], torch.Tensor]) -> None:
        if column % self.group == 0:
            columns = upcoming()[:, : self.group]
            for rounder in self.rounders.values():
                rounder.start_group(columns)

    def round(self, column: int, values: torch.Tensor) -> torch.Tensor:
        codes = self.assignment[:, column // self.group].to(values.device)
        result = torch.zeros_like(values)
        for code, rounder in self.rounders.items():
            result = torch.where(codes == code, rounder(values), result)
        return result


@torch.no_grad()
def gptq_weight(weight: torch.Tensor, hessian: torch.Tensor, fmt, rounding: str = "nearest_even",
                block_size: int = BLOCK_SIZE, damping: float = DAMPING, *, plan=None) -> torch.Tensor:
    """Return a GPTQ-rounded copy of weight [out, in] for a Hessian [in, in] of the layer's inputs.

    plan: how each column is rounded (`SegmentPlan`, `MaskPlan`,
    `GroupChoicePlan`); None rounds every column in `fmt`.
    """
    if rounding_mode(rounding) == k.STOCHASTIC:
        raise ValueError("GPTQ rounds to nearest and feeds the error forward; stochastic rounding is not supported")
    w = weight.detach().to(torch.float64).clone()
    h = hessian.detach().to(torch.float64).clone()
    plan = plan or UniformPlan(fmt, rounding)
    plan.prepare(w)
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
            plan.start(column, lambda i=i: torch.cat([block[:, i:], w[:, stop:]], dim=1))
            q = plan.round(column, block[:, i])
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
            if hasattr(quantizer, "gptq"):
                # A quantizer with a higher-precision subset plans its own columns.
                module.weight.data = quantizer.gptq(module.weight, hessian)
            else:
                module.weight.data = gptq_weight(module.weight, hessian, quantizer.format, quantizer.rounding)
            done.append(name)
        inputs = [(_run_layer(layer, hidden, kwargs), kwargs) for hidden, kwargs in inputs]
    log.info("GPTQ rounded %d linear layers", len(done))
    return done
