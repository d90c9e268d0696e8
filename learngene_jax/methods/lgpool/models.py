"""Learngene Pool models (Shi et al., AAAI 2024): the stage-1 student carrying trained feature projections,
the pool of learngene instances stitched SN-Net style, and the standalone stitched descendant.

A stitch configuration runs the front instance's stem and blocks 0..i, a linear stitch layer on every token
(D_front → D_end, the identity when the widths are equal), then the end instance's blocks j..depth-1 and head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from learngene_jax.models.vit import (
    LayerParams,
    ViT,
    block,
    classify,
    dense,
    embed_tokens,
    encoder,
    trunc_normal_02,
)

Array = jax.Array

# DeiT's layout (class token, token pooling, norm before pooling): the paper's students and teacher.
DEIT_LAYOUT = dict(class_token=True, pool="token", final_norm="norm")


def distill_points(student_depth: int, teacher_depth: int, points: int) -> tuple[tuple[int, int], ...]:
    """(student block, teacher block) pairs whose features are matched in stage 1.

    Official mapping (criterion of the Learngene Pool code): the depth is cut in thirds and the last block of
    each of the last `points` thirds is matched — points=1 '[end]': (L-1, T-1); 2 '[mid,end]': adds
    (2L/3-1, 2T/3-1); 3 '[front,end]': adds (L/3-1, T/3-1). DeiT-B (T=12) gives teacher blocks 3, 7, 11.
    """
    if points not in (1, 2, 3):
        raise ValueError(f"distillation points must be 1, 2 or 3 (end / mid,end / front,mid,end), got {points}")
    pairs = tuple((student_depth * k // 3 - 1, teacher_depth * k // 3 - 1) for k in range(4 - points, 4))
    students = [s for s, _ in pairs]
    if min(min(p) for p in pairs) < 0 or len(set(students)) != len(students):
        raise ValueError(f"{points} distillation points need a student depth of at least 3 and a teacher depth of "
                         f"at least 3 (got {student_depth} and {teacher_depth})")
    return pairs


class PoolStudent(ViT):
    """A stage-1 student: a plain ViT plus the linear projections (teacher width → student width, one per
    matched point, separate for block outputs and attention outputs) that map teacher features onto it.

    The projections are ordinary trained params (the official code builds them but never optimises them);
    the forward pass does not use them, the `lgpool_distill` objective does, and they are dropped when the
    student is exported as a learngene instance.
    """

    class_token: bool = True
    pool: str = "token"
    final_norm: str = "norm"
    teacher_width: int = 768
    teacher_depth: int = 12
    points: int = 3

    def layer_params(self) -> LayerParams:
        """The plain stacked blocks; declares the projections too, so that `init` creates them (and the
        optimizer trains them) although the forward pass never reads them."""
        n = len(distill_points(self.depth, self.teacher_depth, self.points))

        def init(rng):
            keys = jax.random.split(rng, 2)
            return {kind: {"kernel": trunc_normal_02(key, (n, self.teacher_width, self.width), jnp.float32),
                           "bias": jnp.zeros((n, self.width), jnp.float32)}
                    for kind, key in zip(("blocks", "attn"), keys, strict=True)}

        self.param("projections", init)
        return super().layer_params()


def instance_of(student: ViT) -> ViT:
    """The plain ViT that a stage-1 student's params (without 'projections') run in."""
    skip = {"parent", "name", "teacher_width", "teacher_depth", "points"}
    return ViT(**{f: getattr(student, f) for f in student.__dataclass_fields__ if f not in skip})


class StitchConfig(NamedTuple):
    """One member of the pool: front instance blocks 0..front_last, stitch layer `layer` of the (front, end)
    pair, end instance blocks end_first..depth-1. An instance alone has front == end and layer -1."""

    front: int
    end: int
    front_last: int
    end_first: int
    layer: int

    @property
    def alone(self) -> bool:
        """True for an instance run on its own (no stitch)."""
        return self.layer < 0


