"""Benchmark co-design sweep throughput: 100,000 hardware x policy points per executor, with accuracy measured once per policy.

Run from the repository root:

    python benchmarks/bench_codesign.py            # print the markdown section
    python benchmarks/bench_codesign.py --write    # also replace the section in docs/benchmarks.md
    python benchmarks/bench_codesign.py --executors local --points 1000   # a quick check

What each point evaluates: `SystolicCostEvaluator`, the systolic-array
model (`SystolicArray.evaluate`) on every GEMM, GEMV and attention op of
SmolLM2-135M decoding 16 tokens after a 256-token context at batch 1.
The model runs as arrays of (point x op) over the points of one task that
share their PE and dataflow (`hwsim.codesign.systolic_batch`). The accelerator is TPU v1
with the dequantize fallback, varied along array size, SRAM per buffer,
DRAM bandwidth, clock and dataflow. Area and memory footprint come with
each point. Accuracy is the weight SQNR on all-MiniLM-L6-v2,
measured once per policy and joined onto that policy's 20,000 hardware
points. Each executor runs the whole sweep into a fresh checkpoint, so its
time includes the accuracy tasks, writing about a hundred Parquet parts,
assembling the table and the Pareto front, and starting its workers.
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

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from hwsim.codesign import SweepSpec, run_sweep  # noqa: E402

SECTION_HEADING = "## Co-design sweep throughput"
DOCS_PAGE = REPOSITORY / "docs" / "benchmarks.md"
EXECUTORS = ("local", "processes", "dask")
WORKERS = 2

POLICIES = ["w8a8", "w4a8", "w4a16", "w8a8kv8", "w=mxfp4,a=mxfp8_e4m3"]
HARDWARE = {
    "array_size": [8, 12, 16, 24, 32, 48, 64, 96, 128, 256],
    "sram_bytes": [2**15, 2**16, 2**17, 2**18, 2**19, 2**20, 2**21, 2**22, 2**23, 2**24],
    "dram_bandwidth_bytes_per_s": [float(x) for x in np.geomspace(4e9, 4e11, 10)],
    "clock_hz": [float(x) for x in np.linspace(3e8, 1.2e9, 10)],
    "dataflow": ["ws", "os"],
    "pe.fallback": ["dequantize"],
}


def make_spec(points: int) -> SweepSpec:
    """Build the benchmark sweep, cut down to about `points` points by keeping the first values of the axes."""
    hardware = dict(HARDWARE)
    for name in hardware:
        full = len(POLICIES) * int(np.prod([len(values) for values in hardware.values()]))
        if points >= full:
            break
        keep = max(1, round(len(hardware[name]) * points / full))
        hardware[name] = hardware[name][:keep]
    return SweepSpec.from_dict({
        "name": "bench-codesign",
        "model": "smollm2-135m",
        "accelerator": "tpu-v1",
        "policies": POLICIES,
        "hardware": hardware,
        "scenarios": [{"phase": "decode", "batch_size": 1, "context_tokens": 256, "generated_tokens": 16}],
        "objectives": {"weight_sqnr_db": "max", "latency_s": "min", "energy_j": "min", "area_mm2": "min"},
        "constraints": ["fits == true"],
        "evaluator": "systolic",
    })


def machine_description() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    model = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
    cpus = re.search(r"^CPU\(s\):\s*(\d+)$", lscpu, re.MULTILINE)
    return f"{model.group(1).strip() if model else platform.machine()}, {cpus.group(1) if cpus else '?'} logical CPUs"


def time_executor(spec: SweepSpec, executor: str, folder: Path) -> dict:
    start = time.perf_counter()
    result = run_sweep(spec, folder / executor / "results.parquet", executor=executor, workers=WORKERS, progress=False)
    seconds = time.perf_counter() - start
    table = result.table
    return {
        "executor": executor,
        "points": len(table),
        "seconds": seconds,
        "points_per_s": len(table) / seconds,
        "failed": int((table["status"] != "ok").sum()),
        "front": len(result.front),
        "table": table,
    }


def run(executors: list[str], points: int) -> str:
    load_before = os.getloadavg()[0]
    spec = make_spec(points)
    small = make_spec(len(POLICIES))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for executor in executors:
            # The same sweep with one hardware point shows what starting the workers and measuring accuracy costs.
            fixed = time_executor(small, executor, Path(folder) / "small")
            rows.append({**time_executor(spec, executor, Path(folder)), "fixed_seconds": fixed["seconds"]})
            print(f"{executor}: {rows[-1]['points']} points in {rows[-1]['seconds']:.1f} s", file=sys.stderr)
    reference = rows[0]["table"]
    identical = all(row["table"].equals(reference) for row in rows[1:])
    header = [
        SECTION_HEADING,
        "",
        "Command: `python benchmarks/bench_codesign.py --write`  ",
        f"Machine: {machine_description()}  ",
        f"Date: {datetime.date.today().isoformat()}; Python {platform.python_version()}, numpy {np.__version__}  ",
        "Times are wall-clock on that machine, which other jobs may share, so repeated runs can differ by a factor of two. "
        f"The 1-minute load average was {load_before:.1f} when this run started and {os.getloadavg()[0]:.1f} when it ended; "
        "on a loaded machine two worker processes need not beat one.",
        "",
        f"Sweep: {spec.num_points:,} points = {len(spec.policies)} bit policies x {spec.hardware_points:,} hardware points "
        "(array size, SRAM per buffer, DRAM bandwidth, clock, dataflow on a TPU v1 base with the dequantize fallback), "
        "one scenario (SmolLM2-135M, decode of 16 tokens after 256, batch 1).",
        "Each point: the systolic-array model on every GEMM, GEMV and attention op of the workload, as arrays of "
        "(point x op) over the points of one task (`SystolicCostEvaluator`), with area and memory footprint. Accuracy: weight SQNR on all-MiniLM-L6-v2, measured "
        "once per policy and joined onto its points. Each run starts from an empty checkpoint and includes the accuracy "
        f"tasks, the Parquet parts, the table with its Pareto front, and starting {WORKERS} workers.",
        "",
        f"Tables of all executors identical: {'yes' if identical else 'NO'}. Failed points are recorded, not retried: "
        "their SRAM buffers cannot hold one fold of the larger arrays.",
        "",
        f"The fixed cost is the wall time of the same sweep with one hardware point ({len(POLICIES)} points): starting the "
        "worker processes, importing hwsim in each, and measuring accuracy, whose qdq kernels each worker compiles.",
        "",
        "| executor | workers | points | failed | on the Pareto front | wall time (s) | points per second | fixed cost (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines = [
        f"| {row['executor']} | {1 if row['executor'] == 'local' else WORKERS} | {row['points']:,} | {row['failed']:,} | "
        f"{row['front']:,} | {row['seconds']:.1f} | {row['points_per_s']:,.0f} | {row['fixed_seconds']:.1f} |"
        for row in rows
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
    page.write_text(text.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"replace the '{SECTION_HEADING[3:]}' section of docs/benchmarks.md")
    parser.add_argument("--executors", nargs="+", choices=EXECUTORS, default=list(EXECUTORS), help="executors to time (default: all)")
    parser.add_argument("--points", type=int, default=100_000, help="points to sweep (default 100,000; fewer drops array sizes)")
    args = parser.parse_args()
    section = run(args.executors, args.points)
    print(section)
    if args.write:
        write_section(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
