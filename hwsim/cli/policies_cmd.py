"""`hwsim policies list` and `hwsim policies show NAME`: the bit-policy presets, their rules, bits per parameter and sources."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from hwsim.policy import Policy, get_preset, load_policy, preset_names
from hwsim.policy.presets import PRESETS
from hwsim.policy.serialize import dump_yaml
from hwsim.policy.summary import summarize_policy
from hwsim.workload import load_model

DEFAULT_MODEL = "llama-2-7b"


def register(subparsers) -> None:
    parser = subparsers.add_parser("policies", help="list the bit-policy presets of published schemes, or show one")
    commands = parser.add_subparsers(dest="policies_command", metavar="SUBCOMMAND")

    list_parser = commands.add_parser("list", help="list the presets with their bits per parameter and source")
    list_parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="model whose linear layers the bits per parameter are counted on (default: %(default)s)"
    )
    list_parser.set_defaults(func=list_policies)

    show_parser = commands.add_parser(
        "show",
        help="show a policy: its rules, bits per parameter, activation and KV-cache bits, and its source",
        description="Show a preset (see `hwsim policies list`) or a policy YAML file.",
    )
    show_parser.add_argument("name", metavar="NAME", help="a preset name such as atom-w4a4, or the path of a policy YAML file")
    show_parser.add_argument("--model", default=DEFAULT_MODEL, help="model the storage is counted on (default: %(default)s)")
    show_parser.add_argument(
        "--context", type=int, default=None, metavar="TOKENS", help="context length in tokens for KV-cache bits (default: 4096, or the model's maximum)"
    )
    show_parser.add_argument("--yaml", action="store_true", help="print the policy as YAML instead of the summary")
    show_parser.set_defaults(func=show_policy)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _role_format(policy: Policy, role: str) -> str:
    for rule in policy.rules:
        if role in rule.roles and rule.pattern is None and rule.regex is None and rule.layers is None:
            if rule.quantizer is None:
                return policy.full_precision_format
            subset = rule.quantizer.subset
            return rule.quantizer.format + (f" + {subset.kind} {subset.format}" if subset else "")
    return policy.full_precision_format


def list_policies(args: argparse.Namespace) -> int:
    spec = load_model(args.model)
    rows = []
    for name in preset_names():
        preset = PRESETS[name]
        summary = summarize_policy(preset.policy, spec)
        rows.append(
            {
                "name": name,
                "weights": _role_format(preset.policy, "weight"),
                "activations": _role_format(preset.policy, "activation"),
                "kv cache": _role_format(preset.policy, "kv_key"),
                "bits/param": f"{summary.linear_bits_per_parameter:.4f}",
                "source": preset.citation,
            }
        )
    print(f"bits per parameter over the linear layers of {spec.name}")
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _load(name: str):
    """Return (policy, preset or None) for a preset name or a YAML path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return load_policy(path), None
    preset = get_preset(name)
    return preset.policy, preset


def show_policy(args: argparse.Namespace) -> int:
    policy, preset = _load(args.name)
    if args.yaml:
        print(dump_yaml(policy), end="")
        return 0

    spec = load_model(args.model)
    summary = summarize_policy(policy, spec, context_tokens=args.context)
    print(f"policy: {policy.name}")
    if policy.description:
        print(f"description: {policy.description}")
    if preset is not None:
        print(f"source: {preset.source}")
        print(f"configuration: {preset.configuration}")
        print(f"accuracy path reproduces: {preset.reproduced}")
        print(f"accuracy path approximates: {preset.approximated}")
    options = [f"rotation={policy.rotation}" if policy.rotation else "", f"weight_method={policy.weight_method}"]
    if policy.smoothquant_alpha is not None:
        options.append(f"smoothquant_alpha={policy.smoothquant_alpha}")
    print("options: " + ", ".join(option for option in options if option))
    print(f"layer-uniform: {'yes' if policy.is_layer_uniform() else 'no'}")

    print()
    print("rules (first match decides):")
    print(_rules_table(policy).to_string(index=False))
    print()
    _print_storage(summary, spec)
    return 0


def _print_storage(summary, spec) -> None:
    weights = summary.linear_weights
    print(f"storage on {spec.name}:")
    print(f"  linear weights: {weights.bits_per_element:.6f} bits per parameter")
    for field in ("element_bits", "scale_bits", "zero_point_bits", "outlier_bits", "index_bits"):
        print(f"    {field.replace('_', ' ')}: {getattr(weights, field) / weights.elements:.6f} per parameter")
    print(f"  all weights: {summary.model_bits_per_parameter:.6f} bits per parameter")
    print(f"  activations: {summary.activation_bits_per_element:.6f} bits per element (one token into the first q_proj)")
    if not spec.is_encoder:
        print(
            f"  KV cache at {summary.context_tokens} tokens: keys {summary.kv_key_bits_per_element:.6f}, "
            f"values {summary.kv_value_bits_per_element:.6f} bits per element"
        )


def _rules_table(policy: Policy) -> pd.DataFrame:
    rows = []
    for index, rule in enumerate(policy.rules):
        quantizer = rule.quantizer
        selector = []
        if rule.pattern is not None:
            selector.append(f"pattern {rule.pattern}")
        if rule.regex is not None:
            selector.append(f"regex {rule.regex}")
        if rule.layers is not None:
            selector.append("layers " + ",".join(f"{a}-{b}" if a != b else str(a) for a, b in rule.layers))
        if rule.op_kinds is not None:
            selector.append("ops " + ",".join(rule.op_kinds))
        details = []
        if quantizer is not None:
            if quantizer.axis != -1:
                details.append(f"axis {quantizer.axis}")
            if quantizer.kv_window:
                details.append(f"{quantizer.kv_window} recent tokens in {policy.full_precision_format}")
            if quantizer.subset is not None:
                subset = quantizer.subset
                size = f"{subset.count}" if subset.count is not None else f"{subset.fraction:.4g}"
                details.append(f"{subset.kind} {size} in {subset.format} by {subset.selection}")
            if quantizer.metadata is not None:
                metadata = quantizer.metadata
                details.append(f"scale {metadata.scale_bits} b, zero point {metadata.zero_point_bits} b per group")
        rows.append(
            {
                "#": index,
                "name": rule.name,
                "roles": ",".join(rule.roles),
                "selects": "; ".join(selector) or "all",
                "format": quantizer.format if quantizer is not None else f"full precision ({policy.full_precision_format})",
                "details": "; ".join(details),
            }
        )
    return pd.DataFrame(rows)
