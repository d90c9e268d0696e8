"""VGG-style Conv-BN-ReLU networks of Heur/Auto Learngene: the ancestor (13 blocks, widened between tasks)
and the descendant (a random lower stack + the inherited gene blocks + pool + MLP head)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from learngene_jax.errors import ConfigError, fail

# Official CIFAR-100 ancestor (BruceQFWang/learngene `cfg_m`): widths at the first task, then widened to
# [64,64,128,128,256,256,256,512,512,512,512,512,512]; 2×2 max-pool after blocks 1,3,6,9,12 (0-based).
ANCESTOR_WIDTHS = (64, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256)
ANCESTOR_POOLS = (1, 3, 6, 9, 12)


def check_pools(name: str, image_size: int, num_blocks: int, pool_after: Sequence[int]) -> None:
    """Every pool position names a block, and the image survives the halvings (16×16 fits 4 pools, 32×32 5)."""
    bad = [p for p in pool_after if not 0 <= p < num_blocks]
    if bad or len(set(pool_after)) != len(pool_after):
        fail(ConfigError, f"{name}: pool_after {tuple(pool_after)} must be distinct block indices in "
                          f"0..{num_blocks - 1}")
    if image_size % 2 ** len(pool_after):
        fail(ConfigError, f"{name}: {len(pool_after)} 2×2 max-pools need an image size divisible by "
                          f"{2 ** len(pool_after)}, got {image_size}; drop pools from pool_after "
                          f"(e.g. (1, 3, 6) for 16×16 digits) or change data.image_size")


@functools.partial(jax.jit, static_argnums=0)
def init_variables(model: nn.Module, key: jax.Array) -> dict[str, Any]:
    """Fresh variables of a VGG model, compiled once per architecture (modules hash by their fields; eager init
    would compile every random op for every new shape, which is slower on CPU)."""
    return model.init(key, jnp.zeros((1, model.image_size, model.image_size, model.in_chans), jnp.float32))


class ConvBlock(nn.Module):
    """Conv3×3 (with bias, as the official nn.Conv2d) → BatchNorm → ReLU."""

    width: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """x (batch, H, W, C_in) → (batch, H, W, width)."""
        x = nn.Conv(self.width, (3, 3), padding=1, dtype=self.dtype, name="conv")(x)
        # PyTorch BatchNorm2d: running stats updated with 0.1 of the batch value, eps 1e-5
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name="bn")(x)
        return nn.relu(x)


def _classifier(x: jax.Array, hidden: Sequence[int], num_classes: int, dropout: float, train: bool,
                dtype: Any) -> jax.Array:
    """Flatten → [Dense → ReLU → Dropout] per hidden width → Dense head (proper logits: no softmax)."""
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(hidden):
        x = nn.relu(nn.Dense(width, dtype=dtype, name=f"fc{i}")(x))
        if dropout:
            x = nn.Dropout(dropout, deterministic=not train)(x)
    return nn.Dense(num_classes, dtype=dtype, name="head")(x)


class VGGAncestor(nn.Module):
    """The ancestor: `len(widths)` ConvBlocks `block{i}` with a 2×2 max-pool after the blocks in `pool_after`,
    flattened into an MLP classifier `fc{j}` → `head` (official: 1024, 1024 with dropout 0.5)."""

    num_classes: int = 5
    image_size: int = 32
    in_chans: int = 3
    widths: tuple[int, ...] = ANCESTOR_WIDTHS
    pool_after: tuple[int, ...] = ANCESTOR_POOLS
    hidden: tuple[int, ...] = (1024, 1024)
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """images (batch, H, W, C) → logits (batch, classes)."""
        check_pools("VGGAncestor", self.image_size, len(self.widths), self.pool_after)
        x = images.astype(self.dtype)
        for i, width in enumerate(self.widths):
            x = ConvBlock(width, self.dtype, name=f"block{i}")(x, train)
            if i in self.pool_after:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return _classifier(x, self.hidden, self.num_classes, self.dropout, train, self.dtype)


class VGGDescendant(nn.Module):
    """The descendant: random ConvBlocks `lower{i}` (max-pool after those in `lower_pool_after`), then the
    inherited ConvBlocks `gene{j}`, a 2×2 max-pool (`final_pool`), flatten and an MLP head. Official CIFAR-100:
    lower [64,M,128,M,256,M,512], gene 3×512, 512·2·2 = 2048 → 1024 → 1024 → 5."""

    num_classes: int = 5
    image_size: int = 32
    in_chans: int = 3
    lower_widths: tuple[int, ...] = (64, 128, 256, 512)
    lower_pool_after: tuple[int, ...] = (0, 1, 2)
    gene_widths: tuple[int, ...] = (512, 512, 512)
    final_pool: bool = True
    hidden: tuple[int, ...] = (1024, 1024)
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """images (batch, H, W, C) → logits (batch, classes)."""
        pools = len(self.lower_pool_after) + int(self.final_pool)
        check_pools("VGGDescendant", self.image_size, len(self.lower_widths), self.lower_pool_after)
        if self.image_size % 2 ** pools:
            fail(ConfigError, f"VGGDescendant: {pools} max-pools (lower_pool_after and final_pool) need an image "
                              f"size divisible by {2 ** pools}, got {self.image_size}")
        x = images.astype(self.dtype)
        for i, width in enumerate(self.lower_widths):
            x = ConvBlock(width, self.dtype, name=f"lower{i}")(x, train)
            if i in self.lower_pool_after:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        for j, width in enumerate(self.gene_widths):
            x = ConvBlock(width, self.dtype, name=f"gene{j}")(x, train)
        if self.final_pool:
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return _classifier(x, self.hidden, self.num_classes, self.dropout, train, self.dtype)
