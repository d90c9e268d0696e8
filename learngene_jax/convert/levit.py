"""timm `Levit`/`LevitDistilled` and facebookresearch/LeViT checkpoints → the Flax `LeViT` (params and
batch_stats). One walk over the architecture lists its units; the timm rule table and the rename map of
the original checkpoint layout are both read off that list, so they cannot drift apart."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from learngene_jax.convert.table import Rule, flax_to_torch, torch_to_flax
from learngene_jax.errors import ConversionError, fail
from learngene_jax.models import create_model
from learngene_jax.models.io import abstract_variables
from learngene_jax.models.levit import (
    DOWNSAMPLE_STRIDE,
    STEM_STRIDE,
    VARIANTS,
    LeViT,
    attention_bias_index,
    downsampled,
)

# torch BatchNorm entry → (flax collection, name); the batch counter has no Flax counterpart.
BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
             "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var"),
             "num_batches_tracked": (None, None)}
# How the facebookresearch layout names the linear layer inside each kind of unit (`Conv2d_BN.c`,
# `Linear_BN.c`, `BN_Linear.l`); BatchNorm entries and attention biases keep their names.
FB_LINEAR = {"conv_norm": "c", "linear_norm": "c", "norm_linear": "l"}
BIAS_INDEX = "attention_bias_idxs"  # a buffer: persistent in the original code, recomputed here


@dataclasses.dataclass(frozen=True)
class Unit:
    """One torch module holding weights: `kind` is conv_norm, linear_norm, norm_linear or biases."""

    kind: str
    timm: str  # module path in timm, e.g. stages.1.downsample.attn_downsample.q.ln
    fb: str  # module path in facebookresearch/LeViT, e.g. blocks.8.q.1
    flax: str  # module path in the Flax tree, e.g. stages_1/downsample/attn_downsample/q
    resolution: int = 0  # biases: side of the key grid
    stride: int = 1  # biases: stride of the query grid


def units(model: LeViT) -> list[Unit]:
    """Every weight-holding module of `model` in timm's order, with its names in the three layouts."""
    out = [Unit("conv_norm", f"stem.conv{i}", f"patch_embed.{2 * (i - 1)}", f"stem/conv{i}") for i in range(1, 5)]
    fb_block = 0  # the original code keeps every attention and MLP in one flat `blocks` Sequential

    def mlp(timm: str, flax: str) -> None:
        nonlocal fb_block
        out.extend([Unit("linear_norm", f"{timm}.ln1", f"blocks.{fb_block}.m.0", f"{flax}/ln1"),
                    Unit("linear_norm", f"{timm}.ln2", f"blocks.{fb_block}.m.2", f"{flax}/ln2")])
        fb_block += 1

    resolution = model.image_size // STEM_STRIDE
    for s, depth in enumerate(model.depths):
        if s > 0:
            t, f = f"stages.{s}.downsample.attn_downsample", f"stages_{s}/downsample/attn_downsample"
            fb = f"blocks.{fb_block}"
            out.extend([Unit("linear_norm", f"{t}.kv", f"{fb}.kv", f"{f}/kv"),
                        Unit("linear_norm", f"{t}.q.ln", f"{fb}.q.1", f"{f}/q"),
                        Unit("linear_norm", f"{t}.proj.ln", f"{fb}.proj.1", f"{f}/proj"),
                        Unit("biases", t, fb, f, resolution, DOWNSAMPLE_STRIDE)])
            fb_block += 1  # the shrinking attention has no Residual wrapper: no `.m`
            mlp(f"stages.{s}.downsample.mlp", f"stages_{s}/downsample/mlp")
            resolution = downsampled(resolution)
        for b in range(depth):
            t, f, fb = f"stages.{s}.blocks.{b}.attn", f"stages_{s}/blocks_{b}/attn", f"blocks.{fb_block}.m"
            out.extend([Unit("linear_norm", f"{t}.qkv", f"{fb}.qkv", f"{f}/qkv"),
                        Unit("linear_norm", f"{t}.proj.ln", f"{fb}.proj.1", f"{f}/proj"),
                        Unit("biases", t, fb, f, resolution)])
            fb_block += 1
            mlp(f"stages.{s}.blocks.{b}.mlp", f"stages_{s}/blocks_{b}/mlp")
    if model.num_classes:
        out += [Unit("norm_linear", head, head, head) for head in ("head", "head_dist")[:1 + model.distilled]]
    return out


def _leaves(unit: Unit) -> list[tuple[str, str | None, str]]:
    """(timm suffix, flax path or None, transform) of every state-dict entry of a unit."""
    if unit.kind == "biases":
        return [("attention_biases", f"params/{unit.flax}/attention_biases", "id"), (BIAS_INDEX, None, "id")]
    out = [(f"bn.{name}", f"{coll}/{unit.flax}/bn/{leaf}" if coll else None, "id")
           for name, (coll, leaf) in BN_LEAVES.items()]
    out.append(("linear.weight", f"params/{unit.flax}/linear/kernel",
                "conv" if unit.kind == "conv_norm" else "linear"))
    if unit.kind == "norm_linear":
        out.append(("linear.bias", f"params/{unit.flax}/linear/bias", "id"))
    return out


