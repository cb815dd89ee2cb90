"""The ``lmrec`` command (``lmrec --help``): one module per command group, flags generated from the settings.

Every error about the user's input (an :class:`~lmrec.errors.LmrecError`, or an OS error about a path they gave)
is printed as ``lmrec: error: ...`` with exit status 2, naming the flags to change (``--emb-dim 0``, never the
Python keyword ``emb_dim=0``); a traceback appears only for a bug, or with ``--debug``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from lmrec.allocator import keep_freed_memory
from lmrec.cli import crs, data, experiments, serve, train, tune
from lmrec.cli.flags import typed
from lmrec.errors import UNSET, Argument, LmrecError

GROUPS = (data, train, tune, crs, experiments, serve)


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors (an unknown flag, a bad choice, a missing argument) read like lmrec's own:
    one line, ``lmrec: error: ...``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"lmrec: error: {message} (`{self.prog} --help` lists the flags)\n")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser; ``argv`` lets the commands that take a model name add that model's settings as flags."""
    parser = Parser(prog="lmrec", description="Recommendation with language models.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub, list(argv))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    keep_freed_memory()  # training's large temporaries stay in the process (lmrec.allocator)
    for stream in (sys.stdout, sys.stderr):  # progress lines reach a log file as they are printed, not at exit;
        if hasattr(stream, "reconfigure"):  # a title or "±" the locale cannot encode is escaped, not an error
            stream.reconfigure(line_buffering=True, errors="backslashreplace")
    if not args.debug:  # lmrec's warnings read like its errors, without a source line
        warnings.formatwarning = lambda message, category, *_, **__: f"lmrec: warning: {message}\n"
    try:
        args.func(args)
    except (LmrecError, ValueError) as error:  # ValueError: the remaining checks of values in older modules
        return _fail(error, args, _flag_namer(parser, args))
    except OSError as error:  # a path the user gave: unreadable, read-only, full disk, a file where a folder goes
        if error.filename is None:
            raise
        reason = error.strerror or str(error)
        return _fail(f"{error.filename}: {reason}", args)
    except KeyboardInterrupt:
        print("lmrec: interrupted", file=sys.stderr)
        return 130
    return 0


def _fail(error: object, args: argparse.Namespace, flag: Callable[[Argument], str] | None = None) -> int:
    """Print ``lmrec: error: ...`` (the arguments it names as ``flag`` writes them) and return the exit status 2."""
    if getattr(args, "debug", False):
        import traceback

        traceback.print_exc()
    message = error.naming(flag) if isinstance(error, LmrecError) and flag is not None else error
    print(f"lmrec: error: {message}", file=sys.stderr)
    return 2


def _flag_namer(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Callable[[Argument], str]:
    """How the command that ran names an argument: its flag (found by the argument's name among the command's
    options: ``items`` is ``--item``, ``k`` is ``-k``), with the value as one would type it (``--emb-dim 0``,
    ``--max-samples train=200``, ``--no-progress``)."""
    flags: dict[str, list[str]] = {}
    for action in _command(parser, args)._actions:
        if action.option_strings:  # dest "items" (--item), settings "LightGCNConfig.emb_dim" (--emb-dim)
            flags.setdefault(action.dest.rpartition(".")[2], action.option_strings)
            flags.setdefault(action.dest, action.option_strings)

    def name(argument: Argument) -> str:
        options = flags.get(argument.keyword) or ["--" + argument.keyword.replace("_", "-")]
        if isinstance(argument.value, bool) and len(options) == 2:  # --progress / --no-progress
            return options[0] if argument.value else options[1]
        flag = next((o for o in options if o.startswith("--")), options[0])
        return flag if argument.value is UNSET else f"{flag} {typed(argument.value)}"

    return name


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command ``args`` came from, e.g. the one of ``lmrec crs prepare``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None) in action.choices:
            return _command(action.choices[getattr(args, action.dest)], args)
    return parser


if __name__ == "__main__":
    sys.exit(main())
