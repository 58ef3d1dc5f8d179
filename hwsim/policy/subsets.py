"""qdq of a tensor under a `Quantizer`, with its higher-precision subset and KV window, and the calibration scores that pick subsets.

`qdq_tensor(x, quantizer, scores=..., basis=...)` emulates what the
quantizer stores: the dense part in `quantizer.format` and the subset in
`subset.format`, each through `hwsim.qdq` (CPU torch tensors or numpy
arrays). Scores rank the candidates, higher meaning "keep at higher
precision"; the helpers below compute them from calibration activations
as each selection rule names. Without scores, a subset is picked from the
tensor itself: channel amax, row amax, |x|, or the energy of each group.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from hwsim import formats
from hwsim.policy.quantizer import Quantizer

log = logging.getLogger(__name__)


def _as_torch(x) -> tuple[torch.Tensor, callable]:
    if isinstance(x, torch.Tensor):
        if x.device.type != "cpu":
            raise ValueError(f"qdq_tensor runs on CPU tensors; got one on {x.device}. Call .cpu() first")
        return x, lambda result: result
    array = np.asarray(x)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"qdq_tensor takes floating-point data, got dtype {array.dtype}; cast with .astype(np.float32)")
    return torch.from_numpy(np.ascontiguousarray(array)), lambda result: result.numpy()


def _qdq(tensor: torch.Tensor, fmt: str, quantizer: Quantizer, seed: int, axis: int | None = None) -> torch.Tensor:
    if tensor.numel() == 0:
        return tensor.clone()
    return formats.qdq(tensor.contiguous(), fmt, axis=quantizer.axis if axis is None else axis, rounding=quantizer.rounding, seed=seed)


def qdq_tensor(
    x,
    quantizer: Quantizer,
    *,
    scores=None,
    basis: torch.Tensor | None = None,
    full_precision_format: str = "fp16",
    seed: int = 0,
) -> torch.Tensor | np.ndarray:
    """Quantize then dequantize `x` as `quantizer` stores it; the same type and shape come back.

    scores: rank the subset's candidates, higher kept at higher precision.
        outlier_channels: [channels] (last axis); output_features: [rows]
        (second-to-last axis); sparse_outliers: x's shape; salient_groups:
        x's shape (summed per group) or [rows, groups].
    basis: for a pca_subspace subset, an orthonormal [channels, channels]
        matrix whose columns are the principal directions, highest variance
        first (`pca_basis`); None computes it from x's own rows, which only
        suits activations.
    seed: seed of stochastic rounding.
    """
    tensor, restore = _as_torch(x)
    if quantizer.kv_window:
        return restore(_with_window(tensor, quantizer, scores, basis, full_precision_format, seed))
    subset = quantizer.subset
    if subset is None:
        return restore(_qdq(tensor, quantizer.format, quantizer, seed))
    if tensor.dim() == 0:
        raise ValueError(f"a {subset.kind} subset needs a tensor with at least one axis, got a scalar")
    if scores is None and basis is None:
        log.debug("no calibration scores for a %s subset: picking it from the tensor itself", subset.kind)
    handlers = {
        "outlier_channels": _outlier_channels,
        "output_features": _output_features,
        "pca_subspace": _pca_subspace,
        "sparse_outliers": _sparse_outliers,
        "salient_groups": _salient_groups,
    }
    return restore(handlers[subset.kind](tensor, quantizer, scores, basis, seed))


def _with_window(tensor, quantizer, scores, basis, full_precision_format, seed) -> torch.Tensor:
    if tensor.dim() < 2:
        raise ValueError(f"a KV window needs a (..., tokens, head_dim) tensor, got shape {tuple(tensor.shape)}")
    tokens = tensor.shape[-2]
    window = min(quantizer.kv_window, tokens)
    older = tensor[..., : tokens - window, :]
    recent = tensor[..., tokens - window :, :]
    rest = replace(quantizer, kv_window=0)
    older_q = qdq_tensor(older, rest, scores=scores, basis=basis, full_precision_format=full_precision_format, seed=seed)
    recent_q = formats.qdq(recent.contiguous(), full_precision_format) if recent.numel() else recent.clone()
    return torch.cat([older_q, recent_q], dim=-2)


def _top_mask(scores: torch.Tensor, count: int, length: int, candidates: str) -> torch.Tensor:
    scores = torch.as_tensor(scores).reshape(-1)
    if scores.numel() != length:
        raise ValueError(f"scores for {candidates} have {scores.numel()} entries, expected {length}; give one score per {candidates[:-1]}")
    mask = torch.zeros(length, dtype=torch.bool)
    if count:
        mask[torch.topk(scores.to(torch.float64), count).indices] = True
    return mask


def _outlier_channels(tensor, quantizer, scores, basis, seed) -> torch.Tensor:
    mask = subset_selection(tensor, quantizer, scores)
    subset = quantizer.subset
    result = torch.empty_like(tensor)
    # Quantizing the kept channels as one contiguous tensor is Atom's reorder: groups form from the rest only.
    result[..., ~mask] = _qdq(tensor[..., ~mask], quantizer.format, quantizer, seed)
    result[..., mask] = _qdq(tensor[..., mask], subset.format, quantizer, seed)
    return result


def _output_features(tensor, quantizer, scores, basis, seed) -> torch.Tensor:
    subset = quantizer.subset
    mask = subset_selection(tensor, quantizer, scores)
    result = torch.empty_like(tensor)
    result[..., ~mask, :] = _qdq(tensor[..., ~mask, :], quantizer.format, quantizer, seed)
    result[..., mask, :] = _qdq(tensor[..., mask, :], subset.format, quantizer, seed)
    return result


def _pca_subspace(tensor, quantizer, scores, basis, seed) -> torch.Tensor:
    subset = quantizer.subset
    channels = tensor.shape[-1]
    if basis is None:
        basis = pca_basis(tensor.detach().reshape(-1, channels))
    basis = torch.as_tensor(basis, dtype=tensor.dtype)
    if basis.shape != (channels, channels):
        raise ValueError(f"basis has shape {tuple(basis.shape)}, expected ({channels}, {channels}); pass pca_basis(calibration activations)")
    kept = subset.size_of(channels)
    projected = tensor @ basis
    result = torch.empty_like(projected)
    result[..., :kept] = _qdq(projected[..., :kept], subset.format, quantizer, seed)
    result[..., kept:] = _qdq(projected[..., kept:], quantizer.format, quantizer, seed)
    return result @ basis.T


def _sparse_outliers(tensor, quantizer, scores, basis, seed) -> torch.Tensor:
    subset = quantizer.subset
    mask = subset_selection(tensor, quantizer, scores)
    # Outliers leave the dense part before its scales are set, so they do not stretch them.
    result = _qdq(tensor.masked_fill(mask, 0.0), quantizer.format, quantizer, seed)
    result[mask] = _qdq(tensor[mask], subset.format, quantizer, seed, axis=-1)
    return result


def _salient_groups(tensor, quantizer, scores, basis, seed) -> torch.Tensor:
    subset = quantizer.subset
    group_size = formats.get(quantizer.format).group_size
    channels = tensor.shape[-1]
    rows = tensor.numel() // channels
    assignment = subset_selection(tensor, quantizer, scores)
    element_assignment = assignment.repeat_interleave(group_size, dim=1)[:, :channels]
    element_assignment = element_assignment.reshape(tensor.shape)
    result = _qdq(tensor, quantizer.format, quantizer, seed)
    high = _qdq(tensor, subset.format, quantizer, seed)
    result = torch.where(element_assignment == 1, high, result)
    if subset.low_format:
        low = _qdq(tensor, subset.low_format, quantizer, seed)
        result = torch.where(element_assignment == -1, low, result)
    return result


def subset_selection(tensor: torch.Tensor, quantizer: Quantizer, scores=None) -> torch.Tensor:
    """Return which part of `tensor` the quantizer's subset keeps, as `qdq_tensor` chooses it.

    - outlier_channels: a bool mask over the last axis.
    - output_features: a bool mask over the rows (second-to-last axis).
    - sparse_outliers: a bool mask of the tensor's shape.
    - salient_groups: an int8 [rows, groups] assignment, 1 for the subset's
      format, -1 for its low_format, 0 for the dense format.

    Scores are as `qdq_tensor` takes them, and None ranks by the tensor itself.
    """
    subset = quantizer.subset
    if subset is None or subset.kind == "pca_subspace":
        raise ValueError(f"selection is for outlier_channels, output_features, sparse_outliers or salient_groups subsets, got {subset!r}")
    if subset.kind == "outlier_channels":
        channels = tensor.shape[-1]
        if scores is None:
            scores = tensor.detach().abs().reshape(-1, channels).amax(dim=0)
        return _top_mask(scores, subset.size_of(channels), channels, "channels")
    if subset.kind == "output_features":
        if tensor.dim() < 2:
            raise ValueError(f"an output_features subset needs a weight [out, in], got shape {tuple(tensor.shape)}")
        rows = tensor.shape[-2]
        if scores is None:
            scores = tensor.detach().abs().transpose(-1, -2).reshape(-1, rows).amax(dim=0)
        return _top_mask(scores, subset.size_of(rows), rows, "rows")
    if subset.kind == "sparse_outliers":
        if scores is None:
            scores = tensor.detach().abs()
        if tuple(torch.as_tensor(scores).shape) != tuple(tensor.shape):
            raise ValueError(f"scores for sparse outliers need the tensor's shape {tuple(tensor.shape)}, got {tuple(torch.as_tensor(scores).shape)}")
        return _top_mask(scores, subset.size_of(tensor.numel()), tensor.numel(), "elements").reshape(tensor.shape)
    if quantizer.axis % tensor.dim() != tensor.dim() - 1:
        raise ValueError(f"salient groups run along the last axis; got a quantizer with axis={quantizer.axis}")
    group_size = formats.get(quantizer.format).group_size
    channels = tensor.shape[-1]
    groups_per_row = -(-channels // group_size)
    rows = tensor.numel() // channels
    group_scores = _group_scores(tensor, scores, group_size, rows, groups_per_row)
    total = rows * groups_per_row
    chosen = subset.size_of(total)
    order = torch.argsort(group_scores.reshape(-1).to(torch.float64), descending=True)
    assignment = torch.zeros(total, dtype=torch.int8)
    assignment[order[:chosen]] = 1
    if subset.low_format:
        assignment[order[total - chosen :]] = -1
    return assignment.reshape(rows, groups_per_row)


def _group_scores(tensor, scores, group_size, rows, groups_per_row) -> torch.Tensor:
    channels = tensor.shape[-1]
    if scores is None:
        scores = tensor.detach().to(torch.float64) ** 2
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if tuple(scores.shape) == (rows, groups_per_row):
        return scores
    if tuple(scores.shape) != tuple(tensor.shape):
        raise ValueError(
            f"scores for salient groups need the tensor's shape {tuple(tensor.shape)} or ({rows}, {groups_per_row}), got {tuple(scores.shape)}"
        )
    padded = torch.zeros(rows, groups_per_row * group_size, dtype=torch.float64)
    padded[:, :channels] = scores.reshape(rows, channels)
    return padded.reshape(rows, groups_per_row, group_size).sum(dim=-1)


# Calibration scores.


def channel_amax(activations: torch.Tensor) -> torch.Tensor:
    """Return the largest |x| of each channel (last axis) over calibration activations, Atom's outlier ranking."""
    return activations.detach().abs().reshape(-1, activations.shape[-1]).amax(dim=0)


