"""`hwsim models`: list the shipped LM architecture configs, or show one with its headline numbers."""

from __future__ import annotations

import argparse
import math

import pandas as pd

from hwsim.cli import UsageError
from hwsim.policy import UniformPolicy
from hwsim.workload import load_model, model_sources, shipped_config_paths, shipped_model_names, summarize
from hwsim.workload.parameters import active_parameter_count, parameter_count

_SI_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_COUNT_PREFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the shipped LM architecture configs or show one",
        description="List the LM architecture configs shipped in models/, or show the parameters, FLOPs and bytes of one.",
    )
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION", required=True)

    list_parser = actions.add_parser("list", help="list the shipped configs with their parameter counts and sources")
    list_parser.set_defaults(func=run_list)

    show = actions.add_parser(
        "show",
        help="show parameters, FLOPs per token, weight bytes and KV-cache bytes per token of one model",
    )
    show.add_argument("name", metavar="NAME", help="a shipped model name from `hwsim models list`, a config.json file, or a folder with one")
    show.add_argument(
        "--context",
        type=int,
        default=None,
        metavar="TOKENS",
        help="context length in tokens for FLOPs per token (default: 2048, or max_position_embeddings when shorter)",
    )
    show.add_argument(
        "--policy",
        default="w16a16",
        help="bit policy for the byte counts, such as w4a16, w8a8kv8 or w=mxfp4,a=mxfp8_e4m3,kv=fp8_e4m3 (default: w16a16, all fp16)",
    )
    show.set_defaults(func=run_show)


def run_list(args: argparse.Namespace) -> int:
    sources = model_sources()
    rows = []
    for name in shipped_model_names():
        spec = load_model(name)
        total, active = parameter_count(spec), active_parameter_count(spec)
        parameters = format_count(total) if active == total else f"{format_count(total)} ({format_count(active)} active)"
        source = sources.get(name)
        rows.append(
            {
                "name": name,
                "model type": spec.model_type,
                "layers": spec.num_layers,
                "hidden": spec.hidden_size,
                "heads": spec.num_attention_heads,
                "KV heads": spec.num_kv_heads,
                "parameters": parameters,
                "source": source.repository if source else "(not in SOURCES.md)",
            }
        )
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


def run_show(args: argparse.Namespace) -> int:
    spec = load_model(args.name)
    policy = UniformPolicy.parse(args.policy)
    if args.context is not None and not 1 <= args.context <= spec.max_position_embeddings:
        raise UsageError(
            f"invalid --context {args.context}: {spec.name} takes 1 to {spec.max_position_embeddings} tokens (max_position_embeddings)"
        )
    summary = summarize(spec, policy, context_tokens=args.context)
    shipped_path = shipped_config_paths().get(spec.name)
    source = model_sources().get(spec.name) if shipped_path is not None and str(shipped_path) == spec.source else None

    lines = [f"{spec.name}: {spec.architecture or spec.model_type} (model_type {spec.model_type})"]
    if source:
        lines.append(f"source: {source.repository}")
        lines.append(f"published parameters: {source.published_parameters}, from {source.published_where}")
    lines.append(f"config: {spec.source}")
    lines.append(
        f"layers {spec.num_layers}, hidden size {spec.hidden_size}, attention heads {spec.num_attention_heads}, "
        f"KV heads {spec.num_kv_heads}, head dim {spec.head_dim}, intermediate size {spec.intermediate_size}, "
        f"vocabulary {spec.vocab_size}, max position embeddings {spec.max_position_embeddings}"
    )
    if spec.is_moe:
        lines.append(f"experts: {spec.num_experts}, {spec.experts_per_token} per token")
    if spec.sliding_window is not None:
        lines.append(f"sliding window: {spec.sliding_window} tokens")
    lines.append(f"parameters: {summary.parameters:,} ({format_count(summary.parameters)})")
    if spec.is_moe:
        lines.append(f"active parameters per token: {summary.active_parameters:,} ({format_count(summary.active_parameters)})")
    lines.append(
        f"FLOPs per token at a context of {summary.context_tokens} tokens: {summary.flops_per_token:,} FLOP "
        f"({format_si(summary.flops_per_token, 'FLOP')})"
    )
    lines.append(f"bit policy: {summary.policy}")
    lines.append(f"weight bytes: {summary.weight_bytes:,} bytes ({format_si(summary.weight_bytes, 'B')})")
    if spec.is_encoder:
        lines.append("KV-cache bytes per token: none, an encoder keeps no KV cache")
    else:
        lines.append(
            f"KV-cache bytes per token: {summary.kv_cache_bytes_per_token:,} bytes ({format_si(summary.kv_cache_bytes_per_token, 'B')})"
        )
    print("\n".join(lines))
    return 0


def format_si(value: float, unit: str) -> str:
    """Format with three significant digits and a decimal SI prefix: 16060522496, 'B' -> '16.1 GB'."""
    for scale, prefix in _SI_PREFIXES:
        if abs(value) >= scale:
            return f"{_three_digits(value / scale)} {prefix}{unit}"
    return f"{_three_digits(value)} {unit}"


def format_count(value: int) -> str:
    """Format a parameter count as model names do: 8030261248 -> '8.03 B', 13015864320 -> '13.0 B'."""
    for scale, prefix in _COUNT_PREFIXES:
        if abs(value) >= scale:
            return f"{_three_digits(value / scale)} {prefix}"
    return str(value)


def _three_digits(value: float) -> str:
    """Three significant digits, trailing zeros kept: 13.0158 -> '13.0', 134.5 -> '135'."""
    if value == 0:
        return "0"
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"
