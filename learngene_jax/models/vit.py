"""Vision Transformer in the timm/DeiT layout, with block params stacked along a leading depth axis.

The encoder is a function of a stacked layer-param tree, so gene-parameterised models (TLEG, SWS) compute
their per-layer params from a gene and run the very same encoder as a plain descendant ViT.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
LayerParams = dict[str, dict[str, Array]]

# The six sub-layers of a pre-norm Transformer block, in timm's order.
SUBLAYERS = ("norm1", "qkv", "proj", "norm2", "fc1", "fc2")
NORMS = ("norm1", "norm2")
POOLS = ("token", "avg")
FINAL_NORMS = ("norm", "fc_norm")
ATTENTION_IMPLS = ("xla", "cudnn")

trunc_normal_02 = nn.initializers.truncated_normal(stddev=0.02)


def layer_shapes(width: int, mlp_dim: int, qkv_bias: bool = True) -> dict[str, dict[str, tuple[int, ...]]]:
    """Shapes of one block's params: {sublayer: {name: shape}} (Dense kernels are (in, out))."""
    qkv = {"kernel": (width, 3 * width)}
    if qkv_bias:
        qkv["bias"] = (3 * width,)
    return {
        "norm1": {"scale": (width,), "bias": (width,)},
        "qkv": qkv,
        "proj": {"kernel": (width, width), "bias": (width,)},
        "norm2": {"scale": (width,), "bias": (width,)},
        "fc1": {"kernel": (width, mlp_dim), "bias": (mlp_dim,)},
        "fc2": {"kernel": (mlp_dim, width), "bias": (width,)},
    }


def init_layers(
    rng: Array,
    shapes: Mapping[str, Mapping[str, tuple[int, ...]]],
    lead: tuple[int, ...] = (),
    norm_scale: float = 1.0,
) -> LayerParams:
    """DeiT init for block params with extra leading axes `lead`: kernels trunc-normal(.02), biases 0,
    LayerNorm scale `norm_scale` (1 for a plain block; 0 for TLEG's θ_A)."""
    out: LayerParams = {}
    keys = jax.random.split(rng, len(shapes))
    for key, (sub, leaves) in zip(keys, shapes.items(), strict=True):
        out[sub] = {}
        for name, shape in leaves.items():
            full = lead + tuple(shape)
            if name == "kernel":
                out[sub][name] = trunc_normal_02(jax.random.fold_in(key, 0), full, jnp.float32)
            elif name == "scale":
                out[sub][name] = jnp.full(full, norm_scale, jnp.float32)
            else:
                out[sub][name] = jnp.zeros(full, jnp.float32)
    return out


def layer_norm(x: Array, p: Mapping[str, Array], eps: float) -> Array:
    """LayerNorm over the last axis, statistics in float32."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.maximum((x32 * x32).mean(-1, keepdims=True) - mean * mean, 0.0)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]
    return y.astype(x.dtype)


def dense(x: Array, p: Mapping[str, Array]) -> Array:
    """x @ kernel (+ bias) in x's dtype."""
    y = (x.reshape(-1, x.shape[-1]) @ p["kernel"].astype(x.dtype)).reshape(*x.shape[:-1], -1)
    if "bias" in p:
        y = y + p["bias"].astype(x.dtype)
    return y


_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@jax.custom_vjp
def gelu(x: Array) -> Array:
    """Exact (erf) GELU as in PyTorch's nn.GELU(); the backward pass keeps only x (one fused pass)."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * _INV_SQRT2))


def _gelu_fwd(x):
    return gelu(x), x


def _gelu_bwd(x, g):
    cdf = 0.5 * (1.0 + jax.lax.erf(x * _INV_SQRT2))
    pdf = jnp.exp(-0.5 * x * x) * _INV_SQRT_2PI
    return (g * (cdf + x * pdf),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


def attention(x: Array, qkv: Mapping[str, Array], proj: Mapping[str, Array], num_heads: int,
              impl: str = "xla") -> Array:
    """Multi-head self-attention as timm's `Attention`: qkv rows [q | k | v], each head-major."""
    batch, tokens, width = x.shape  # (batch, tokens, width)
    head_dim = width // num_heads
    q, k, v = jnp.moveaxis(dense(x, qkv).reshape(batch, tokens, 3, num_heads, head_dim), 2, 0)
    if impl == "cudnn":
        out = jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    else:
        qh, kh, vh = (t.transpose(0, 2, 1, 3) for t in (q * head_dim**-0.5, k, v))
        logits = jnp.einsum("bhqd,bhkd->bhqk", qh, kh)
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(x.dtype)
        out = jnp.einsum("bhqk,bhkd->bhqd", weights, vh).transpose(0, 2, 1, 3)
    return dense(out.reshape(batch, tokens, width), proj)


