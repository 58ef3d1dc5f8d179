"""The quantizer a bit policy gives one tensor, with an optional higher-precision subset.

A quantizer names a format that `hwsim.formats.get` resolves ("int4_g128",
"mxfp4"), and the granularity is part of that name. `axis` is the axis
that the format's groups run along. It is -1 for a weight [out, in]
(groups along the input features, a scale per output channel) and for
activations (a scale per token). It is -2 for the keys of a KV cache
written (batch, heads, tokens, head_dim) when each channel gets its scale
over tokens, as KIVI does.

A `Subset` keeps part of the tensor in a second, higher-precision format:

- "outlier_channels": `count` or `fraction` of the input channels (last
  axis), chosen from calibration data (Atom: 128 channels in int8; OWQ:
  weak weight columns in fp16). Each chosen channel costs `index_bits`
  (default ceil(log2(channels))) for the reorder list.
- "output_features": `count` or `fraction` of the output features, the rows
  of a weight [out, in] (MixLLM: about 10% in 8 bits). Each chosen row costs
  `index_bits` (default ceil(log2(rows))).
- "pca_subspace": `fraction` of the input dimension, the directions of
  highest activation variance, after projecting on the principal
  components (ResQ: 1/8 of the hidden size in 8 bits). The projection is
  folded into the weights, so it costs no storage here.
- "sparse_outliers": `fraction` of the elements kept in `format` (fp16) on
  top of the dense part, each with `index_bits` of position (SpQR counts 16
  bits of value and 16 of column index per outlier).
- "salient_groups": `fraction` of the scale groups in `format` and, when
  `low_format` is set, as many in `low_format`, so the average element
  width stays that of the dense format (SliM-LLM). Each group stores
  `index_bits` (default: 2 with `low_format`, else 1) naming its format.

`GroupMetadata` describes scales and zero points stored differently from the
format's own FP16 scale: quantized statistics with a second level (SpQR),
an FP16 minimum as zero point (KIVI), or a per-channel lookup table in place
of a scale (SqueezeLLM). It changes the storage count only; qdq still uses
the format's scales.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from hwsim import formats
from hwsim.formats.params import ROUNDING_MODES
from hwsim.policy.errors import PolicyError

SubsetKind = Literal["outlier_channels", "output_features", "pca_subspace", "sparse_outliers", "salient_groups"]
SUBSET_KINDS = ("outlier_channels", "output_features", "pca_subspace", "sparse_outliers", "salient_groups")

# Selection rules of each subset kind, the first entry being the default:
# - activation_amax: largest calibration amax per input channel (Atom);
# - hessian_diagonal: largest diag(X^T X)-weighted quantization error (OWQ, SliM-LLM);
# - fisher: largest squared-gradient-weighted error (MixLLM, SqueezeLLM);
# - weight_magnitude: largest |w|, needing no calibration data;
# - activation_variance: principal components of the calibration activations (ResQ).
SELECTIONS = {
    "outlier_channels": ("activation_amax", "hessian_diagonal", "weight_magnitude"),
    "output_features": ("fisher", "hessian_diagonal", "weight_magnitude"),
    "pca_subspace": ("activation_variance",),
    "sparse_outliers": ("hessian_diagonal", "fisher", "weight_magnitude"),
    "salient_groups": ("hessian_diagonal", "fisher", "weight_magnitude"),
}
# Bits of one sparse outlier's position when the policy gives none: a 16-bit
# column index, as SpQR's get_average_number_of_bits counts (32 bits per
# outlier, 16 of them the fp16 value).
DEFAULT_SPARSE_INDEX_BITS = 16
_COUNTED_KINDS = ("outlier_channels", "output_features", "pca_subspace")


def check_format(name: object, field: str) -> str:
    """Return the format name after checking that `hwsim.formats.get` resolves it."""
    if not isinstance(name, str) or not name.strip():
        raise PolicyError(f"invalid {field}={name!r}: give a format name such as 'int4_g128' or 'mxfp4'", field=field)
    try:
        formats.get(name)
    except (KeyError, ValueError) as error:
        message = error.args[0] if error.args else str(error)
        raise PolicyError(f"invalid {field}={name!r}: {message}", field=field) from None
    return name


def _check_int(value: object, field: str, low: int, high: int | None, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"of {low} or more"
        raise PolicyError(f"invalid {field}={value!r}: give an integer {bounds}; {fix}", field=field)
    return value


@dataclass(frozen=True)
class Subset:
    """Part of a tensor kept in a higher-precision format (see the module docstring for each kind)."""

    kind: SubsetKind
    format: str
    count: int | None = None
    fraction: float | None = None
    selection: str = ""
    index_bits: int | None = None
    low_format: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SUBSET_KINDS:
            raise PolicyError(f"invalid kind={self.kind!r}: choose one of {', '.join(SUBSET_KINDS)}", field="kind")
        check_format(self.format, "format")
        self._check_size()
        if not self.selection:
            object.__setattr__(self, "selection", SELECTIONS[self.kind][0])
        if self.selection not in SELECTIONS[self.kind]:
            raise PolicyError(
                f"invalid selection={self.selection!r} for a {self.kind} subset: choose one of {', '.join(SELECTIONS[self.kind])}",
                field="selection",
            )
        if self.index_bits is not None:
            _check_int(self.index_bits, "index_bits", 0, 64, "index_bits is the storage of one chosen channel, row, element or group")
        if self.low_format is not None:
            if self.kind != "salient_groups":
                raise PolicyError(f"invalid low_format={self.low_format!r}: only a salient_groups subset has a lower format; drop the field", field="low_format")
            check_format(self.low_format, "low_format")

    def _check_size(self) -> None:
        if self.count is not None and self.fraction is not None:
            raise PolicyError(f"a {self.kind} subset takes count or fraction, not both (count={self.count}, fraction={self.fraction}); drop one", field="count")
        if self.count is not None:
            if self.kind not in _COUNTED_KINDS:
                raise PolicyError(f"invalid count={self.count!r}: a {self.kind} subset is sized by fraction; give fraction instead", field="count")
            _check_int(self.count, "count", 1, None, "count is the number of channels or rows kept at higher precision")
            return
        if self.fraction is None:
            hint = "count (such as 128) or fraction (such as 0.1)" if self.kind in _COUNTED_KINDS else "fraction (such as 0.01)"
            raise PolicyError(f"a {self.kind} subset needs its size: give {hint}", field="fraction")
        high = 0.5 if self.kind == "salient_groups" else 1.0
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) or not 0.0 < self.fraction < high:
            raise PolicyError(f"invalid fraction={self.fraction!r} for a {self.kind} subset: give a number between 0 and {high}, exclusive", field="fraction")
        object.__setattr__(self, "fraction", float(self.fraction))

    def size_of(self, length: int) -> int:
        """Channels, rows or groups chosen out of `length`: `count` (at most `length`) or round(fraction * length)."""
        if self.count is not None:
            return min(self.count, length)
        return min(length, round(self.fraction * length))

    def index_bits_for(self, length: int) -> int:
        """Bits to store the position of one chosen member out of `length`."""
        if self.index_bits is not None:
            return self.index_bits
        if self.kind == "sparse_outliers":
            return DEFAULT_SPARSE_INDEX_BITS
        if self.kind == "salient_groups":
            return 2 if self.low_format else 1
        if self.kind == "pca_subspace":
            return 0
        return max(1, math.ceil(math.log2(length))) if length > 1 else 0


@dataclass(frozen=True)
class GroupMetadata:
    """Storage of each scale group's scale and zero point, where it differs from the format's own.

    scale_bits and zero_point_bits are stored once per group of the format.
    scale_bits may also be a whole per-group lookup table (SqueezeLLM: 8
    fp16 levels per output channel, 128 bits). With second_level_group_size
    G2 > 0, every G2 groups share a second-level scale and zero point of
    second_level_bits each for their scales, and another pair for their
    zero points (SpQR: 3-bit statistics, G2 = 16, 16-bit second level).
    """

    scale_bits: int
    zero_point_bits: int = 0
    second_level_group_size: int = 0
    second_level_bits: int = 16

    def __post_init__(self) -> None:
        _check_int(self.scale_bits, "scale_bits", 0, 4096, "scale_bits is the storage of one group's scale or lookup table")
        _check_int(self.zero_point_bits, "zero_point_bits", 0, 64, "zero_point_bits is the storage of one group's zero point")
        _check_int(self.second_level_group_size, "second_level_group_size", 0, None, "0 means no second level")
        _check_int(self.second_level_bits, "second_level_bits", 1, 64, "second_level_bits is the width of each second-level statistic")

    def bits_for_groups(self, groups: int) -> tuple[int, int]:
        """Return (scale bits, zero-point bits) of `groups` groups, second level included."""
        scale = groups * self.scale_bits
        zero = groups * self.zero_point_bits
        if self.second_level_group_size:
            second_groups = -(-groups // self.second_level_group_size)
            # Each second-level group stores a scale and a zero point for the first-level scales...
            scale += second_groups * 2 * self.second_level_bits
            # ...and another pair for the first-level zero points, when there are any.
            if self.zero_point_bits:
                zero += second_groups * 2 * self.second_level_bits
        return scale, zero


@dataclass(frozen=True)
class Quantizer:
    """The qdq one tensor gets: a format, the axis its groups run along, a rounding mode and options.

    kv_window: the most recent tokens of a KV cache kept in full precision
        (KIVI's residual); only for the kv_key and kv_value roles.
    subset: a part of the tensor in a higher-precision format.
    metadata: scale and zero-point storage that differs from the format's.
    """

    format: str
    axis: int = -1
    rounding: str = "nearest_even"
    kv_window: int = 0
    subset: Subset | None = None
    metadata: GroupMetadata | None = None

    def __post_init__(self) -> None:
        check_format(self.format, "format")
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise PolicyError(f"invalid axis={self.axis!r}: give the axis the groups run along, such as -1", field="axis")
        rounding = str(self.rounding).lower().replace("-", "_")
        if rounding not in ROUNDING_MODES:
            raise PolicyError(f"invalid rounding={self.rounding!r}: choose one of {', '.join(ROUNDING_MODES)}", field="rounding")
        object.__setattr__(self, "rounding", rounding)
        _check_int(self.kv_window, "kv_window", 0, None, "kv_window is the number of recent tokens kept in full precision")
        if self.subset is not None and not isinstance(self.subset, Subset):
            raise PolicyError(f"invalid subset={self.subset!r}: give a Subset or None", field="subset")
        if self.metadata is not None:
            if not isinstance(self.metadata, GroupMetadata):
                raise PolicyError(f"invalid metadata={self.metadata!r}: give a GroupMetadata or None", field="metadata")
            if self.spec.kind != "scaled":
                raise PolicyError(
                    f"invalid metadata for format {self.format!r}: it has no scale groups; use a scaled format such as 'int3_g16'",
                    field="metadata",
                )
        if self.subset is not None and self.subset.kind == "salient_groups":
            self._check_salient_group_formats()

    def _check_salient_group_formats(self) -> None:
        base_group = getattr(self.spec, "group_size", None)
        if base_group is None:
            raise PolicyError(
                f"a salient_groups subset needs a grouped format, got {self.format!r}; use one such as 'int3_g128'", field="format"
            )
        for field in ("format", "low_format"):
            name = getattr(self.subset, field)
            if name is not None and getattr(formats.get(name), "group_size", None) != base_group:
                raise PolicyError(
                    f"invalid subset.{field}={name!r}: salient groups must use the dense format's group size {base_group}, "
                    f"such as 'int4_g{base_group}'",
                    field=f"subset.{field}",
                )

    @property
    def spec(self):
        """The format spec that `hwsim.formats.get(format)` returns."""
        return formats.get(self.format)

    @property
    def granularity(self) -> str:
        """Scale granularity of the format: tensor, channel, token, group, block, or "element" for an unscaled format."""
        return getattr(self.spec, "granularity", "element")