def paired_stitching(depth: int, kernel_size: int = 2, stride: int = 1) -> list[tuple[int, int, int]]:
    """SN-Net's paired stitching for two models of equal depth: (front_last, end_first, stitch layer) triples.

    A window of `kernel_size` block ids slides by `stride` over 0..depth-1; in each window every ordered pair
    (a, b) of its ids, in lexicographic order, is a new configuration unless an earlier window produced it, and
    the pairs a window adds share one stitch layer (numbered by the windows that add pairs). Kernel 2, stride 1:
    window [0,1] adds (0,0),(0,1),(1,0),(1,1) → layer 0, each window [w,w+1] then adds (w,w+1),(w+1,w),(w+1,w+1)
    → layer w; so 3·depth − 2 configurations (16 at depth 6, 25 at depth 9) over depth − 1 stitch layers.
    """
    seen: set[tuple[int, int]] = set()
    out: list[tuple[int, int, int]] = []
    layer = 0
    for start in range(0, depth, stride):
        ids = range(start, min(start + kernel_size, depth))
        new = [(a, b) for a in ids for b in ids if (a, b) not in seen]
        if new:
            seen.update(new)
            out += [(a, b, layer) for a, b in new]
            layer += 1
    return out


def parse_pairs(pairs: Sequence[str], num_instances: int) -> list[tuple[int, int]]:
    """('0-1', '1-2') → [(0, 1), (1, 2)], checked against the number of instances."""
    out = []
    for text in pairs:
        front, sep, end = str(text).partition("-")
        if not sep or not front.isdigit() or not end.isdigit():
            raise ValueError(f"stitch pair {text!r} must be 'FRONT-END' instance indices, e.g. '0-1'")
        pair = (int(front), int(end))
        if max(pair) >= num_instances or pair[0] == pair[1]:
            raise ValueError(f"stitch pair {text!r} must name two different instances of 0..{num_instances - 1}")
        out.append(pair)
    if len(set(out)) != len(out):
        raise ValueError(f"stitch pairs {tuple(pairs)} repeat a pair")
    return out


def stitch_configs(num_instances: int, pairs: Sequence[tuple[int, int]], depth: int, kernel_size: int = 2,
                   stride: int = 1) -> list[StitchConfig]:
    """Every configuration of a pool, in SN-Net's order: each instance alone, then each pair's paired
    stitching configurations."""
    configs = [StitchConfig(k, k, depth - 1, depth, -1) for k in range(num_instances)]
    for front, end in pairs:
        configs += [StitchConfig(front, end, i, j, s) for i, j, s in paired_stitching(depth, kernel_size, stride)]
    return configs


def _stitch(x: Array, stitch: dict[str, Array] | None, layer: Array | int) -> Array:
    """The stitch layer `layer` of a pair's stacked stitch params on every token (identity when None)."""
    if stitch is None:
        return x
    return dense(x, {"kernel": stitch["kernel"][layer], "bias": stitch["bias"][layer]})


def _blocks(x: Array, layers: dict[str, Any], vit: ViT, first: int | Array, last: int | Array) -> Array:
    """Blocks first..last of a stacked layer tree. Static indices run exactly those blocks; traced ones run a
    scan whose body runs or skips each block, so one compiled body serves every configuration."""
    if isinstance(first, int) and isinstance(last, int):
        return encoder(x, jax.tree_util.tree_map(lambda a: a[first:last + 1], layers), num_heads=vit.num_heads,
                       eps=vit.eps, scan=True, attention_impl=vit.attention_impl)
    depth = jax.tree_util.tree_leaves(layers)[0].shape[0]

    def step(x, inputs):
        p, k = inputs
        run = lambda y: block(y, p, num_heads=vit.num_heads, eps=vit.eps, attention_impl=vit.attention_impl)
        return jax.lax.cond((k >= first) & (k <= last), run, lambda y: y, x), None

    return jax.lax.scan(step, x, (layers, jnp.arange(depth)))[0]


