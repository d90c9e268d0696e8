"""A small Conv-BN-ReLU network: the teacher / ancestry model of the offline digits demo."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class SmallCNN(nn.Module):
    """`widths` stages of two 3×3 Conv-BN-ReLU and a 2×2 max-pool, then global average pooling and a head."""

    num_classes: int = 10
    image_size: int = 16
    in_chans: int = 3
    widths: tuple[int, ...] = (32, 64)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False, features: bool = False) -> jax.Array:
        """images (batch, H, W, C) → logits (batch, classes)."""
        x = images.astype(self.dtype)
        for stage, width in enumerate(self.widths):
            for i in range(2):
                x = nn.Conv(width, (3, 3), padding=1, use_bias=False, dtype=self.dtype, name=f"conv{stage}_{i}")(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                                 name=f"bn{stage}_{i}")(x)
                x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.mean(axis=(1, 2))
        if features:
            return x
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
