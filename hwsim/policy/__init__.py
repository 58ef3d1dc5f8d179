"""Bit policies: which format, granularity and rounding each tensor of a model gets.

A `Policy` is an ordered list of `Rule`s, and the first matching rule
decides. A rule selects tensors by role (weight, activation, kv_key,
kv_value), by a glob or regex on the layer name, by layer index ranges
and by op kind. It gives them a `Quantizer`, or None for full precision.
A quantizer has a format name, an axis, a rounding mode, and optionally
a higher-precision `Subset`, a KV window and its own scale storage.

Interface for the cost model (`hwsim.workload` tensors and ops):

    policy.format_for(tensor, *, layer_index=None, op=None) -> str
    policy.storage_bits(tensor, *, layer_index=None, op=None) -> BitsBreakdown
    policy.is_layer_uniform() -> bool

`UniformPolicy` has the same three methods, so the workload summary takes
either. `format_for` names the dense format, and `storage_bits` adds the
subsets, KV windows and scale storage that the name leaves out. When
`is_layer_uniform()` is False, expand each aggregated "layers.*" op per
layer and pass `layer_index`. A policy that needs the index and does not
get it raises ValueError.

Interface for the accuracy path (transformers module names):

    policy.quantizer_for(layer_name, role, *, layer_index=None, op_kind=None,
                         parameter_kind=None) -> Quantizer | None

Roles are weight, activation, kv_key and kv_value. The accuracy path's
input, key and value are accepted as aliases, and kv_cache returns the
quantizer that keys and values share. "model.layers.3.self_attn.q_proj"
and "layers.*.self_attn.q_proj" with layer_index=3 match the same rules.
`Quantizer.format`, `.axis` and `.rounding` are the fields of
`hwsim.accuracy`'s own quantizer, and `hwsim.policy.subsets.qdq_tensor`
applies the rest (subset, KV window). Policy-wide options for the
accuracy path are `rotation`, `smoothquant_alpha` and `weight_method`.

Presets of published schemes are in `hwsim.policy.presets`, sensitivity
measures in `hwsim.policy.sensitivity`, and bit allocation (ILP,
Lagrangian, greedy) in `hwsim.policy.allocation`.
"""

from hwsim.policy.errors import PolicyError
from hwsim.policy.names import split_layer_name
from hwsim.policy.overhead import BitsBreakdown, format_bits, quantizer_bits
from hwsim.policy.policy import Policy, bits_per_parameter
from hwsim.policy.presets import PRESETS, Preset, get_preset, preset, preset_names
from hwsim.policy.quantizer import GroupMetadata, Quantizer, Subset
from hwsim.policy.rules import ROLES, Rule
from hwsim.policy.serialize import dump_policy, load_policy
from hwsim.policy.uniform import UniformPolicy

__all__ = [
    "PRESETS",
    "ROLES",
    "BitsBreakdown",
    "GroupMetadata",
    "Policy",
    "PolicyError",
    "Preset",
    "Quantizer",
    "Rule",
    "Subset",
    "UniformPolicy",
    "bits_per_parameter",
    "dump_policy",
    "format_bits",
    "get_preset",
    "load_policy",
    "preset",
    "preset_names",
    "quantizer_bits",
    "split_layer_name",
]
