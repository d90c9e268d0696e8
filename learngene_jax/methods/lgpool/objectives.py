"""The two Learngene Pool training objectives, registered in the trainer's objective registry:
`lgpool_distill` (stage 1: a student learns from the teacher's logits and block features) and
`lgpool_finetune` (stage 2: one stitch configuration of the pool per step, CE + soft KD)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from learngene_jax.errors import ConfigError, fail
from learngene_jax.methods.lgpool.models import LearngenePool, PoolStudent, distill_points
from learngene_jax.models.vit import ViT, dense
from learngene_jax.objectives.classification import ObjectiveFn, StepInputs, apply_train, register
from learngene_jax.objectives.losses import kd_soft, soft_target_cross_entropy
from learngene_jax.objectives.teacher import Teacher

Array = jax.Array


def feature_loss(student: dict[str, Array], teacher: dict[str, Array], projections: dict[str, Any],
                 points: tuple[tuple[int, int], ...]) -> Array:
    """Σ over matched (student block, teacher block) points of MSE(student block output, P_blocks·teacher's)
    + MSE(student attention output, P_attn·teacher's); every token, mean over elements (nn.MSELoss)."""
    total = jnp.zeros((), jnp.float32)
    for n, (s, t) in enumerate(points):
        for kind in ("blocks", "attn"):
            proj = {"kernel": projections[kind]["kernel"][n], "bias": projections[kind]["bias"][n]}
            target = dense(teacher[kind][t].astype(jnp.float32), proj)
            total = total + jnp.mean((student[kind][s].astype(jnp.float32) - target) ** 2)
    return total


def _require(teacher: Teacher | None, objective: str) -> Teacher:
    if teacher is None:
        fail(ConfigError, f"objective {objective!r} needs a teacher: set distill.type='soft' and "
                          f"distill.teacher_init=MODEL_DIR")
    return teacher


@register("lgpool_distill")
def lgpool_distill(config: Any, model: nn.Module, teacher: Teacher | None) -> ObjectiveFn:
    """Stage 1 of Learngene Pool: (1 − a)·CE(student, targets) + a·(soft-CE(student/T, teacher/T) + Σ MSE of
    block and attention-sublayer outputs against projected teacher features), a = distill.alpha (the paper's
    α = 0.1 on CE is a = 0.9). The projections (teacher width → student width, as in the official code) are
    the student's `projections` params and are trained with it."""
    if not isinstance(model, PoolStudent):
        fail(ConfigError, f"objective 'lgpool_distill' trains an 'lgpool_student' model, not {type(model).__name__}")
    tmodel = _require(teacher, "lgpool_distill").model
    if not isinstance(tmodel, ViT):
        fail(ConfigError, f"objective 'lgpool_distill' matches block features, so the teacher must be a ViT; "
                          f"distill.teacher_init holds a {type(tmodel).__name__}")
    if (tmodel.width, tmodel.depth) != (model.teacher_width, model.teacher_depth):
        fail(ConfigError, f"the student's projections expect a teacher of width {model.teacher_width} and depth "
                          f"{model.teacher_depth}, but the teacher has width {tmodel.width} and depth {tmodel.depth}")
    if (tmodel.patch_size, tmodel.class_token) != (model.patch_size, model.class_token):
        fail(ConfigError, "teacher and student must have the same tokens (patch size and class token) to match "
                          "their features")
    points = distill_points(model.depth, tmodel.depth, model.points)
    alpha, temperature = float(config.distill.alpha), float(config.distill.temperature)

    def objective(params, collections, frozen, batch: StepInputs):
        t_logits, t_feats = jax.lax.stop_gradient(
            tmodel.apply(frozen["teacher"], batch.images, train=False, capture=True))
        (logits, feats), updates = apply_train(model, params, collections, batch.images, batch.rng, capture=True)
        ce = soft_target_cross_entropy(logits, batch.targets)
        soft = soft_target_cross_entropy(logits / temperature, jax.nn.softmax(t_logits.astype(jnp.float32)
                                                                              / temperature))
        features = feature_loss(feats, t_feats, params["projections"], points)
        loss = (1.0 - alpha) * ce + alpha * (soft + features)
        return loss, updates, {"ce": ce, "soft_ce": soft, "feature_mse": features}

    return objective


def finetune_loss(pool: LearngenePool, teacher: Teacher, params: Any, frozen: dict[str, Any], batch: StepInputs,
                  config_id: int | Array, *, ce_weight: float, kd_weight: float,
                  temperature: float) -> tuple[Array, dict[str, Array]]:
    """Stage-2 loss of one pool configuration: c·CE(config, targets) + w·KD_soft(config, teacher) and its
    {"ce", "kd"} terms (`config_id` a Python int or a traced int32 scalar)."""
    t_logits = teacher.logits(frozen["teacher"], batch.images)
    logits = pool.apply({"params": params}, batch.images, train=True, config_id=config_id)
    ce = soft_target_cross_entropy(logits, batch.targets)
    kd = kd_soft(logits, t_logits, temperature)
    return ce_weight * ce + kd_weight * kd, {"ce": ce, "kd": kd}


@register("lgpool_finetune")
def lgpool_finetune(config: Any, model: nn.Module, teacher: Teacher | None) -> ObjectiveFn:
    """Stage 2 of Learngene Pool: each step samples one stitch configuration uniformly (inside the jitted step,
    so one program serves them all) and minimises its `finetune_loss`, c·CE(config, targets) +
    w·KD_soft(config, teacher), c = lgpool.ce_weight and w = lgpool.kd_weight (0.5 and 0.5 in the official
    code, on hard labels: the recipes switch mixup and label smoothing off for this stage), KD in DeiT's soft
    form at distill.temperature. The sampled id is the metric "config"."""
    if not isinstance(model, LearngenePool):
        fail(ConfigError, f"objective 'lgpool_finetune' trains an 'lgpool' model, not {type(model).__name__}")
    teacher = _require(teacher, "lgpool_finetune")
    if "lgpool" not in config:
        fail(ConfigError, "objective 'lgpool_finetune' reads config.lgpool.kd_weight: use configs/lgpool_*.py")
    weights = {"ce_weight": float(config.lgpool.get("ce_weight", 1.0)), "kd_weight": float(config.lgpool.kd_weight),
               "temperature": float(config.distill.temperature)}
    num_configs = len(model.configs())

    def objective(params, collections, frozen, batch: StepInputs):
        del collections  # the pool has no BatchNorm statistics
        config_id = jax.random.randint(jax.random.fold_in(batch.rng, 0x5717C), (), 0, num_configs)
        loss, metrics = finetune_loss(model, teacher, params, frozen, batch, config_id, **weights)
        return loss, {}, {**metrics, "config": config_id}

    return objective