def drop_path(x: Array, rate: Array | float, rng: Array | None) -> Array:
    """Stochastic depth: drop the whole residual branch per sample with probability `rate`."""
    if rng is None:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0).astype(x.dtype)


def block(x: Array, p: Mapping[str, Mapping[str, Array]], *, num_heads: int, eps: float,
          attention_impl: str = "xla", drop_rate: Array | float = 0.0, rng: Array | None = None,
          capture: bool = False) -> Array | tuple[Array, Array]:
    """One pre-norm Transformer block: x += attn(LN1 x); x += mlp(LN2 x). With `capture`, also returns the
    attention sub-layer's output attn(LN1 x) (before the residual add and drop-path)."""
    rng_attn = rng_mlp = None
    if rng is not None:
        rng_attn, rng_mlp = jax.random.split(rng)
    attn_out = attention(layer_norm(x, p["norm1"], eps), p["qkv"], p["proj"], num_heads, attention_impl)
    x = x + drop_path(attn_out, drop_rate, rng_attn)
    h = dense(gelu(dense(layer_norm(x, p["norm2"], eps), p["fc1"])), p["fc2"])
    x = x + drop_path(h, drop_rate, rng_mlp)
    return (x, attn_out) if capture else x


def encoder(
    x: Array,
    layers: LayerParams,
    *,
    num_heads: int,
    eps: float,
    drop_path_rate: float = 0.0,
    rng: Array | None = None,
    scan: bool = False,
    remat: bool = False,
    attention_impl: str = "xla",
    capture: bool = False,
) -> Array | tuple[Array, dict[str, Array]]:
    """Run `depth` blocks whose params are stacked on axis 0 of every leaf of `layers`.

    Drop-path rate of block i is linspace(0, drop_path_rate, depth)[i] (DeiT); it is active only when an
    rng is given. `scan=True` compiles one block body (big models); otherwise the loop is unrolled.
    `capture=True` also returns {'blocks': every block's output, 'attn': every attention sub-layer's
    output}, each (depth, batch, tokens, width) — the features that feature distillation matches.
    """
    depth = jax.tree_util.tree_leaves(layers)[0].shape[0]
    rates = jnp.asarray(np.linspace(0.0, drop_path_rate, depth), jnp.float32)
    use_drop = rng is not None and drop_path_rate > 0
    rngs = jax.random.split(rng, depth) if use_drop else None

    def body(x, p, rate, key):
        return block(x, p, num_heads=num_heads, eps=eps, attention_impl=attention_impl,
                     drop_rate=rate, rng=key, capture=capture)

    if remat:
        body = jax.checkpoint(body)
    if scan:
        def step(carry, inputs):
            p, rate, key = inputs
            out = body(carry, p, rate, key)
            return (out[0], out) if capture else (out, None)

        x, outs = jax.lax.scan(step, x, (layers, rates, rngs))
        return (x, {"blocks": outs[0], "attn": outs[1]}) if capture else x
    outs = []
    for i in range(depth):
        p = jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], layers)
        out = body(x, p, rates[i], None if rngs is None else rngs[i])
        x = out[0] if capture else out
        outs.append(out)
    if capture:
        return x, {"blocks": jnp.stack([o[0] for o in outs]), "attn": jnp.stack([o[1] for o in outs])}
    return x


