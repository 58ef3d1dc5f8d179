"""Bit policies of a sweep, named by text: a preset name, a uniform policy string, or a policy YAML file.

The resolution lives in `hwsim.policy.resolve`; this module keeps the names the sweep code imports.
"""

from hwsim.policy.resolve import is_uniform_text, resolve_policy

__all__ = ["is_uniform_text", "resolve_policy"]
