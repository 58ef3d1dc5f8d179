"""Rules of a bit policy: which tensors a rule selects, and the quantizer it gives them.

A rule selects by tensor role, and optionally by a glob `pattern` or a
`regex` on the canonical layer name (see `hwsim.policy.names`), by layer
index ranges, and by op kind. The policy tries its rules in order, and the
first one that selects a tensor decides. A rule with `quantizer=None` keeps
its tensors in full precision.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from hwsim.policy.errors import PolicyError
from hwsim.policy.names import canonical_pattern, parse_layer_ranges, pattern_names_layer_number
from hwsim.policy.quantizer import Quantizer

# Tensor roles a rule selects. "kv_cache" in a rule stands for both KV roles.
ROLES = ("weight", "activation", "kv_key", "kv_value")
ROLE_ALIASES = {
    "kv_cache": ("kv_key", "kv_value"),
    # The accuracy path's names for the same roles.
    "input": ("activation",),
    "output": ("activation",),
    "key": ("kv_key",),
    "value": ("kv_value",),
}
# Op kinds of hwsim.workload.ops.OP_KINDS, compared case-insensitively.
OP_KINDS = ("gemm", "gemv", "attention", "elementwise", "reduction")
_WEIGHT_ONLY_SUBSETS = ("output_features", "sparse_outliers", "salient_groups")
_KV_ROLES = ("kv_key", "kv_value")


def normalize_roles(roles, field: str = "roles") -> tuple[str, ...]:
    """Expand aliases ("kv_cache", "input", "key", "value") and return the roles in ROLES order."""
    items = (roles,) if isinstance(roles, str) else roles
    if not isinstance(items, (list, tuple)) or not items:
        raise PolicyError(f"invalid {field}={roles!r}: give one or more of {', '.join(ROLES)} or kv_cache", field=field)
    chosen: set[str] = set()
    for role in items:
        if role in ROLES:
            chosen.add(role)
        elif role in ROLE_ALIASES:
            chosen.update(ROLE_ALIASES[role])
        else:
            raise PolicyError(f"invalid role {role!r} in {field}: choose from {', '.join(ROLES)} or kv_cache (both KV roles)", field=field)
    return tuple(role for role in ROLES if role in chosen)


@dataclass(frozen=True)
class Rule:
    """Tensors selected by role, name, layer and op kind, and the quantizer they get (None: full precision).

    pattern: fnmatch glob on the canonical layer name, "*" matching dots too
        ("*.q_proj", "layers.*.mlp.*"). Layer numbers cannot appear in it;
        use `layers`.
    regex: a regular expression that must match the whole canonical name.
    layers: inclusive (first, last) layer index ranges; a tensor outside the
        layers, or one asked for without a layer index, does not match.
    op_kinds: op kinds of `hwsim.workload` (GEMM, GEMV, attention,
        elementwise, reduction); a caller that passes no op kind does not match.
    """

    roles: tuple[str, ...]
    quantizer: Quantizer | None
    pattern: str | None = None
    regex: str | None = None
    layers: tuple[tuple[int, int], ...] | None = None
    op_kinds: tuple[str, ...] | None = None
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", normalize_roles(self.roles))
        if self.quantizer is not None and not isinstance(self.quantizer, Quantizer):
            raise PolicyError(f"invalid quantizer={self.quantizer!r}: give a Quantizer, or None for full precision", field="quantizer")
        if self.pattern is not None and self.regex is not None:
            raise PolicyError("a rule takes pattern or regex, not both; drop one", field="regex")
        if self.pattern is not None:
            self._check_pattern()
        if self.regex is not None:
            self._check_regex()
        if self.layers is not None:
            object.__setattr__(self, "layers", parse_layer_ranges(self.layers))
        if self.op_kinds is not None:
            object.__setattr__(self, "op_kinds", self._checked_op_kinds())
        if not isinstance(self.name, str):
            raise PolicyError(f"invalid name={self.name!r}: give a string", field="name")
        self._check_quantizer_fits_roles()

    def _check_pattern(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise PolicyError(f"invalid pattern={self.pattern!r}: give a glob such as '*.q_proj'", field="pattern")
        if pattern_names_layer_number(self.pattern):
            raise PolicyError(
                f"invalid pattern={self.pattern!r}: layer names are matched with the layer index replaced by '*', "
                "so a layer number in the pattern never matches; write 'layers.*...' and select layers with layers: '0-3'",
                field="pattern",
            )
        object.__setattr__(self, "pattern", canonical_pattern(self.pattern))

    def _check_regex(self) -> None:
        if not isinstance(self.regex, str) or not self.regex:
            raise PolicyError(f"invalid regex={self.regex!r}: give a regular expression such as '.*_proj'", field="regex")
        try:
            re.compile(self.regex)
        except re.error as error:
            raise PolicyError(f"invalid regex={self.regex!r}: {error}", field="regex") from None

    def _checked_op_kinds(self) -> tuple[str, ...]:
        items = (self.op_kinds,) if isinstance(self.op_kinds, str) else self.op_kinds
        if not isinstance(items, (list, tuple)) or not items:
            raise PolicyError(f"invalid op_kinds={self.op_kinds!r}: give one or more of GEMM, GEMV, attention, elementwise, reduction", field="op_kinds")
        kinds = []
        for kind in items:
            if not isinstance(kind, str) or kind.lower() not in OP_KINDS:
                raise PolicyError(f"invalid op kind {kind!r} in op_kinds: choose from GEMM, GEMV, attention, elementwise, reduction", field="op_kinds")
            kinds.append(kind.lower())
        return tuple(sorted(set(kinds), key=OP_KINDS.index))

    def _check_quantizer_fits_roles(self) -> None:
        quantizer = self.quantizer
        if quantizer is None:
            return
        if quantizer.kv_window and any(role not in _KV_ROLES for role in self.roles):
            raise PolicyError(
                f"invalid quantizer.kv_window={quantizer.kv_window}: a full-precision window of recent tokens applies to the KV cache only; "
                "give this rule roles [kv_key, kv_value] or drop kv_window",
                field="quantizer.kv_window",
            )
        subset = quantizer.subset
        if subset is None:
            return
        if any(role in _KV_ROLES for role in self.roles):
            raise PolicyError(f"invalid quantizer.subset: a {subset.kind} subset does not apply to the KV cache; drop it from this rule", field="quantizer.subset")
        if subset.kind in _WEIGHT_ONLY_SUBSETS and self.roles != ("weight",):
            raise PolicyError(
                f"invalid quantizer.subset: a {subset.kind} subset applies to weights only, but the rule has roles {list(self.roles)}; "
                "split it into a weight rule and an activation rule",
                field="quantizer.subset",
            )

    def matches(self, canonical_name: str, role: str, layer_index: int | None, op_kind: str | None, *, check_layers: bool = True) -> bool:
        """True when this rule selects the tensor; `canonical_name` comes from `names.split_layer_name`.

        check_layers=False ignores the layer ranges, to ask whether only the layer index decides.
        """
        if role not in self.roles:
            return False
        if self.pattern is not None and not fnmatch.fnmatchcase(canonical_name, self.pattern):
            return False
        if self.regex is not None and re.fullmatch(self.regex, canonical_name) is None:
            return False
        if check_layers and self.layers is not None:
            if layer_index is None or not any(first <= layer_index <= last for first, last in self.layers):
                return False
        if self.op_kinds is not None:
            if op_kind is None or op_kind.lower() not in self.op_kinds:
                return False
        return True

    @property
    def label(self) -> str:
        """The rule's name, or a description built from its selectors."""
        if self.name:
            return self.name
        parts = ["/".join(self.roles)]
        if self.pattern is not None:
            parts.append(self.pattern)
        if self.regex is not None:
            parts.append(f"re:{self.regex}")
        return " ".join(parts)
