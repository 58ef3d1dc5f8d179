"""`hwsim accelerators`: list the accelerator presets, or show one with its derived energies and area."""

from __future__ import annotations

import argparse

import pandas as pd

from hwsim.cli import UsageError
from hwsim.hardware import SystolicArray, UnsupportedFormatError, load_accelerator, preset_names
from hwsim.hardware.spec import DATAFLOW_NAMES, AcceleratorSpec

# Formats tried, in order, for the energy table of `show` when --activation and --weight are not given.
_DEFAULT_FORMAT_CANDIDATES = ("int8", "fp16", "bf16", "fp8_e4m3", "mxfp8_e4m3", "mxfp4")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "accelerators",
        help="list the accelerator presets or show one",
        description="List the accelerator specs shipped in accelerators/, or show one with its memory levels, energies and area.",
    )
    actions = parser.add_subparsers(dest="accelerators_action", metavar="ACTION", required=True)

    list_parser = actions.add_parser("list", help="list the presets with array size, dataflow, clock, node and area")
    list_parser.set_defaults(func=run_list)

    show = actions.add_parser("show", help="show one accelerator: spec, memory levels, energy per action and area")
    show.add_argument("name", metavar="NAME", help="a preset name from `hwsim accelerators list`, or a path to a .yaml spec")
    show.add_argument("--activation", default=None, metavar="FORMAT", help="activation format for the energy table (default: one the PE takes)")
    show.add_argument("--weight", default=None, metavar="FORMAT", help="weight format for the energy table (default: the activation format)")
    show.set_defaults(func=run_show)


def _summary_row(spec: AcceleratorSpec) -> dict[str, object]:
    if spec.kind != "systolic_array":
        return {
            "name": spec.name,
            "array": spec.kind,
            "dataflow": "-",
            "PE": "-",
            "clock": f"{spec.clock_hz / 1e6:g} MHz",
            "node": f"{spec.technology.node_nm:g} nm",
            "area (estimate)": "-",
            "description": spec.description,
        }
    model = SystolicArray(spec)
    array = spec.systolic_array
    return {
        "name": spec.name,
        "array": f"{array.rows}x{array.cols}",
        "dataflow": array.dataflow,
        "PE": spec.pe.kind,
        "clock": f"{spec.clock_hz / 1e6:g} MHz",
        "node": f"{spec.technology.node_nm:g} nm",
        "area (estimate)": f"{model.area().total_mm2:.1f} mm^2",
        "description": spec.description,
    }


def run_list(args: argparse.Namespace) -> int:
    rows = [_summary_row(load_accelerator(name)) for name in preset_names()]
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _default_formats(model: SystolicArray) -> tuple[str, str]:
    pe = model.spec.pe
    candidates = ((pe.native_format,) if pe.native_format else ()) + _DEFAULT_FORMAT_CANDIDATES
    for name in candidates:
        try:
            model.mapping(name, name)
        except UnsupportedFormatError:
            continue
        return name, name
    raise UsageError(f"none of {', '.join(candidates)} runs on accelerator {model.name!r}; pass --activation and --weight")


def run_show(args: argparse.Namespace) -> int:
    spec = load_accelerator(args.name)
    if spec.kind != "systolic_array":
        print(f"{spec.name}: {spec.description}")
        print(f"  kind: {spec.kind}; clock: {spec.clock_hz / 1e6:g} MHz; static power: {spec.static_power_w:g} W")
        section = spec.gpu if spec.kind == "gpu" else spec.npu
        print(f"  {spec.kind}: {', '.join(f'{key}={value}' for key, value in vars(section).items())}")
        for level in spec.memory:
            print(f"  memory {level.name}: {level.kind}, {level.capacity_bytes} bytes")
        for source in spec.sources:
            print(f"  source: {source}")
        return 0
    model = SystolicArray(spec)
    array, technology = spec.systolic_array, spec.technology
    print(f"{spec.name}: {spec.description}")
    print(f"  array: {array.rows}x{array.cols} PEs, {DATAFLOW_NAMES[array.dataflow]} ({array.dataflow})")
    print(f"  clock: {spec.clock_hz / 1e6:g} MHz; static power: {spec.static_power_w:g} W")
    print(f"  technology: {technology.node_nm:g} nm {technology.flavor.upper()} at {technology.supply_voltage_v:g} V")
    pe_fields = {key: value for key, value in vars(spec.pe).items() if value not in (None, (), "none")}
    print(f"  PE: {', '.join(f'{key}={value}' for key, value in pe_fields.items())}")
    for source in spec.sources:
        print(f"  source: {source}")

    print("\nmemory levels:")
    rows = []
    for level in model.memory.levels:
        rows.append(
            {
                "level": level.name,
                "kind": level.kind,
                "capacity_bytes": level.capacity_bytes,
                "bandwidth_bytes_per_cycle": f"{level.bandwidth_bytes_per_cycle:.4g}",
                "read_pj_per_byte": f"{level.read_energy_j_per_byte * 1e12:.4g}",
                "write_pj_per_byte": f"{level.write_energy_j_per_byte * 1e12:.4g}",
                "energy source": level.energy_source,
            }
        )
    print(pd.DataFrame(rows).to_string(index=False))

    activation = args.activation or (args.weight if args.weight else None)
    weight = args.weight or activation
    if activation is None:
        activation, weight = _default_formats(model)
    mapping = model.mapping(activation, weight)
    print(f"\nenergy per action for activation {activation} x weight {weight} "
          f"({mapping.macs_per_pe_cycle:g} MAC per PE per cycle):")
    table = model.energy_table(activation, weight)
    energy_rows = [
        {"action": entry.action, "energy_pj": f"{entry.energy_j * 1e12:.4g}", "estimate": entry.is_estimate, "source": entry.source}
        for entry in table.entries
        if entry.energy_j > 0 or entry.action == "mac"
    ]
    print(pd.DataFrame(energy_rows).to_string(index=False))
    for note in mapping.notes:
        print(f"  note: {note}")

    area = model.area()
    print(f"\narea (estimate, PE array and SRAM only): {area.total_mm2:.2f} mm^2 = "
          f"PEs {area.pe_array_mm2:.2f} + SRAM {area.sram_mm2:.2f}; one PE {area.pe_area.area_mm2 * 1e6:.1f} um^2 ({area.pe_area.source})")
    return 0
