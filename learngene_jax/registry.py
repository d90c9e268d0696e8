"""Name → implementation tables that the generic parts (trainer, `main`, gene files, model registry) look
things up in; each method package fills them with what it owns when it is imported (`methods.load`)."""

from __future__ import annotations

import importlib
from typing import Any

from learngene_jax.errors import ConfigError, fail


class Registry:
    """A named table of implementations. Values may be given as 'module:attribute' strings, imported on first
    use, so registering costs nothing until the entry is needed."""

    def __init__(self, what: str):
        self.what = what  # how an error names an entry, e.g. 'config.task'
        self._entries: dict[str, Any] = {}

    def register(self, name: str, value: Any = None) -> Any:
        """Add `value` under `name`; without a value, a decorator that adds the decorated object."""
        if value is not None:
            self._entries[name] = value
            return value

        def wrap(obj: Any) -> Any:
            self._entries[name] = obj
            return obj
        return wrap

    def get(self, name: str) -> Any:
        """The entry `name` (a lazy 'module:attribute' entry is imported now); an unknown name is a ConfigError."""
        _load_methods()
        if name not in self._entries:
            fail(ConfigError, f"unknown {self.what} {name!r}; known: {', '.join(self.names()) or '(none)'}")
        value = self._entries[name]
        if isinstance(value, str):
            module, attribute = value.split(":")
            value = self._entries[name] = getattr(importlib.import_module(module), attribute)
        return value

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        _load_methods()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        _load_methods()
        return name in self._entries

    def items(self) -> list[tuple[str, Any]]:
        """(name, entry) pairs in registration order, lazy entries imported."""
        _load_methods()
        return [(name, self.get(name)) for name in list(self._entries)]


def _load_methods() -> None:
    from learngene_jax import methods  # late: method packages import the modules that define registries

    methods.load()


# What `main` runs: config.task → a function (config, workdir) → summary dict.
TASKS = Registry("config.task")
TASKS.register("train", "learngene_jax.train:train")  # the generic ones; method packages add theirs
TASKS.register("demo", "learngene_jax.experiments.demo:run")
TASKS.register("baselines", "learngene_jax.experiments.baselines:run")
TASKS.register("lm_demo", "learngene_jax.experiments.lm_demo:run")
TASKS.register("lm_anchor", "learngene_jax.experiments.lm_anchor:run")
# How the trainer builds its student: name → builder(config, num_classes) → train.Student (see students.py).
STUDENTS = Registry("student")
# Extra loss terms the trainer adds when the config turns them on (e.g. Heur's EWC penalty): name → LossTerm.
LOSS_TERMS = Registry("loss term")
# Training phases that change how the model runs from some epoch on (e.g. As-ViT's re-tokenization):
# name → phases(config, model) → [(start_epoch, model field overrides)], empty when the config does not use it.
STEP_VARIANTS = Registry("step variant")