class ViT(nn.Module):
    """Vision Transformer covering timm's `VisionTransformer`/DeiT and the learngene descendants.

    Params: patch_embed/{kernel,bias}, [cls_token], [dist_token], pos_embed, blocks/<sublayer>/<name> stacked
    (depth, ...), norm or fc_norm, head, [head_dist]. `final_norm='norm'` normalises every token before pooling
    (timm `norm`); `'fc_norm'` normalises after average pooling (timm `fc_norm`, the official learngene
    descendants). `distilled=True` is DeiT's distilled model (timm `VisionTransformerDistilled`): a distillation
    token after the class token, a second head on it, and the two heads' logits averaged, as timm's eval.
    """

    num_classes: int = 1000
    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    width: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_dim: int | None = None  # default 4 * width
    class_token: bool = False
    distilled: bool = False
    pool: str = "avg"
    final_norm: str = "fc_norm"
    eps: float = 1e-6
    qkv_bias: bool = True
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    scan_layers: bool = False
    remat: bool = False
    attention_impl: str = "xla"
    # Progressive re-tokenization (As-ViT): the patch embedding's stride (0: patch_size) and dilation; other
    # token grids see the pos_embed resampled, so params keep their shapes.
    patch_stride: int = 0
    patch_dilation: int = 1

    @property
    def hidden_dim(self) -> int:
        return self.mlp_dim or 4 * self.width

    @property
    def grid(self) -> int:
        """Tokens per side of the default tokenization (stride = patch size)."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token and DeiT's distillation token."""
        return int(self.class_token) + int(self.distilled)

    @property
    def token_stride(self) -> int:
        """The patch embedding's stride in effect (patch_stride, or the patch size when it is 0)."""
        return self.patch_stride or self.patch_size

    @property
    def token_grid(self) -> int:
        """Tokens per side with the current patch stride and dilation."""
        span = self.patch_dilation * (self.patch_size - 1) + 1
        return (self.image_size - span) // self.token_stride + 1

    def check(self) -> None:
        """Raise ValueError for an inconsistent architecture."""
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.final_norm not in FINAL_NORMS:
            raise ValueError(f"final_norm must be one of {FINAL_NORMS}, got {self.final_norm!r}")
        if self.pool == "token" and not self.class_token:
            raise ValueError("pool='token' needs class_token=True")
        if self.distilled and (self.pool, self.final_norm) != ("token", "norm"):
            raise ValueError("distilled=True is DeiT's distilled model: use class_token=True, pool='token', "
                             "final_norm='norm'")
        if self.final_norm == "fc_norm" and self.pool != "avg":
            raise ValueError("final_norm='fc_norm' is timm's norm after average pooling: use pool='avg'")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")

    def layer_params(self) -> LayerParams:
        """The stacked (depth, ...) block params; gene-parameterised subclasses compute them from a gene."""
        shapes = layer_shapes(self.width, self.hidden_dim, self.qkv_bias)
        return self.param("blocks", lambda rng: init_layers(rng, shapes, (self.depth,)))

    @nn.compact
    def __call__(self, images: Array, *, train: bool = False, features: bool = False,
                 capture: bool = False) -> Array | tuple[Array, dict[str, Array]]:
        """images (batch, H, W, C), already normalised → logits (batch, classes), or pooled features.

        `capture=True` returns (output, intermediates): {'embed': the tokens entering block 0, 'blocks' and
        'attn': each block's output and attention sub-layer output, stacked (depth, batch, tokens, width)}.
        """
        self.check()
        if images.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"model expects {self.image_size}x{self.image_size} images, got "
                             f"{images.shape[1]}x{images.shape[2]}")
        stem = {"patch_embed": self.param("patch_embed", _init_patch_embed, self.patch_size, self.in_chans,
                                          self.width)}
        if self.class_token:
            stem["cls_token"] = self.param("cls_token", trunc_normal_02, (1, 1, self.width))
        if self.distilled:
            stem["dist_token"] = self.param("dist_token", trunc_normal_02, (1, 1, self.width))
        stem["pos_embed"] = self.param("pos_embed", trunc_normal_02,
                                       (1, self.num_patches + self.num_prefix_tokens, self.width))
        x = embed_tokens(self, stem, images)
        embedded = x
        rng = self.make_rng("dropout") if train and self.drop_path_rate > 0 else None
        x = encoder(x, self.layer_params(), num_heads=self.num_heads, eps=self.eps,
                    drop_path_rate=self.drop_path_rate, rng=rng, scan=self.scan_layers, remat=self.remat,
                    attention_impl=self.attention_impl, capture=capture)
        if capture:
            x, intermediates = x
            intermediates = {"embed": embedded, **intermediates}
        if self.distilled:  # timm VisionTransformerDistilled.forward_head, eval form: the heads' mean
            x = layer_norm(x, self.param("norm", _init_norm, self.width), self.eps)
            cls, dist = x[:, 0], x[:, 1]
            if features or not self.num_classes:
                x = (cls + dist) / 2
            else:
                dense_kw = dict(dtype=self.dtype, kernel_init=trunc_normal_02)
                x = (nn.Dense(self.num_classes, name="head", **dense_kw)(cls)
                     + nn.Dense(self.num_classes, name="head_dist", **dense_kw)(dist)) / 2
            return (x, intermediates) if capture else x
        x = self.pool_features(x)
        if not (features or not self.num_classes):
            x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=trunc_normal_02, name="head")(x)
        return (x, intermediates) if capture else x

    def pool_features(self, x: Array) -> Array:
        """Final norm and pooling: (batch, tokens, width) → (batch, width)."""
        names = ("norm",) if self.final_norm == "norm" else ("fc_norm",)
        norms = {name: self.param(name, _init_norm, self.width) for name in names}
        return pool_tokens(x, norms, pool=self.pool, final_norm=self.final_norm, class_token=self.class_token,
                           eps=self.eps)


def pool_tokens(x: Array, norms: Mapping[str, Mapping[str, Array]], *, pool: str, final_norm: str,
                class_token: bool, eps: float) -> Array:
    """A ViT's final norm and pooling, (batch, tokens, width) → (batch, width); `norms` holds the 'norm'
    (before pooling) or 'fc_norm' (after average pooling) LayerNorm params."""
    if final_norm == "norm":
        x = layer_norm(x, norms["norm"], eps)
    prefix = int(class_token)
    x = x[:, 0] if pool == "token" else x[:, prefix:].mean(1)
    if final_norm == "fc_norm":
        x = layer_norm(x, norms["fc_norm"], eps)
    return x


