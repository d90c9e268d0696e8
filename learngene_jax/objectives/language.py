"""The language-model objective (`config.objective='lm'`): next-token cross-entropy, and with a teacher LM token-level
distillation, (1 − α)·CE + α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)), both averaged over the real tokens; the
KL's softmaxes run over the tokenizer's ids (the first logits of embedding tables padded past it)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from learngene_jax.errors import ConfigError, fail
from learngene_jax.objectives.classification import ObjectiveFn, StepInputs, apply_train, register
from learngene_jax.objectives.teacher import Teacher

Array = jax.Array


def token_cross_entropy(logits: Array, targets: Array) -> Array:
    """Per-token cross-entropy (nats), logits (..., vocab), integer targets (...)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def token_kl(student: Array, teacher: Array, temperature: float) -> Array:
    """Per-token T²·KL(softmax(teacher/T) ‖ softmax(student/T)) (Hinton et al.; the calibration's KD term)."""
    log_s = jax.nn.log_softmax(student.astype(jnp.float32) / temperature)
    log_t = jax.nn.log_softmax(teacher.astype(jnp.float32) / temperature)
    return temperature ** 2 * jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=-1)


@register("lm")
def language_model(config: Any, model: nn.Module, teacher: Teacher | None) -> ObjectiveFn:
    """Inputs are token ids (batch, tokens) in `images`, next-token targets in `labels`."""
    distill = config.distill
    if distill.type not in ("none", "soft"):
        fail(ConfigError, f"the lm objective distils with distill.type=soft (token-level KD) or none, got "
                          f"{distill.type!r}")

    def objective(params, collections, frozen, batch: StepInputs):
        logits, updates = apply_train(model, params, collections, batch.images, batch.rng)
        ce = jnp.mean(token_cross_entropy(logits, batch.labels))
        if teacher is None or distill.type == "none":
            return ce, updates, {"ce": ce}
        teacher_logits = teacher.logits(frozen["teacher"], batch.images)  # (batch, tokens, tokenizer vocab)
        # both softmaxes over the tokenizer's ids: tables padded past it (either model) add no mass
        kd = jnp.mean(token_kl(logits[..., :teacher_logits.shape[-1]], teacher_logits, distill.temperature))
        return (1.0 - distill.alpha) * ce + distill.alpha * kd, updates, {"ce": ce, "kd": kd}

    return objective
