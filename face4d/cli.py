"""The ``face4d`` command line: ``main()``, the parser made of the command modules, and the error policy.

Each command group lives in its own module of ``face4d.commands`` (after diffusers' ``commands/``),
with ``add_parser`` (its options) and ``run`` (the work, through the Python API: ``Pipeline``,
``face4d.data``, the trainers); their shared options are in ``face4d.commands.options``.

Error policy: bad input (a ``Face4DError``, an unreadable mesh, an OS error such as a missing file
or an existing output without ``--overwrite``) is one line on stderr, ``face4d: error: ...``, and
exit code 2, with nothing written; SIGINT and SIGTERM remove the temporaries, print one line and
exit with 130 / 143; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

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


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled as SIGINT is: every writer's temporary is removed on the way out."""

    signum = signal.SIGTERM


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
    raise Interrupted()


def _check_lists(args: argparse.Namespace) -> None:
    """An empty comma-separated list (``--labels ""``, ``--labels ,,``) is refused, not taken as the default."""
    for name in ("labels", "held_out_labels"):
        if getattr(args, name, None) == ():
            raise Face4DError(f"--{name.replace('_', '-')} is empty; give comma-separated label names")


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input is one line on stderr and exit code 2; SIGINT and SIGTERM remove the
    temporaries, print one line and exit with 130 / 143 (128 + the signal's number)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        _check_lists(args)
        args.run(args)
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"face4d: interrupted ({signal.Signals(signum).name}); unfinished outputs were removed", file=sys.stderr)
        return 128 + signum
    except (Face4DError, MeshFileError, OSError) as exc:
        if args.debug:
            raise
        print(f"face4d: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
