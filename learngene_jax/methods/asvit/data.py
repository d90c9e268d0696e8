"""Real images for the NTK proxy, by source name (`data.name` in the As-ViT configs).

The offline default is scikit-learn's bundled digits, upsampled and repeated to RGB; another source (tfds,
ImageNet) is added as one more entry of `SOURCES`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from learngene_jax.errors import ConfigError, fail

# The official proxies read ImageNet batches normalised with these statistics.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def digits_images(count: int, image_size: int, seed: int) -> np.ndarray:
    """`count` distinct digits in [0, 1], bilinearly upsampled to image_size², gray repeated to RGB."""
    from sklearn.datasets import load_digits

    digits = load_digits().images.astype(np.float32) / 16.0  # (1797, 8, 8), values 0..16
    if count > len(digits):
        fail(ConfigError, f"the digits data has {len(digits)} images; asked for {count}")
    picked = digits[np.random.default_rng(seed).permutation(len(digits))[:count]]
    resized = jax.image.resize(jnp.asarray(picked), (count, image_size, image_size), "bilinear")
    return np.repeat(np.asarray(resized)[..., None], 3, axis=-1)


SOURCES: dict[str, Callable[[int, int, int], np.ndarray]] = {"digits": digits_images}


def proxy_images(name: str, count: int, image_size: int, seed: int = 0) -> np.ndarray:
    """(count, image_size, image_size, 3) float32 images from source `name`, ImageNet-normalised."""
    if name not in SOURCES:
        fail(ConfigError, f"unknown proxy data source data.name={name!r}; known: {', '.join(sorted(SOURCES))}")
    images = SOURCES[name](count, image_size, seed)
    return ((images - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)