class LearngenePool(nn.Module):
    """The learngene pool: instances of equal depth (ViTs of several widths, DeiT layout by default) and the
    stitch layers of each (front, end) pair; every stitch configuration is a descendant model.

    Params: instances/<k>/<a ViT param tree>, stitches/<front>-<end>/{kernel (layers, D_front, D_end),
    bias (layers, D_end)} (no entry when the widths are equal: the stitch is the identity, as officially).
    `config_id` picks the configuration: a Python int compiles that one model; a traced int32 scalar
    dispatches with `lax.switch` (one compiled program for all, e.g. sampling a config per training step);
    None runs `eval_config`.
    """

    num_classes: int = 1000
    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    widths: tuple[int, ...] = (192, 768)
    heads: tuple[int, ...] = (3, 12)
    depth: int = 6
    mlp_dims: tuple[int, ...] = ()  # default 4 × width each
    class_token: bool = True
    pool: str = "token"
    final_norm: str = "norm"
    eps: float = 1e-6
    qkv_bias: bool = True
    pairs: tuple[str, ...] = ("0-1",)
    kernel_size: int = 2
    stride: int = 1
    eval_config: int = 0
    dtype: Any = jnp.float32

    def instance_models(self) -> tuple[ViT, ...]:
        """Each instance as a plain ViT (the architecture its param sub-tree runs in)."""
        if len(self.heads) != len(self.widths) or (self.mlp_dims and len(self.mlp_dims) != len(self.widths)):
            raise ValueError(f"widths {self.widths}, heads {self.heads} and mlp_dims {self.mlp_dims} must have one "
                             f"entry per instance")
        return tuple(ViT(num_classes=self.num_classes, image_size=self.image_size, patch_size=self.patch_size,
                         in_chans=self.in_chans, width=w, depth=self.depth, num_heads=h,
                         mlp_dim=self.mlp_dims[k] if self.mlp_dims else None, class_token=self.class_token,
                         pool=self.pool, final_norm=self.final_norm, eps=self.eps, qkv_bias=self.qkv_bias,
                         dtype=self.dtype, scan_layers=True, parent=None)  # descriptions, not submodules
                     for k, (w, h) in enumerate(zip(self.widths, self.heads, strict=True)))

    def pair_list(self) -> list[tuple[int, int]]:
        """The stitched (front, end) instance pairs."""
        return parse_pairs(self.pairs, len(self.widths))

    def configs(self) -> list[StitchConfig]:
        """Every stitch configuration, indexed by config id."""
        return stitch_configs(len(self.widths), self.pair_list(), self.depth, self.kernel_size, self.stride)

    def num_stitch_layers(self) -> int:
        """Stitch layers per linearly stitched pair."""
        return len({s for *_, s in paired_stitching(self.depth, self.kernel_size, self.stride)})

    def linear_pairs(self) -> list[tuple[int, int]]:
        """Pairs whose widths differ (they own a stack of linear stitch layers)."""
        return [(a, b) for a, b in self.pair_list() if self.widths[a] != self.widths[b]]

    @nn.compact
    def __call__(self, images: Array, *, train: bool = False, config_id: int | Array | None = None) -> Array:
        """images (batch, H, W, C) → logits of configuration `config_id` (drop-path is not used)."""
        del train  # no stochastic layers: a pool config is deterministic
        vits = self.instance_models()
        dummy = jnp.zeros((1, self.image_size, self.image_size, self.in_chans), jnp.float32)

        def init_instances(rng):
            keys = jax.random.split(rng, len(vits))
            return {str(k): vit.init(key, dummy)["params"] for k, (vit, key) in enumerate(zip(vits, keys, strict=True))}

        def init_stitches(rng):
            layers = self.num_stitch_layers()
            out = {}
            pairs = self.linear_pairs()
            for key, (a, b) in zip(jax.random.split(rng, len(pairs)), pairs, strict=True):
                out[f"{a}-{b}"] = {"kernel": trunc_normal_02(key, (layers, self.widths[a], self.widths[b])),
                                   "bias": jnp.zeros((layers, self.widths[b]), jnp.float32)}
            return out

        params = {"instances": self.param("instances", init_instances)}
        if self.linear_pairs():
            params["stitches"] = self.param("stitches", init_stitches)
        return pool_forward(self, params, images, self.eval_config if config_id is None else config_id)


