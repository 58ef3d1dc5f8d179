"""hwsim: co-design number formats, bit policies and accelerators for language models."""

__version__ = "0.1.0"

from hwsim import formats  # noqa: E402
from hwsim.formats import decode, encode, qdq  # noqa: E402

__all__ = ["__version__", "decode", "encode", "formats", "qdq", "simulate"]


def __getattr__(name: str):
    # `simulate` pulls in the workload and hardware models, so it is imported on first use.
    if name == "simulate":
        from hwsim.simulation import simulate

        return simulate
    raise AttributeError(f"module 'hwsim' has no attribute {name!r}")
