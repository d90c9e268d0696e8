"""The language-model objective (`config.objective='lm'`): next-token cross-entropy, and with a teacher LM token-level
distillation, (1 − α)·CE + α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)), both averaged over the real tokens; the
KL's softmaxes run over the tokenizer's ids (the first logits of embedding tables padded past it). A batch of packed
documents with document masks (data.document_mask) keeps attention and positions within each document and averages
over the targets its `token_mask` keeps (not the first token of a document). With config.loss_chunk > 0 the head and
both losses run a chunk of tokens at a time (`chunked_token_losses`): the same values and gradients, without any
(batch, tokens, vocab) array."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from learngene_jax.errors import ConfigError, fail
from learngene_jax.models.llama import output_head, segment_mask
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


def chunked_token_losses(hidden: Array, head: Array, targets: Array, weights: Array | None, chunk: int,
                         teacher: tuple[Array, Array] | None = None, temperature: float = 1.0) -> Array:
    """(mean CE, mean KD) over the tokens (weighted like `token_mean`; KD 0 without `teacher`) of the logits
    `hidden` (batch, tokens, width) @ `head` (width, vocab), computed `chunk` tokens per row at a time so that no
    (batch, tokens, vocab) array exists in the forward or the backward pass: a lax.scan over token chunks whose
    body is under jax.checkpoint, so the backward recomputes each chunk's logits instead of keeping them (the
    same idea as fused linear cross-entropy kernels). The matmul runs in `hidden`'s dtype and its result in float32,
    as the decoders' own heads (models/llama.py). `teacher`: its final hidden states and head (`Teacher.features`),
    the KD term T²·KL over the teacher head's columns."""
    b, t, _ = hidden.shape
    n = -(-t // chunk)
    pad = n * chunk - t
    weights = jnp.ones((b, t), jnp.float32) if weights is None else weights.astype(jnp.float32)

    def chunks(x: Array) -> Array:  # (batch, tokens, ...) → (n, batch, chunk, ...), zero-padded
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return jnp.swapaxes(x.reshape(b, n, chunk, *x.shape[2:]), 0, 1)

    xs = (chunks(hidden), chunks(targets), chunks(weights), None if teacher is None else chunks(teacher[0]))
    head = head.astype(hidden.dtype)
    teacher_head = None if teacher is None else teacher[1].astype(teacher[0].dtype)

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def body(totals: Array, xs: tuple) -> tuple[Array, None]:
        h, y, w, h_teacher = xs
        logits = (h @ head).astype(jnp.float32)  # (batch, chunk, vocab)
        sums = [jnp.sum(token_cross_entropy(logits, y) * w)]
        if h_teacher is not None:
            teacher_logits = (h_teacher @ teacher_head).astype(jnp.float32)
            kl = token_kl(logits[..., :teacher_logits.shape[-1]], teacher_logits, temperature)
            sums.append(jnp.sum(kl * w))
        else:
            sums.append(jnp.zeros((), jnp.float32))
        return totals + jnp.stack(sums), None

    totals, _ = jax.lax.scan(body, jnp.zeros(2, jnp.float32), xs)
    return totals / jnp.maximum(jnp.sum(weights), 1.0)


@register("lm")
def language_model(config: Any, model: nn.Module, teacher: Teacher | None) -> ObjectiveFn:
    """Inputs are token ids (batch, tokens) in `images`, next-token targets in `labels`."""
    distill = config.distill
    if distill.type not in ("none", "soft"):
        fail(ConfigError, f"the lm objective distils with distill.type=soft (token-level KD) or none, got "
                          f"{distill.type!r}")

    distilled = teacher is not None and distill.type != "none"
    chunk = int(config.get("loss_chunk", 0) or 0)
    if chunk < 0:
        fail(ConfigError, f"loss_chunk must be >= 0 (0: the whole logits at once), got {chunk}")

    def chunked(params, collections, frozen, batch: StepInputs):
        inputs, weights = document_inputs(batch.batch), batch.batch.get("token_mask")
        hidden, updates = apply_train(model, params, collections, batch.images, batch.rng, hidden=True, **inputs)
        features = teacher.features(frozen["teacher"], batch.images, **inputs) if distilled else None
        ce, kd = chunked_token_losses(hidden, output_head(model, params), batch.labels, weights, chunk, features,
                                      distill.temperature)
        if not distilled:
            return ce, updates, {"ce": ce}
        return (1.0 - distill.alpha) * ce + distill.alpha * kd, updates, {"ce": ce, "kd": kd}

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

    return chunked if chunk else objective
