"""Training objectives: what one step minimises, given the student, the (optional) frozen teacher and a batch.

The trainer looks an objective up by `config.objective`; methods with their own loss (feature distillation,
stitched pools, ...) register one here instead of editing the trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from learngene_jax.errors import ConfigError, fail
from learngene_jax.objectives.losses import distillation_loss
from learngene_jax.objectives.teacher import Teacher

BATCH_STATS = "batch_stats"  # BatchNorm running statistics: updated in train mode, not by the optimizer


@dataclasses.dataclass(frozen=True)
class StepInputs:
    """One training batch after mixing: images (B, H, W, C), soft targets (B, classes), original labels (B,)."""

    images: jax.Array
    targets: jax.Array
    labels: jax.Array
    rng: jax.Array  # dropout / drop-path
    batch: dict[str, jax.Array] = dataclasses.field(default_factory=dict)  # the loader's batch (text: documents)

    def count(self) -> jax.Array:
        """What an objective's loss is a mean over, as a float32 scalar: the target tokens a text batch's
        `token_mask` keeps, else every label (examples; tokens of a text batch). The trainer weights microbatches
        by it when it accumulates gradients (train.py), so that their sum is the whole batch's mean."""
        if "token_mask" in self.batch:
            return jnp.sum(self.batch["token_mask"].astype(jnp.float32))
        return jnp.asarray(self.labels.size, jnp.float32)


# (params, collections (e.g. batch_stats), frozen inputs (e.g. teacher variables), batch) →
# (loss, collection updates, extra metrics)
ObjectiveFn = Callable[[Any, dict[str, Any], dict[str, Any], StepInputs], tuple[jax.Array, dict, dict]]
_OBJECTIVES: dict[str, Callable[[Any, nn.Module, Teacher | None], ObjectiveFn]] = {}


def register(name: str):
    """Decorator adding an objective factory `(config, model, teacher) → ObjectiveFn`."""
    def wrap(factory):
        _OBJECTIVES[name] = factory
        return factory
    return wrap


def make_objective(config: Any, model: nn.Module, teacher: Teacher | None) -> ObjectiveFn:
    """The objective `config.objective` names, built for this model and teacher."""
    if config.objective not in _OBJECTIVES:
        fail(ConfigError, f"unknown config.objective {config.objective!r}; known: {', '.join(sorted(_OBJECTIVES))}")
    return _OBJECTIVES[config.objective](config, model, teacher)


def apply_train(model: nn.Module, params: Any, collections: dict[str, Any], images: jax.Array, rng: jax.Array,
                **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Train-mode forward; returns (output, updated collections such as BatchNorm statistics)."""
    variables = {"params": params, **collections}
    if BATCH_STATS in collections:
        return model.apply(variables, images, train=True, rngs={"dropout": rng}, mutable=[BATCH_STATS], **kwargs)
    return model.apply(variables, images, train=True, rngs={"dropout": rng}, **kwargs), {}


@register("classification")
def classification(config: Any, model: nn.Module, teacher: Teacher | None) -> ObjectiveFn:
    """(1 − α)·CE(student, mixed targets) + α·KD(student, teacher on the same mixed images) (DeiT)."""
    distill = config.distill

    def objective(params, collections, frozen, batch: StepInputs):
        teacher_logits = teacher.logits(frozen["teacher"], batch.images) if teacher is not None else None
        logits, updates = apply_train(model, params, collections, batch.images, batch.rng)
        loss = distillation_loss(logits, batch.targets, teacher_logits, distill.type, distill.alpha,
                                 distill.temperature)
        return loss, updates, {}

    return objective
