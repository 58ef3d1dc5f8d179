"""Benchmark `hwsim.simulate` against published GPU measurements and against GenZ, in accuracy and in speed.

Run from the repository root:

    python benchmarks/bench_simulate.py            # print the markdown section
    python benchmarks/bench_simulate.py --write    # also replace the section in docs/benchmarks.md

Three parts:

1. Validation: each published measurement below (GEMM throughput, time to
   first token, decode and generation throughput on A100 and H100, fp16 and
   4-bit weight-only) is set next to hwsim's prediction for the same model,
   GPU, batch, lengths and formats, with the error per point. GenZ's
   prediction for the same point is shown beside it.
2. Speed: the time to evaluate Llama-3-8B, a prefill of 2048 tokens plus 256
   decode steps, on every preset accelerator, and GenZ's time for the same
   on the same GPU specs. GenZ prices one decode step per call, so "the
   same" is one prefill call plus one decode call per step; its one-call
   shortcut (one decode call standing for every step) is shown too.
3. GenZ runs in its own virtual environment (PyPI genz-llm 0.0.16), created
   on first use at .venv-genz in the repository root, because its
   dependencies (matplotlib, kaleido, jupyter widgets) are not hwsim's.

GenZ is given the same GPU spec: the dense fp16 peak and HBM bandwidth of
hwsim's preset, at its default efficiency of 1, with unlimited capacity so
that it never offloads. It takes one bit width for the whole system, so a
4-bit weight-only point runs in GenZ as "int4" everywhere.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import platform
import re
import statistics
import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

import numpy as np  # noqa: E402

from hwsim.hardware import load_accelerator, preset_names  # noqa: E402
from hwsim.hardware.gpu import GPU  # noqa: E402
from hwsim.hardware.kernels import MatmulRequest  # noqa: E402
from hwsim.simulation import simulate  # noqa: E402
from hwsim.workload import Scenario  # noqa: E402

SECTION_HEADING = "## LM simulation vs GenZ"
DOCS_PAGE = REPOSITORY / "docs" / "benchmarks.md"
GENZ_VENV = REPOSITORY / ".venv-genz"
GENZ_REQUIREMENT = "genz-llm==0.0.16"
SPEED_REPEATS = 5
SPEED_PROMPT_TOKENS = 2048
SPEED_DECODE_STEPS = 256

# GenZ's names for the shipped models it also ships. It has Llama-3.1-8B, not Llama-3-8B: the same layers, a
# longer context and another RoPE scaling, which do not change the costs at these lengths.
GENZ_MODELS = {"llama-2-7b": "meta-llama/Llama-2-7B", "llama-3-8b": "meta-llama/Llama-3.1-8B"}
# GenZ bit widths for hwsim policies (one width for the whole system).
GENZ_BITS = {"w16a16": "bf16", "w4a16-g32": "int4", "w4a16-g128": "int4", "w=fp8_e4m3,a=fp8_e4m3,kv=fp8_e4m3": "fp8"}


@dataclass(frozen=True)
class GemmPoint:
    """A measured GEMM: C[m, n] = A[m, k] @ B[k, n] at `tflops` on one GPU."""

    gpu: str
    m: int
    n: int
    k: int
    dtype: str
    tflops: float
    source: str
    calibration: bool = False


@dataclass(frozen=True)
class GenerationPoint:
    """A measured LM run: `metric` is "ttft_s", "output_tokens_per_s" or "total_tokens_per_s" (input and output tokens)."""

    gpu: str
    model: str
    policy: str
    batch: int
    prompt_tokens: int
    output_tokens: int
    metric: str
    measured: float
    source: str
    configuration_stated: bool = True


GEMM_POINTS = [
    GemmPoint("a100-sxm4-80gb", 1024, 10240, 5120, "bf16", 271.2,
              "stas00/ml-engineering MAMF table, A100 SXM, torch 2.6.0+cu126 (sets the preset's efficiency)", calibration=True),
    GemmPoint("a100-sxm4-80gb", 8192, 8192, 8192, "fp16", 277.5532,
              "PrincetonUniversity/LLMCompass ae/figure5/ab/real_hardware/matmul_A100.csv"),
    GemmPoint("a100-sxm4-80gb", 2048, 12288, 12288, "fp16", 262.2263,
              "PrincetonUniversity/LLMCompass ae/figure5/ab/real_hardware/matmul_A100.csv"),
    GemmPoint("a100-sxm4-80gb", 16384, 12288, 12288, "fp16", 290.5223,
              "PrincetonUniversity/LLMCompass ae/figure5/ab/real_hardware/matmul_A100.csv"),
    GemmPoint("a100-sxm4-80gb", 8192, 2048, 2048, "fp16", 243.8497,
              "PrincetonUniversity/LLMCompass ae/figure5/ab/real_hardware/matmul_A100.csv (includes their per-call timing overhead)"),
    GemmPoint("h100-sxm", 2048, 2048, 13312, "bf16", 794.5,
              "stas00/ml-engineering MAMF table, H100 SXM, torch 2.7.0+cu126 (sets the preset's efficiency)", calibration=True),
    GemmPoint("h100-sxm", 4096, 4096, 4096, "bf16", 716.0, "pranjalssh/fast.cu README, cuBLAS on H100"),
    GemmPoint("h100-sxm", 8192, 8192, 8192, "bf16", 795.0, "pranjalssh/fast.cu README, cuBLAS on H100"),
]

GPT_FAST = "pytorch-labs/gpt-fast README: A100 80 GB power-limited to 330 W, torch.compile, prompt of 5 tokens, 200 generated"
TRT_LLM_THROUGHPUT = "NVIDIA/TensorRT-LLM docs/source/performance.md, v0.6.1 data, A100 FP16 peak-throughput table"
TRT_LLM_LATENCY = "NVIDIA/TensorRT-LLM docs/source/performance.md, v0.5 data, first-token latency table"
ARGONNE = "argonne-lcf/LLM-Inference-Bench Plots/Fig_3/A100_H100_quant_all_results.csv, vLLM, input = output length"
MODELOPT = ("NVIDIA/TensorRT-Model-Optimizer benchmark.md (modelopt 0.15, TensorRT-LLM 0.11); input and output lengths "
            "not stated, 128 and 128 assumed")

GENERATION_POINTS = [
    GenerationPoint("a100-sxm4-80gb", "llama-2-7b", "w16a16", 1, 5, 200, "output_tokens_per_s", 104.9, GPT_FAST),
    GenerationPoint("a100-sxm4-80gb", "llama-2-7b", "w4a16-g32", 1, 5, 200, "output_tokens_per_s", 196.80, GPT_FAST + ", int4 G=32"),
    GenerationPoint("a100-sxm4-80gb", "llama-2-7b", "w16a16", 60, 128, 2048, "output_tokens_per_s", 1928.0, TRT_LLM_THROUGHPUT),
    GenerationPoint("a100-sxm4-80gb", "llama-2-7b", "w16a16", 1, 128, 1, "ttft_s", 0.016, TRT_LLM_LATENCY),
    GenerationPoint("a100-sxm4-80gb", "llama-2-7b", "w16a16", 1, 2048, 1, "ttft_s", 0.133, TRT_LLM_LATENCY),
    GenerationPoint("a100-sxm4-80gb", "llama-3-8b", "w16a16", 1, 1024, 1024, "total_tokens_per_s", 137.69, ARGONNE),
    GenerationPoint("a100-sxm4-80gb", "llama-3-8b", "w16a16", 32, 1024, 1024, "total_tokens_per_s", 2498.23, ARGONNE),
    GenerationPoint("h100-sxm", "llama-3-8b", "w16a16", 1, 1024, 1024, "total_tokens_per_s", 249.83, ARGONNE),
    GenerationPoint("h100-sxm", "llama-3-8b", "w16a16", 32, 1024, 1024, "total_tokens_per_s", 4833.92, ARGONNE),
    GenerationPoint("h100-sxm", "llama-3-8b", "w4a16-g128", 1, 128, 128, "output_tokens_per_s", 213.45, MODELOPT + ", INT4 AWQ", configuration_stated=False),
    GenerationPoint("h100-sxm", "llama-3-8b", "w4a16-g128", 32, 128, 128, "output_tokens_per_s", 2546.12, MODELOPT + ", INT4 AWQ", configuration_stated=False),
    GenerationPoint("h100-sxm", "llama-3-8b", "w4a16-g128", 64, 128, 128, "output_tokens_per_s", 3438.08, MODELOPT + ", INT4 AWQ", configuration_stated=False),
    GenerationPoint("h100-sxm", "llama-2-7b", "w=fp8_e4m3,a=fp8_e4m3,kv=fp8_e4m3", 1, 2048, 1, "ttft_s", 0.036, TRT_LLM_LATENCY + ", H100 FP8"),
]

# Policies per accelerator for the speed benchmark: fp16 where the hardware multiplies it, int8 on integer arrays.
SPEED_POLICIES = {"tpu-v1": "w8a8kv8", "research-32x32": "w8a8kv8", "edge-tpu-class": "w8a8kv8"}

GENZ_RUNNER = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from GenZ import decode_moddeling, prefill_moddeling

def system(spec):
    # Capacity is left unlimited so that GenZ prices every point on the GPU instead of offloading to host memory.
    return {"Flops": spec["tflops"], "Memory_size": 1.0e6, "Memory_BW": spec["bandwidth_gbs"], "ICN": 150,
            "real_values": True}

results = []
for job in json.load(sys.stdin):
    sys_ = system(job["gpu"])
    if job["kind"] == "point":
        prefill = prefill_moddeling(model=job["model"], batch_size=job["batch"], input_tokens=job["prompt"],
                                    system_name=sys_, bits=job["bits"])["Latency"] / 1e3
        decode_s = 0.0
        if job["output"] > 1:
            # One decode step at the middle of the generation stands for the average step.
            step = decode_moddeling(model=job["model"], batch_size=job["batch"], input_tokens=job["prompt"],
                                    output_tokens=max(1, job["output"] // 2), system_name=sys_,
                                    bits=job["bits"])["Latency"] / 1e3
            decode_s = step * (job["output"] - 1)
        results.append({"prefill_s": prefill, "decode_s": decode_s})
    else:
        shortcuts = []
        for _ in range(job["repeats"]):
            start = time.perf_counter()
            prefill_moddeling(model=job["model"], batch_size=1, input_tokens=job["prompt"], system_name=sys_, bits="bf16")
            decode_moddeling(model=job["model"], batch_size=1, input_tokens=job["prompt"], output_tokens=job["steps"],
                             system_name=sys_, bits="bf16")
            shortcuts.append(time.perf_counter() - start)
        shortcut = sorted(shortcuts)[len(shortcuts) // 2]
        start = time.perf_counter()
        prefill_moddeling(model=job["model"], batch_size=1, input_tokens=job["prompt"], system_name=sys_, bits="bf16")
        for step in range(job["steps"]):
            decode_moddeling(model=job["model"], batch_size=1, input_tokens=job["prompt"], output_tokens=step + 1,
                             system_name=sys_, bits="bf16")
        results.append({"shortcut_s": shortcut, "per_step_s": time.perf_counter() - start})
json.dump(results, sys.stdout)
"""


