"""The ``face4d`` command line: ``main()``, the parser made of the command modules, and the error policy.

Each command group lives in its own module of ``face4d.commands`` (after diffusers' ``commands/``),
with ``add_parser`` (its options) and ``run`` (the work, through the Python API: ``Pipeline``,
``face4d.data``, the trainers); their shared options are in ``face4d.commands.options``.

Error policy: bad input (a ``Face4DError``, an unreadable mesh, an OS error such as a missing file
or an existing output without ``--overwrite``) is one line on stderr, ``face4d: error: ...``, and
exit code 2, with nothing written; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import sys

from face4d.commands import COMMANDS
from face4d.commands.options import EXAMPLES
from face4d.errors import Face4DError
from meshops.io import MeshFileError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="face4d", description="4D facial animation with diffusion models.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (Face4DError, MeshFileError, OSError) as exc:
        if args.debug:
            raise
        print(f"face4d: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
