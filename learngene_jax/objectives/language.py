"""The language-model objective (`config.objective='lm'`): next-token cross-entropy, and with a teacher LM token-level
distillation, (1 − α)·CE + α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)), both averaged over the real tokens; the
KL's softmaxes run over the tokenizer's ids (the first logits of embedding tables padded past it). A batch of packed
documents with document masks (data.document_mask) keeps attention and positions within each document and averages
over the targets its `token_mask` keeps (not the first token of a document)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from learngene_jax.errors import ConfigError, fail
from learngene_jax.models.llama import segment_mask
from learngene_jax.objectives.classification import ObjectiveFn, StepInputs, apply_train, register
from learngene_jax.objectives.teacher import Teacher

Array = jax.Array


def token_cross_entropy(logits: Array, targets: Array) -> Array:
    """Per-token cross-entropy (nats), logits (..., vocab), integer targets (...)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def document_inputs(batch: dict[str, Array]) -> dict[str, Array]:
    """The model inputs of a text batch besides its ids: with `segments` (packed documents, data/text.py), the
    attention mask that keeps each document apart and the `positions` that restart at each document."""
    if "segments" not in batch:
        return {}
    return {"padding": segment_mask(batch["segments"]), "positions": batch["positions"]}


def token_mean(values: Array, weights: Array | None) -> Array:
    """The mean of per-token `values` (batch, tokens), over the tokens whose `weights` are 1 when given."""
    if weights is None:
        return jnp.mean(values)
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


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
        inputs, weights = document_inputs(batch.batch), batch.batch.get("token_mask")
        logits, updates = apply_train(model, params, collections, batch.images, batch.rng, **inputs)
        ce = token_mean(token_cross_entropy(logits, batch.labels), weights)
        if teacher is None or distill.type == "none":
            return ce, updates, {"ce": ce}
        teacher_logits = teacher.logits(frozen["teacher"], batch.images, **inputs)  # (batch, tokens, tokenizer vocab)
        # both softmaxes over the tokenizer's ids: tables padded past it (either model) add no mass
        kd = token_mean(token_kl(logits[..., :teacher_logits.shape[-1]], teacher_logits, distill.temperature), weights)
        return (1.0 - distill.alpha) * ce + distill.alpha * kd, updates, {"ce": ce, "kd": kd}

    return objective
