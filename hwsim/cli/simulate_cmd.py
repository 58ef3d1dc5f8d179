"""`hwsim simulate`: latency, energy and memory of a language model under a bit policy on an accelerator."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from hwsim.cli import UsageError
from hwsim.workload.scenario import Scenario

PHASES = ("prefill", "decode", "both")
# Columns of the per-op table that `--ops` prints, in display units.
OP_COLUMNS = ("phase", "op", "runs", "latency_s", "energy_j", "bound", "utilization", "note")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate a language model on an accelerator: latency, energy, tokens/s, memory",
        description=(
            "Simulate a whole language model under a bit policy on an accelerator preset, for a prefill, a decode, "
            "or a prefill followed by a decode. Prints totals per phase (time to first token, time per output token, "
            "tokens per second, joules per token) and the memory footprint."
        ),
    )

    parser.add_argument("--model", required=True, metavar="NAME",
                        help="a shipped model name (see `hwsim models list`), a config.json path or a hub id")
    parser.add_argument("--accelerator", required=True, metavar="NAME",
                        help="an accelerator preset (see `hwsim accelerators list`) or a path to a .yaml spec")
    parser.add_argument("--policy", default="w16a16", metavar="POLICY",
                        help="bit policy: a string such as w16a16, w4a16-g128, w8a8kv8 or w=mxfp4,a=mxfp8_e4m3, a preset from "
                        "`hwsim policies list` such as atom-w4a4, or a policy YAML file (default: w16a16, all fp16)")

    parser.add_argument("--phase", choices=PHASES, default="decode",
                        help="prefill of --context prompt tokens, decode of --generated tokens after --context cached tokens, "
                             "or both in turn (default: decode)")
    parser.add_argument("--batch", type=int, default=1, metavar="SEQUENCES", help="sequences per batch (default: 1)")
    parser.add_argument("--context", type=int, default=1024, metavar="TOKENS",
                        help="prompt length in tokens for a prefill; tokens already in the KV cache for a decode (default: 1024)")
    parser.add_argument("--generated", type=int, default=1, metavar="TOKENS",
                        help="tokens to generate per sequence, one decode step each (default: 1)")

    parser.add_argument("--emulate-unsupported", action="store_true",
                        help="price formats the hardware cannot take by converting them (the documented emulation cost) "
                             "instead of failing")
    parser.add_argument("--allow-overflow", action="store_true",
                        help="report a model that does not fit in the accelerator's memory, with fits=false, instead of failing")

    parser.add_argument("--json", action="store_true", help="print the totals and memory footprint as one JSON object (SI units)")
    parser.add_argument("--ops", action="store_true", help="also print one row per op (latency in seconds, energy in joules)")
    parser.set_defaults(func=run)


def _scenarios(args: argparse.Namespace) -> list[Scenario]:
    for name in ("batch", "context", "generated"):
        value = getattr(args, name)
        if value < 1:
            raise UsageError(f"invalid --{name}={value}: must be a positive integer")
    if args.phase == "prefill":
        return [Scenario.prefill(args.batch, args.context)]
    if args.phase == "decode":
        return [Scenario.decode(args.batch, args.context, args.generated)]
    return [Scenario.prefill(args.batch, args.context), Scenario.decode(args.batch, args.context, args.generated)]


def _totals_table(report) -> str:
    rows = []
    for row in report.totals.to_dict("records"):
        first = row["time_to_first_token_s"]
        per_token = row["time_per_output_token_s"]
        rows.append({
            "phase": row["phase"],
            "latency (ms)": f"{row['latency_s'] * 1e3:.3f}",
            "first token (ms)": "-" if pd.isna(first) else f"{first * 1e3:.3f}",
            "per output token (ms)": "-" if pd.isna(per_token) else f"{per_token * 1e3:.3f}",
            "tokens/s": f"{row['tokens_per_s']:.1f}",
            "J/token": f"{row['joules_per_token']:.4g}",
            "energy (J)": f"{row['energy_j']:.4g}",
            "average power (W)": f"{row['average_power_w']:.1f}",
        })
    return pd.DataFrame(rows).to_string(index=False)


def run(args: argparse.Namespace) -> int:
    from hwsim.simulation import simulate

    report = simulate(
        args.model, args.policy, args.accelerator, _scenarios(args),
        unsupported="emulate" if args.emulate_unsupported else "raise",
        memory_overflow="report" if args.allow_overflow else "raise",
    )
    for note in report.notes:
        print(f"hwsim simulate: warning: {note}", file=sys.stderr)
    if args.json:
        print(report.to_json())
        return 0
    memory = report.memory
    print(f"{report.model} on {report.accelerator} ({report.accelerator_kind}), policy {report.policy}")
    print(_totals_table(report))
    fits = "fits" if memory.fits else "does NOT fit"
    print(f"memory: {fits}; {memory.describe()}")
    if args.ops:
        table = report.ops[list(OP_COLUMNS)].copy()
        table["latency_s"] = table["latency_s"].map(lambda v: f"{v:.4g}")
        table["energy_j"] = table["energy_j"].map(lambda v: f"{v:.4g}")
        table["utilization"] = table["utilization"].map(lambda v: f"{v:.3f}")
        print()
        print(table.to_string(index=False))
    return 0