def ensure_genz_venv() -> Path:
    """Python of the GenZ virtual environment, created with pip on first use."""
    python = GENZ_VENV / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import GenZ"], capture_output=True).returncode == 0:
        return python
    venv.EnvBuilder(with_pip=True, clear=python.exists()).create(GENZ_VENV)
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", GENZ_REQUIREMENT], capture_output=True, text=True)
    if install.returncode != 0:
        raise RuntimeError(f"failed to install {GENZ_REQUIREMENT} into {GENZ_VENV}: {install.stderr.strip()[-2000:]}")
    return python


def genz_gpu(name: str) -> dict:
    """Return the preset's fp16 peak and HBM bandwidth in GenZ's units (TFLOPS, GB/s)."""
    spec = load_accelerator(name)
    return {"tflops": spec.gpu.peak_ops_per_s["fp16"] / 1e12, "bandwidth_gbs": spec.memory_level("hbm").bandwidth_bytes_per_s / 1e9}


def run_genz(jobs: list[dict]) -> list[dict]:
    python = ensure_genz_venv()
    result = subprocess.run([str(python), "-c", GENZ_RUNNER], input=json.dumps(jobs), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"GenZ failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


def metric_value(point: GenerationPoint, prefill_s: float, decode_s: float) -> float:
    """Compute the point's metric from the time of its prefill and of its other output_tokens - 1 decode steps."""
    if point.metric == "ttft_s":
        return prefill_s
    total_s = prefill_s + decode_s
    if point.metric == "output_tokens_per_s":
        return point.batch * point.output_tokens / total_s
    return point.batch * (point.prompt_tokens + point.output_tokens) / total_s


def predict(point: GenerationPoint) -> float:
    """hwsim's value of the point's metric: the prefill makes the first token, one decode step makes each other one."""
    scenarios = [Scenario.prefill(point.batch, point.prompt_tokens)]
    if point.output_tokens > 1:
        scenarios.append(Scenario.decode(point.batch, point.prompt_tokens, point.output_tokens - 1))
    report = simulate(point.model, point.policy, point.gpu, scenarios)
    prefill_s = report.phase("prefill")["latency_s"]
    decode_s = report.phase("decode")["latency_s"] if point.output_tokens > 1 else 0.0
    return metric_value(point, prefill_s, decode_s)


def predict_gemm(point: GemmPoint) -> float:
    gpu = GPU(load_accelerator(point.gpu))
    m, n, k = point.m, point.n, point.k
    cost = gpu.matmul(MatmulRequest("gemm", m, n, k, point.dtype, point.dtype, point.dtype, 2.0 * m * k, 2.0 * k * n, 2.0 * m * n))
    return 2.0 * m * n * k / cost.latency_s / 1e12


def _error(predicted: float, measured: float) -> str:
    return f"{(predicted - measured) / measured * 100:+.1f}%"


def _format_metric(metric: str, value: float) -> str:
    return f"{value * 1e3:.1f} ms" if metric == "ttft_s" else f"{value:,.1f}"


def validation_tables() -> tuple[list[str], list[float]]:
    lines = [
        "### Validation against published measurements",
        "",
        "Error = (prediction - measurement) / measurement. Rows marked calibration set the preset's tensor-core",
        "efficiency and are not independent checks. GenZ runs at its default efficiency of 1 on the same fp16 peak and",
        "HBM bandwidth, with unlimited capacity so that it never offloads to host memory.",
        "",
        "GEMM throughput (TFLOPS):",
        "",
        "| GPU | M x N x K | dtype | measured | hwsim | error | source |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    errors = []
    for point in GEMM_POINTS:
        predicted = predict_gemm(point)
        if not point.calibration:
            errors.append(abs(predicted - point.tflops) / point.tflops)
        label = " (calibration)" if point.calibration else ""
        lines.append(f"| {point.gpu} | {point.m} x {point.n} x {point.k} | {point.dtype} | {point.tflops:.1f} | {predicted:.1f} | "
                     f"{_error(predicted, point.tflops)}{label} | {point.source} |")

    jobs = []
    for point in GENERATION_POINTS:
        jobs.append({"kind": "point", "gpu": genz_gpu(point.gpu), "model": GENZ_MODELS[point.model], "batch": point.batch,
                     "prompt": point.prompt_tokens, "output": point.output_tokens, "bits": GENZ_BITS[point.policy]})
    genz = run_genz(jobs)
    lines += [
        "",
        "Language models (tokens/s are output tokens unless the metric says input + output):",
        "",
        "| GPU | model | policy | batch | prompt / output tokens | metric | measured | hwsim | error | GenZ | GenZ error | source |",
        "| --- | --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for point, theirs in zip(GENERATION_POINTS, genz):
        predicted = predict(point)
        genz_value = metric_value(point, theirs["prefill_s"], theirs["decode_s"])
        if point.configuration_stated:
            errors.append(abs(predicted - point.measured) / point.measured)
        metric = {"ttft_s": "time to first token", "output_tokens_per_s": "tokens/s",
                  "total_tokens_per_s": "input + output tokens/s"}[point.metric]
        lines.append(
            f"| {point.gpu} | {point.model} | {point.policy} | {point.batch} | {point.prompt_tokens} / {point.output_tokens} | "
            f"{metric} | {_format_metric(point.metric, point.measured)} | {_format_metric(point.metric, predicted)} | "
            f"{_error(predicted, point.measured)} | {_format_metric(point.metric, genz_value)} | {_error(genz_value, point.measured)} | "
            f"{point.source} |"
        )
    return lines, errors


FIRST_CALL = r"""
import json, logging, sys, time
logging.getLogger("hwsim").setLevel(logging.ERROR)
from hwsim.simulation import simulate
from hwsim.workload import Scenario
accelerator, policy, prompt, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
start = time.perf_counter()
simulate("llama-3-8b", policy, accelerator, [Scenario.prefill(1, prompt), Scenario.decode(1, prompt, steps)],
         unsupported="emulate", memory_overflow="report")
print(json.dumps(time.perf_counter() - start))
"""


def time_first_call(accelerator: str, policy: str) -> float:
    """Seconds of the first `simulate` call in a fresh Python process, after its imports."""
    command = [sys.executable, "-c", FIRST_CALL, accelerator, policy, str(SPEED_PROMPT_TOKENS), str(SPEED_DECODE_STEPS)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_ours(accelerator: str) -> tuple[float, float]:
    """First-call and median steady-state seconds to simulate Llama-3-8B, 2048-token prefill plus 256 decode steps."""
    scenarios = [Scenario.prefill(1, SPEED_PROMPT_TOKENS), Scenario.decode(1, SPEED_PROMPT_TOKENS, SPEED_DECODE_STEPS)]
    policy = SPEED_POLICIES.get(accelerator, "w16a16")
    options = {"unsupported": "emulate", "memory_overflow": "report"}
    first = time_first_call(accelerator, policy)
    simulate("llama-3-8b", policy, accelerator, scenarios, **options)
    samples = []
    for _ in range(SPEED_REPEATS):
        start = time.perf_counter()
        simulate("llama-3-8b", policy, accelerator, scenarios, **options)
        samples.append(time.perf_counter() - start)
    return first, statistics.median(samples)


def speed_table() -> tuple[list[str], list[float]]:
    accelerators = preset_names()
    ours = {name: time_ours(name) for name in accelerators}
    gpus = [name for name in accelerators if load_accelerator(name).kind == "gpu"]
    jobs = [{"kind": "speed", "gpu": genz_gpu(name), "model": GENZ_MODELS["llama-3-8b"], "prompt": SPEED_PROMPT_TOKENS,
             "steps": SPEED_DECODE_STEPS, "repeats": SPEED_REPEATS} for name in gpus]
    genz = dict(zip(gpus, run_genz(jobs)))
    lines = [
        "### Speed: Llama-3-8B, prefill of 2048 tokens plus 256 decode steps",
        "",
        "hwsim: one `simulate` call for both phases. Its first call in a fresh process includes importing",
        "transformers, which parses the model config, and reading the accelerator's YAML; later calls reuse both",
        f"(median of {SPEED_REPEATS}). GenZ, same work: one prefill call plus one decode call per step. GenZ, shortcut:",
        f"one prefill call plus one decode call at the last step's context, which prices one step only (median of {SPEED_REPEATS}).",
        "Speed ratios use hwsim's later calls, because GenZ keeps its model configs in memory too.",
        "",
        "| accelerator | kind | policy | hwsim first call (ms) | hwsim (ms) | GenZ, same work (ms) | speed ratio | GenZ, shortcut (ms) | ratio to shortcut |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ratios = []
    for name in accelerators:
        first, steady = ours[name]
        kind = load_accelerator(name).kind
        policy = SPEED_POLICIES.get(name, "w16a16")
        if name in genz:
            same, shortcut = genz[name]["per_step_s"], genz[name]["shortcut_s"]
            ratios.append(same / steady)
            lines.append(f"| {name} | {kind} | {policy} | {first * 1e3:.1f} | {steady * 1e3:.1f} | {same * 1e3:,.0f} | "
                         f"{same / steady:,.0f}x | {shortcut * 1e3:.0f} | {shortcut / steady:.1f}x |")
        else:
            lines.append(f"| {name} | {kind} | {policy} | {first * 1e3:.1f} | {steady * 1e3:.1f} | - | - | - | - |")
    return lines, ratios


def machine_description() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    model = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
    cpus = re.search(r"^CPU\(s\):\s*(\d+)$", lscpu, re.MULTILINE)
    return f"{model.group(1).strip() if model else platform.machine()}, {cpus.group(1) if cpus else '?'} logical CPUs"


def run() -> str:
    validation, errors = validation_tables()
    speed, ratios = speed_table()
    geometric_mean = math.exp(float(np.mean(np.log(ratios))))
    header = [
        SECTION_HEADING,
        "",
        "Command: `python benchmarks/bench_simulate.py --write`  ",
        f"Machine: {machine_description()}  ",
        f"Date: {datetime.date.today().isoformat()}; Python {platform.python_version()}; GenZ ({GENZ_REQUIREMENT}) in its own "
        "virtual environment  ",
        "Times are wall-clock on that machine, which other jobs may share.",
        "",
        f"Independent validation points with a stated configuration: {len(errors)}; mean absolute error "
        f"{np.mean(errors) * 100:.0f}%, largest {max(errors) * 100:.0f}% (the Model Optimizer rows, whose lengths are not "
        f"stated, are listed but left out of these figures). Speed ratio over GenZ for the same work: geometric mean {geometric_mean:,.0f}x, "
        f"minimum {min(ratios):,.0f}x over {len(ratios)} GPU specs.",
        "",
        "Sources of uncertainty: the gpt-fast A100 was power-limited to 330 W (the preset assumes 400 W); the vLLM and",
        "TensorRT-LLM numbers include framework time (sampling, scheduling) that hwsim does not model; the Model Optimizer",
        "rows do not state their lengths; GPUs of one model differ by several percent (ml-engineering reports 5% and",
        "more within one node); hwsim prices HBM energy with a DDR-era figure, which does not change latency.",
        "",
    ]
    return "\n".join(header + validation + [""] + speed) + "\n"


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
    # Models larger than an edge accelerator's memory are reported, not refused; their warnings are expected here.
    logging.getLogger("hwsim").setLevel(logging.ERROR)
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
