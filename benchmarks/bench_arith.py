"""Benchmark GEMM emulation (hwsim.arith.matmul) against torch float32 matmul.

Shapes: a 1024 x 1024 x 1024 GEMM and a decode GEMV 1 x 4096 x 4096, each on
one thread and on all cores (numba.set_num_threads and torch.set_num_threads
together), in one run. Operands are encoded before timing, so a timing
covers decoding the codes, the emulated datapath and the epilogue. The first
call of each configuration, which compiles the Numba kernels, is timed apart
on a small shape.

Targets: the exact fast path within 3x of float32 BLAS; the general path
(custom accumulator) at least 200 million MAC/s per core.

Usage:
    python benchmarks/bench_arith.py            # compile into a fresh cache, print, update docs/benchmarks.md
    python benchmarks/bench_arith.py --warm-cache --no-write
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECTION = "## GEMM emulation"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SHAPES = {"gemm 1024x1024x1024": (1024, 1024, 1024), "gemv 1x4096x4096": (1, 4096, 4096)}
# (label, a, b, accumulator, order, tree_width, kind); kind "fast" must take an exact fast path.
CONFIGS = [
    ("int8_channel x int8_channel -> int32_saturate", "int8_channel", "int8_channel", "int32_saturate", "sequential", None, "fast"),
    ("fp8_e4m3 x fp8_e4m3 -> fp16, sequential", "fp8_e4m3", "fp8_e4m3", "fp16", "sequential", None, "general"),
    ("fp8_e4m3 x fp8_e4m3 -> fp22_e8m13_rtz, tree 32", "fp8_e4m3", "fp8_e4m3", "fp22_e8m13_rtz", "tree", 32, "general"),
    ("bf16 x bf16 -> fp32, sequential", "bf16", "bf16", "fp32", "sequential", None, "general"),
    ("mxfp4 x mxfp4 -> fp32, sequential", "mxfp4", "mxfp4", "fp32", "sequential", None, "general"),
]


def _cpu_model() -> str:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    match = re.search(r"^Model name:\s*(.+)$", output, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def _time_call(function, min_seconds: float = 1.0) -> tuple[float, float]:
    """Time one call: return (wall seconds, process CPU seconds) of the fastest of repeated calls lasting min_seconds in all."""
    best_wall, best_cpu, spent = float("inf"), float("inf"), 0.0
    while spent < min_seconds or best_wall == float("inf"):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if wall < best_wall:
            best_wall, best_cpu = wall, cpu
        spent += wall
    return best_wall, best_cpu


def run(threads_all: int) -> tuple[list[dict], list[dict]]:
    import numba
    import numpy as np
    import torch

    import hwsim
    from hwsim.arith import MacSpec, matmul

    rng = np.random.default_rng(0)
    compile_rows = []
    macs = {}
    for label, fmt_a, fmt_b, accumulator, order, width, kind in CONFIGS:
        mac = MacSpec(fmt_a, fmt_b, accumulator, order=order, tree_width=width)
        macs[label] = (mac, kind)
        small_a = rng.standard_normal((40, 64)).astype(np.float32)
        small_b = rng.standard_normal((64, 8)).astype(np.float32)
        start = time.perf_counter()
        matmul(small_a, small_b, mac, path="auto" if kind == "fast" else "general")
        compile_rows.append({"config": label, "first_call_s": time.perf_counter() - start})

    rows = []
    for shape_label, (m, k, n) in SHAPES.items():
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        n_macs = m * k * n
        encoded = {}
        for label, (mac, kind) in macs.items():
            encoded[label] = (hwsim.encode(a, mac.a, axis=-1), hwsim.encode(b, mac.b, axis=-2))
        for threads in sorted({1, threads_all}):
            numba.set_num_threads(threads)
            torch.set_num_threads(threads)
            a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
            blas_s, _ = _time_call(lambda: torch.matmul(a_t, b_t))
            for label, (mac, kind) in macs.items():
                enc_a, enc_b = encoded[label]
                path = "auto" if kind == "fast" else "general"
                result = matmul(enc_a, enc_b, mac, path=path)
                if kind == "fast" and result.path == "general":
                    raise RuntimeError(f"{label} on {shape_label} took the general path; the benchmark expects an exact fast path")
                seconds, cpu_seconds = _time_call(lambda: matmul(enc_a, enc_b, mac, path=path))
                rows.append(
                    {
                        "shape": shape_label,
                        "threads": threads,
                        "config": label,
                        "path": result.path,
                        "seconds": seconds,
                        "mmac_per_s": n_macs / seconds / 1e6,
                        "mmac_per_cpu_s": n_macs / max(cpu_seconds, 1e-9) / 1e6,
                        "torch_fp32_s": blas_s,
                        "ratio_to_fp32": seconds / blas_s,
                    }
                )
    return compile_rows, rows


def _header_lines(command: str, load: tuple[float, float], rows: list[dict]) -> list[str]:
    lines = [
        SECTION,
        "",
        f"Command: `{command}`  ",
        f"Machine: {_cpu_model()}, {os.cpu_count()} cores  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"1-minute load average at start and end: {load[0]:.1f}, {load[1]:.1f} (other jobs shared the cores)",
        "",
        "Emulated multiply-accumulates per second from encoded operands (decode, datapath, epilogue), against",
        "torch float32 matmul on the same shape and thread count; ratio = emulated time / float32 time, both wall clock.",
        "Per core = multiply-accumulates per second of process CPU time, which discounts time the",
        "scheduler gave to other jobs. Targets: the exact fast path within 3x of float32 BLAS; the general",
        "path at least 200 M MAC/s per core.",
        "",
    ]
    fast = [row["ratio_to_fp32"] for row in rows if row["path"] != "general"]
    general_one_thread = [row["mmac_per_cpu_s"] for row in rows if row["path"] == "general" and row["threads"] == 1]
    if fast:
        lines.append(f"Exact fast path: {min(fast):.2f}x to {max(fast):.2f}x the float32 time (target: at most 3x).  ")
    if general_one_thread:
        low, high = min(general_one_thread), max(general_one_thread)
        lines.append(f"General path on one thread: {low:.0f} to {high:.0f} M MAC/s per core (target: at least 200).")
    return lines


def _result_lines(rows: list[dict]) -> list[str]:
    lines = [
        "",
        "| shape | threads | configuration | path | M MAC/s (wall) | M MAC/s per core | ratio to fp32 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['shape']} | {row['threads']} | {row['config']} | {row['path']} | {row['mmac_per_s']:.0f} | "
            f"{row['mmac_per_cpu_s']:.0f} | {row['ratio_to_fp32']:.2f} |"
        )
    return lines


def _blas_lines(rows: list[dict]) -> list[str]:
    lines = ["", "torch float32 matmul:", "", "| shape | threads | seconds | M MAC/s |", "| --- | --- | --- | --- |"]
    seen = set()
    for row in rows:
        key = (row["shape"], row["threads"])
        if key in seen:
            continue
        seen.add(key)
        m, k, n = SHAPES[row["shape"]]
        lines.append(f"| {row['shape']} | {row['threads']} | {row['torch_fp32_s']:.4f} | {m * k * n / row['torch_fp32_s'] / 1e6:.0f} |")
    return lines


def _compile_lines(compile_rows: list[dict], warm_cache: bool) -> list[str]:
    cache = "a warm Numba cache (loading, not compiling)" if warm_cache else "an empty Numba cache, so this is compile time"
    lines = [
        "",
        f"First call of each configuration on a 40 x 64 x 8 problem, with {cache}.",
        "Configurations share kernels, so a later one compiles only what the earlier ones did not:",
        "",
        "| configuration | first call (s) |",
        "| --- | --- |",
    ]
    for row in compile_rows:
        lines.append(f"| {row['config']} | {row['first_call_s']:.1f} |")
    return lines


def render(compile_rows: list[dict], rows: list[dict], command: str, warm_cache: bool, load: tuple[float, float]) -> str:
    """Format the results as the markdown section for docs/benchmarks.md."""
    lines = _header_lines(command, load, rows) + _result_lines(rows) + _blas_lines(rows) + _compile_lines(compile_rows, warm_cache)
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = DOCS) -> None:
    """Replace the GEMM emulation section of docs/benchmarks.md, or append it; other sections stay as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(existing):
        updated = pattern.sub(lambda _: text + "\n", existing, count=1)
    else:
        updated = existing.rstrip("\n") + "\n\n" + text
    path.write_text(updated.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-cache", action="store_true", help="use the existing Numba cache instead of compiling into a fresh one")
    parser.add_argument("--no-write", action="store_true", help="print the table without updating docs/benchmarks.md")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="thread count of the all-cores runs (default: all cores)")
    args = parser.parse_args()
    if not args.warm_cache:
        # Must be set before numba is imported.
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="hwsim-bench-numba-")
    command = "python " + " ".join(sys.argv)
    load_start = os.getloadavg()[0]
    compile_rows, rows = run(args.threads)
    text = render(compile_rows, rows, command, args.warm_cache, (load_start, os.getloadavg()[0]))
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
