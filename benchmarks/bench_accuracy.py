"""Benchmark the accuracy path: WikiText-2 evaluation tokens per second with and without quantization.

One run loads SmolLM2-135M-Instruct once and scores the same windows of
256 tokens under each configuration: fp32 (no quantization), weight-only
(int4 per group of 128, fp32 activations), the w4a16 policy (int4 weights,
fp16 activations and KV cache), W8A8 and W4A4KV4. Building a quantized copy
(weights quantized once) is timed apart; the throughput covers the forward
passes and their on-the-fly qdq only. Each configuration is warmed up on one
window, then timed in several rounds that alternate between configurations,
and the best round counts, which keeps other jobs on a shared machine from
favouring one configuration.

Targets: weight-only at most 1.3x slower than fp32, W4A4KV4 at most 2x.

Usage:
    python benchmarks/bench_accuracy.py             # print and update docs/benchmarks.md
    python benchmarks/bench_accuracy.py --no-write --windows 4
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers

from hwsim.accuracy import AccuracyConfig, load_model, quantize_model
from hwsim.accuracy.data import wikitext2_tokens
from hwsim.accuracy.evaluate import negative_log_likelihood

SECTION = "## Accuracy path overhead"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
WINDOW = 256
# (label, config, target slowdown or None)
CONFIGS = [
    ("fp32 (no quantization)", AccuracyConfig(), None),
    ("weight-only: int4_g128 weights", AccuracyConfig(weight="int4_g128"), 1.3),
    ("w4a16: int4_g128 weights, fp16 activations and KV", AccuracyConfig.from_policy("w4a16"), 1.3),
    ("w8a8: int8_channel weights, int8_token activations", AccuracyConfig.from_policy("w8a8"), None),
    ("w4a4kv4: int4_g128 weights, int4_token activations and KV", AccuracyConfig.from_policy("w4a4kv4"), 2.0),
]


def _cpu_model() -> str:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    match = re.search(r"^Model name:\s*(.+)$", output, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def run(windows: int, rounds: int) -> list[dict]:
    base = load_model("smollm2-135m")
    ids = wikitext2_tokens(base.tokenizer)[: windows * WINDOW]
    models = []
    for label, config, target in CONFIGS:
        start = time.perf_counter()
        model = base.model if config == AccuracyConfig() else quantize_model(base, config).model
        build_s = time.perf_counter() - start
        negative_log_likelihood(model, ids[:WINDOW], WINDOW, WINDOW)  # warm-up
        models.append({"label": label, "target": target, "model": model, "build_s": build_s, "best_s": float("inf")})
    for _ in range(rounds):
        for entry in models:
            start = time.perf_counter()
            total, scored = negative_log_likelihood(entry["model"], ids, WINDOW, WINDOW)
            entry["best_s"] = min(entry["best_s"], time.perf_counter() - start)
            entry["perplexity"] = float(torch.exp(torch.tensor(total / scored)))
    baseline_s = models[0]["best_s"]
    for entry in models:
        entry["tokens_per_s"] = len(ids) / entry["best_s"]
        entry["slowdown"] = entry["best_s"] / baseline_s
    return models


def render(rows: list[dict], command: str, windows: int, rounds: int, load: tuple[float, float]) -> str:
    lines = [
        SECTION,
        "",
        f"Command: `{command}`  ",
        f"Machine: {_cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads  ",
        f"Date: {datetime.date.today().isoformat()}; Python {platform.python_version()}, transformers {transformers.__version__}  ",
        f"Load average before and after: {load[0]:.1f}, {load[1]:.1f}. Times are wall-clock on a machine that other jobs may share.  ",
        f"Workload: SmolLM2-135M-Instruct (weights dequantized from Q4_1), WikiText-2 test, {windows} windows of {WINDOW} tokens, "
        f"best of {rounds} rounds; perplexities are on these {windows * WINDOW} tokens only.",
        "",
        "| configuration | tokens/s | slowdown vs fp32 | target | met | build s | perplexity |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in rows:
        target, met = "-", "-"
        if row["target"]:
            target = f"{row['target']:.1f}x"
            met = "yes" if row["slowdown"] <= row["target"] else "no"

        lines.append(
            f"| {row['label']} | {row['tokens_per_s']:,.0f} | {row['slowdown']:.2f}x | {target} | {met} | {row['build_s']:.1f} | {row['perplexity']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = DOCS) -> None:
    """Replace this benchmark's section of docs/benchmarks.md, or append it; other sections stay as they are."""
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(existing):
        updated = pattern.sub(lambda _: text + "\n", existing, count=1)
    else:
        updated = existing.rstrip("\n") + "\n\n" + text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=8, help="windows of 256 tokens per timing (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per configuration; the best counts (default: %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print the table without updating docs/benchmarks.md")
    args = parser.parse_args()
    command = "python " + " ".join(sys.argv)
    load_start = os.getloadavg()[0]
    rows = run(args.windows, args.rounds)
    text = render(rows, command, args.windows, args.rounds, (load_start, os.getloadavg()[0]))
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
