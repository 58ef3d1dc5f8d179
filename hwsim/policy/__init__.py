"""Bit policies: which format each tensor of a workload is stored and computed in.

A bit policy has one method, `format_for(tensor) -> str`, which returns a
format name that `hwsim.formats.get` resolves. `UniformPolicy` gives one
format per tensor role.
"""

from hwsim.policy.uniform import UniformPolicy

__all__ = ["UniformPolicy"]
