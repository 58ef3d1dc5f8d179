"""Bit policies to and from plain dicts and YAML.

    name: atom-w4a4
    description: ...
    rotation: null              # or hadamard
    weight_method: gptq         # rtn, gptq or awq
    rules:
      - name: weights
        roles: [weight]         # weight, activation, kv_key, kv_value, or kv_cache for both
        pattern: "*_proj"       # optional glob on the canonical layer name; or regex:
        layers: "0-3,31"        # optional inclusive layer ranges
        op_kinds: [GEMM, GEMV]  # optional
        quantizer:              # null keeps the tensors in full precision
          format: int4_g128
          subset: {kind: outlier_channels, format: int8_g128, count: 128}

`policy_to_dict` leaves out fields at their defaults, and `policy_from_dict`
fills them in, so a policy survives the round trip unchanged. A quantizer
may be written as its format name alone. Unknown keys, duplicated keys and
invalid values raise `PolicyError` naming the rule and the field.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from hwsim.policy.errors import PolicyError
from hwsim.policy.names import format_layer_ranges
from hwsim.policy.policy import Policy
from hwsim.policy.quantizer import GroupMetadata, Quantizer, Subset
from hwsim.policy.rules import Rule

POLICY_KEYS = ("name", "description", "full_precision_format", "quantized_parameter_kinds", "rotation", "smoothquant_alpha", "weight_method", "rules")
RULE_KEYS = ("name", "roles", "pattern", "regex", "layers", "op_kinds", "quantizer")
QUANTIZER_KEYS = ("format", "axis", "rounding", "kv_window", "subset", "metadata")
SUBSET_KEYS = ("kind", "format", "count", "fraction", "selection", "index_bits", "low_format")
METADATA_KEYS = ("scale_bits", "zero_point_bits", "second_level_group_size", "second_level_bits")
_POLICY_DEFAULTS = Policy("defaults")


def _check_mapping(data, allowed: tuple[str, ...], section: str, field: str) -> dict:
    if not isinstance(data, dict):
        raise PolicyError(f"invalid {section} {data!r}: expected a mapping with keys from {', '.join(allowed)}", field=field)
    unknown = [key for key in data if key not in allowed]
    if unknown:
        location = f"{field}.{unknown[0]}" if field else str(unknown[0])
        raise PolicyError(f"unknown key {unknown[0]!r} in {section}: the keys are {', '.join(allowed)}", field=location)
    return data


def _nested(error: PolicyError, prefix: str) -> PolicyError:
    return PolicyError(str(error), field=f"{prefix}.{error.field}" if error.field else prefix)


def subset_to_dict(subset: Subset) -> dict:
    row = {"kind": subset.kind, "format": subset.format}
    for key in ("count", "fraction"):
        if getattr(subset, key) is not None:
            row[key] = getattr(subset, key)
    row["selection"] = subset.selection
    for key in ("index_bits", "low_format"):
        if getattr(subset, key) is not None:
            row[key] = getattr(subset, key)
    return row


def quantizer_to_dict(quantizer: Quantizer) -> dict:
    row: dict = {"format": quantizer.format}
    if quantizer.axis != -1:
        row["axis"] = quantizer.axis
    if quantizer.rounding != "nearest_even":
        row["rounding"] = quantizer.rounding
    if quantizer.kv_window:
        row["kv_window"] = quantizer.kv_window
    if quantizer.subset is not None:
        row["subset"] = subset_to_dict(quantizer.subset)
    if quantizer.metadata is not None:
        metadata = quantizer.metadata
        row["metadata"] = {key: getattr(metadata, key) for key in METADATA_KEYS}
    return row


def rule_to_dict(rule: Rule) -> dict:
    row: dict = {}
    if rule.name:
        row["name"] = rule.name
    row["roles"] = list(rule.roles)
    if rule.pattern is not None:
        row["pattern"] = rule.pattern
    if rule.regex is not None:
        row["regex"] = rule.regex
    if rule.layers is not None:
        row["layers"] = format_layer_ranges(rule.layers)
    if rule.op_kinds is not None:
        row["op_kinds"] = list(rule.op_kinds)
    row["quantizer"] = quantizer_to_dict(rule.quantizer) if rule.quantizer is not None else None
    return row


def policy_to_dict(policy: Policy) -> dict:
    """Plain dict of `policy`, with fields at their defaults left out."""
    row: dict = {"name": policy.name}
    for key in ("description", "full_precision_format", "rotation", "smoothquant_alpha", "weight_method"):
        value = getattr(policy, key)
        if value != getattr(_POLICY_DEFAULTS, key):
            row[key] = value
    if policy.quantized_parameter_kinds != _POLICY_DEFAULTS.quantized_parameter_kinds:
        row["quantized_parameter_kinds"] = list(policy.quantized_parameter_kinds)
    row["rules"] = [rule_to_dict(rule) for rule in policy.rules]
    return row


def subset_from_dict(data) -> Subset:
    _check_mapping(data, SUBSET_KEYS, "subset", "")
    for key in ("kind", "format"):
        if key not in data:
            raise PolicyError(f"missing key {key!r} in subset: a subset needs kind and format", field=key)
    return Subset(**data)


def metadata_from_dict(data) -> GroupMetadata:
    _check_mapping(data, METADATA_KEYS, "metadata", "")
    if "scale_bits" not in data:
        raise PolicyError("missing key 'scale_bits' in metadata: give the bits of one group's scale, such as 16", field="scale_bits")
    return GroupMetadata(**data)


def quantizer_from_dict(data) -> Quantizer:
    """Build a quantizer from a mapping, or from a format name alone."""
    if isinstance(data, str):
        return Quantizer(data)
    _check_mapping(data, QUANTIZER_KEYS, "quantizer", "")
    if "format" not in data:
        raise PolicyError("missing key 'format' in quantizer: give a format name such as 'int4_g128'", field="format")
    options = dict(data)
    for key, build in (("subset", subset_from_dict), ("metadata", metadata_from_dict)):
        if options.get(key) is not None:
            try:
                options[key] = build(options[key])
            except PolicyError as error:
                raise _nested(error, key) from None
    return Quantizer(**options)


def rule_from_dict(data) -> Rule:
    _check_mapping(data, RULE_KEYS, "rule", "")
    if "roles" not in data:
        raise PolicyError("missing key 'roles': give the tensor roles the rule selects, such as [weight]", field="roles")
    if "quantizer" not in data:
        raise PolicyError("missing key 'quantizer': give a quantizer, or null to keep the tensors in full precision", field="quantizer")
    quantizer = None
    if data["quantizer"] is not None:
        try:
            quantizer = quantizer_from_dict(data["quantizer"])
        except PolicyError as error:
            raise _nested(error, "quantizer") from None
    return Rule(
        roles=data["roles"],
        quantizer=quantizer,
        pattern=data.get("pattern"),
        regex=data.get("regex"),
        layers=data.get("layers"),
        op_kinds=data.get("op_kinds"),
        name=data.get("name", ""),
    )


def policy_from_dict(data) -> Policy:
    """Build a policy from a plain dict; errors name the rule (index and name) and the field."""
    _check_mapping(data, POLICY_KEYS, "policy", "")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PolicyError(f"invalid policy name {name!r}: every policy needs a name, such as 'w4a16-g128'", field="name")
    rules_data = data.get("rules", [])
    if not isinstance(rules_data, list):
        raise PolicyError(f"policy {name!r}: invalid rules {rules_data!r}: give a list of rules", field="rules")
    rules = []
    seen_names: dict[str, int] = {}
    for index, rule_data in enumerate(rules_data):
        label = rule_data.get("name", "") if isinstance(rule_data, dict) else ""
        where = f"policy {name!r}: rule {index}" + (f" ({label!r})" if label else "")
        try:
            rule = rule_from_dict(rule_data)
        except PolicyError as error:
            field = error.field or "(rule)"
            raise PolicyError(f"{where}, field {field}: {error}", field=f"rules[{index}].{field}") from None
        if rule.name:
            if rule.name in seen_names:
                raise PolicyError(
                    f"{where}, field name: the name {rule.name!r} is already used by rule {seen_names[rule.name]}; give each rule its own name",
                    field=f"rules[{index}].name",
                )
            seen_names[rule.name] = index
        rules.append(rule)
    options = {key: data[key] for key in POLICY_KEYS if key in data and key not in ("name", "rules")}
    return Policy(name=name, rules=tuple(rules), **options)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a mapping with a repeated key, which PyYAML would silently overwrite."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise PolicyError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}: each key may appear once per mapping", field=str(key))
        keys.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_yaml(text: str) -> Policy:
    """Read a policy from YAML text."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as error:
        raise PolicyError(f"invalid policy YAML: {error}") from None
    return policy_from_dict(data)


def dump_yaml(policy: Policy) -> str:
    """Write a policy as YAML text that `load_yaml` reads back to an equal policy."""
    return yaml.safe_dump(policy_to_dict(policy), sort_keys=False, default_flow_style=False, allow_unicode=True)


def load_policy(path: str | Path) -> Policy:
    """Read a policy from a YAML file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"policy file {str(path)!r} not found; give the path of a YAML file, or a preset name from `hwsim policies list`")
    return load_yaml(path.read_text(encoding="utf-8"))


def dump_policy(policy: Policy, path: str | Path) -> None:
    """Write `policy` to a YAML file."""
    Path(path).write_text(dump_yaml(policy), encoding="utf-8")
