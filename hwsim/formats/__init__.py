"""Number formats: specs, the registry of named formats, and bit-accurate encode, decode and qdq."""

from hwsim.formats.registry import describe, get, names, register
from hwsim.formats.spec import (
    CodebookFormat,
    DialectFormat,
    FloatFormat,
    Format,
    IntFormat,
    ScaledFormat,
)

__all__ = [
    "CodebookFormat",
    "DialectFormat",
    "FloatFormat",
    "Format",
    "IntFormat",
    "ScaledFormat",
    "describe",
    "get",
    "names",
    "register",
]

from hwsim.formats.ops import Encoded, decode, encode, qdq  # noqa: E402
from hwsim.formats.packing import pack_codes, unpack_codes  # noqa: E402

__all__ += ["Encoded", "decode", "encode", "pack_codes", "qdq", "unpack_codes"]
