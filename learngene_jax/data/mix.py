"""Mixup / CutMix with label smoothing on device, as timm's `Mixup` in batch mode (one λ per batch,
CutMix with probability `switch_prob`, λ corrected to the pasted box's area).

The batch is `groups` equal slices (the per-device batches when sharded), each mixed as its own batch, as the
official harness does with one `Mixup` per GPU: its own λ, mixup/cutmix switch and box, each example mixed with
its mirror inside its slice, so no data crosses devices.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


def smooth_one_hot(labels: Array, num_classes: int, smoothing: float) -> Array:
    """One-hot targets with `smoothing` spread uniformly (timm: on = 1 − s + s/C, off = s/C)."""
    off = smoothing / num_classes
    return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def cutmix_mask(rng: Array, lam: Array, height: int, width: int) -> tuple[Array, Array]:
    """Box mask (H, W) of the pasted region for CutMix and the λ left after pasting it."""
    ry, rx = jax.random.split(rng)
    cut = jnp.sqrt(1.0 - lam)
    cut_h, cut_w = (height * cut).astype(jnp.int32), (width * cut).astype(jnp.int32)
    cy = jax.random.randint(ry, (), 0, height)
    cx = jax.random.randint(rx, (), 0, width)
    y0, y1 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    x0, x1 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    ys, xs = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    mask = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    return mask, 1.0 - ((y1 - y0) * (x1 - x0)) / (height * width)


def mix_batch(rng: Array, images: Array, labels: Array, num_classes: int, *, mixup_alpha: float = 0.8,
              cutmix_alpha: float = 1.0, switch_prob: float = 0.5, prob: float = 1.0, smoothing: float = 0.1,
              groups: int = 1) -> tuple[Array, Array]:
    """images (B, H, W, C), int labels (B,) → mixed images and soft targets (B, classes); each of `groups`
    slices draws its own λ, switch and box (one group: from `rng` itself; else from `split(rng, groups)`)."""
    targets = smooth_one_hot(labels, num_classes, smoothing)
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or prob <= 0:
        return images, targets
    mix = functools.partial(_mix_one_batch, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
                            switch_prob=switch_prob, prob=prob)
    if groups == 1:
        return mix(rng, images, targets)
    mixed, mixed_targets = jax.vmap(mix)(jax.random.split(rng, groups),
                                         images.reshape((groups, -1) + images.shape[1:]),
                                         targets.reshape(groups, -1, num_classes))
    return mixed.reshape(images.shape), mixed_targets.reshape(targets.shape)


def _mix_one_batch(rng: Array, images: Array, targets: Array, *, mixup_alpha: float, cutmix_alpha: float,
                   switch_prob: float, prob: float) -> tuple[Array, Array]:
    """One timm `Mixup` call in batch mode on (b, H, W, C) images and (b, classes) targets."""
    r_apply, r_switch, r_mix, r_cut, r_box = jax.random.split(rng, 5)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = jax.random.uniform(r_switch) < switch_prob
    else:
        use_cutmix = jnp.asarray(cutmix_alpha > 0)
    mix_a, cut_a = max(mixup_alpha, 1e-3), max(cutmix_alpha, 1e-3)
    lam_mix = jax.random.beta(r_mix, mix_a, mix_a)
    lam_cut = jax.random.beta(r_cut, cut_a, cut_a)
    lam = jnp.where(use_cutmix, lam_cut, lam_mix)
    lam = jnp.where(jax.random.uniform(r_apply) < prob, lam, 1.0).astype(jnp.float32)
    mirrored = images[::-1]
    mask, lam_box = cutmix_mask(r_box, lam, images.shape[1], images.shape[2])
    cut_images = jnp.where(mask[None, :, :, None], mirrored, images)
    mixed = jnp.where(use_cutmix, cut_images, lam.astype(images.dtype) * images
                      + (1 - lam).astype(images.dtype) * mirrored)
    lam = jnp.where(use_cutmix & (lam < 1.0), lam_box, lam)
    return mixed, lam * targets + (1.0 - lam) * targets[::-1]