def rules(model: LeViT) -> list[Rule]:
    """The timm conversion table of `model` (flax paths start with the collection: params/ or batch_stats/)."""
    return [Rule(f"{u.timm}.{suffix}", flax, kind) for u in units(model) for suffix, flax, kind in _leaves(u)]


def fb_renames(model: LeViT) -> dict[str, str]:
    """facebookresearch/LeViT key → timm key, for every entry of `model`'s original checkpoint."""
    out = {}
    for u in units(model):
        for suffix, _, _ in _leaves(u):
            fb_suffix = suffix
            if suffix.startswith("linear."):
                fb_suffix = f"{FB_LINEAR[u.kind]}.{suffix.removeprefix('linear.')}"
            out[f"{u.fb}.{fb_suffix}"] = f"{u.timm}.{suffix}"
    return out


def is_fb_layout(sd: Mapping[str, Any]) -> bool:
    """True for the facebookresearch layout (`patch_embed.N`, flat `blocks.N`), False for timm's (`stem`)."""
    return any(k.startswith("patch_embed.") for k in sd) and not any(k.startswith("stem.") for k in sd)


def infer_levit(sd: Mapping[str, np.ndarray], arch: str) -> LeViT:
    """The registered LeViT `arch` with image size, channels, classes and distillation read from a timm-layout
    state dict (the table then checks every other shape)."""
    kw: dict[str, Any] = {}
    biases = sd.get("stages.0.blocks.0.attn.attention_biases")
    if biases is not None:
        side = int(round(np.sqrt(biases.shape[-1])))
        if side * side != biases.shape[-1]:
            fail(ConversionError, f"stages.0.blocks.0.attn.attention_biases has {biases.shape[-1]} positions, "
                                  f"not a square grid")
        kw["image_size"] = side * STEM_STRIDE
    conv = sd.get("stem.conv1.linear.weight")
    if conv is not None and np.ndim(conv) == 4:
        kw["in_chans"] = int(conv.shape[1])
    if not any(k.startswith("head.") for k in sd):
        kw["num_classes"] = 0  # timm's num_classes=0: no head, pooled features out
    elif "head.linear.weight" in sd:
        kw["num_classes"] = int(sd["head.linear.weight"].shape[0])
    kw["distilled"] = any(k.startswith("head_dist.") for k in sd) or not any(k.startswith("head.") for k in sd)
    return create_model(arch, **kw)


def _check_bias_indices(sd: Mapping[str, np.ndarray], model: LeViT) -> None:
    """Index buffers stored in a checkpoint must equal the ones recomputed here (a different resolution or
    offset order would silently scramble the attention biases)."""
    bad = []
    for u in units(model):
        key = f"{u.timm}.{BIAS_INDEX}"
        if u.kind == "biases" and key in sd:
            want = attention_bias_index(u.resolution, u.stride)
            if np.shape(sd[key]) != want.shape or not np.array_equal(np.asarray(sd[key]), want):
                bad.append(key)
    if bad:
        fail(ConversionError, f"attention bias index buffers differ from |dy|·res + |dx|: {', '.join(bad)}")


def from_timm(sd: Mapping[str, np.ndarray], arch: str) -> tuple[LeViT, dict[str, Any]]:
    """(Flax LeViT, {'params', 'batch_stats'}) from a timm or facebookresearch LeViT state dict."""
    if arch not in VARIANTS:
        fail(ConversionError, f"unknown LeViT architecture {arch!r}; known: {', '.join(VARIANTS)}")
    try:
        return _convert(sd, arch)
    except ConversionError:
        # A checkpoint of another variant mismatches in hundreds of keys; name the variant instead.
        for other in VARIANTS:
            if other != arch and _fits(sd, other):
                fail(ConversionError, f"these are {other} weights, not {arch}: pass --arch {other}")
        raise


def _convert(sd: Mapping[str, np.ndarray], arch: str) -> tuple[LeViT, dict[str, Any]]:
    what = f"timm {arch} state dict"
    if is_fb_layout(sd):
        what = f"facebookresearch {arch} checkpoint (keys named as in timm)"
        # Key names depend only on the depths (and on the heads, which the registered model has); keys
        # outside the map keep their names and are reported as unexpected by the table.
        renames = fb_renames(create_model(arch))
        sd = {renames.get(k, k): v for k, v in sd.items()}
    model = infer_levit(sd, arch)
    variables = torch_to_flax(sd, rules(model), abstract_variables(model), what)
    _check_bias_indices(sd, model)
    return model, variables


def _fits(sd: Mapping[str, np.ndarray], arch: str) -> bool:
    try:
        _convert(sd, arch)
    except ConversionError:
        return False
    return True


def to_timm(model: LeViT, variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """timm state dict (without batch counters) of a Flax LeViT's variables."""
    return flax_to_torch(variables, rules(model))
