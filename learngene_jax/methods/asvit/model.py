"""As-ViT network (Chen et al., ICLR 2022) built from a genotype, with analytic param and MAC counts.

Follows the official VITA-Group/AsViT `Transformer`: Swin-like stages of non-shifted window attention without
position bias or embedding, overlapping patch embedding and patch merging, a Linear–Tanh–Linear head.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from learngene_jax.errors import ConfigError, fail
from learngene_jax.methods.asvit.genotype import (
    EMBED_STRIDE,
    NUM_STAGES,
    SEED,
    Genotype,
    check_resolution,
    parse_genotype,
    stage_width,
    validate,
)
from learngene_jax.models.cost import block_macs, block_params
from learngene_jax.models.vit import trunc_normal_02

Array = jax.Array

# PyTorch's Conv2d default init (kaiming_uniform a=√5, bias U(±1/√fan_in)): the official `_init_weights`
# re-initialises Linear and LayerNorm only, so the patch embedding keeps torch's default.
_torch_conv_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# Parameter names of the LayerNorms that `use_norm=False` removes (official `switch_norm('id')`).
NORM_NAMES = ("patch_norm", "norm1", "norm2", "merge_norm", "norm")


def _torch_conv_bias(fan_in: int):
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -1, 1) / math.sqrt(fan_in)


def embed_padding(kernel: int, stride: int = EMBED_STRIDE, dilation: int = 1) -> tuple[int, int]:
    """Zero padding (before, after) of the patch embedding: the official `PatchEmbed.padding` at stride 4, and
    in general the span of the dilated kernel minus the stride, so the grid is image_size / stride."""
    total = max(0, dilation * (kernel - 1) + 1 - stride)
    return total // 2, (total + 1) // 2


def merge_padding(kernel: int) -> tuple[int, int]:
    """Zero padding (before, after) of the stride-2 patch merging (official `PatchMerging.padding`)."""
    return (kernel - 2) // 2, (kernel - 1) // 2


def unfold(x: Array, kernel: int) -> Array:
    """torch `nn.Unfold(kernel, stride=2)` on NHWC: (B, H, W, C) → (B, H', W', C·K²), channel c·K² + ky·K + kx.

    Tap ky = 2a + b is row b of the (H/2, 2) split shifted by a, so ⌈K/2⌉² contiguous slices replace K²
    strided ones (XLA compiles that several times faster); `conv_general_dilated_patches` gives the same
    order but runs as a convolution with a K²C×K²C identity kernel, far more work.
    """
    batch, height, width, channels = x.shape
    out_h, out_w = (height - kernel) // 2 + 1, (width - kernel) // 2 + 1
    half = (kernel + 1) // 2
    rows, cols = 2 * (out_h - 1 + half), 2 * (out_w - 1 + half)
    # An odd kernel reads one row/column past the input: zero-pad it, the extra tap is dropped below.
    x = jnp.pad(x, ((0, 0), (0, max(0, rows - height)), (0, max(0, cols - width)), (0, 0)))[:, :rows, :cols]
    y = x.reshape(batch, rows // 2, 2, cols // 2, 2, channels)
    taps = jnp.stack([jnp.stack([y[:, a:a + out_h, :, e:e + out_w] for e in range(half)], axis=-1)
                      for a in range(half)], axis=-1)  # (B, H', b_y, W', b_x, C, e, a)
    taps = taps.transpose(0, 1, 3, 5, 7, 2, 6, 4).reshape(batch, out_h, out_w, channels, 2 * half, 2 * half)
    return taps[..., :kernel, :kernel].reshape(batch, out_h, out_w, channels * kernel * kernel)


class WindowBlock(nn.Module):
    """Pre-norm block: x += W-MSA(LN x) over non-overlapping windows; x += MLP(LN x)."""

    num_heads: int
    splits: int  # windows per side: the window side is ceil(grid side / splits)
    expansion: int
    use_norm: bool = True
    eps: float = 1e-5
    dtype: Any = jnp.float32

    def _norm(self, x: Array, name: str) -> Array:
        if not self.use_norm:
            return x
        return nn.LayerNorm(self.eps, dtype=self.dtype, name=name)(x)

    def _dense(self, features: int, name: str) -> nn.Dense:
        return nn.Dense(features, dtype=self.dtype, kernel_init=trunc_normal_02, name=name)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        batch, side, _, channels = x.shape  # (batch, H, W, C)
        head_dim = channels // self.num_heads
        # The official inner width is head_dim·heads, below C when the heads do not divide C.
        inner = head_dim * self.num_heads
        n = min(self.splits, side)  # a grid smaller than the splits: one token per window, no empty windows
        w = -(-side // n)
        pad = n * w - side  # 0 for the official grids; re-tokenized grids are zero-padded and masked
        y = self._norm(x, "norm1")
        if pad:
            y = jnp.pad(y, ((0, 0), (0, pad), (0, pad), (0, 0)))
        y = y.reshape(batch, n, w, n, w, channels).transpose(0, 1, 3, 2, 4, 5).reshape(batch, n * n, w * w, channels)
        qkv = self._dense(3 * inner, "qkv")(y).reshape(batch, n * n, w * w, 3, self.num_heads, head_dim)
        # heads ahead of tokens, so both products are plain batched matmuls (as in levit.attend)
        q, k, v = (qkv[..., i, :, :].transpose(0, 1, 3, 2, 4) for i in range(3))  # (batch, windows, heads, tokens, dim)
        logits = jnp.einsum("bnhqd,bnhkd->bnhqk", q * head_dim**-0.5, k).astype(jnp.float32)
        if pad:
            inside = jnp.arange(n * w) < side
            inside = (inside[:, None] & inside[None, :]).reshape(n, w, n, w).transpose(0, 2, 1, 3)
            logits = jnp.where(inside.reshape(1, n * n, 1, 1, w * w), logits, -jnp.inf)
        weights = jax.nn.softmax(logits, axis=-1).astype(y.dtype)
        y = jnp.einsum("bnhqk,bnhkd->bnhqd", weights, v).transpose(0, 1, 3, 2, 4).reshape(batch, n * n, w * w, inner)
        y = self._dense(channels, "proj")(y)
        y = y.reshape(batch, n, n, w, w, channels).transpose(0, 1, 3, 2, 4, 5).reshape(batch, n * w, n * w, channels)
        x = x + y[:, :side, :side]
        # jax.nn.gelu (erf) rather than vit.gelu: the latter's custom_vjp has no forward mode, which the
        # length-distortion proxy needs.
        y = self._dense(int(channels * self.expansion), "fc1")(self._norm(x, "norm2"))
        return x + self._dense(channels, "fc2")(jax.nn.gelu(y, approximate=False))


class PatchMerging(nn.Module):
    """Zero pad, unfold K×K stride 2, LayerNorm over K²·C, Linear (no bias) to `features`."""

    kernel: int
    features: int
    use_norm: bool = True
    eps: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        lo, hi = merge_padding(self.kernel)
        odd = x.shape[1] % 2  # only re-tokenized grids are odd: one more zero row/column gives ceil(side / 2)
        x = unfold(jnp.pad(x, ((0, 0), (lo, hi + odd), (lo, hi + odd), (0, 0))), self.kernel)
        if self.use_norm:
            x = nn.LayerNorm(self.eps, dtype=self.dtype, name="merge_norm")(x)
        return nn.Dense(self.features, use_bias=False, dtype=self.dtype, kernel_init=trunc_normal_02,
                        name="reduction")(x)


class AsViT(nn.Module):
    """As-ViT from a parsed genotype (see `learngene_jax.methods.asvit.genotype`); images are NHWC.

    Params: patch_embed, patch_norm, stage{i}_block{j}, stage{i}_merge (i < 3), norm, head_fc1, head_fc2.
    `use_norm=False` removes every LayerNorm (the official `switch_norm('id')`, used by length distortion).
    """

    kernels: tuple[int, ...] = (8, 4, 4, 4)
    splits: tuple[int, ...] = (2, 1, 1, 1)
    expansions: tuple[int, ...] = (3, 2, 4, 6)
    heads: int = 32
    depths: tuple[int, ...] = (1, 1, 1, 1)
    width: int = 32
    num_classes: int = 1000
    image_size: int = 224
    in_chans: int = 3
    use_norm: bool = True
    eps: float = 1e-5
    dtype: Any = jnp.float32
    # Progressive re-tokenization (paper §4.2): the patch embedding's stride (0: the official 4) and dilation.
    # Same parameters at every setting; the first grid is image_size / stride, later stages halve it (rounding
    # up) and windows are padded and masked where a grid does not divide.
    patch_stride: int = 0
    patch_dilation: int = 1

    @property
    def token_stride(self) -> int:
        """The patch embedding's stride in effect (patch_stride, or the official 4 when it is 0)."""
        return self.patch_stride or EMBED_STRIDE

    @property
    def genotype(self) -> Genotype:
        """The validated genotype of this network."""
        return validate(Genotype(kernels=tuple(self.kernels), splits=tuple(self.splits),
                                 expansions=tuple(self.expansions), heads=self.heads, depths=tuple(self.depths),
                                 width=self.width))

    @nn.compact
    def __call__(self, images: Array, *, train: bool = False, features: bool = False) -> Array:
        """images (batch, H, W, C) → logits (batch, classes); `features=True` gives the token mean before the
        final norm (the official `forward_features(x)[1]`, which both As-ViT proxies read)."""
        del train  # no dropout or stochastic depth: the official search builds with all rates 0
        g = self.genotype
        check_resolution(g, self.image_size)  # the official (stride 4) grids must work at this size
        if images.shape[1:] != (self.image_size, self.image_size, self.in_chans):
            raise ValueError(f"model expects (batch, {self.image_size}, {self.image_size}, {self.in_chans}) "
                             f"images, got {images.shape}")
        kernel, stride = g.kernels[0], self.token_stride
        lo, hi = embed_padding(kernel, stride, self.patch_dilation)
        if stride != EMBED_STRIDE and self.image_size % stride:
            fail(ConfigError, f"As-ViT re-tokenization stride {stride} does not divide image size {self.image_size}")
        x = jnp.pad(images.astype(self.dtype), ((0, 0), (lo, hi), (lo, hi), (0, 0)))
        x = nn.Conv(g.width, (kernel, kernel), strides=stride, padding="VALID", kernel_dilation=self.patch_dilation,
                    dtype=self.dtype, kernel_init=_torch_conv_kernel,
                    bias_init=_torch_conv_bias(kernel * kernel * self.in_chans),
                    name="patch_embed")(x)  # (batch, H/stride, W/stride, D)
        if self.use_norm:
            x = nn.LayerNorm(self.eps, dtype=self.dtype, name="patch_norm")(x)
        common = dict(use_norm=self.use_norm, eps=self.eps, dtype=self.dtype)
        for i in range(NUM_STAGES):
            for j in range(g.depths[i]):
                # Window side = grid // S (the official `resolution // window_sizes[i]`).
                x = WindowBlock(g.stage_heads[i], g.splits[i], g.expansions[i], **common,
                                name=f"stage{i}_block{j}")(x)
            if i < NUM_STAGES - 1:
                # Merging doubles the width up to 1024 (official `min(1024, 2 * dim)`).
                x = PatchMerging(g.kernels[i + 1], stage_width(g.width, i + 1), **common, name=f"stage{i}_merge")(x)
        if features:
            return x.mean((1, 2))
        if self.use_norm:
            x = nn.LayerNorm(self.eps, dtype=self.dtype, name="norm")(x)
        x = x.mean((1, 2))
        channels = x.shape[-1]
        x = jnp.tanh(nn.Dense(channels, dtype=self.dtype, kernel_init=trunc_normal_02, name="head_fc1")(x))
        if not self.num_classes:
            return x  # official head with num_classes=0: Linear–Tanh–Identity
        return nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=trunc_normal_02, name="head_fc2")(x)


