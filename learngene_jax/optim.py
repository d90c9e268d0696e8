"""Optax optimizers from config: AdamW with the DeiT no-decay rule, or SGD; lr scaled by batch/512, linear
warmup then cosine to min_lr, stepped per optimizer step ('cosine') or per epoch as the official DeiT-based code
steps timm's scheduler ('cosine_epoch')."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict

from learngene_jax.errors import ConfigError, fail

# Leaves that get weight decay: Dense/Conv kernels. Everything 1-D in PyTorch terms (biases, norm scales),
# pos_embed, cls_token and LeViT's attention_biases do not (DeiT/timm `no_weight_decay`). Stacked block
# params carry an extra depth axis, so the rule goes by name, not by ndim.
# Decoder LMs (models/llama.py) name their weight matrices, stacked or not: those and the token / position
# embeddings decay, norm scales and biases do not (GPT-2 / nanoGPT / Llama recipes); LoRA adapters decay like the
# weights they adapt (Hugging Face Trainer's rule for PEFT models).
DECAYED_LEAVES = ("kernel", "q", "k", "v", "o", "gate", "up", "down", "c_attn", "attn_proj", "c_fc", "mlp_proj",
                  "embed", "lm_head", "wte", "wpe")


def decay_mask(params: Any) -> Any:
    """True for the leaves that get weight decay."""
    def decayed(path, _):
        last = getattr(path[-1], "key", getattr(path[-1], "name", None))
        return last in DECAYED_LEAVES or str(last).endswith(("_lora_a", "_lora_b"))
    return jax.tree_util.tree_map_with_path(decayed, params)


def peak_lr(opt: Any, global_batch_size: int) -> float:
    """lr × global_batch / 512 (DeiT's linear scaling) unless opt.scale_lr is False."""
    return opt.lr * global_batch_size / 512.0 if opt.scale_lr else opt.lr


def lr_schedule(opt: Any, global_batch_size: int, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Linear warmup from warmup_lr over warmup_steps (when > 0) or warmup_epochs, then cosine to min_lr at the last
    step."""
    peak = peak_lr(opt, global_batch_size)
    steps = opt.get("warmup_steps", 0) or int(round(opt.warmup_epochs * steps_per_epoch))
    warmup = min(steps, total_steps)
    if opt.schedule == "constant":
        return optax.constant_schedule(peak)
    if opt.schedule == "cosine_epoch":
        return epoch_schedule(timm_epoch_lrs(opt, peak, -(-total_steps // steps_per_epoch)), steps_per_epoch)
    if opt.schedule != "cosine":
        fail(ConfigError, f"optim.schedule must be 'cosine', 'cosine_epoch' or 'constant', got {opt.schedule!r}")
    cosine = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1), alpha=opt.min_lr / peak if peak else 0)
    if warmup == 0:
        return cosine
    return optax.join_schedules([optax.linear_schedule(opt.warmup_lr, peak, warmup), cosine], [warmup])


def timm_epoch_lrs(opt: Any, peak: float, epochs: int) -> np.ndarray:
    """The lr of each epoch (epochs,) when the official TLEG/SWS `main.py` (DeiT's) drives timm's
    `CosineLRScheduler(t_initial=epochs, lr_min=min_lr, warmup_lr_init=warmup_lr, warmup_t=warmup_epochs,
    cycle_limit=1)`: built at warmup_lr (peak without warmup), then `step(epoch)` after each epoch, so epoch e ≥ 1
    runs at f(e − 1), with f(t) = warmup_lr + t·(peak − warmup_lr)/warmup_t for t < warmup_t, else
    min_lr + ½(peak − min_lr)(1 + cos(π t / epochs)) — epochs 0 and 1 share the first value and the last epoch
    never reaches min_lr."""
    warmup = int(opt.warmup_epochs)
    if warmup != opt.warmup_epochs:
        fail(ConfigError, f"optim.schedule='cosine_epoch' steps per epoch: optim.warmup_epochs must be a whole number, "
                          f"got {opt.warmup_epochs}")

    def f(t: int) -> float:
        if t < warmup:
            return opt.warmup_lr + t * (peak - opt.warmup_lr) / warmup
        return opt.min_lr + 0.5 * (peak - opt.min_lr) * (1 + math.cos(math.pi * t / epochs))

    first = opt.warmup_lr if warmup else peak
    return np.asarray([first] + [f(e - 1) for e in range(1, epochs)], np.float64)


def epoch_schedule(lrs: np.ndarray, steps_per_epoch: int) -> optax.Schedule:
    """Step → the lr of its epoch (held for the whole epoch; the last value after the last epoch)."""
    table = jnp.asarray(lrs, jnp.float32)
    return lambda step: table[jnp.minimum(step // steps_per_epoch, len(lrs) - 1)]


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


def split_trainable(params: Any, trainable: Callable[[tuple[str, ...]], bool] | None) -> tuple[Any, Any]:
    """(the params whose path (key names) `trainable` accepts, the others), each a nested dict of its leaves only;
    `trainable` None: (params, {}). The optimizer and the gradients see the first alone — e.g. LoRA adapters over a
    frozen base: no gradient, weight decay or optimizer state for the base, embeddings and head."""
    if trainable is None:
        return params, {}
    flat = flatten_dict(params)
    return (unflatten_dict({k: v for k, v in flat.items() if trainable(k)}),
            unflatten_dict({k: v for k, v in flat.items() if not trainable(k)}))


def join_params(trained: Any, frozen: Any) -> Any:
    """The whole param tree again from `split_trainable`'s two parts."""
    if not frozen:
        return trained
    return unflatten_dict({**flatten_dict(trained), **flatten_dict(frozen)})
