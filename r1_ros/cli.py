"""The `r1` command line.

    r1 doctor                 check the environment
    r1 <command> --help       every command documents its own options

Each command group lives in its own module and registers itself through
`register(subparsers)`; heavy imports happen inside the handlers so `r1 --help` is fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add subcommands. Each defines register(subparsers: argparse._SubParsersAction).
COMMAND_MODULES = [
    "r1_ros.doctor",
    "r1_core.data.cli",
    "r1_core.eval.viz_cli",
    "training.cli",
    "r1_core.views.cli",
    "r1_ros.bringup",
    "r1_ros.demo",
    "r1_ros.eval_bag",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r1", description="r1: 3D scene reasoning for robots (3D-R1 on ROS 2)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that describe bad input completely (file, record, field, expected, got): printed as
    one line, not a traceback."""
    from r1_core.config import ConfigError
    from r1_core.data.errors import DataFormatError
    from r1_core.model.backbones import BackboneError
    from r1_core.model.checkpoint import CheckpointError

    return DataFormatError, ConfigError, CheckpointError, BackboneError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except Exception as e:
        if not isinstance(e, _user_errors()):      # a programming error keeps its traceback
            raise
        print(f"r1 {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