def pool_forward(pool: LearngenePool, params: dict[str, Any], images: Array, config_id: int | Array) -> Array:
    """Logits of one configuration of `pool` from its param tree (static int, or traced int32 scalar)."""
    vits, configs, pairs = pool.instance_models(), pool.configs(), pool.pair_list()

    def run(front: int, end: int, front_last, end_first, layer) -> Array:
        p_front, p_end = params["instances"][str(front)], params["instances"][str(end)]
        x = _blocks(embed_tokens(vits[front], p_front, images), p_front["blocks"], vits[front], 0, front_last)
        if front != end:
            x = _stitch(x, params.get("stitches", {}).get(f"{front}-{end}"), layer)
            x = _blocks(x, p_end["blocks"], vits[end], end_first, pool.depth - 1)
        return classify(vits[end], p_end, x)

    if not isinstance(config_id, jax.Array):
        return run(*configs[int(config_id)])
    branches = [lambda i, j, s, k=k: run(k, k, pool.depth - 1, pool.depth, -1) for k in range(len(vits))]
    branches += [lambda i, j, s, a=a, b=b: run(a, b, i, j, s) for a, b in pairs]
    # config id → (branch, front_last, end_first, stitch layer), looked up on device
    table = jnp.asarray([[c.front if c.alone else len(vits) + pairs.index((c.front, c.end)), c.front_last,
                          c.end_first, max(c.layer, 0)] for c in configs], jnp.int32)
    row = table[config_id]
    return jax.lax.switch(row[0], branches, row[1], row[2], row[3])


class StitchedViT(nn.Module):
    """A standalone stitched descendant (one pool configuration between instances of different widths or
    heads): front stem and blocks, a linear stitch on every token (identity for equal widths), end blocks
    and head.

    Params: front/{patch_embed, cls_token, pos_embed, blocks}, [stitch/{kernel, bias}], end/{blocks, norm or
    fc_norm, head} — the front and end sub-trees are ViT param trees, so timm-style tools read each part.
    """

    num_classes: int = 1000
    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    front_width: int = 192
    front_heads: int = 3
    front_depth: int = 3
    front_mlp_dim: int | None = None
    end_width: int = 768
    end_heads: int = 12
    end_depth: int = 3
    end_mlp_dim: int | None = None
    class_token: bool = True
    pool: str = "token"
    final_norm: str = "norm"
    eps: float = 1e-6
    qkv_bias: bool = True
    dtype: Any = jnp.float32
    scan_layers: bool = False

    def parts(self) -> tuple[ViT, ViT]:
        """The front and end parts as ViTs (their depths are the blocks each contributes)."""
        shared = dict(num_classes=self.num_classes, image_size=self.image_size, patch_size=self.patch_size,
                      in_chans=self.in_chans, class_token=self.class_token, pool=self.pool,
                      final_norm=self.final_norm, eps=self.eps, qkv_bias=self.qkv_bias, dtype=self.dtype,
                      parent=None)  # plain descriptions, not submodules
        return (ViT(width=self.front_width, num_heads=self.front_heads, depth=self.front_depth,
                    mlp_dim=self.front_mlp_dim, **shared),
                ViT(width=self.end_width, num_heads=self.end_heads, depth=self.end_depth, mlp_dim=self.end_mlp_dim,
                    **shared))

    @nn.compact
    def __call__(self, images: Array, *, train: bool = False) -> Array:
        """images (batch, H, W, C) → logits."""
        del train
        front, end = self.parts()
        dummy = jnp.zeros((1, self.image_size, self.image_size, self.in_chans), jnp.float32)
        stem = ("patch_embed", "cls_token", "pos_embed", "blocks")

        def init_part(vit, keep):
            return lambda rng: {k: v for k, v in vit.init(rng, dummy)["params"].items() if k in keep}

        p_front = self.param("front", init_part(front, stem))
        p_end = self.param("end", init_part(end, ("blocks", "norm", "fc_norm", "head")))
        run = lambda x, vit, layers: encoder(x, layers, num_heads=vit.num_heads, eps=vit.eps,
                                             scan=self.scan_layers, attention_impl=vit.attention_impl)
        x = run(embed_tokens(front, p_front, images), front, p_front["blocks"])
        if self.front_width != self.end_width:
            stitch = self.param("stitch", lambda rng: {
                "kernel": trunc_normal_02(rng, (self.front_width, self.end_width)),
                "bias": jnp.zeros((self.end_width,), jnp.float32)})
            x = dense(x, stitch)
        return classify(end, p_end, run(x, end, p_end["blocks"]))
