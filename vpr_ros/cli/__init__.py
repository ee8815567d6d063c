"""
The `vpr-ros` command: build and inspect maps, localize and evaluate offline, export models.

Thin: one module per command parses its options and calls one pipeline function; the option
groups they share are in ``options``, the pipeline's flags come from ``parameters.PARAMETERS``.
"""

from __future__ import annotations

import argparse
import sys

from vpr_ros.cli import build_index, build_map, evaluate, export, inspect_map, localize, train
from vpr_ros.errors import VprError
from vpr_ros.logs import configure_logging

COMMANDS = (build_map, localize, evaluate, inspect_map, build_index, export, train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpr-ros", description=__doc__.strip().splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return args.run(args)
    except VprError as e:
        print(f"vpr-ros {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vpr-ros {args.command}: interrupted; nothing was left half-written",
              file=sys.stderr)
        return 130
