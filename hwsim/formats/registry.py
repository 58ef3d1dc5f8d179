"""Named formats, and names built from an element format and a granularity.

`get(name)` accepts a registered name ("fp8_e4m3", "mxfp4", "nvfp4", "nf4")
or an element name with a granularity suffix:

- `<element>_tensor`: one scale for the tensor;
- `<element>_channel` or `<element>_token`: one scale per vector along the axis;
- `<element>_g<N>`: one scale per group of N along the axis.

Suffixed names use an FP16 scale with the amax rule for integer and codebook
elements, and an FP32 scale for float elements, so "int4_g128" is int4 with
an FP16 scale per 128 elements: 4 + 16/128 = 4.125 bits per element.
"""

from __future__ import annotations

import difflib
import re

from hwsim.formats.spec import (
    CodebookFormat,
    DialectFormat,
    FloatFormat,
    Format,
    IntFormat,
    ScaledFormat,
)

_REGISTRY: dict[str, Format] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register(name: str, fmt: Format, description: str = "", *, replace: bool = False) -> Format:
    """Add `fmt` to the registry under `name`; raise if the name is taken unless `replace=True`."""
    key = name.lower()
    if key in _REGISTRY and not replace:
        raise ValueError(f"format name {name!r} is already registered; pass replace=True to overwrite it")
    _REGISTRY[key] = fmt
    _DESCRIPTIONS[key] = description
    return fmt


def names() -> list[str]:
    """Registered names, in registration order."""
    return list(_REGISTRY)


def describe(name: str) -> str:
    return _DESCRIPTIONS.get(name.lower(), "")


_SUFFIX = re.compile(r"^(?P<element>.+?)_(?P<granularity>tensor|channel|token|g(?P<group>\d+))$")


def get(name: str | Format) -> Format:
    """Return the format registered as `name`, or build one from a granularity suffix; specs pass through."""
    if not isinstance(name, str):
        if hasattr(name, "kind"):
            return name
        raise TypeError(f"expected a format name or spec, got {type(name).__name__}: {name!r}")
    key = name.strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    match = _SUFFIX.match(key)
    if match and match.group("element") in _REGISTRY:
        element = _REGISTRY[match.group("element")]
        if element.kind in ("int", "float", "codebook"):
            return _scaled_by_suffix(key, element, match.group("granularity"), match.group("group"))
        raise ValueError(
            f"format {name!r}: {match.group('element')!r} is already a scaled format; granularity suffixes apply to element formats only"
        )
    close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise KeyError(f"unknown format {name!r}: {hint}run `hwsim formats list` for the known names")


def _scaled_by_suffix(key: str, element, granularity: str, group: str | None) -> ScaledFormat:
    scale = _REGISTRY["fp32"] if element.kind == "float" else _REGISTRY["fp16"]
    if group is not None:
        size = int(group)
        if size <= 0:
            raise ValueError(f"invalid group size in format {key!r}: use a positive size such as _g128")
        return ScaledFormat(element, scale, "group", size, "amax", name=key)
    return ScaledFormat(element, scale, granularity, 1, "amax", name=key)


# Element formats: OCP 8-bit FP v1.0 for E4M3/E5M2; OCP MX v1.0 section 5.3 for
# FP6 and FP4; the fnuz variants as ml_dtypes and AMD define them; IEEE 754
# binary32/binary16 and bfloat16.
FP32 = register("fp32", FloatFormat(8, 23, 127, "ieee", name="fp32"), "IEEE 754 binary32")
FP16 = register("fp16", FloatFormat(5, 10, 15, "ieee", name="fp16"), "IEEE 754 binary16")
BF16 = register("bf16", FloatFormat(8, 7, 127, "ieee", name="bf16"), "bfloat16, the top half of binary32")
FP8_E4M3 = register("fp8_e4m3", FloatFormat(4, 3, 7, "fn", name="fp8_e4m3"), "OCP E4M3: no Inf, NaN at S.1111.111, max 448")
FP8_E5M2 = register("fp8_e5m2", FloatFormat(5, 2, 15, "ieee", name="fp8_e5m2"), "OCP E5M2: IEEE-style Inf and NaN, max 57344")
register("fp8_e4m3fnuz", FloatFormat(4, 3, 8, "fnuz", name="fp8_e4m3fnuz"), "E4M3 with bias 8, no -0, NaN only at 0x80, max 240")
register("fp8_e5m2fnuz", FloatFormat(5, 2, 16, "fnuz", name="fp8_e5m2fnuz"), "E5M2 with bias 16, no -0, NaN only at 0x80, max 57344")
FP6_E2M3 = register("fp6_e2m3", FloatFormat(2, 3, 1, "none", name="fp6_e2m3"), "OCP MX FP6 E2M3: finite, max 7.5")
FP6_E3M2 = register("fp6_e3m2", FloatFormat(3, 2, 3, "none", name="fp6_e3m2"), "OCP MX FP6 E3M2: finite, max 28")
FP4_E2M1 = register("fp4_e2m1", FloatFormat(2, 1, 1, "none", name="fp4_e2m1"), "OCP MX FP4 E2M1: 0, 0.5, 1, 1.5, 2, 3, 4, 6")