def from_genotype(genotype: str | Genotype = SEED, **kwargs: Any) -> AsViT:
    """An `AsViT` for a genotype string (or parsed `Genotype`); kwargs set the other fields."""
    g = parse_genotype(genotype) if isinstance(genotype, str) else validate(genotype)
    return AsViT(kernels=g.kernels, splits=g.splits, expansions=g.expansions, heads=g.heads, depths=g.depths,
                 width=g.width, **kwargs)


def param_count(model: AsViT) -> int:
    """Number of parameters, computed from the architecture alone (equals counting the Flax params)."""
    g = model.genotype
    norm = 2 if model.use_norm else 0
    n = g.kernels[0] ** 2 * model.in_chans * g.width + g.width + norm * g.width
    for i, c in enumerate(g.stage_widths):
        inner = c // g.stage_heads[i] * g.stage_heads[i]
        hidden = int(c * g.expansions[i])
        block = block_params(c, hidden, inner=inner, norms=2 if model.use_norm else 0)  # two LayerNorms
        n += g.depths[i] * block
        if i < NUM_STAGES - 1:
            unfolded = g.kernels[i + 1] ** 2 * c
            n += norm * unfolded + unfolded * g.stage_widths[i + 1]
    c = g.stage_widths[-1]
    n += norm * c + c * c + c
    if model.num_classes:
        n += c * model.num_classes + model.num_classes
    return n


