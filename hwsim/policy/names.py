"""Layer names, layer indices and parameter kinds, read the same way for transformers and the workload.

transformers names a module "model.layers.3.self_attn.q_proj"; the workload
names the op of every layer "layers.*.self_attn.q_proj" and passes the layer
index separately. Both reduce to one canonical name with the index replaced
by "*" ("layers.*.self_attn.q_proj") and a layer index (3), so one rule
matches both. The prefix before the layer container ("model.",
"model.decoder.", "transformer.") is dropped, and so is a leading "model."
outside the blocks ("model.embed_tokens" becomes "embed_tokens").
"""

from __future__ import annotations

import re

from hwsim.policy.errors import PolicyError

# A layer container followed by an index or "*": Llama, Mistral and OPT use
# "layers", BERT "layer", GPT-2 "h", some vision-language stacks "blocks".
_LAYER_SEGMENT = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(?P<index>\d+|\*)(?=\.|$)")
_LAYER_NUMBER_IN_PATTERN = re.compile(r"(?:^|[.*])(?:layers|layer|h|blocks)\.\d")

# Parameter kinds of hwsim.workload.ops.PARAMETER_KINDS, repeated here so that
# importing the policy package does not import the workload package.
PARAMETER_KINDS = ("linear", "router", "lm_head", "linear_outside_blocks", "embedding", "norm", "bias")
_ROUTER_SUFFIXES = (".router", ".gate", "moe.router")
_NORM_WORDS = ("norm", "layernorm", "ln_1", "ln_2", "ln_f")


def split_layer_name(name: str, layer_index: int | None = None) -> tuple[str, int | None]:
    """Return (canonical name, layer index) of a module name.

    "model.layers.3.self_attn.q_proj" gives ("layers.*.self_attn.q_proj", 3);
    "layers.*.self_attn.q_proj" with layer_index=3 gives the same. A name that
    carries an index which disagrees with `layer_index` raises ValueError.
    """
    if not isinstance(name, str):
        raise TypeError(f"layer name must be a str, got {type(name).__name__}: {name!r}")
    if layer_index is not None and (isinstance(layer_index, bool) or not isinstance(layer_index, int) or layer_index < 0):
        raise ValueError(f"invalid layer_index={layer_index!r}: give a non-negative integer, or None for a layer-independent name")
    match = _LAYER_SEGMENT.search(name)
    if match is None:
        canonical = name[len("model.") :] if name.startswith("model.") else name
        return canonical, layer_index
    index_text = match.group("index")
    if index_text != "*":
        named_index = int(index_text)
        if layer_index is not None and layer_index != named_index:
            raise ValueError(f"layer name {name!r} is layer {named_index}, but layer_index={layer_index} was passed; drop one of them")
        layer_index = named_index
    canonical = "layers.*" + name[match.end() :]
    return canonical, layer_index


def canonical_pattern(pattern: str) -> str:
    """Rewrite a glob pattern the way `split_layer_name` rewrites names ("model.layers.*.mlp.*" to "layers.*.mlp.*")."""
    match = _LAYER_SEGMENT.search(pattern)
    if match is not None and match.group("index") == "*":
        return "layers.*" + pattern[match.end() :]
    if pattern.startswith("model."):
        return pattern[len("model.") :]
    return pattern


def pattern_names_layer_number(pattern: str) -> bool:
    """True when a glob pattern spells out a layer number, which canonical names never contain."""
    return bool(_LAYER_NUMBER_IN_PATTERN.search(pattern))


def parameter_kind_of(name: str) -> str:
    """Guess the parameter kind of a weight from its module name, as `hwsim.workload.parameters` classifies them.

    "lm_head" is the LM head, names with "embed" are embedding tables, and
    norm modules are norms. A MoE router ("...moe.gate", "...router") is a
    router. Other modules inside a layer are linear layers, and modules
    outside the layers are linear_outside_blocks. Pass `parameter_kind=` to
    `Policy.quantizer_for` where this guess is wrong for an architecture.
    """
    canonical, _ = split_layer_name(name)
    last = canonical.rsplit(".", 1)[-1].lower()
    if last in ("lm_head", "embed_out") or canonical.endswith("lm_head"):
        return "lm_head"
    if "embed" in last or last in ("wte", "wpe"):
        return "embedding"
    if any(word in last for word in _NORM_WORDS):
        return "norm"
    if canonical.endswith(_ROUTER_SUFFIXES) and "experts" not in canonical:
        return "router"
    if canonical.startswith("layers.*"):
        return "linear"
    return "linear_outside_blocks"


def parse_layer_ranges(value, field: str = "layers") -> tuple[tuple[int, int], ...]:
    """Read layer indices as sorted, merged, inclusive (first, last) ranges.

    Accepts an int (3), a string ("0-3,31" or "5"), or a list of ints and
    such strings. An empty selection raises, since a rule that selects no
    layer would never match.
    """
    items = value if isinstance(value, (list, tuple)) else [value]
    ranges: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, bool):
            raise PolicyError(f"invalid {field} entry {item!r}: give layer indices such as 3 or '0-3'", field=field)
        if isinstance(item, int):
            ranges.append(_checked_range(item, item, field))
            continue
        if isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in item):
            ranges.append(_checked_range(item[0], item[1], field))
            continue
        if not isinstance(item, str):
            raise PolicyError(f"invalid {field} entry {item!r}: give layer indices such as 3, '0-3' or '0-3,31'", field=field)
        for part in item.replace(" ", "").split(","):
            first, dash, last = part.partition("-")
            if not first.isdigit() or (dash and not last.isdigit()):
                raise PolicyError(f"invalid {field} entry {part!r}: write a layer index such as '5' or an inclusive range such as '0-3'", field=field)
            ranges.append(_checked_range(int(first), int(last) if dash else int(first), field))
    if not ranges:
        raise PolicyError(f"invalid {field}={value!r}: the selection is empty; give at least one layer index, or drop the field to match every layer", field=field)
    return _merge(ranges)


def format_layer_ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    """Write ranges in the form `parse_layer_ranges` reads: "0-3,31"."""
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in ranges)


def _checked_range(first: int, last: int, field: str) -> tuple[int, int]:
    if first < 0 or last < first:
        raise PolicyError(f"invalid {field} range {first}-{last}: indices start at 0 and a range runs from low to high, such as 0-3", field=field)
    return first, last


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged)
