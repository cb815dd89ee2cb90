"""The ``lmrec`` command (``lmrec --help``): one module per command group, flags generated from the settings.

Every error about the user's input (an :class:`~lmrec.errors.LmrecError`, or an OS error about a path they gave)
is printed as ``lmrec: error: ...`` with exit status 2; a traceback appears only for a bug, or with ``--debug``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from lmrec.allocator import keep_freed_memory
from lmrec.cli import crs, data, experiments, serve, train, tune
from lmrec.errors import LmrecError

GROUPS = (data, train, tune, crs, experiments, serve)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser; ``argv`` lets the commands that take a model name add that model's settings as flags."""
    parser = argparse.ArgumentParser(prog="lmrec", description="Recommendation with language models.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub, list(argv))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    keep_freed_memory()  # training's large temporaries stay in the process (lmrec.allocator)
    if hasattr(sys.stdout, "reconfigure"):  # progress lines reach a log file as they are printed, not at exit
        sys.stdout.reconfigure(line_buffering=True)
    if not args.debug:  # lmrec's warnings read like its errors, without a source line
        warnings.formatwarning = lambda message, category, *_, **__: f"lmrec: warning: {message}\n"
    try:
        args.func(args)
    except (LmrecError, ValueError) as error:  # ValueError: the remaining checks of values in older modules
        return _fail(error, args)
    except OSError as error:  # a path the user gave: unreadable, read-only, full disk, a file where a folder goes
        if error.filename is None:
            raise
        reason = error.strerror or str(error)
        return _fail(f"{error.filename}: {reason}", args)
    except KeyboardInterrupt:
        print("lmrec: interrupted", file=sys.stderr)
        return 130
    return 0


def _fail(error: object, args: argparse.Namespace) -> int:
    if getattr(args, "debug", False):
        import traceback

        traceback.print_exc()
    print(f"lmrec: error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
