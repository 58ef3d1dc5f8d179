"""Uniform bit policy: one format for weights, one for activations, one for the KV cache.

A bit policy maps every tensor of a workload to a format name that
`hwsim.formats.get` resolves. This one ignores the layer and the op: it
looks only at the tensor's role (weight, activation, output, kv_cache) and,
for weights, at the kind of parameter.

Only the matrices of the linear layers inside the transformer blocks (the
`"linear"` parameter kind, MoE experts included) take the weight format.
Embedding tables, the LM head, the MoE router, norm scales and biases stay
in fp16. AutoGPTQ quantizes the same set by default (the `inside_layer_modules`
of each model class, which leave out the Mixtral router), and AutoAWQ's
Mixtral class skips the router `gate` too. So "w4a16" describes the usual
4-bit checkpoint, not a model with a 4-bit LM head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hwsim import formats

# Format of the parameters that the weight format leaves alone (see the module docstring).
UNQUANTIZED_FORMAT = "fp16"
# Parameter kinds that take the weight format.
QUANTIZED_PARAMETER_KINDS = ("linear",)
# Group size of low-bit integer weights when the text names none: 128 input
# channels per scale, as the AutoAWQ examples quantize (q_group_size=128).
DEFAULT_WEIGHT_GROUP_SIZE = 128

_SHORT_FORM = re.compile(r"^w(?P<weight>\d+)a(?P<activation>\d+)(?:kv(?P<kv_cache>\d+))?(?:-g(?P<group>\d+))?$")
_ROLE_KEYS = {
    "w": "weight",
    "weight": "weight",
    "a": "activation",
    "activation": "activation",
    "kv": "kv_cache",
    "kv_cache": "kv_cache",
}
_SYNTAX_HELP = (
    "write w<bits>a<bits>[kv<bits>][-g<group size>] such as 'w4a16', 'w8a8kv8' or 'w4a16-g128', "
    "or formats per role such as 'w=mxfp4,a=mxfp8_e4m3,kv=fp8_e4m3'"
)


@dataclass(frozen=True)
class UniformPolicy:
    """Format names for the three tensor roles; each name must resolve with `hwsim.formats.get`."""

    weight: str = "fp16"
    activation: str = "fp16"
    kv_cache: str = "fp16"

    def __post_init__(self) -> None:
        for role in ("weight", "activation", "kv_cache"):
            name = getattr(self, role)
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"invalid {role} format {name!r}: give a format name such as 'fp16' or 'int4_g128'")
            # Raises KeyError with close matches when the name is unknown.
            formats.get(name)

    @classmethod
    def parse(cls, text: str) -> UniformPolicy:
        """Parse 'w4a16', 'w8a8kv8', 'w4a16-g128' or 'w=mxfp4,a=mxfp8_e4m3,kv=fp8_e4m3'.

        Bit counts map to formats as follows. 16 bits is fp16 and 32 bits is
        fp32 for every role. 8-bit weights are int8 with a scale per output
        channel, and 2- to 7-bit weights are int<b> with a scale per group
        of 128 input channels, or per the group size after "-g". Activations
        and the KV cache of 2 to 8 bits are int<b> with a scale per token.
        Roles left out of the per-role form, and the KV cache in the short
        form, stay fp16.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"invalid bit policy {text!r}: {_SYNTAX_HELP}")
        compact = text.strip().lower().replace(" ", "")
        if "=" in compact:
            return cls(**_parse_per_role(text, compact))
        match = _SHORT_FORM.match(compact)
        if not match:
            raise ValueError(f"invalid bit policy {text!r}: {_SYNTAX_HELP}")
        group = int(match.group("group")) if match.group("group") else None
        kv_bits = match.group("kv_cache")
        return cls(
            weight=_weight_format(int(match.group("weight")), group, text),
            activation=_per_token_format(int(match.group("activation")), "activation", text),
            kv_cache=_per_token_format(int(kv_bits), "kv_cache", text) if kv_bits else "fp16",
        )

    @property
    def label(self) -> str:
        """The per-role form, which `parse` reads back to an equal policy."""
        return f"w={self.weight},a={self.activation},kv={self.kv_cache}"

    def __str__(self) -> str:
        return self.label

    def to_policy(self, name: str | None = None):
        """Return the rule-based `Policy` with the same formats (`Policy.from_uniform`)."""
        from hwsim.policy.policy import Policy

        return Policy.from_uniform(self, name)

    def quantizer_for(self, layer_name: str, role: str, *, layer_index: int | None = None, op_kind: str | None = None, parameter_kind: str | None = None):
        """Return the quantizer of one tensor, as `Policy.quantizer_for` does for `to_policy()`."""
        return self.to_policy().quantizer_for(layer_name, role, layer_index=layer_index, op_kind=op_kind, parameter_kind=parameter_kind)

    def is_layer_uniform(self) -> bool:
        """Always True: a uniform policy gives every layer the same formats."""
        return True

    def format_for(self, tensor, *, layer_index: int | None = None, op=None) -> str:
        """Return the format name for a tensor with `role` and, for weights, `parameter_kind` attributes.

        layer_index and op are accepted for the interface that `Policy` shares, and ignored.
        """
        role = tensor.role
        if role == "weight":
            if tensor.parameter_kind in QUANTIZED_PARAMETER_KINDS:
                return self.weight
            return UNQUANTIZED_FORMAT
        if role in ("activation", "output"):
            return self.activation
        if role == "kv_cache":
            return self.kv_cache
        raise ValueError(f"tensor {getattr(tensor, 'name', tensor)!r} has unknown role {role!r}: expected weight, activation, output or kv_cache")


def _parse_per_role(text: str, compact: str) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for item in compact.split(","):
        key, separator, value = item.partition("=")
        if not separator or not value:
            raise ValueError(f"invalid bit policy {text!r}: item {item!r} needs the form role=format; {_SYNTAX_HELP}")
        role = _ROLE_KEYS.get(key)
        if role is None:
            raise ValueError(f"invalid bit policy {text!r}: unknown role {key!r}; use w, a or kv (or weight, activation, kv_cache)")
        if role in chosen:
            raise ValueError(f"invalid bit policy {text!r}: role {key!r} is given twice")
        chosen[role] = value
    return chosen


def _weight_format(bits: int, group: int | None, text: str) -> str:
    if group is not None and group <= 0:
        raise ValueError(f"invalid bit policy {text!r}: the group size after -g must be positive, such as -g128")
    if bits in (16, 32):
        if group is not None:
            raise ValueError(f"invalid bit policy {text!r}: a group size applies to integer weights of 2 to 8 bits; drop -g{group}")
        return f"fp{bits}"
    if bits == 8 and group is None:
        return "int8_channel"
    if 2 <= bits <= 8:
        return f"int{bits}_g{group or DEFAULT_WEIGHT_GROUP_SIZE}"
    raise ValueError(f"invalid bit policy {text!r}: w{bits} is not supported; weights take 2 to 8, 16 or 32 bits")


def _per_token_format(bits: int, role: str, text: str) -> str:
    if bits in (16, 32):
        return f"fp{bits}"
    if 2 <= bits <= 8:
        return f"int{bits}_token"
    prefix = "a" if role == "activation" else "kv"
    raise ValueError(f"invalid bit policy {text!r}: {prefix}{bits} is not supported; {role} takes 2 to 8, 16 or 32 bits")
