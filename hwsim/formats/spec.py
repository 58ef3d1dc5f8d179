"""Format specs: frozen dataclasses with primitive fields and derived properties.

An *element format* turns one real number into one code: `IntFormat`,
`FloatFormat` or `CodebookFormat`. A `ScaledFormat` groups elements along an
axis and stores one scale per group (per tensor, per channel or token, per
group of G, or per block), optionally with a second-level per-tensor scale, as
NVFP4 does. `DialectFormat` is a scaled format whose block also picks one of
several element codebooks.

Every derived quantity (max normal, value table, bits per element) is a
property computed from the fields, so one spec is the single source of truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, Union

import numpy as np

SpecialValues = Literal["ieee", "fn", "fnuz", "none"]
ScaleRule = Literal["ocp", "ceil", "amax", "static"]
Granularity = Literal["tensor", "channel", "token", "group", "block"]

SPECIAL_VALUE_POLICIES = ("ieee", "fn", "fnuz", "none")
SCALE_RULES = ("ocp", "ceil", "amax", "static")
GRANULARITIES = ("tensor", "channel", "token", "group", "block")
# Element codes are stored as uint8 or uint16, so no element format is wider.
MAX_ELEMENT_BITS = 16


def _check_int(name: str, value: object, low: int, high: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"invalid {name}={value!r}: must be an integer from {low} to {high}; {fix}")


class _ElementStorage:
    """Storage accounting shared by the element formats, which have no scales."""

    def storage_bits(self, shape: tuple[int, ...], axis: int = -1) -> int:
        """Bits to store a tensor of `shape`, one code per element."""
        return math.prod(int(s) for s in shape) * self.width


@dataclass(frozen=True)
class IntFormat(_ElementStorage):
    """Two's-complement or unsigned integer codes, optionally fixed point.

    A code c has the value c * 2**-frac_bits. Signed formats store codes in
    two's complement; `restricted=True` drops the most negative code, so the
    range is symmetric, +-(2**(bits-1) - 1). `asymmetric=True` makes the codes
    unsigned with a zero point per scale group (the zero point is stored with
    the scale). Integer formats have no Inf or NaN, so they always saturate.
    """

    bits: int
    signed: bool = True
    restricted: bool = False
    asymmetric: bool = False
    frac_bits: int = 0
    name: str = ""

    def __post_init__(self) -> None:
        _check_int("bits", self.bits, 2, MAX_ELEMENT_BITS, "integer formats take 2 to 16 bits")
        _check_int("frac_bits", self.frac_bits, 0, self.bits, "frac_bits is the number of fraction bits of the fixed-point code")
        if self.asymmetric and self.signed:
            raise ValueError(
                f"invalid integer format {self.name or self.bits}: asymmetric=True uses unsigned codes with a zero point; pass signed=False"
            )
        if self.restricted and not self.signed:
            raise ValueError(f"invalid integer format {self.name or self.bits}: restricted=True applies to signed formats only")

    kind = "int"

    @property
    def width(self) -> int:
        """Bits of one code."""
        return self.bits

    @property
    def code_min(self) -> int:
        """Smallest integer value a code stands for (before 2**-frac_bits)."""
        if not self.signed:
            return 0
        return -(2 ** (self.bits - 1)) + (1 if self.restricted else 0)

    @property
    def code_max(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def max_value(self) -> float:
        return math.ldexp(self.code_max, -self.frac_bits)

    @property
    def min_value(self) -> float:
        return math.ldexp(self.code_min, -self.frac_bits)

    @property
    def max_normal(self) -> float:
        return self.max_value

    @property
    def min_normal(self) -> float:
        """Smallest positive value, one step of the grid."""
        return math.ldexp(1, -self.frac_bits)

    @property
    def min_subnormal(self) -> float:
        return self.min_normal

    @property
    def emax(self) -> int:
        """floor(log2(max_value)), the element exponent the OCP MX scale rule subtracts."""
        return math.floor(math.log2(self.max_value))

    @property
    def has_inf(self) -> bool:
        return False

    @property
    def has_nan(self) -> bool:
        return False

    @property
    def is_signed(self) -> bool:
        return self.signed

    @property
    def mantissa_bits(self) -> int:
        """Magnitude bits, the operand width of a multiplier (sign excluded)."""
        return self.bits - 1 if self.signed else self.bits

    @property
    def exponent_bits(self) -> int:
        return 0

    @property
    def bits_per_element(self) -> float:
        return float(self.bits)

    def code_to_int(self, codes: np.ndarray) -> np.ndarray:
        """Integer value (before 2**-frac_bits) of stored codes, sign-extended for signed formats."""
        c = np.asarray(codes).astype(np.int64)
        if self.signed:
            c = np.where(c >= 2 ** (self.bits - 1), c - 2**self.bits, c)
        return c

    @cached_property
    def values(self) -> np.ndarray:
        """Value of every code 0 .. 2**bits - 1, float64; the unused most negative code of a restricted format is NaN."""
        table = np.ldexp(self.code_to_int(np.arange(2**self.bits)).astype(np.float64), -self.frac_bits)
        if self.restricted:
            table[2 ** (self.bits - 1)] = np.nan
        return table


@dataclass(frozen=True)
class FloatFormat(_ElementStorage):
    """Sign, exponent and mantissa fields, as IEEE 754 and OCP minifloats.

    `special` sets what the top of the code space means:
    - "ieee": exponent all ones is Inf (mantissa 0) or NaN;
    - "fn": finite, one NaN per sign with all exponent and mantissa bits set
      (OCP E4M3, and UE4M3 and E8M0 when unsigned);
    - "fnuz": finite, no negative zero, code 0x80 (sign only) is the one NaN;
    - "none": every code is a finite number (FP6, FP4).
    `subnormals=False` makes exponent field 0 an ordinary exponent with an
    implicit leading one, so the format has no zero: E8M0.
    """

    exponent_bits: int
    mantissa_bits: int
    bias: int
    special: SpecialValues = "ieee"
    signed: bool = True
    subnormals: bool = True
    name: str = ""

    kind = "float"

    def __post_init__(self) -> None:
        label = self.name or f"e{self.exponent_bits}m{self.mantissa_bits}"
        _check_int("exponent_bits", self.exponent_bits, 1, 11, f"format {label} needs at least one exponent bit; use IntFormat for fixed point")
        _check_int("mantissa_bits", self.mantissa_bits, 0, 52, f"format {label}")
        if self.special not in SPECIAL_VALUE_POLICIES:
            raise ValueError(f"invalid special={self.special!r} for format {label}: choose one of {', '.join(SPECIAL_VALUE_POLICIES)}")
        if self.special == "fnuz" and not self.signed:
            raise ValueError(f"invalid format {label}: 'fnuz' puts NaN at the negative-zero code, so it needs a sign bit")
        if self.width > 32:
            raise ValueError(f"invalid format {label}: {self.width} bits; at most 32 bits are supported")
        if not self.subnormals and self.special in ("ieee", "fnuz"):
            raise ValueError(f"invalid format {label}: subnormals=False is supported with special='fn' or 'none' only")

    @property
    def width(self) -> int:
        return int(self.signed) + self.exponent_bits + self.mantissa_bits

    @property
    def bits(self) -> int:
        return self.width

    @property
    def is_signed(self) -> bool:
        return self.signed

    @property
    def has_inf(self) -> bool:
        return self.special == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.special != "none"

    @property
    def has_negative_zero(self) -> bool:
        return self.signed and self.subnormals and self.special != "fnuz"

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number (unbiased)."""
        return (1 if self.subnormals else 0) - self.bias

    @property
    def max_magnitude_code(self) -> int:
        """Largest code, sign bit clear, that is a finite number."""
        all_ones = 2 ** (self.exponent_bits + self.mantissa_bits) - 1
        if self.special == "ieee":
            return all_ones - 2**self.mantissa_bits  # exponent all ones is Inf/NaN
        if self.special == "fn":
            return all_ones - 1
        return all_ones

    @property
    def emax(self) -> int:
        """Exponent of the largest normal number (unbiased)."""
        return (self.max_magnitude_code >> self.mantissa_bits) - self.bias

    @property
    def max_normal(self) -> float:
        return float(self._magnitude(self.max_magnitude_code))

    @property
    def min_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value; equal to min_normal when the format has no subnormals."""
        if not self.subnormals:
            return self.min_normal
        return math.ldexp(1.0, self.emin - self.mantissa_bits)

    @property
    def bits_per_element(self) -> float:
        return float(self.width)

    @property
    def sign_mask(self) -> int:
        return (1 << (self.exponent_bits + self.mantissa_bits)) if self.signed else 0

    @property
    def nan_code(self) -> int:
        """Code that encoding a positive NaN produces; -1 when the format has no NaN."""
        if self.special == "none":
            return -1
        if self.special == "fnuz":
            return self.sign_mask
        if self.special == "fn":
            return 2 ** (self.exponent_bits + self.mantissa_bits) - 1
        # IEEE: the canonical quiet NaN, exponent all ones and the top mantissa bit set.
        quiet_bit = 2 ** (self.mantissa_bits - 1) if self.mantissa_bits > 0 else 0
        return ((2**self.exponent_bits - 1) << self.mantissa_bits) | quiet_bit

    @property
    def inf_code(self) -> int:
        """Code of +Inf; -1 when the format has no Inf."""
        if self.special != "ieee":
            return -1
        return (2**self.exponent_bits - 1) << self.mantissa_bits

    def _magnitude(self, magnitude_code: int) -> float:
        exponent_field = magnitude_code >> self.mantissa_bits
        mantissa_field = magnitude_code & (2**self.mantissa_bits - 1)
        if exponent_field == 0 and self.subnormals:
            return math.ldexp(mantissa_field, self.emin - self.mantissa_bits)
        return math.ldexp(2**self.mantissa_bits + mantissa_field, exponent_field - self.bias - self.mantissa_bits)

    def value_of(self, code: int) -> float:
        """Value of one code, with NaN and +-Inf where the special-value policy puts them."""
        magnitude_code = code & (self.sign_mask - 1) if self.signed else code
        negative = bool(self.signed and code & self.sign_mask)
        if self.special == "fnuz" and code == self.sign_mask:
            return math.nan
        exponent_all_ones = (magnitude_code >> self.mantissa_bits) == 2**self.exponent_bits - 1
        if self.special == "ieee" and exponent_all_ones:
            if magnitude_code & (2**self.mantissa_bits - 1):
                return math.nan
            return -math.inf if negative else math.inf
        if self.special == "fn" and magnitude_code == 2 ** (self.exponent_bits + self.mantissa_bits) - 1:
            return math.nan
        value = self._magnitude(magnitude_code)
        return -value if negative else value

    @cached_property
    def values(self) -> np.ndarray:
        """Value of every code, float64; only for formats of 16 bits or fewer."""
        if self.width > MAX_ELEMENT_BITS:
            raise ValueError(f"format {self.name}: a value table of all 2**{self.width} codes is too large; decode with hwsim.decode")
        codes = np.arange(2**self.width, dtype=np.int64)
        return np.array([self.value_of(int(c)) for c in codes], dtype=np.float64)


@dataclass(frozen=True)
class CodebookFormat(_ElementStorage):
    """A lookup table of up to 256 levels; code i stands for levels[i].

    Levels must be finite and strictly increasing, so encoding is a search
    for the nearest level. NF4 is one such table.
    """

    levels: tuple[float, ...]
    name: str = ""

    kind = "codebook"

    def __post_init__(self) -> None:
        label = self.name or "codebook"
        n = len(self.levels)
        if not 2 <= n <= 256:
            raise ValueError(f"invalid codebook {label}: {n} levels; a codebook takes 2 to 256 levels")
        levels = np.asarray(self.levels, dtype=np.float64)
        if not np.all(np.isfinite(levels)):
            raise ValueError(f"invalid codebook {label}: levels must be finite, got {self.levels}")
        if not np.all(np.diff(levels) > 0):
            raise ValueError(f"invalid codebook {label}: levels must be strictly increasing; sort them and drop duplicates")

    @property
    def width(self) -> int:
        return max(1, math.ceil(math.log2(len(self.levels))))

    @property
    def bits(self) -> int:
        return self.width

    @property
    def max_normal(self) -> float:
        return float(max(abs(self.levels[0]), abs(self.levels[-1])))

    @property
    def max_value(self) -> float:
        return self.max_normal

    @property
    def min_normal(self) -> float:
        return float(min(abs(v) for v in self.levels if v != 0))

    @property
    def min_subnormal(self) -> float:
        return self.min_normal

    @property
    def emax(self) -> int:
        return math.floor(math.log2(self.max_normal))

    @property
    def has_inf(self) -> bool:
        return False

    @property
    def has_nan(self) -> bool:
        return False

    @property
    def is_signed(self) -> bool:
        return self.levels[0] < 0

    @property
    def mantissa_bits(self) -> int:
        """Operand width of a multiplier after the table lookup, taken as the code width."""
        return self.width

    @property
    def exponent_bits(self) -> int:
        return 0

    @property
    def bits_per_element(self) -> float:
        return float(self.width)

    @cached_property
    def values(self) -> np.ndarray:
        table = np.full(2**self.width, np.nan)
        table[: len(self.levels)] = self.levels
        return table


ElementFormat = Union[IntFormat, FloatFormat, CodebookFormat]


@dataclass(frozen=True)
class ScaledFormat:
    """Elements in groups along an axis, each group with one scale.

    granularity:
    - "tensor": one scale for the whole tensor;
    - "channel" and "token": one scale per vector along the quantization axis
      (per output channel of a weight [out, in] with axis=-1, per token of an
      activation [tokens, hidden]);
    - "group" and "block": one scale per `block_size` consecutive elements along
      the axis. A dimension that is not a multiple is padded, and the padding
      counts in storage.

    scale_rule:
    - "ocp": shared exponent floor(log2(amax)) - element emax (OCP MX v1.0, 6.3),
      for power-of-two scale formats;
    - "ceil": shared exponent ceil(log2(amax / element max)), the round-up rule;
    - "amax": scale = amax / element max, rounded into the scale format;
    - "static": as "amax" with an amax given by the caller from calibration.

    `tensor_scale` is a second-level scale format (FP32 for NVFP4); its value is
    448 * 6 / amax_tensor, and block scales are computed relative to it.
    """

    element: ElementFormat
    scale: FloatFormat
    granularity: Granularity = "block"
    block_size: int = 32
    scale_rule: ScaleRule = "ocp"
    tensor_scale: FloatFormat | None = None
    name: str = ""

    kind = "scaled"

    def __post_init__(self) -> None:
        label = self.name or "scaled format"
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"invalid granularity={self.granularity!r} for {label}: choose one of {', '.join(GRANULARITIES)}")
        if self.granularity in ("group", "block"):
            if isinstance(self.block_size, bool) or not isinstance(self.block_size, (int, np.integer)) or self.block_size <= 0:
                raise ValueError(f"invalid block_size={self.block_size!r} for {label}: must be a positive integer such as 32")
        if self.scale_rule not in SCALE_RULES:
            raise ValueError(f"invalid scale_rule={self.scale_rule!r} for {label}: choose one of {', '.join(SCALE_RULES)}")
        if self.scale_rule in ("ocp", "ceil") and not _is_power_of_two_scale(self.scale):
            raise ValueError(
                f"invalid {label}: scale_rule={self.scale_rule!r} yields power-of-two scales, so the scale format must be E8M0-like "
                f"(no mantissa bits), got {self.scale.name or self.scale}; use scale_rule='amax' for a scale with mantissa bits"
            )
        if isinstance(self.element, IntFormat) and self.element.asymmetric and self.scale_rule in ("ocp", "ceil"):
            raise ValueError(f"invalid {label}: an asymmetric integer element needs scale_rule='amax' or 'static'")

    @property
    def width(self) -> int:
        return self.element.width

    @property
    def bits(self) -> int:
        return self.element.width

    @property
    def max_normal(self) -> float:
        return self.element.max_normal

    @property
    def group_size(self) -> int | None:
        """Elements that share one scale, or None when it depends on the tensor shape."""
        return self.block_size if self.granularity in ("group", "block") else None

    @property
    def zero_point_bits(self) -> int:
        element = self.element
        return element.bits if isinstance(element, IntFormat) and element.asymmetric else 0

    @property
    def scale_storage_bits(self) -> int:
        """Bits one stored scale occupies: its width rounded up to whole bytes.

        NVFP4's 7-bit UE4M3 scale is stored as an FP8 byte with the sign bit
        clear, so it counts 8 bits, and NVFP4 takes 4 + 8/16 = 4.5 bits per element.
        """
        return -(-self.scale.width // 8) * 8

    @property
    def overhead_bits_per_group(self) -> int:
        """Scale and zero-point bits stored once per group."""
        return self.scale_storage_bits + self.zero_point_bits

    @property
    def bits_per_element(self) -> float:
        """Storage per element including the scale of each group.

        Per-tensor, per-channel and per-token scales depend on the tensor shape;
        for those this counts the element width only (use `storage_bits`).
        """
        if self.group_size is None:
            return float(self.element.width)
        return self.element.width + self.overhead_bits_per_group / self.group_size

    def storage_bits(self, shape: tuple[int, ...], axis: int = -1) -> int:
        """Bits to store a tensor of `shape`: elements (padding included), scales, zero points and the tensor scale."""
        shape = tuple(int(s) for s in shape)
        if not shape:
            shape = (1,)
        axis = axis % len(shape)
        length = shape[axis]
        rows = math.prod(shape) // length if length else 0
        if self.granularity == "tensor":
            groups, padded = 1, length
        elif self.granularity in ("channel", "token"):
            groups, padded = rows, length
        else:
            per_row = -(-length // self.block_size)
            groups, padded = rows * per_row, per_row * self.block_size
        bits = rows * padded * self.element.width + groups * self.overhead_bits_per_group
        if self.tensor_scale is not None:
            bits += self.tensor_scale.width
        return bits


@dataclass(frozen=True)
class DialectFormat:
    """Block format whose blocks each pick one element codebook (a *dialect*) from a book.

    Each block stores a shared power-of-two scale (`scale`, E8M0-like), the
    index of its dialect (ceil(log2(len(dialects))) bits) and one code per
    element. The dialects are 4-bit sign-magnitude codebooks here.
    """

    dialects: tuple[CodebookFormat, ...]
    scale: FloatFormat
    block_size: int = 32
    name: str = ""

    kind = "dialect"
    granularity = "block"
    scale_rule = "ocp"
    tensor_scale = None

    def __post_init__(self) -> None:
        if not self.dialects:
            raise ValueError(f"invalid dialect format {self.name}: the book of dialects is empty")
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, (int, np.integer)) or self.block_size <= 0:
            raise ValueError(f"invalid block_size={self.block_size!r} for {self.name}: must be a positive integer such as 32")
        widths = {d.width for d in self.dialects}
        if len(widths) != 1:
            raise ValueError(f"invalid dialect format {self.name}: all dialects need the same code width, got {sorted(widths)}")

    @property
    def element(self) -> CodebookFormat:
        """The first dialect, which stands for the element format in summaries."""
        return self.dialects[0]

    @property
    def width(self) -> int:
        return self.dialects[0].width

    @property
    def bits(self) -> int:
        return self.width

    @property
    def max_normal(self) -> float:
        return max(d.max_normal for d in self.dialects)

    @property
    def group_size(self) -> int:
        return self.block_size

    @property
    def selector_bits(self) -> int:
        return max(1, math.ceil(math.log2(len(self.dialects))))

    @property
    def overhead_bits_per_group(self) -> int:
        return -(-self.scale.width // 8) * 8 + self.selector_bits

    @property
    def bits_per_element(self) -> float:
        return self.width + self.overhead_bits_per_group / self.block_size

    def storage_bits(self, shape: tuple[int, ...], axis: int = -1) -> int:
        shape = tuple(int(s) for s in shape) or (1,)
        axis = axis % len(shape)
        length = shape[axis]
        rows = math.prod(shape) // length if length else 0
        per_row = -(-length // self.block_size)
        return rows * per_row * (self.block_size * self.width + self.overhead_bits_per_group)


Format = Union[IntFormat, FloatFormat, CodebookFormat, ScaledFormat, DialectFormat]


def _is_power_of_two_scale(scale: FloatFormat) -> bool:
    return isinstance(scale, FloatFormat) and scale.mantissa_bits == 0


