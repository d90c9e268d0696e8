"""Optax optimizers from config: AdamW with the DeiT no-decay rule, or SGD; lr scaled by batch/512,
linear warmup then cosine to min_lr, stepped per optimizer step."""

from __future__ import annotations

from typing import Any

import jax
import optax

from learngene_jax.errors import ConfigError, fail

# Leaves that get weight decay: Dense/Conv kernels. Everything 1-D in PyTorch terms (biases, norm scales),
# pos_embed, cls_token and LeViT's attention_biases do not (DeiT/timm `no_weight_decay`). Stacked block
# params carry an extra depth axis, so the rule goes by name, not by ndim.
DECAYED_LEAVES = ("kernel",)


def decay_mask(params: Any) -> Any:
    """True for the leaves that get weight decay."""
    def decayed(path, _):
        last = path[-1]
        return getattr(last, "key", getattr(last, "name", None)) in DECAYED_LEAVES
    return jax.tree_util.tree_map_with_path(decayed, params)


def peak_lr(opt: Any, global_batch_size: int) -> float:
    """lr × global_batch / 512 (DeiT's linear scaling) unless opt.scale_lr is False."""
    return opt.lr * global_batch_size / 512.0 if opt.scale_lr else opt.lr


def lr_schedule(opt: Any, global_batch_size: int, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Linear warmup from warmup_lr over warmup_epochs, then cosine to min_lr at the last step."""
    peak = peak_lr(opt, global_batch_size)
    warmup = min(int(round(opt.warmup_epochs * steps_per_epoch)), total_steps)
    if opt.schedule == "constant":
        return optax.constant_schedule(peak)
    if opt.schedule != "cosine":
        fail(ConfigError, f"optim.schedule must be 'cosine' or 'constant', got {opt.schedule!r}")
    cosine = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1), alpha=opt.min_lr / peak if peak else 0)
    if warmup == 0:
        return cosine
    return optax.join_schedules([optax.linear_schedule(opt.warmup_lr, peak, warmup), cosine], [warmup])


def build_optimizer(opt: Any, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optimizer of config.optim (state in float32 whatever the compute dtype)."""
    parts = []
    if opt.grad_clip and opt.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(opt.grad_clip))
    if opt.name == "adamw":
        parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                                 mask=decay_mask))
    elif opt.name == "sgd":
        # PyTorch SGD couples weight decay into the gradient before momentum.
        parts += [optax.add_decayed_weights(opt.weight_decay, mask=decay_mask),
                  optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov)]
    else:
        fail(ConfigError, f"optim.name must be 'adamw' or 'sgd', got {opt.name!r}")
    return optax.chain(*parts)
