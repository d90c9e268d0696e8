"""Log lines of the toolkit: through absl logging, on process 0 only (the others would repeat them). Importing a
module of learngene_jax changes no logging state; entry points call `setup` once."""

from __future__ import annotations

import logging
import sys

from absl import logging as absl_logging

from learngene_jax.distributed import is_main_process

OWN = "learngene_jax"  # set on our records (logging's `extra`), so the filter below can tell them apart
_configured = False


class _OwnInfoOnly(logging.Filter):
    """Below WARNING, only learngene_jax's own records: the libraries (Orbax, tfds, grain) log through absl too and
    their INFO lines would bury ours. Also drops tfds's advice to install OpenCV (we decode with PIL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "opencv" in record.getMessage().lower():
            return False
        return record.levelno >= logging.WARNING or getattr(record, OWN, False)


def setup(verbosity: int | None = None) -> None:
    """Show our INFO lines and the libraries' warnings on stderr (absl's `-v` level when given: -v 1 and above
    let the libraries' INFO lines through too)."""
    global _configured
    _configured = True
    absl_logging.set_verbosity(absl_logging.INFO if verbosity is None else verbosity)
    absl_logging.use_absl_handler()
    handler = absl_logging.get_absl_handler()
    if verbosity is None and not any(isinstance(f, _OwnInfoOnly) for f in handler.filters):
        handler.addFilter(_OwnInfoOnly())


def info(message: str) -> None:
    """One INFO line on process 0 (outside an entry point, e.g. in a notebook, the first call runs `setup`)."""
    if is_main_process():
        if not _configured:
            setup()
        absl_logging.info(message, extra={OWN: True}, stacklevel=2)  # name the caller


def note(message: str) -> None:
    """One `note:` line on stderr (process 0): what was done with a user's input that changes nothing silently."""
    if is_main_process():
        print(f"note: {message}", file=sys.stderr, flush=True)
