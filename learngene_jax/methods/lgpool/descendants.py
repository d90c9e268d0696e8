"""Learngene Pool, stage 2 as pure functions: a pool's params from distilled instances with its stitch layers
initialised from the trained distillation projections (the paper's mode) or by least squares (SN-Net's), any
configuration exported as a standalone descendant, and each configuration's analytic parameter count and FLOPs."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from learngene_jax.methods.lgpool.models import LearngenePool, StitchConfig, StitchedViT
from learngene_jax.models.cost import block_macs, block_params
from learngene_jax.models.vit import ViT

Array = jax.Array

STITCH_INITS = ("projections", "least_squares")


def least_squares_stitch(x_front: np.ndarray, x_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SN-Net's stitch init: the affine map from front to end features minimising ‖[X_front, 1]·A − X_end‖,
    A = [X_front, 1]⁺ X_end, over all tokens of a batch (float64). Returns (kernel (D_front, D_end), bias)."""
    x = np.asarray(x_front, np.float64).reshape(-1, np.shape(x_front)[-1])
    y = np.asarray(x_end, np.float64).reshape(-1, np.shape(x_end)[-1])
    if len(x) != len(y):
        raise ValueError(f"front and end features cover {len(x)} and {len(y)} tokens; they must be the same images")
    solution = np.linalg.lstsq(np.concatenate([x, np.ones((len(x), 1))], 1), y, rcond=None)[0]
    return solution[:-1].astype(np.float32), solution[-1].astype(np.float32)


@partial(jax.jit, static_argnums=0)
def _capture(vit: ViT, params: dict[str, Any], images: Array) -> dict[str, Array]:
    return vit.apply({"params": params}, images, capture=True)[1]


def block_inputs(vit: ViT, params: dict[str, Any], images: Array) -> np.ndarray:
    """The tokens entering each block and leaving the last one: (depth + 1, batch, tokens, width); entry k is
    the input of block k (entry 0 the embedding), entry k + 1 the output of block k."""
    inter = _capture(vit, params, images)
    return np.concatenate([np.asarray(inter["embed"])[None], np.asarray(inter["blocks"])])


def init_stitches(pool: LearngenePool, instances: Sequence[dict[str, Any]], images: Array) -> dict[str, Any]:
    """SN-Net's least-squares init of every linear stitch layer on one batch of real images.

    Configuration (i, j) maps the output of front block i onto the input of end block j — for j = 0 the end
    model's embedding, which is what SN-Net's `end_features[j - 1]` reads (key −1 of its feature dict is the
    embedding). A stitch layer shared by several configurations gets the mean of their solutions.
    """
    vits = pool.instance_models()
    feats = {k: block_inputs(vits[k], instances[k], images) for k in {k for pair in pool.linear_pairs()
                                                                      for k in pair}}
    out = {}
    for front, end in pool.linear_pairs():
        layers: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for cfg in pool.configs():
            if (cfg.front, cfg.end) == (front, end):
                solved = least_squares_stitch(feats[front][cfg.front_last + 1], feats[end][cfg.end_first])
                layers.setdefault(cfg.layer, []).append(solved)
        out[f"{front}-{end}"] = {
            "kernel": jnp.asarray(np.stack([np.mean([k for k, _ in layers[s]], 0) for s in sorted(layers)])),
            "bias": jnp.asarray(np.stack([np.mean([b for _, b in layers[s]], 0) for s in sorted(layers)]))}
    return out


