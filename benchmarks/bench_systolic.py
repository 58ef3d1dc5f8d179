"""Benchmark the systolic-array model against SCALE-Sim v3 on the same GEMMs: cycles side by side and time per GEMM.

Run from the repository root:

    python benchmarks/bench_systolic.py            # print the markdown table
    python benchmarks/bench_systolic.py --write    # also replace the section in docs/benchmarks.md

SCALE-Sim (PyPI scalesim 3.0.0) runs in its own virtual environment, created
on first use by hwsim.hardware.scalesim_oracle. Its time per GEMM is measured
inside its process (configuration parsing, simulation and reports, without
interpreter start-up). Our time per GEMM is the median of repeated calls of
`simulate_gemm` on one shape, after a first call that is reported apart. The
vectorised time is one call on many shapes divided by their number.

Compute cycles differ by design: SCALE-Sim's total minus stalls is one less
than the cycle count (it reports the last cycle's index), and for
output-stationary folds it leaves out the R cycles that drain the outputs.
The "expected difference" column is that derivation; tests/test_systolic_scalesim.py
checks it on random GEMMs.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from hwsim.hardware.scalesim_compat import ScaleSimConfig, simulate_gemm  # noqa: E402
from hwsim.hardware.scalesim_oracle import ScaleSimCase, ensure_scalesim_venv, run_scalesim  # noqa: E402

SECTION_HEADING = "## Systolic array vs SCALE-Sim"
DOCS_PAGE = REPOSITORY / "docs" / "benchmarks.md"

# (rows, cols, M, N, K): LM-like shapes (a GEMV, small and large batches) on two array sizes.
SHAPES = [
    (32, 32, 1, 256, 256),
    (32, 32, 8, 256, 256),
    (32, 32, 64, 128, 256),
    (32, 32, 128, 128, 128),
    (32, 32, 256, 64, 128),
    (16, 16, 64, 64, 64),
    (64, 64, 256, 256, 256),
]
DATAFLOWS = ("os", "ws", "is")
SRAM_KB = 256
BANDWIDTH_WORDS_PER_CYCLE = 16
REPEATS = 300


def machine_description() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    model = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
    cpus = re.search(r"^CPU\(s\):\s*(\d+)$", lscpu, re.MULTILINE)
    return f"{model.group(1).strip() if model else platform.machine()}, {cpus.group(1) if cpus else '?'} logical CPUs"


def time_ours(config: ScaleSimConfig, m: int, n: int, k: int) -> tuple[float, float]:
    """First-call time and median steady-state time of one GEMM, in seconds."""
    start = time.perf_counter()
    simulate_gemm(config, m, n, k)
    first = time.perf_counter() - start
    samples = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        simulate_gemm(config, m, n, k)
        samples.append(time.perf_counter() - start)
    return first, statistics.median(samples)


def time_vectorised(count: int = 100_000) -> float:
    """Seconds per GEMM when one call evaluates `count` random shapes."""
    rng = np.random.default_rng(0)
    m, n, k = (rng.integers(1, 4096, size=count) for _ in range(3))
    config = ScaleSimConfig(128, 128, "ws", 24 * 1024, 256, 4096, 64)
    simulate_gemm(config, m[:10], n[:10], k[:10])
    start = time.perf_counter()
    simulate_gemm(config, m, n, k)
    return (time.perf_counter() - start) / count


def run() -> str:
    cases = [
        ScaleSimCase(rows, cols, dataflow, SRAM_KB, SRAM_KB, SRAM_KB, BANDWIDTH_WORDS_PER_CYCLE, m, n, k)
        for rows, cols, m, n, k in SHAPES
        for dataflow in DATAFLOWS
    ]
    python = ensure_scalesim_venv()
    theirs = run_scalesim(cases, python=python)

    lines = [
        "| array | dataflow | M x N x K | ours: compute cycles | SCALE-Sim: total - stall + 1 | expected difference | ours: us per GEMM | SCALE-Sim: ms per GEMM | speed ratio |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ratios, firsts, mismatches = [], [], 0
    for case, result in zip(cases, theirs):
        config = ScaleSimConfig(case.rows, case.cols, case.dataflow, case.ifmap_kb, case.filter_kb, case.ofmap_kb, case.bandwidth)
        ours = simulate_gemm(config, case.m, case.n, case.k)
        first, steady = time_ours(config, case.m, case.n, case.k)
        firsts.append(first)
        their_cycles = result["total_cycles"] - result["stall_cycles"] + 1
        expected = case.rows * int(ours.folds) if case.dataflow == "os" else 0
        if int(ours.compute_cycles) - their_cycles != expected:
            mismatches += 1
        ratio = result["seconds"] / steady
        ratios.append(ratio)
        lines.append(
            f"| {case.rows}x{case.cols} | {case.dataflow} | {case.m} x {case.n} x {case.k} | {int(ours.compute_cycles):,} | "
            f"{their_cycles:,} | {expected:,} | {steady * 1e6:.1f} | {result['seconds'] * 1e3:.0f} | {ratio:,.0f}x |"
        )
    vectorised = time_vectorised()
    geometric_mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    scalesim_version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('scalesim'))"], capture_output=True, text=True
    ).stdout.strip()
    header = [
        SECTION_HEADING,
        "",
        f"Command: `python benchmarks/bench_systolic.py --write`  ",
        f"Machine: {machine_description()}  ",
        f"Date: {datetime.date.today().isoformat()}; Python {platform.python_version()}, numpy {np.__version__}; "
        f"SCALE-Sim {scalesim_version} with its own numpy < 2  ",
        f"Configuration: SRAM {SRAM_KB} kB per buffer, {BANDWIDTH_WORDS_PER_CYCLE} words per cycle, 1-byte words.  ",
        "Times are wall-clock on that machine, which other jobs may share, so repeated runs can differ by a factor of two.",
        "",
        f"Speed ratio (SCALE-Sim time / ours, one GEMM per call): geometric mean {geometric_mean:,.0f}x, "
        f"minimum {min(ratios):,.0f}x over {len(ratios)} GEMMs. Vectorised, one call on 100,000 shapes: "
        f"{vectorised * 1e6:.2f} us per GEMM. First call of our model: {max(firsts) * 1e6:.0f} us at most "
        "(no compilation; numpy only).",
        "",
        f"Cycles agree with the derived difference on {len(cases) - mismatches} of {len(cases)} GEMMs. "
        "The expected difference is R cycles per fold for output-stationary (SCALE-Sim leaves out draining the "
        "outputs) and 0 otherwise, after adding the 1 that SCALE-Sim's last-cycle index omits.",
        "",
    ]
    return "\n".join(header + lines) + "\n"


def write_section(section: str, page: Path = DOCS_PAGE) -> None:
    """Replace this benchmark's section of the page, or append it; other sections stay as they are."""
    text = page.read_text() if page.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION_HEADING)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"replace the '{SECTION_HEADING[3:]}' section of docs/benchmarks.md")
    args = parser.parse_args()
    section = run()
    print(section)
    if args.write:
        write_section(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
