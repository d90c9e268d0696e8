"""LeViT (Graham et al., 2021) in Flax, matching timm 1.0.31's `levit_*` models layer for layer.

LeViT-384 is the distillation teacher of TLEG and SWS; `convert/levit.py` maps timm and facebookresearch
checkpoints onto it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# timm `model_cfgs` (the distilled ImageNet models of the paper); the other fields keep their defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    "levit_128s": dict(embed_dims=(128, 256, 384), key_dim=16, num_heads=(4, 6, 8), depths=(2, 3, 4)),
    "levit_128": dict(embed_dims=(128, 256, 384), key_dim=16, num_heads=(4, 8, 12), depths=(4, 4, 4)),
    "levit_192": dict(embed_dims=(192, 288, 384), key_dim=32, num_heads=(3, 5, 6), depths=(4, 4, 4)),
    "levit_256": dict(embed_dims=(256, 384, 512), key_dim=32, num_heads=(4, 6, 8), depths=(4, 4, 4)),
    "levit_384": dict(embed_dims=(384, 512, 768), key_dim=32, num_heads=(6, 9, 12), depths=(4, 4, 4)),
}
STEM_STRIDE = 16  # four stride-2 convs
DOWNSAMPLE_STRIDE = 2

# PyTorch's default Linear/Conv init: U(±1/sqrt(fan_in)).
torch_default = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def attention_bias_index(resolution: int, stride: int = 1) -> np.ndarray:
    """(queries, keys) index into a (heads, resolution²) bias table: |qy−ky|·resolution + |qx−kx|, with the
    queries on the `stride` grid (timm's `attention_bias_idxs`)."""
    keys = np.arange(resolution)
    queries = np.arange(0, resolution, stride)
    dist = np.abs(queries[:, None] - keys[None, :])  # (query rows, key rows); columns are the same grid
    index = dist[:, None, :, None] * resolution + dist[None, :, None, :]  # (qy, qx, ky, kx)
    return index.reshape(len(queries) ** 2, resolution**2)


def downsampled(resolution: int, stride: int = DOWNSAMPLE_STRIDE) -> int:
    """Side of the token grid after subsampling with `x[::stride]` (ceiling division)."""
    return (resolution - 1) // stride + 1


def batch_norm(train: bool, dtype: Any, scale_init: nn.initializers.Initializer = nn.initializers.ones,
               name: str = "bn") -> nn.BatchNorm:
    """PyTorch-equivalent BatchNorm over every axis but the last (torch momentum 0.1 is flax decay 0.9)."""
    # Two-pass variance: torch's batch statistics are exact, and train-mode parity is checked against them.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                        scale_init=scale_init, use_fast_variance=False, name=name)


class LinearNorm(nn.Module):
    """timm `LinearNorm`: Linear without bias, then BatchNorm1d over all batch·token rows."""

    features: int
    zero_init: bool = False  # timm starts residual-branch outputs at 0 (BN weight 0)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        """x (..., in) → (..., features)."""
        x = nn.Dense(self.features, use_bias=False, dtype=self.dtype, kernel_init=torch_default, name="linear")(x)
        init = nn.initializers.zeros if self.zero_init else nn.initializers.ones
        return batch_norm(train, self.dtype, init)(x)


class ConvNorm(nn.Module):
    """timm `ConvNorm` of the stem: 3×3 stride-2 conv without bias, then BatchNorm2d."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        """x (batch, H, W, in) → (batch, ceil(H/2), ceil(W/2), features)."""
        # Explicit (1, 1) padding as torch: 'SAME' would pad (0, 1) for stride 2 on even sizes.
        x = nn.Conv(self.features, (3, 3), strides=2, padding=((1, 1), (1, 1)), use_bias=False, dtype=self.dtype,
                    kernel_init=torch_default, name="linear")(x)
        return batch_norm(train, self.dtype)(x)


class NormLinear(nn.Module):
    """timm `NormLinear` classifier: BatchNorm1d, then Linear with bias."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        """x (batch, in) → (batch, features)."""
        x = batch_norm(train, self.dtype)(x)
        return nn.Dense(self.features, dtype=self.dtype, kernel_init=nn.initializers.truncated_normal(0.02),
                        name="linear")(x)


def attend(q: Array, k: Array, v: Array, bias: Array, scale: float) -> Array:
    """softmax(q·kᵀ·scale + bias)·v per head: q (b, nq, h, d), k (b, nk, h, d), v (b, nk, h, dv),
    bias (h, nq, nk) → (b, nq, h·dv).

    Heads move ahead of tokens first, so both products are plain batched matmuls over (b, h): on XLA's CPU
    backend the token-major form fused into one kernel 3.6× slower (31.2 vs 8.7 ms for LeViT-128S's first stage
    at batch 32, 224²)."""
    qh, kh, vh = (t.transpose(0, 2, 1, 3) for t in (q, k, v))  # (b, h, n, d)
    logits = jnp.einsum("bhqd,bhkd->bhqk", qh, kh) * scale + bias.astype(q.dtype)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bhkd->bhqd", weights, vh).transpose(0, 2, 1, 3)  # (b, nq, h, dv)
    return out.reshape(*out.shape[:2], -1)


class Attention(nn.Module):
    """LeViT self-attention: qkv split per head as [q|k|v], a learned bias per head and relative offset,
    Hardswish before the output projection."""

    dim: int
    key_dim: int
    num_heads: int
    attn_ratio: float
    resolution: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        """x (batch, resolution², dim) → same shape."""
        batch, tokens, _ = x.shape
        kd, vd, heads = self.key_dim, int(self.attn_ratio * self.key_dim), self.num_heads
        qkv = LinearNorm(heads * (2 * kd + vd), dtype=self.dtype, name="qkv")(x, train)
        q, k, v = jnp.split(qkv.reshape(batch, tokens, heads, 2 * kd + vd), [kd, 2 * kd], axis=-1)
        biases = self.param("attention_biases", nn.initializers.zeros, (heads, self.resolution**2))
        bias = biases[:, attention_bias_index(self.resolution)]  # static gather: (heads, tokens, tokens)
        x = jax.nn.hard_swish(attend(q, k, v, bias, kd**-0.5))
        return LinearNorm(self.dim, zero_init=True, dtype=self.dtype, name="proj")(x, train)


class AttentionDownsample(nn.Module):
    """LeViT shrinking attention: keys/values from every token, queries from the 2×-subsampled grid."""

    out_dim: int
    key_dim: int
    num_heads: int
    attn_ratio: float
    resolution: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        """x (batch, resolution², in) → (batch, ceil(resolution/2)², out_dim)."""
        batch, tokens, dim = x.shape
        kd, vd, heads = self.key_dim, int(self.attn_ratio * self.key_dim), self.num_heads
        kv = LinearNorm(heads * (kd + vd), dtype=self.dtype, name="kv")(x, train)
        k, v = jnp.split(kv.reshape(batch, tokens, heads, kd + vd), [kd], axis=-1)
        grid = x.reshape(batch, self.resolution, self.resolution, dim)
        sub = grid[:, ::DOWNSAMPLE_STRIDE, ::DOWNSAMPLE_STRIDE].reshape(batch, -1, dim)  # row-major, as timm
        q = LinearNorm(heads * kd, dtype=self.dtype, name="q")(sub, train).reshape(batch, -1, heads, kd)
        biases = self.param("attention_biases", nn.initializers.zeros, (heads, self.resolution**2))
        bias = biases[:, attention_bias_index(self.resolution, DOWNSAMPLE_STRIDE)]
        x = jax.nn.hard_swish(attend(q, k, v, bias, kd**-0.5))
        return LinearNorm(self.out_dim, dtype=self.dtype, name="proj")(x, train)


class Mlp(nn.Module):
    """timm `LevitMlp`: LinearNorm, Hardswish, LinearNorm."""

    dim: int
    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        """x (batch, tokens, dim) → same shape."""
        x = jax.nn.hard_swish(LinearNorm(self.hidden, dtype=self.dtype, name="ln1")(x, train))
        return LinearNorm(self.dim, zero_init=True, dtype=self.dtype, name="ln2")(x, train)


class Block(nn.Module):
    """x + attn(x), then x + mlp(x) (no norms outside the LinearNorms)."""

    dim: int
    key_dim: int
    num_heads: int
    attn_ratio: float
    mlp_ratio: float
    resolution: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        """x (batch, resolution², dim) → same shape."""
        x = x + Attention(self.dim, self.key_dim, self.num_heads, self.attn_ratio, self.resolution,
                          dtype=self.dtype, name="attn")(x, train)
        return x + Mlp(self.dim, int(self.dim * self.mlp_ratio), dtype=self.dtype, name="mlp")(x, train)


class Downsample(nn.Module):
    """timm `LevitDownsample`: shrinking attention without a residual, then a residual MLP."""

    out_dim: int
    key_dim: int
    num_heads: int
    attn_ratio: float
    mlp_ratio: float
    resolution: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        """x (batch, resolution², in) → (batch, ceil(resolution/2)², out_dim)."""
        x = AttentionDownsample(self.out_dim, self.key_dim, self.num_heads, self.attn_ratio, self.resolution,
                                dtype=self.dtype, name="attn_downsample")(x, train)
        return x + Mlp(self.out_dim, int(self.out_dim * self.mlp_ratio), dtype=self.dtype, name="mlp")(x, train)


class Stem(nn.Module):
    """timm `Stem16`: four 3×3 stride-2 ConvNorms (width/8, /4, /2, 1), Hardswish between them."""

    width: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        """images (batch, H, W, C) → (batch, H/16, W/16, width)."""
        for i, features in enumerate((self.width // 8, self.width // 4, self.width // 2, self.width), start=1):
            if i > 1:
                x = jax.nn.hard_swish(x)
            x = ConvNorm(features, dtype=self.dtype, name=f"conv{i}")(x, train)
        return x


class Stage(nn.Module):
    """timm `LevitStage`: an optional Downsample from the previous stage, then `depth` Blocks."""

    dim: int
    key_dim: int
    depth: int
    num_heads: int
    attn_ratio: float
    mlp_ratio: float
    resolution: int  # side of the incoming token grid
    down_from: int = 0  # width of the previous stage when the stage starts with a Downsample
    down_attn_ratio: float = 4.0
    down_mlp_ratio: float = 2.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        """x (batch, resolution², width in) → (batch, tokens out, dim)."""
        resolution = self.resolution
        if self.down_from:
            # timm gives the shrinking attention in_dim // key_dim heads
            x = Downsample(self.dim, self.key_dim, self.down_from // self.key_dim, self.down_attn_ratio,
                           self.down_mlp_ratio, resolution, dtype=self.dtype, name="downsample")(x, train)
            resolution = downsampled(resolution)
        for b in range(self.depth):
            x = Block(self.dim, self.key_dim, self.num_heads, self.attn_ratio, self.mlp_ratio, resolution,
                      dtype=self.dtype, name=f"blocks_{b}")(x, train)
        return x


class LeViT(nn.Module):
    """LeViT classifier in timm's layout (`Levit`, or `LevitDistilled` when `distilled`).

    Params mirror timm's modules: stem/conv{1..4}, stages_{s}/[downsample]/blocks_{b}, head, head_dist; each
    BatchNorm keeps scale/bias in `params` and mean/var in `batch_stats`. Eval (`train=False`) uses the running
    statistics and returns the average of the two heads. `train=True` normalises with the statistics of the
    batch (all batch·token rows) and must be applied with `mutable=['batch_stats']`; it returns the average of
    the heads, as timm's default, or the tuple (head, head_dist) when `distilled_training` (timm's
    `set_distilled_training(True)`). Flax updates the running variance with the biased batch variance
    (torch: unbiased).
    """

    image_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    embed_dims: tuple[int, ...] = (384, 512, 768)
    key_dim: int = 32
    num_heads: tuple[int, ...] = (6, 9, 12)
    depths: tuple[int, ...] = (4, 4, 4)
    attn_ratio: tuple[float, ...] = (2.0, 2.0, 2.0)
    mlp_ratio: tuple[float, ...] = (2.0, 2.0, 2.0)
    down_attn_ratio: float = 4.0
    down_mlp_ratio: float = 2.0
    distilled: bool = True
    distilled_training: bool = False
    dtype: Any = jnp.float32

    def check(self) -> None:
        """Raise ValueError for an inconsistent architecture."""
        stages = len(self.embed_dims)
        for name in ("num_heads", "depths", "attn_ratio", "mlp_ratio"):
            if len(getattr(self, name)) != stages:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {stages} stages")
        if self.image_size % STEM_STRIDE or self.image_size < STEM_STRIDE:
            # timm sizes the bias tables by image_size // 16 while the stem yields ceil(image_size / 16).
            raise ValueError(f"image_size must be a positive multiple of {STEM_STRIDE}, got {self.image_size}")
        if self.embed_dims[0] % 8:
            raise ValueError(f"embed_dims[0] must be divisible by 8 (stem widths), got {self.embed_dims[0]}")

    @nn.compact
    def __call__(self, images: Array, *, train: bool = False) -> Array | tuple[Array, Array]:
        """images (batch, H, W, C), already normalised → logits (batch, classes); see the class docstring."""
        self.check()
        if images.shape[1:] != (self.image_size, self.image_size, self.in_chans):
            raise ValueError(f"model expects images of shape (batch, {self.image_size}, {self.image_size}, "
                             f"{self.in_chans}), got {images.shape}")
        if train and not self.is_initializing() and not self.is_mutable_collection("batch_stats"):
            raise ValueError("train=True updates BatchNorm statistics: apply with mutable=['batch_stats']")
        x = Stem(self.embed_dims[0], dtype=self.dtype, name="stem")(images.astype(self.dtype), train)
        x = x.reshape(x.shape[0], -1, self.embed_dims[0])  # (batch, tokens, width), row-major as timm's flatten(2)
        resolution = self.image_size // STEM_STRIDE
        for s, dim in enumerate(self.embed_dims):
            x = Stage(dim, self.key_dim, self.depths[s], self.num_heads[s], self.attn_ratio[s], self.mlp_ratio[s],
                      resolution, down_from=self.embed_dims[s - 1] if s else 0,
                      down_attn_ratio=self.down_attn_ratio, down_mlp_ratio=self.down_mlp_ratio, dtype=self.dtype,
                      name=f"stages_{s}")(x, train)
            resolution = downsampled(resolution) if s else resolution
        x = x.mean(1)  # (batch, width)
        if not self.num_classes:
            return x
        logits = NormLinear(self.num_classes, dtype=self.dtype, name="head")(x, train)
        if not self.distilled:
            return logits
        dist = NormLinear(self.num_classes, dtype=self.dtype, name="head_dist")(x, train)
        return (logits, dist) if train and self.distilled_training else (logits + dist) / 2
