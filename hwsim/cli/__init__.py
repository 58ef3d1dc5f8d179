"""The `hwsim` command.

Each subcommand lives in its own module of this package and exposes
`register(subparsers)`, which adds its parser and sets `func` to a handler
that takes the parsed arguments and returns an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from hwsim import __version__

# Modules that define subcommands, in the order `--help` lists them.
SUBCOMMAND_MODULES = [
    "hwsim.cli.formats_cmd",
    "hwsim.cli.models_cmd",
    "hwsim.cli.accelerators_cmd",
    "hwsim.cli.policies_cmd",
    "hwsim.cli.simulate_cmd",
    "hwsim.cli.dashboard_cmd",
    "hwsim.cli.sweep_cmd",
    "hwsim.cli.accuracy_cmd",
    "hwsim.cli.allocate_cmd",
]

log = logging.getLogger(__name__)


class UsageError(ValueError):
    """Bad input from the command line, reported as one line and exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwsim",
        description=(
            "Co-design number formats, bit policies and accelerators for language models: "
            "bit-accurate format emulation, hardware cost and model quality for one configuration."
        ),
    )
    parser.add_argument("--version", action="version", version=f"hwsim {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level on stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError, UsageError) as error:
        # Bad input: one line on stderr, exit status 2. A KeyError's str() adds quotes, so use its argument.
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"hwsim {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
