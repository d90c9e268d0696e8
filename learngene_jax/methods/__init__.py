"""The learngene methods, one package each: its gene contract, the models and objectives only it needs, its
pipeline. Importing a package registers what it owns (models, gene method, tasks, trainer extensions) in
`learngene_jax.registry`, `learngene_jax.models` and `learngene_jax.genes`; nothing outside imports its
internals, so a deleted package only takes its own configs and tests with it."""

from __future__ import annotations

import importlib

PACKAGES = ("tleg", "sws", "heur", "lgpool", "asvit", "weight_selection")
_loaded = False


def load() -> None:
    """Import every method package that is installed (once); a package that was removed is skipped."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in PACKAGES:
        module = f"{__name__}.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:  # a broken import inside an existing package must not be hidden
                raise
