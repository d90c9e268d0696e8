"""The device half of the input pipeline: uint8 batches from the host become normalised float images inside the
jitted step, with timm's random-erasing noise drawn on the device into the boxes the host chose.

The host keeps every random decision (crop, flip, RandAugment, erasing box; `data/transforms.py`), so the
device adds no data-dependent control flow and ships 1 byte per pixel instead of 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def normalization_table(mean: Sequence[float], std: Sequence[float], channels: int) -> np.ndarray:
    """(channels, 256) float32: every uint8 value's normalised value, computed with the host's float32 operations
    (`transforms.normalize`), so the device result is bit-identical to the host's."""
    values = np.arange(256, dtype=np.float32) / 255.0
    mean = np.asarray(mean[:channels], np.float32)[:, None]
    std = np.asarray(std[:channels], np.float32)[:, None]
    return (values[None, :] - mean) / std


def normalize(images: Array, mean: Sequence[float], std: Sequence[float], dtype=jnp.float32) -> Array:
    """uint8 (B, H, W, C) → `dtype` (x/255 − mean) / std, bit-identical to `transforms.normalize` (a table lookup:
    XLA would otherwise fold the divisions into multiplications by reciprocals, 1 ulp off); float input is taken
    as already normalised and only cast."""
    if not jnp.issubdtype(images.dtype, jnp.integer):
        return images.astype(dtype)
    channels = images.shape[-1]
    table = jnp.asarray(normalization_table(mean, std, channels))
    return table[jnp.arange(channels), images.astype(jnp.int32)].astype(dtype)


def erase(rng: Array, images: Array, boxes: Array) -> Array:
    """timm RandomErasing(mode='pixel') on normalised (B, H, W, C) images: standard-normal noise in each example's
    box (B, 4) = (top, left, h, w); h = 0 leaves the example as it is."""
    _, height, width, _ = images.shape
    top, left, h, w = (boxes[:, i, None, None] for i in range(4))
    rows = jnp.arange(height)[None, :, None]
    cols = jnp.arange(width)[None, None, :]
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)  # (B, H, W)
    noise = jax.random.normal(rng, images.shape, images.dtype)
    return jnp.where(inside[..., None], noise, images)


def prepare_batch(batch: dict[str, Array], mean: Sequence[float], std: Sequence[float], rng: Array | None = None,
                  dtype=jnp.float32) -> Array:
    """The model's input images of a host batch: normalised, and erased where the batch carries boxes
    (`rng` required then)."""
    images = normalize(batch["images"], mean, std, dtype)
    if "erase" in batch:
        if rng is None:
            raise ValueError("a batch with random-erasing boxes needs an rng")
        images = erase(rng, images, batch["erase"])
    return images