def mac_count(model: AsViT) -> int:
    """Multiply–accumulates of one image, counted as the official search does (its `thop_modified` profile).

    That profile counts convolutions with +1 per output for the bias, Linear layers as in·out per token, the
    two attention matmuls, and an adaptive average pool as (tokens + 1) per channel — twice, because the
    official `forward_features` pools both the normed and the raw tokens. LayerNorm, GELU, softmax and Tanh
    count zero.
    """
    g = model.genotype
    sides = check_resolution(g, model.image_size)
    tokens = sides[0] ** 2
    macs = tokens * g.width * (g.kernels[0] ** 2 * model.in_chans + 1)
    for i, (side, c) in enumerate(zip(sides, g.stage_widths, strict=True)):
        tokens = side * side
        inner = c // g.stage_heads[i] * g.stage_heads[i]
        window_tokens = (side // g.splits[i]) ** 2
        block = block_macs(tokens, c, int(c * g.expansions[i]), inner=inner, attended=window_tokens)
        macs += g.depths[i] * block
        if i < NUM_STAGES - 1:
            macs += (tokens // 4) * g.kernels[i + 1] ** 2 * c * g.stage_widths[i + 1]
    c = g.stage_widths[-1]
    macs += 2 * (sides[-1] ** 2 + 1) * c + c * c
    if model.num_classes:
        macs += c * model.num_classes
    return macs