def resample_pos_embed(pos: Array, prefix: int, new_grid: int) -> Array:
    """A learned position table (1, prefix + g², width) resampled to (1, prefix + new_grid², width): the
    `prefix` rows (class / distillation tokens) kept, the g×g grid resized bicubically (with antialiasing when
    shrinking), as timm's `resample_abs_pos_embed` does."""
    width = pos.shape[-1]
    grid = int(round((pos.shape[1] - prefix) ** 0.5))
    tokens = jnp.asarray(pos[:, prefix:], jnp.float32).reshape(1, grid, grid, width)
    tokens = jax.image.resize(tokens, (1, new_grid, new_grid, width), "bicubic").reshape(1, -1, width)
    return jnp.concatenate([jnp.asarray(pos[:, :prefix], jnp.float32), tokens], 1).astype(pos.dtype)


def embed_tokens(model: ViT, params: Mapping[str, Any], images: Array) -> Array:
    """A ViT's stem (patch embedding, class token, pos_embed) on its param tree: images (batch, H, W, C) →
    tokens (batch, tokens, width) entering block 0. With a re-tokenization stride/dilation the pos_embed grid
    is resampled bilinearly to the new token grid."""
    patch = params["patch_embed"]
    stride = model.token_stride
    x = jax.lax.conv_general_dilated(images.astype(model.dtype), patch["kernel"].astype(model.dtype),
                                     (stride, stride), "VALID", rhs_dilation=(model.patch_dilation,) * 2,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    grid = x.shape[1]
    x = (x + patch["bias"].astype(x.dtype)).reshape(x.shape[0], -1, model.width)  # row-major, as timm
    pos = params["pos_embed"]
    if grid != model.grid:
        prefix = pos[:, : model.num_prefix_tokens]
        tokens = pos[:, model.num_prefix_tokens:].reshape(1, model.grid, model.grid, model.width)
        tokens = jax.image.resize(tokens, (1, grid, grid, model.width), "bilinear").reshape(1, -1, model.width)
        pos = jnp.concatenate([prefix, tokens], 1)
    prefix_tokens = [params[k] for k, on in (("cls_token", model.class_token), ("dist_token", model.distilled)) if on]
    if prefix_tokens:
        x = jnp.concatenate([jnp.broadcast_to(t.astype(x.dtype), (x.shape[0], 1, model.width))
                             for t in prefix_tokens] + [x], 1)
    return x + pos.astype(x.dtype)


def classify(model: ViT, params: Mapping[str, Any], x: Array) -> Array:
    """The functional twin of a ViT's end (final norm, pooling, head) on its param tree:
    tokens (batch, tokens, width) leaving the last block → logits (batch, classes)."""
    if model.distilled:
        x = layer_norm(x, params["norm"], model.eps)
        if not model.num_classes:
            return (x[:, 0] + x[:, 1]) / 2
        return (dense(x[:, 0], params["head"]) + dense(x[:, 1], params["head_dist"])) / 2
    x = pool_tokens(x, params, pool=model.pool, final_norm=model.final_norm, class_token=model.class_token,
                    eps=model.eps)
    return dense(x, params["head"]) if model.num_classes else x


def _init_patch_embed(rng: Array, patch: int, in_chans: int, width: int) -> dict[str, Array]:
    """PyTorch's default Conv2d init (kaiming-uniform a=√5: U(±1/√fan_in) for kernel and bias), as timm keeps."""
    bound = 1.0 / math.sqrt(patch * patch * in_chans)
    rk, rb = jax.random.split(rng)
    return {"kernel": jax.random.uniform(rk, (patch, patch, in_chans, width), jnp.float32, -bound, bound),
            "bias": jax.random.uniform(rb, (width,), jnp.float32, -bound, bound)}


def _init_norm(rng: Array, width: int) -> dict[str, Array]:
    del rng
    return {"scale": jnp.ones((width,), jnp.float32), "bias": jnp.zeros((width,), jnp.float32)}


def abstract_params(model: ViT) -> dict[str, Any]:
    """The model's param tree as `jax.ShapeDtypeStruct`s (nothing is allocated)."""
    x = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, model.in_chans), jnp.float32)
    return jax.eval_shape(lambda images: model.init(jax.random.key(0), images), x)["params"]


def count_params(params: Any) -> int:
    """Number of scalar parameters in a pytree."""
    return int(sum(np.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(params)))


def module_fields(module: nn.Module) -> dict[str, Any]:
    """The constructor fields of a model (its architecture), without flax internals."""
    skip = {"parent", "name"}
    return {f: getattr(module, f) for f in module.__dataclass_fields__ if f not in skip}

