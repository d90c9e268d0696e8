"""What every command-line entry point shares: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from learngene_jax.errors import UserError


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Call main(argv); a UserError is printed as `error: ...` (no traceback) and exits with status 2."""
    try:
        code = main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def int_list(text: str) -> list[int]:
    """'3,3,4' → [3, 3, 4] (for argparse)."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise UserError(f"expected comma-separated integers, got {text!r}") from e
