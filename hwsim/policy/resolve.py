"""Bit policies named by text: a uniform policy string, a preset name, or a policy YAML file."""

from __future__ import annotations

import functools
from pathlib import Path

from hwsim.policy.uniform import UniformPolicy


@functools.lru_cache(maxsize=256)
def resolve_policy(text: str):
    """Return the `hwsim.policy.Policy` that `text` names.

    Tried in order: a uniform policy string that `UniformPolicy.parse`
    reads ("w8a8", "w4a8-g64", "w=mxfp4,a=mxfp8_e4m3,kv=fp8_e4m3"), a preset
    of `hwsim.policy.presets` ("mxfp4", "quarot-w4a4kv4") and a path to a
    policy YAML file. Uniform strings come first, so "w4a16" means the same
    formats here as in `UniformPolicy.parse`. Raises ValueError naming all
    three forms when none matches.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"invalid bit policy {text!r}: give a preset name, a policy YAML file or a string such as 'w4a16'")
    from hwsim.policy.presets import PRESETS
    from hwsim.policy.serialize import load_policy

    if is_uniform_text(text):
        return UniformPolicy.parse(text).to_policy(name=text.strip())
    key = text.strip().lower()
    if key in PRESETS:
        return PRESETS[key].policy
    path = Path(text)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ValueError(f"invalid bit policy {text!r}: the policy file does not exist")
        return load_policy(path)
    raise ValueError(
        f"invalid bit policy {text!r}: not a uniform policy string (such as 'w4a16', 'w8a8kv8' or "
        f"'w=mxfp4,a=mxfp8_e4m3,kv=fp8_e4m3'), a preset ({', '.join(PRESETS)}) or a .yaml file"
    )


def is_uniform_text(text: str) -> bool:
    """True when `UniformPolicy.parse` reads `text`."""
    try:
        UniformPolicy.parse(text)
    except (ValueError, KeyError):
        return False
    return True