def projection_stitch(front: np.ndarray, end: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The paper's stitch init from the stage-1 distillation projections (Yuanmou `learngenepool.py`,
    `initialize_stitching_weights(mode='ours')`): each student learnt P_k (teacher width D_T → its width D_k, one
    per matched feature point) with student features ≈ teacher features · P_k, so a front feature is carried back
    to the teacher's space by P̄_frontᵀ and on to the end's by P̄_end, P̄ the mean over the matched points:

        kernel = P̄_frontᵀ · P̄_end  (D_front, D_end),   bias = 0.

    `front`, `end`: the block-output projection kernels, (points, D_T, D_k) in Flax (in, out) order; `end` None
    when the end instance has the teacher's width, which the official Ti→B stitch treats as the teacher itself
    (kernel = P̄_Tiᵀ); the composed form is the official (commented-out) Ti→S init. The official bias keeps
    torch's random Linear init; here it is zero. Raises ValueError on kernels of different teacher widths."""
    f = np.asarray(front, np.float64).mean(0)
    if end is not None and np.shape(end)[-2] != f.shape[0]:
        raise ValueError(f"projections of front and end come from teachers of widths {f.shape[0]} and "
                         f"{np.shape(end)[-2]}")
    kernel = f.T if end is None else f.T @ np.asarray(end, np.float64).mean(0)
    return kernel.astype(np.float32), np.zeros(kernel.shape[1], np.float32)


def init_stitches_from_projections(pool: LearngenePool, projections: Sequence[dict[str, Any]]
                                   ) -> dict[str, Any]:
    """Every stitch layer of each stitched pair initialised by `projection_stitch` (all layers of a pair get the
    same map, as in the official code). `projections[k]`: instance k's stage-1 `projections` params
    ({'blocks': {'kernel': (points, D_T, D_k), 'bias': …}, 'attn': …}; the attention projections are not used)."""
    out = {}
    for front, end in pool.linear_pairs():
        p_front = np.asarray(projections[front]["blocks"]["kernel"])
        p_end = np.asarray(projections[end]["blocks"]["kernel"])
        teacher_width = p_front.shape[-2]
        kernel, bias = projection_stitch(p_front, None if pool.widths[end] == teacher_width else p_end)
        layers = sorted({cfg.layer for cfg in pool.configs() if (cfg.front, cfg.end) == (front, end)})
        out[f"{front}-{end}"] = {"kernel": jnp.asarray(np.stack([kernel] * len(layers))),
                                 "bias": jnp.asarray(np.stack([bias] * len(layers)))}
    return out


def assemble_pool(pool: LearngenePool, instances: Sequence[dict[str, Any]], images: Array | None = None,
                  stitch_init: str = "least_squares", projections: Sequence[dict[str, Any]] | None = None
                  ) -> dict[str, Any]:
    """The pool's param tree: the distilled instances (plain ViT param trees, in pool order) and the stitch
    layers, initialised by `stitch_init`: 'projections' (the paper's: from each instance's stage-1 `projections`,
    see `projection_stitch`) or 'least_squares' (SN-Net's, on the features of `images`, (batch, H, W, C)
    normalised). Raises ValueError when the init's input is missing or the mode is unknown."""
    params: dict[str, Any] = {"instances": {str(k): p for k, p in enumerate(instances)}}
    if not pool.linear_pairs():
        return params
    if stitch_init == "projections":
        if projections is None or len(projections) != len(instances):
            raise ValueError("stitch_init='projections' needs the stage-1 projections of every instance")
        params["stitches"] = init_stitches_from_projections(pool, projections)
    elif stitch_init == "least_squares":
        if images is None:
            raise ValueError("stitch_init='least_squares' needs a batch of images")
        params["stitches"] = init_stitches(pool, instances, images)
    else:
        raise ValueError(f"stitch_init must be one of {STITCH_INITS}, got {stitch_init!r}")
    return params


