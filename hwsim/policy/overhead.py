"""Storage of a tensor under a quantizer, split into elements, scales, zero points, outliers and indices.

`format_bits` splits what `Format.storage_bits(shape, axis)` counts; the
two agree bit for bit unless `GroupMetadata` replaces the format's scale
storage. `quantizer_bits` adds a quantizer's subset and KV window, and
`parameter_bits` sums a policy over the parameters of a model, so
"bits per parameter" counts every overhead a scheme stores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from hwsim import formats
from hwsim.policy.quantizer import GroupMetadata, Quantizer


@dataclass(frozen=True)
class BitsBreakdown:
    """Bits to store `elements` elements, by what they hold.

    element_bits: codes of the dense part (padding of partial groups included).
    scale_bits: scales of the dense part, per-tensor scales, dialect
        selectors, and lookup tables that stand in for scales.
    zero_point_bits: zero points of the dense part.
    outlier_bits: everything kept at higher precision, with its own scales:
        outlier channels, output features, a PCA subspace, sparse outlier
        values, salient groups, and the full-precision window of a KV cache.
    index_bits: positions of the higher-precision parts (channel and row
        lists, sparse outlier indices, per-group format selectors).
    """

    elements: int = 0
    element_bits: int = 0
    scale_bits: int = 0
    zero_point_bits: int = 0
    outlier_bits: int = 0
    index_bits: int = 0

    @property
    def total_bits(self) -> int:
        return self.element_bits + self.scale_bits + self.zero_point_bits + self.outlier_bits + self.index_bits

    @property
    def bits_per_element(self) -> float:
        """Total bits divided by elements; raises for an empty tensor."""
        if self.elements == 0:
            raise ValueError("bits per element of an empty tensor is undefined: the breakdown counts 0 elements")
        return self.total_bits / self.elements

    def __add__(self, other: BitsBreakdown) -> BitsBreakdown:
        return BitsBreakdown(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def times(self, copies: int) -> BitsBreakdown:
        """Return the breakdown of `copies` identical tensors."""
        return BitsBreakdown(*(getattr(self, f.name) * copies for f in fields(self)))

    def as_dict(self) -> dict[str, float]:
        """Return every field, the total and bits per element, for tables."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["total_bits"] = self.total_bits
        row["bits_per_element"] = self.bits_per_element if self.elements else 0.0
        return row


