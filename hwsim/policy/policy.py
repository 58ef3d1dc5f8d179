"""`Policy`: an ordered list of rules that gives every tensor of a model its quantizer.

The same object serves the cost model (`format_for`, `storage_bits`,
`is_layer_uniform`) and the accuracy path (`quantizer_for`); see the
package docstring for the interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hwsim.policy.errors import PolicyError
from hwsim.policy.names import PARAMETER_KINDS, parameter_kind_of, split_layer_name
from hwsim.policy.overhead import BitsBreakdown, format_bits, quantizer_bits
from hwsim.policy.quantizer import Quantizer, check_format
from hwsim.policy.rules import ROLE_ALIASES, ROLES, Rule

ROTATIONS = ("hadamard",)
WEIGHT_METHODS = ("rtn", "gptq", "awq")
# Workload tensor roles and the policy roles they take.
_WORKLOAD_ROLES = {"weight": "weight", "activation": "activation", "output": "activation"}


@dataclass(frozen=True)
class Policy:
    """A named bit policy: rules tried in order, the first match deciding.

    full_precision_format: the format of tensors no rule quantizes, and of
        weights whose parameter kind is not in quantized_parameter_kinds.
    quantized_parameter_kinds: kinds of weight the rules apply to. The
        default is the linear layers inside the blocks only, because GPTQ
        and AWQ checkpoints leave embeddings, the LM head and the router in 16 bits.
    rotation: "hadamard" for QuaRot-style rotations of the residual stream
        and the attention heads, or None.
    smoothquant_alpha: SmoothQuant migration strength in [0, 1], or None.
    weight_method: how weights are rounded to their format: "rtn"
        (round to nearest), "gptq" or "awq".
    """

    name: str
    rules: tuple[Rule, ...] = ()
    description: str = ""
    full_precision_format: str = "fp16"
    quantized_parameter_kinds: tuple[str, ...] = ("linear",)
    rotation: str | None = None
    smoothquant_alpha: float | None = None
    weight_method: str = "rtn"
    _layer_uniform: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise PolicyError(f"invalid name={self.name!r}: give the policy a name such as 'w4a16-g128'", field="name")
        rules = tuple(self.rules) if isinstance(self.rules, (list, tuple)) else self.rules
        if not isinstance(rules, tuple) or not all(isinstance(rule, Rule) for rule in rules):
            raise PolicyError(f"policy {self.name!r}: rules must be a list of Rule, got {self.rules!r}", field="rules")
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "_layer_uniform", all(rule.layers is None for rule in rules))
        self._check_options(f"policy {self.name!r}")

    def _check_options(self, context: str) -> None:
        if not isinstance(self.description, str):
            raise PolicyError(f"{context}: invalid description={self.description!r}: give a string", field="description")
        try:
            check_format(self.full_precision_format, "full_precision_format")
        except PolicyError as error:
            raise PolicyError(f"{context}: {error}", field=error.field) from None
        kinds = self.quantized_parameter_kinds
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        unknown = [kind for kind in kinds if kind not in PARAMETER_KINDS]
        if unknown:
            raise PolicyError(
                f"{context}: invalid quantized_parameter_kinds {unknown}: choose from {', '.join(PARAMETER_KINDS)}",
                field="quantized_parameter_kinds",
            )
        object.__setattr__(self, "quantized_parameter_kinds", kinds)
        if self.rotation not in (None, *ROTATIONS):
            raise PolicyError(f"{context}: invalid rotation={self.rotation!r}: use 'hadamard' or null", field="rotation")
        alpha = self.smoothquant_alpha
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0):
            raise PolicyError(f"{context}: invalid smoothquant_alpha={alpha!r}: SmoothQuant's migration strength lies in [0, 1], such as 0.5", field="smoothquant_alpha")
        if self.weight_method not in WEIGHT_METHODS:
            raise PolicyError(f"{context}: invalid weight_method={self.weight_method!r}: choose one of {', '.join(WEIGHT_METHODS)}", field="weight_method")

    # The interface of the accuracy path.

    def quantizer_for(
        self,
        layer_name: str,
        role: str,
        *,
        layer_index: int | None = None,
        op_kind: str | None = None,
        parameter_kind: str | None = None,
    ) -> Quantizer | None:
        """Return the quantizer of one tensor, or None to keep it in full precision.

        layer_name: a transformers module name ("model.layers.3.self_attn.q_proj")
            or a workload op name ("layers.*.self_attn.q_proj") with `layer_index`.
        role: weight, activation, kv_key or kv_value; the accuracy path's
            input, key and value mean the same. kv_cache returns the quantizer
            that keys and values share, and raises where they differ.
        parameter_kind: the kind of a weight (linear, lm_head, embedding, ...);
            guessed from the name when None.
        """
        if role == "kv_cache":
            key = self.quantizer_for(layer_name, "kv_key", layer_index=layer_index, op_kind=op_kind)
            value = self.quantizer_for(layer_name, "kv_value", layer_index=layer_index, op_kind=op_kind)
            if key != value:
                raise ValueError(f"policy {self.name!r} quantizes keys and values of {layer_name!r} differently; ask for role 'kv_key' or 'kv_value'")
            return key
        policy_role = _policy_role(role)
        canonical, index = split_layer_name(layer_name, layer_index)
        if policy_role == "weight":
            kind = parameter_kind or parameter_kind_of(layer_name)
            if kind not in self.quantized_parameter_kinds:
                return None
        rule = self._first_match(canonical, policy_role, index, op_kind, layer_name)
        return rule.quantizer if rule is not None else None

    def _first_match(self, canonical: str, role: str, index: int | None, op_kind: str | None, layer_name: str) -> Rule | None:
        for rule in self.rules:
            needs_index = rule.layers is not None and index is None and canonical.startswith("layers.*")
            if needs_index and rule.matches(canonical, role, index, op_kind, check_layers=False):
                raise ValueError(
                    f"policy {self.name!r} gives layers of {layer_name!r} different quantizers (rule {rule.label!r} selects layers "
                    f"{rule.layers}), so it needs a layer index: pass layer_index=, and expand aggregated 'layers.*' ops per layer "
                    "where is_layer_uniform() is False"
                )
            if rule.matches(canonical, role, index, op_kind):
                return rule
        return None

    # The interface of the cost model.

    def is_layer_uniform(self) -> bool:
        """True when every layer gets the same quantizers, so an aggregated "layers.*" op stands for all of them."""
        return self._layer_uniform

    def tensor_quantizer(self, tensor, *, layer_index: int | None = None, op=None) -> Quantizer | None:
        """Return the quantizer of a workload tensor (`hwsim.workload.TensorSpec`), or None for full precision.

        op: the workload op that reads or writes the tensor; its name is the
        layer name and its kind the op kind. Without it, the layer name is the
        tensor name up to its last dot ("layers.*.mlp.up_proj" for
        "layers.*.mlp.up_proj.weight") and no op kind is known.
        """
        role = _tensor_role(tensor)
        if op is not None:
            layer_name, op_kind = op.name, op.kind
        else:
            layer_name, op_kind = (tensor.name.rsplit(".", 1)[0] if "." in tensor.name else ""), None
        if role == "weight":
            if tensor.parameter_kind not in self.quantized_parameter_kinds:
                return None
            return self.quantizer_for(layer_name, "weight", layer_index=layer_index, op_kind=op_kind, parameter_kind=tensor.parameter_kind)
        if role == "kv_cache":
            return self._kv_quantizer(tensor, layer_name, layer_index, op_kind)
        return self.quantizer_for(layer_name, role, layer_index=layer_index, op_kind=op_kind)

    def _kv_quantizer(self, tensor, layer_name: str, layer_index: int | None, op_kind: str | None) -> Quantizer | None:
        lowered = tensor.name.lower()
        if "key" in lowered:
            return self.quantizer_for(layer_name, "kv_key", layer_index=layer_index, op_kind=op_kind)
        if "value" in lowered:
            return self.quantizer_for(layer_name, "kv_value", layer_index=layer_index, op_kind=op_kind)
        try:
            return self.quantizer_for(layer_name, "kv_cache", layer_index=layer_index, op_kind=op_kind)
        except ValueError:
            raise ValueError(
                f"KV-cache tensor {tensor.name!r} names neither keys nor values, and policy {self.name!r} treats them differently; "
                "name the tensor key_... or value_..."
            ) from None

    def format_for(self, tensor, *, layer_index: int | None = None, op=None) -> str:
        """Return the format name of a workload tensor's dense part; `full_precision_format` where it stays unquantized.

        Subsets, KV windows and metadata are not in the name; `storage_bits`
        counts them.
        """
        quantizer = self.tensor_quantizer(tensor, layer_index=layer_index, op=op)
        return quantizer.format if quantizer is not None else self.full_precision_format

    def storage_bits(self, tensor, *, layer_index: int | None = None, op=None) -> BitsBreakdown:
        """Split the storage of a workload tensor under this policy: elements, scales, zero points, outliers and indices.

        Index bits count for weights only: an activation's channel list is
        fixed per layer and stored once, with the layer's weights.
        """
        quantizer = self.tensor_quantizer(tensor, layer_index=layer_index, op=op)
        if quantizer is None:
            return format_bits(self.full_precision_format, tensor.shape, -1)
        return quantizer_bits(quantizer, tensor.shape, self.full_precision_format, include_index=tensor.role == "weight")

    def parameter_bits(self, spec, *, parameter_kinds: tuple[str, ...] | None = None) -> BitsBreakdown:
        """Sum `storage_bits` over the parameters of a `hwsim.workload.ModelSpec`, each layer once.

        parameter_kinds: count only these kinds, such as ("linear",) for the
        bits per parameter that papers quote; None counts every parameter.
        """
        from hwsim.workload.parameters import parameters

        total = BitsBreakdown()
        for parameter in parameters(spec):
            if parameter_kinds is not None and parameter.kind not in parameter_kinds:
                continue
            tensor = parameter.tensor()
            if self.is_layer_uniform() or not parameter.name.startswith("layers.*"):
                total += self.storage_bits(tensor).times(parameter.copies)
                continue
            for layer_index in range(parameter.copies):
                total += self.storage_bits(tensor, layer_index=layer_index)
        return total

    # Construction and conversion.

    @classmethod
    def from_uniform(cls, uniform, name: str | None = None) -> Policy:
        """Convert a `UniformPolicy` into one rule per role, with the same format_for results."""
        rules = (
            Rule(("weight",), Quantizer(uniform.weight), name="weights"),
            Rule(("activation",), Quantizer(uniform.activation), name="activations"),
            Rule(("kv_key", "kv_value"), Quantizer(uniform.kv_cache), name="kv_cache"),
        )
        return cls(name or uniform.label, rules, description=f"uniform policy {uniform.label}")

    def with_rules(self, rules, *, name: str | None = None, description: str | None = None) -> Policy:
        """Return a copy with `rules` tried before this policy's own rules."""
        return replace(
            self,
            name=name or self.name,
            rules=tuple(rules) + self.rules,
            description=self.description if description is None else description,
        )

    def to_dict(self) -> dict:
        """Plain dict that `from_dict` reads back to an equal policy."""
        from hwsim.policy.serialize import policy_to_dict

        return policy_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Policy:
        """Build a policy from a plain dict, raising PolicyError that names the rule and the field."""
        from hwsim.policy.serialize import policy_from_dict

        return policy_from_dict(data)

    def to_yaml(self) -> str:
        from hwsim.policy.serialize import dump_yaml

        return dump_yaml(self)

    @classmethod
    def from_yaml(cls, text: str) -> Policy:
        """Read a policy from YAML text; use `hwsim.policy.load_policy` for a file."""
        from hwsim.policy.serialize import load_yaml

        return load_yaml(text)

    @property
    def label(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name


def _policy_role(role: str) -> str:
    if role in ROLES:
        return role
    aliases = ROLE_ALIASES.get(role)
    if aliases is None or len(aliases) != 1:
        raise ValueError(f"unknown tensor role {role!r}: expected one of {', '.join(ROLES)}, kv_cache, or input/key/value")
    return aliases[0]


def _tensor_role(tensor) -> str:
    role = getattr(tensor, "role", None)
    if role == "kv_cache":
        return role
    if role not in _WORKLOAD_ROLES:
        raise ValueError(f"tensor {getattr(tensor, 'name', tensor)!r} has unknown role {role!r}: expected weight, activation, output or kv_cache")
    return _WORKLOAD_ROLES[role]


def bits_per_parameter(policy: Policy, spec, *, parameter_kinds: tuple[str, ...] | None = ("linear",)) -> float:
    """Average stored bits per parameter of `spec` under `policy`, over `parameter_kinds` (None: all)."""
    breakdown = policy.parameter_bits(spec, parameter_kinds=parameter_kinds)
    if breakdown.elements == 0:
        raise ValueError(f"model {spec.name!r} has no parameters of kinds {parameter_kinds}; pass parameter_kinds=None to count all")
    return breakdown.bits_per_element