def _blocks(layers: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    return jax.tree_util.tree_map(lambda a: a[start:stop], layers)


def export_config(pool: LearngenePool, params: dict[str, Any], config_id: int) -> tuple[Any, dict[str, Any]]:
    """Configuration `config_id` as a standalone descendant (module, params): a plain ViT when both sides have
    the same width, heads and MLP size (the stitch is then the identity), otherwise a `StitchedViT`."""
    cfg = pool.configs()[config_id]
    vits = pool.instance_models()
    front, end = vits[cfg.front], vits[cfg.end]
    p_front, p_end = params["instances"][str(cfg.front)], params["instances"][str(cfg.end)]
    if cfg.alone:
        return front, jax.tree_util.tree_map(jnp.asarray, p_front)
    head = {k: v for k, v in p_end.items() if k in ("norm", "fc_norm", "head")}
    front_blocks = _blocks(p_front["blocks"], 0, cfg.front_last + 1)
    end_blocks = _blocks(p_end["blocks"], cfg.end_first, pool.depth)
    stem = {k: v for k, v in p_front.items() if k in ("patch_embed", "cls_token", "pos_embed")}
    front_depth, end_depth = cfg.front_last + 1, pool.depth - cfg.end_first
    if (front.width, front.num_heads, front.hidden_dim) == (end.width, end.num_heads, end.hidden_dim):
        blocks = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), front_blocks, end_blocks)
        return front.clone(depth=front_depth + end_depth), {**stem, "blocks": blocks, **head}
    model = StitchedViT(num_classes=pool.num_classes, image_size=pool.image_size, patch_size=pool.patch_size,
                        in_chans=pool.in_chans, front_width=front.width, front_heads=front.num_heads,
                        front_depth=front_depth, front_mlp_dim=front.mlp_dim, end_width=end.width,
                        end_heads=end.num_heads, end_depth=end_depth, end_mlp_dim=end.mlp_dim,
                        class_token=pool.class_token, pool=pool.pool, final_norm=pool.final_norm, eps=pool.eps,
                        qkv_bias=pool.qkv_bias, dtype=pool.dtype)
    out = {"front": {**stem, "blocks": front_blocks}, "end": {"blocks": end_blocks, **head}}
    if front.width != end.width:
        stitch = params["stitches"][f"{cfg.front}-{cfg.end}"]
        out["stitch"] = {"kernel": stitch["kernel"][cfg.layer], "bias": stitch["bias"][cfg.layer]}
    return model, out


def config_cost(pool: LearngenePool, cfg: StitchConfig) -> tuple[int, int]:
    """(parameters, FLOPs) of one configuration, analytically. FLOPs count multiply-adds of the dense layers,
    the patch embedding and the two attention matmuls — the convention of DeiT's and SN-Net's tables (fvcore):
    DeiT-Ti/S/B come out at 1.3/4.6/17.6 G. Norms, softmax, GELU and residual adds are not counted."""
    vits = pool.instance_models()
    front, end = vits[cfg.front], vits[cfg.end]
    patches = front.num_patches
    tokens = patches + int(pool.class_token)
    kernel = pool.patch_size * pool.patch_size * pool.in_chans
    params = kernel * front.width + front.width + tokens * front.width + front.width * int(pool.class_token)
    flops = patches * kernel * front.width
    front_blocks, end_blocks = cfg.front_last + 1, (0 if cfg.alone else pool.depth - cfg.end_first)
    for n, v in ((front_blocks, front), (end_blocks, end)):
        params += n * block_params(v.width, v.hidden_dim, v.qkv_bias)
        flops += n * block_macs(tokens, v.width, v.hidden_dim)
    if not cfg.alone and front.width != end.width:
        params += front.width * end.width + end.width
        flops += tokens * front.width * end.width
    params += 2 * end.width + (end.width * pool.num_classes + pool.num_classes if pool.num_classes else 0)
    flops += end.width * pool.num_classes
    return params, flops


def describe(pool: LearngenePool, cfg: StitchConfig) -> str:
    """A short name: 'w64' for an instance alone, 'w32[:2]→w64[1:]' for a stitched configuration (an instance
    index is added where two instances share a width)."""
    def name(k: int) -> str:
        return f"w{pool.widths[k]}" + (f"#{k}" if pool.widths.count(pool.widths[k]) > 1 else "")

    if cfg.alone:
        return name(cfg.front)
    return f"{name(cfg.front)}[:{cfg.front_last + 1}]→{name(cfg.end)}[{cfg.end_first}:]"