def hessian_diagonal(activations: torch.Tensor) -> torch.Tensor:
    """Return diag(X^T X) of calibration inputs X [tokens, channels], the diagonal of a linear layer's layer-wise Hessian up to a factor 2."""
    flat = activations.detach().reshape(-1, activations.shape[-1]).to(torch.float64)
    return (flat * flat).sum(dim=0)


def pca_basis(activations: torch.Tensor) -> torch.Tensor:
    """Return the orthonormal principal directions of calibration activations [tokens, channels], highest variance first (ResQ's projection)."""
    flat = activations.detach().reshape(-1, activations.shape[-1]).to(torch.float64)
    centered = flat - flat.mean(dim=0, keepdim=True)
    covariance = centered.T @ centered / max(1, flat.shape[0] - 1)
    _, vectors = torch.linalg.eigh(covariance)
    # eigh returns ascending eigenvalues; flip so the highest variance comes first.
    return vectors.flip(dims=(1,)).to(activations.dtype)


def weight_error_scores(weight: torch.Tensor, fmt: str, input_hessian_diagonal: torch.Tensor, *, rounding: str = "nearest_even") -> torch.Tensor:
    """Return h_j * (w_ij - q(w_ij))^2 per element, the error each weight adds to the layer output weighted by the Hessian diagonal.

    Summed over rows, it ranks input columns (OWQ's weak columns). Summed
    per group, it ranks groups (SliM-LLM-style salience). As it is, it
    ranks elements for sparse outliers.
    """
    quantized = formats.qdq(weight.detach().contiguous(), fmt, rounding=rounding, seed=0)
    error = (weight.detach().to(torch.float64) - quantized.to(torch.float64)) ** 2
    return error * input_hessian_diagonal.to(torch.float64)
