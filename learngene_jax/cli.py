"""What every command-line entry point shares: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from learngene_jax.errors import UserError


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
