"""Classification and distillation losses in the forms the official code uses, and top-k counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from learngene_jax.errors import ConfigError, fail

Array = jax.Array
KD_TYPES = ("none", "soft", "hard")


def soft_target_cross_entropy(logits: Array, targets: Array) -> Array:
    """mean_b Σ_c −t·log softmax(logits) (timm SoftTargetCrossEntropy; targets are mixed/smoothed one-hots)."""
    return jnp.mean(jnp.sum(-targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1))


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Per-example cross-entropy with integer labels."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def kd_soft(student: Array, teacher: Array, temperature: float) -> Array:
    """DeiT soft distillation: T²·KL(softmax(t/T) ‖ softmax(s/T)) summed, divided by batch × classes."""
    log_s = jax.nn.log_softmax(student.astype(jnp.float32) / temperature)
    log_t = jax.nn.log_softmax(teacher.astype(jnp.float32) / temperature)
    kl = jnp.sum(jnp.exp(log_t) * (log_t - log_s))
    return kl * temperature**2 / student.size


def kd_hard(student: Array, teacher: Array) -> Array:
    """DeiT hard distillation: cross-entropy against the teacher's argmax."""
    return jnp.mean(cross_entropy(student, jnp.argmax(teacher, axis=-1)))


def distillation_loss(student: Array, targets: Array, teacher: Array | None, kind: str, alpha: float,
                      temperature: float) -> Array:
    """(1 − α)·CE(student, targets) + α·KD(student, teacher); `kind='none'` is plain CE."""
    if kind not in KD_TYPES:
        fail(ConfigError, f"distill.type must be one of {KD_TYPES}, got {kind!r}")
    base = soft_target_cross_entropy(student, targets)
    if kind == "none":
        return base
    kd = kd_soft(student, teacher, temperature) if kind == "soft" else kd_hard(student, teacher)
    return (1.0 - alpha) * base + alpha * kd


def topk_correct(logits: Array, labels: Array, k: int) -> Array:
    """Per example: 1.0 if the label is among the k largest logits."""
    k = min(k, logits.shape[-1])
    top = jax.lax.top_k(logits, k)[1]
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)
