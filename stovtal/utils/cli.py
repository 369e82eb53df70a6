"""The error contract of every ``python -m stovtal.*`` command.

A mistake in the user's input (a bad config value, a missing or malformed file, a checkpoint
of another model, a busy work directory) ends the command with exactly one line on stderr,
``error: <message>``, whose message names the file, video or config key, and exit status 2
(argparse's status for usage errors). Anything else is a bug and keeps Python's traceback (exit
status 1). ``--debug`` anywhere on the command line (or ``STOVTAL_DEBUG=1`` in the environment,
e.g. for every rank under torchrun) shows the traceback of user errors too.

User errors are the exceptions in :data:`USER_ERRORS`: our own :class:`UserError`, and the
built-in types our readers and validators raise with a message naming the input (``ValueError``,
of which ``ConfigError`` and ``DataError`` are subclasses; ``OSError`` such as a missing file, no
permission or a full disk; ``FloatingPointError`` for a non-finite loss); omegaconf's errors for a
malformed config too.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["USER_ERRORS", "UserError", "add_debug_flag", "cli_entry", "error_line", "user_error_types"]


class UserError(Exception):
    """An error in the user's input; the message names the file / video / config key."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, OSError, FloatingPointError)

DEBUG_FLAG = "--debug"
MAX_MESSAGE = 2000
_WORKER_TRACE = re.compile(r"Original Traceback \(most recent call last\):.*", re.S)


def user_error_types() -> tuple[type[BaseException], ...]:
    """:data:`USER_ERRORS` plus omegaconf's exception base (if omegaconf is installed)."""
    try:
        from omegaconf.errors import OmegaConfBaseException
    except ImportError:  # pragma: no cover - omegaconf is a dependency of the apps
        return USER_ERRORS
    return (*USER_ERRORS, OmegaConfBaseException)


def error_line(exc: BaseException) -> str:
    """``exc`` as one ``error: ...`` line.

    An error re-raised from a DataLoader worker carries the worker's traceback in its message;
    only the original exception's last line is kept. Newlines become ``" | "``; very long
    messages are cut at :data:`MAX_MESSAGE` characters."""
    msg = str(exc).strip()
    if "Original Traceback" in msg:
        lines = [ln for ln in _WORKER_TRACE.search(msg).group(0).splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else msg
        msg = last.split(": ", 1)[1] if re.match(r"^[\w.]+(Error|Exception): ", last) else last
    if not msg:
        msg = type(exc).__name__
    msg = " | ".join(line.strip() for line in msg.splitlines() if line.strip())
    if len(msg) > MAX_MESSAGE:
        msg = msg[:MAX_MESSAGE] + " ..."
    return f"error: {msg}"


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """List ``--debug`` in ``parser``'s help (:func:`cli_entry` removes it before parsing)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="show the Python traceback of a user error (also: STOVTAL_DEBUG=1)")


def _debug_requested(argv: list[str]) -> tuple[list[str], bool]:
    debug = os.environ.get("STOVTAL_DEBUG", "") not in ("", "0")
    if DEBUG_FLAG in argv:
        argv = [a for a in argv if a != DEBUG_FLAG]
        debug = True
    return argv, debug


def cli_entry(main: Callable[[list[str] | None], int] | None = None, *,
              extra: tuple[type[BaseException], ...] = ()) -> Any:
    """Decorate a command's ``main(argv) -> int`` with the error contract above
    (``@cli_entry``, or ``@cli_entry(extra=(RuntimeError,))`` where a command knows more
    exception types to be user errors, e.g. a third-party loader's errors for a bad weights file).

    The wrapped ``main`` takes ``argv`` (default ``sys.argv[1:]``), drops ``--debug`` from it and
    returns ``main``'s status, or 2 after printing the ``error:`` line of a user error."""
    if main is None:
        return functools.partial(cli_entry, extra=extra)

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        args, debug = _debug_requested(list(sys.argv[1:] if argv is None else argv))
        if debug:
            return main(args)
        try:
            return main(args)
        except (*user_error_types(), *extra) as exc:
            sys.stdout.flush()
            print(error_line(exc), file=sys.stderr, flush=True)
            return 2

    return wrapper
