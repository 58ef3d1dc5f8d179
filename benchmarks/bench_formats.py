"""qdq throughput of hwsim's format kernels beside ml_dtypes, torchao and a numpy copy, in one run.

    python benchmarks/bench_formats.py [--size 4096] [--repeats 5] [--output docs/benchmarks.md]

Each cell is the best of `--repeats` runs on a size x size float32 tensor
from a fixed seed, in million elements per second. Compile time of the
Numba kernels is measured apart, on the first call. Peers:
- ml_dtypes: `x.astype(float8_e4m3fn).astype(float32)`, the cast there and back;
- torchao (`torchao.prototype.mx_formats.mx_tensor`): `to_mx` then `to_dtype`,
  its emulated MX path on the CPU;
- numpy: `x.copy()`, the memory-bound ceiling.
Targets on one thread: MX qdq at least 10x torchao, element formats at
least 3x ml_dtypes.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np

import hwsim

FORMATS = ["fp8_e4m3", "fp4_e2m1", "int4_g128", "mxfp8_e4m3", "mxfp4", "nvfp4"]


def best_rate(fn, elements: int, repeats: int) -> float:
    """Best of `repeats` calls, in million elements per second."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return elements / best / 1e6


def ml_dtypes_peer(name: str):
    import ml_dtypes

    dtypes = {"fp8_e4m3": ml_dtypes.float8_e4m3fn, "fp4_e2m1": ml_dtypes.float4_e2m1fn}
    return dtypes.get(name)


def torchao_peer(name: str):
    """to_mx/to_dtype arguments for an MX format, or None when torchao lacks it."""
    try:
        import torch
        from torchao.prototype.mx_formats.mx_tensor import to_dtype, to_mx
    except ImportError:
        return None
    element = {"mxfp8_e4m3": torch.float8_e4m3fn, "mxfp4": getattr(torch, "float4_e2m1fn_x2", None)}.get(name)
    if element is None:
        return None

    def run(tensor):
        scale, data = to_mx(tensor, element, 32)
        return to_dtype(data, scale, element, 32, torch.float32)

    return run


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def measure(size: int, repeats: int, threads: int) -> list[dict]:
    import torch

    numba.set_num_threads(threads)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((size, size), dtype=np.float32)
    xt = torch.from_numpy(x)
    elements = x.size
    copy_rate = best_rate(lambda: x.copy(), elements, repeats)
    rows = []
    for name in FORMATS:
        start = time.perf_counter()
        hwsim.qdq(x[:64], name)
        compile_s = time.perf_counter() - start
        ours = best_rate(lambda: hwsim.qdq(x, name), elements, repeats)
        row = {"format": name, "threads": threads, "hwsim": ours, "compile_s": compile_s, "numpy_copy": copy_rate}
        peer_dtype = ml_dtypes_peer(name)
        if peer_dtype is not None:
            expected = x.astype(peer_dtype).astype(np.float32)
            row["same_values"] = bool(np.array_equal(hwsim.qdq(x, name, saturate=False), expected, equal_nan=True))
            row["ml_dtypes"] = best_rate(lambda: x.astype(peer_dtype).astype(np.float32), elements, repeats)
        peer = torchao_peer(name)
        if peer is not None:
            row["same_values"] = bool(np.array_equal(hwsim.qdq(x, name), peer(xt).numpy(), equal_nan=True))
            row["torchao"] = best_rate(lambda: peer(xt), elements, max(1, repeats // 2))
        rows.append(row)
    return rows


def to_markdown(rows: list[dict], command: str) -> str:
    lines = [
        "## Format qdq throughput",
        "",
        f"Command: `{command}`  ",
        f"Machine: {cpu_model()}, {numba.config.NUMBA_NUM_THREADS} cores visible to Numba, Python {platform.python_version()}, "
        f"numba {numba.__version__}, numpy {np.__version__}  ",
        f"Date: {datetime.date.today().isoformat()}",
        "",
        "Million elements per second, best of the repeats, 4096 x 4096 float32 input unless the command says otherwise. "
        "Ratios are hwsim over the peer in the same run; `same values` says whether hwsim's qdq equalled the peer's bit for bit "
        "(ml_dtypes without saturation, as ml_dtypes casts).",
        "",
        "| format | threads | hwsim | ml_dtypes | torchao | numpy copy | vs ml_dtypes | vs torchao | of copy speed | same values | first call (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in rows:
        ml = row.get("ml_dtypes")
        ao = row.get("torchao")
        lines.append(
            "| {format} | {threads} | {hwsim:.0f} | {ml} | {ao} | {copy:.0f} | {rml} | {rao} | {frac:.1%} | {same} | {compile:.2f} |".format(
                format=row["format"],
                threads=row["threads"],
                hwsim=row["hwsim"],
                ml=f"{ml:.0f}" if ml else "-",
                ao=f"{ao:.0f}" if ao else "-",
                copy=row["numpy_copy"],
                rml=f"{row['hwsim'] / ml:.1f}x" if ml else "-",
                rao=f"{row['hwsim'] / ao:.1f}x" if ao else "-",
                frac=row["hwsim"] / row["numpy_copy"],
                same={True: "yes", False: "no"}.get(row.get("same_values"), "-"),
                compile=row["compile_s"],
            )
        )
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section of the benchmarks page, keeping the others."""
    heading = section.splitlines()[0]
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEach section is written by the script it names.\n"
    if heading in text:
        start = text.index(heading)
        following = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[following + 1 :] if following != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="rows and columns of the float32 test tensor")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell; the best counts")
    parser.add_argument("--output", type=Path, help="benchmarks page to update (its 'Format qdq throughput' section)")
    args = parser.parse_args(argv)
    rows = []
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        rows += measure(args.size, args.repeats, threads)
    command = "python benchmarks/bench_formats.py " + " ".join(sys.argv[1:])
    section = to_markdown(rows, command.strip())
    print(section)
    if args.output:
        write_section(args.output, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
