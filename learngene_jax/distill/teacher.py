"""A frozen teacher: any registry model with its weights, run in eval mode under stop_gradient.

Its variables are arguments of the jitted step, never part of the train state, so they are never in the
student's checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax

from learngene_jax.errors import ConfigError, fail
from learngene_jax.models import create_model, model_spec
from learngene_jax.models.io import load_model


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A model and its variables (eval mode)."""

    model: nn.Module
    variables: dict[str, Any]

    def logits(self, variables: dict[str, Any], images: jax.Array) -> jax.Array:
        """Eval-mode logits with no gradient path back into the teacher."""
        return jax.lax.stop_gradient(self.model.apply(variables, images, train=False))


def load_teacher(distill: Any, image_size: int, **runtime: Any) -> Teacher | None:
    """The teacher config.distill asks for (None without distillation)."""
    if distill.type == "none":
        return None
    if not distill.teacher_init:
        fail(ConfigError, f"distill.type={distill.type!r} needs teacher weights: pass "
                          f"--config.distill.teacher_init=MODEL_DIR (a model directory from `python -m "
                          f"learngene_jax.convert from-timm` or from a teacher run's WORKDIR/model), "
                          f"or --config.distill.type=none")
    model, variables = load_model(distill.teacher_init, **runtime)
    if distill.teacher:
        want = model_spec(create_model(distill.teacher, num_classes=model.num_classes, image_size=model.image_size))
        if want != model_spec(model):
            fail(ConfigError, f"distill.teacher={distill.teacher!r} but {distill.teacher_init} holds a different "
                              f"architecture ({model_spec(model)['model']}); fix one of the two")
    if model.image_size != image_size:
        fail(ConfigError, f"the teacher takes {model.image_size}px images but the student gets {image_size}px; "
                          f"they must see the same (mixed) images")
    return Teacher(model, variables)
