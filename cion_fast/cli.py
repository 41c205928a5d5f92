"""The ``cion-fast`` command line. Only wiring: every subcommand calls into the library.

Run ``cion-fast --help`` for the list of subcommands and ``cion-fast <command> --help`` for each.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

# Each entry: name -> (help, function adding the subcommand's arguments, function running it).
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str):
    """Registers ``run(args) -> exit code`` as subcommand ``name``; the decorated function's
    ``add_arguments`` attribute, if any, adds its arguments."""

    def register(run: Callable[[argparse.Namespace], int]):
        _COMMANDS[name] = (help, getattr(run, "add_arguments", lambda parser: None), run)
        return run

    return register


@command("info", "print what was compiled (OpenMP, CUDA, architectures) and whether a GPU is usable")
def _info(args: argparse.Namespace) -> int:
    import cion_fast

    info = cion_fast.build_info()
    info["cuda_available"] = cion_fast.cuda_available()
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cion-fast",
        description="Fast ReID pre-training and retrieval: CION denoising, self-distillation, evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, run) in _COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub_parser)
        sub_parser.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