# Scale formats. E8M0: OCP MX v1.0 section 5.4, 2**(code-127), 0xFF NaN, no zero.
# UE4M3: the unsigned E4M3 block scale of NVFP4 (0x7F NaN).
E8M0 = register("e8m0", FloatFormat(8, 0, 127, "fn", signed=False, subnormals=False, name="e8m0"), "OCP MX scale: 2**(code-127), 0xFF NaN")
UE4M3 = register("ue4m3", FloatFormat(4, 3, 7, "fn", signed=False, name="ue4m3"), "unsigned E4M3, the NVFP4 block scale, max 448")

for _bits in range(2, 9):
    register(f"int{_bits}", IntFormat(_bits, name=f"int{_bits}"), f"{_bits}-bit two's complement, -{2 ** (_bits - 1)} to {2 ** (_bits - 1) - 1}")
for _bits in (2, 3, 4, 8):
    register(
        f"int{_bits}_sym",
        IntFormat(_bits, restricted=True, name=f"int{_bits}_sym"),
        f"{_bits}-bit symmetric (restricted) range, +-{2 ** (_bits - 1) - 1}",
    )
    register(
        f"int{_bits}_asym",
        IntFormat(_bits, signed=False, asymmetric=True, name=f"int{_bits}_asym"),
        f"{_bits}-bit unsigned codes with a zero point per scale group",
    )
register("int16", IntFormat(16, name="int16"), "16-bit two's complement")
register("uint4", IntFormat(4, signed=False, name="uint4"), "4-bit unsigned, 0 to 15")
register("uint8", IntFormat(8, signed=False, name="uint8"), "8-bit unsigned, 0 to 255")

# OCP MX v1.0 concrete formats (table 1): 32 elements share one E8M0 scale.
for _elem, _label in (("fp8_e4m3", "mxfp8_e4m3"), ("fp8_e5m2", "mxfp8_e5m2"), ("fp6_e2m3", "mxfp6_e2m3"), ("fp6_e3m2", "mxfp6_e3m2"), ("fp4_e2m1", "mxfp4")):
    register(_label, ScaledFormat(_REGISTRY[_elem], E8M0, "block", 32, "ocp", name=_label), f"OCP MX: {_elem} elements, E8M0 scale per 32")
# MXINT8: two's complement with an implicit 2**-6, so the largest value is 127/64.
# The symmetric range leaves out -2 (code 0x80), as the microxcaling reference does.
MXINT8_ELEMENT = IntFormat(8, restricted=True, frac_bits=6, name="mxint8_element")
register("mxint8", ScaledFormat(MXINT8_ELEMENT, E8M0, "block", 32, "ocp", name="mxint8"), "OCP MX INT8: 1.6 fixed point, E8M0 scale per 32")

# NVFP4: E2M1 elements, a UE4M3 scale per 16 elements and an FP32 per-tensor scale
# (NVIDIA Transformer Engine's NVFP4 recipe).
register(
    "nvfp4",
    ScaledFormat(FP4_E2M1, UE4M3, "block", 16, "amax", tensor_scale=FP32, name="nvfp4"),
    "E2M1, UE4M3 scale per 16, FP32 per-tensor scale",
)


def block_floating_point(mantissa_bits: int, block_size: int = 16, name: str = "") -> ScaledFormat:
    """Block floating point: a shared 8-bit exponent and sign-magnitude `mantissa_bits`-bit elements.

    An element is a fixed-point number with one integer bit, 1.f with
    mantissa_bits - 2 fraction bits, so the shared exponent follows the
    OCP rule with element emax 0, as MXINT8 does.
    """
    element = IntFormat(mantissa_bits, restricted=True, frac_bits=mantissa_bits - 2, name=f"bfp{mantissa_bits}_element")
    return ScaledFormat(element, E8M0, "block", block_size, "ocp", name=name or f"bfp{mantissa_bits}")


for _bits in (4, 6, 8):
    register(f"bfp{_bits}", block_floating_point(_bits), f"block floating point: shared E8M0 exponent per 16, {_bits}-bit elements")

# NF4 levels: Dettmers et al., "QLoRA", NeurIPS 2023, appendix E; the same
# table as bitsandbytes' NF4 quantization map. Blocks of 64 with an FP32 absmax,
# as bitsandbytes stores them without double quantization.
NF4_LEVELS = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)
NF4_ELEMENT = register("nf4_element", CodebookFormat(NF4_LEVELS, name="nf4_element"), "NormalFloat4 levels, normalised to [-1, 1]")
register("nf4", ScaledFormat(NF4_ELEMENT, FP32, "block", 64, "amax", name="nf4"), "NF4 codebook, FP32 absmax per 64 (bitsandbytes)")

# BlockDialect (Jang and Tambe, ICML 2025, arXiv:2501.01144): each block of 32
# picks one of 16 FP4 dialects and stores a 4-bit dialect index beside its E8M0
# scale, 4 + (8 + 4)/32 = 4.375 bits per element. hwsim.formats.dialect documents
# the book and the selection rule, and which parts are reconstructed.
from hwsim.formats.dialect import DIALECTFP4_BOOK  # noqa: E402

register(
    "blockdialect",
    DialectFormat(DIALECTFP4_BOOK, E8M0, 32, name="blockdialect"),
    "BlockDialect (Jang and Tambe, ICML 2025): 16 DialectFP4 dialects chosen per 32, E8M0 scale (book reconstructed)",
)