def _rows_and_length(shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    shape = shape or (1,)
    length = shape[axis % len(shape)]
    rows = math.prod(shape) // length if length else 0
    return rows, length


def format_bits(fmt, shape: tuple[int, ...], axis: int = -1, metadata: GroupMetadata | None = None) -> BitsBreakdown:
    """Split the storage of a tensor of `shape` in format `fmt` (a name or spec), groups along `axis`."""
    spec = formats.get(fmt)
    shape = tuple(int(s) for s in shape)
    elements = math.prod(shape) if shape else 1
    if elements == 0:
        return BitsBreakdown()
    if spec.kind in ("int", "float", "codebook"):
        return BitsBreakdown(elements, elements * spec.width)

    rows, length = _rows_and_length(shape, axis)
    if spec.kind == "dialect":
        per_row = -(-length // spec.block_size)
        groups = rows * per_row
        breakdown = BitsBreakdown(elements, groups * spec.block_size * spec.width, groups * spec.overhead_bits_per_group)
        assert breakdown.total_bits == spec.storage_bits(shape, axis)
        return breakdown

    if spec.granularity == "tensor":
        groups, padded = 1, length
    elif spec.granularity in ("channel", "token"):
        groups, padded = rows, length
    else:
        per_row = -(-length // spec.block_size)
        groups, padded = rows * per_row, per_row * spec.block_size

    element_bits = rows * padded * spec.element.width
    tensor_scale_bits = spec.tensor_scale.width if spec.tensor_scale is not None else 0
    if metadata is None:
        scale_bits = groups * spec.scale_storage_bits + tensor_scale_bits
        zero_bits = groups * spec.zero_point_bits
        breakdown = BitsBreakdown(elements, element_bits, scale_bits, zero_bits)
        assert breakdown.total_bits == spec.storage_bits(shape, axis)
        return breakdown

    scale_bits, zero_bits = metadata.bits_for_groups(groups)
    return BitsBreakdown(elements, element_bits, scale_bits + tensor_scale_bits, zero_bits)


def _high_precision(fmt: str, shape: tuple[int, ...], axis: int) -> BitsBreakdown:
    """Count a part kept at higher precision, all of whose storage is outlier bits."""
    part = format_bits(fmt, shape, axis)
    return BitsBreakdown(part.elements, outlier_bits=part.total_bits)


def _group_count(fmt, shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    """Return (groups, group size) of a grouped format on `shape`."""
    spec = formats.get(fmt)
    rows, length = _rows_and_length(shape, axis)
    per_row = -(-length // spec.group_size)
    return rows * per_row, spec.group_size


def quantizer_bits(quantizer: Quantizer, shape: tuple[int, ...], full_precision_format: str = "fp16", *, include_index: bool = True) -> BitsBreakdown:
    """Count the storage of a tensor of `shape` under `quantizer`, its subset and its KV window included.

    The subset splits the last axis (input channels) or, for output
    features, the second-to-last axis (rows of a weight [out, in]). A KV
    window keeps the latest shape[-2] tokens of a (batch, heads, tokens,
    head_dim) cache in `full_precision_format`. include_index=False leaves
    out the subset's index bits, for an activation whose channel list is
    fixed per layer and stored once, with the weights.
    """
    shape = tuple(int(s) for s in shape)
    axis = quantizer.axis
    if quantizer.kv_window:
        if len(shape) < 2:
            raise ValueError(f"a KV window needs a (..., tokens, head_dim) shape, got {shape}; pass the cache shape")
        tokens = shape[-2]
        window = min(quantizer.kv_window, tokens)
        recent = _high_precision(full_precision_format, shape[:-2] + (window, shape[-1]), -1)
        rest = Quantizer(quantizer.format, quantizer.axis, quantizer.rounding, 0, quantizer.subset, quantizer.metadata)
        older = quantizer_bits(rest, shape[:-2] + (tokens - window, shape[-1]), full_precision_format, include_index=include_index)
        return older + recent
    subset = quantizer.subset
    if subset is None:
        return format_bits(quantizer.format, shape, axis, quantizer.metadata)
    if not shape:
        raise ValueError(f"a {subset.kind} subset needs a tensor with at least one axis, got shape {shape}")
    if subset.kind in ("outlier_channels", "pca_subspace"):
        breakdown = _channel_split(quantizer, shape)
    elif subset.kind == "output_features":
        breakdown = _row_split(quantizer, shape)
    elif subset.kind == "sparse_outliers":
        breakdown = _sparse_outliers(quantizer, shape)
    else:
        breakdown = _salient_groups(quantizer, shape)
    if include_index:
        return breakdown
    return BitsBreakdown(breakdown.elements, breakdown.element_bits, breakdown.scale_bits, breakdown.zero_point_bits, breakdown.outlier_bits)


def _channel_split(quantizer: Quantizer, shape: tuple[int, ...]) -> BitsBreakdown:
    subset = quantizer.subset
    channels = shape[-1]
    chosen = subset.size_of(channels)
    dense = format_bits(quantizer.format, shape[:-1] + (channels - chosen,), quantizer.axis, quantizer.metadata)
    high = _high_precision(subset.format, shape[:-1] + (chosen,), quantizer.axis)
    index = BitsBreakdown(index_bits=chosen * subset.index_bits_for(channels))
    return dense + high + index


def _row_split(quantizer: Quantizer, shape: tuple[int, ...]) -> BitsBreakdown:
    subset = quantizer.subset
    if len(shape) < 2:
        raise ValueError(f"an output_features subset needs a weight [out, in], got shape {shape}")
    rows = shape[-2]
    chosen = subset.size_of(rows)
    outer = shape[:-2]
    dense = format_bits(quantizer.format, outer + (rows - chosen, shape[-1]), quantizer.axis, quantizer.metadata)
    high = _high_precision(subset.format, outer + (chosen, shape[-1]), quantizer.axis)
    index = BitsBreakdown(index_bits=math.prod(outer) * chosen * subset.index_bits_for(rows))
    return dense + high + index


def _sparse_outliers(quantizer: Quantizer, shape: tuple[int, ...]) -> BitsBreakdown:
    subset = quantizer.subset
    elements = math.prod(shape)
    chosen = subset.size_of(elements)
    # The dense part keeps a code for every element, outliers included, as SpQR and SqueezeLLM store it.
    dense = format_bits(quantizer.format, shape, quantizer.axis, quantizer.metadata)
    values = formats.get(subset.format).storage_bits((chosen,)) if chosen else 0
    return dense + BitsBreakdown(outlier_bits=values, index_bits=chosen * subset.index_bits_for(elements))


def _salient_groups(quantizer: Quantizer, shape: tuple[int, ...]) -> BitsBreakdown:
    subset = quantizer.subset
    groups, group_size = _group_count(quantizer.format, shape, quantizer.axis)
    raised = subset.size_of(groups)
    lowered = raised if subset.low_format else 0
    elements = math.prod(shape)
    # Groups are counted whole, padding included, as the formats count a partial group.
    dense = format_bits(quantizer.format, (groups - raised - lowered, group_size), -1, quantizer.metadata)
    low = format_bits(subset.low_format, (lowered, group_size), -1, quantizer.metadata) if lowered else BitsBreakdown()
    high = _high_precision(subset.format, (raised, group_size), -1)
    index = BitsBreakdown(index_bits=groups * subset.index_bits_for(groups))
    parts = dense + low + high + index
    return BitsBreakdown(elements, parts.element_bits, parts.scale_bits, parts.zero_point_bits, parts.outlier_bits, parts.index_bits)
