"""Errors that reach the user as one line: what is wrong and how to fix it.

Every command-line entry point calls its main through `run`, which prints a `UserError` as one `error:` line (no
traceback) and exits with status 2; `int_list` is the one argument parser they share.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input (config, checkpoint, gene, data) with a one-line fix."""


class GeneError(UserError):
    """A gene that is missing, corrupt, or does not fit what it is used for."""


class ConversionError(UserError):
    """A checkpoint that does not map onto the target layout (lists every bad key)."""


class ConfigError(UserError):
    """A config key or value that does not exist or does not fit."""


class DataError(UserError):
    """A dataset or data_dir that is missing or unreadable."""


def fail(exc_type: type[UserError], message: str) -> None:
    """Raise `exc_type(message)` with the message squashed onto one line."""
    raise exc_type(" ".join(str(message).split()))


def check_out_file(path: str, flag: str = "--out") -> None:
    """UserError unless `path` can be written as a file: its folder exists and it is not itself a folder."""
    target = Path(path).expanduser().absolute()
    if not target.parent.is_dir():
        fail(UserError, f"{flag}: no directory {target.parent}; create it first")
    if target.is_dir():
        fail(UserError, f"{flag}: {target} is a directory; give a file path")


def make_dir(path: str | Path, flag: str = "--workdir") -> Path:
    """Create the folder `path` (and its parents) unless it exists; a UserError when a file stands in the way."""
    target = Path(path).expanduser()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        fail(UserError, f"{flag} {target}: a file is in the way (it or a folder above it is a file); give a folder")
    return target


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Call main(argv); a UserError is printed as `error: ...` (no traceback) and exits with status 2 — also when
    a library wrapped it in another exception on the way (a worker, a thread, a callback): its cause or context
    chain is searched for it."""
    try:
        code = main(argv)
    except Exception as e:  # noqa: BLE001 - re-raised unless a UserError is inside
        user = user_error_in(e)
        if user is None:
            raise
        print(f"error: {user}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def user_error_in(error: BaseException, depth: int = 16) -> UserError | None:
    """The UserError that `error` is or was raised from (its __cause__/__context__ chain), else None."""
    seen = 0
    while error is not None and seen < depth:
        if isinstance(error, UserError):
            return error
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def int_list(text: str) -> list[int]:
    """'3,3,4' → [3, 3, 4] (for argparse)."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise UserError(f"expected comma-separated integers, got {text!r}") from e
