"""timm `VisionTransformer` (ViT/DeiT and the learngene descendants) ↔ the Flax `ViT`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from learngene_jax.convert.table import Rule, flax_to_torch, torch_to_flax
from learngene_jax.errors import ConversionError, fail
from learngene_jax.models.vit import ViT, abstract_params

# Flax sub-layer → timm module path inside a block.
TORCH_SUBLAYER = {"norm1": "norm1", "qkv": "attn.qkv", "proj": "attn.proj", "norm2": "norm2",
                  "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
NORM_NAMES = {"weight": "scale", "bias": "bias"}
DENSE_NAMES = {"weight": "kernel", "bias": "bias"}


def sublayer_rules(torch_prefix: str, flax_prefix: str, torch_suffix: str = "") -> list[Rule]:
    """Rules for the six block sub-layers: {torch_prefix}{sub}{torch_suffix}.{weight,bias}{...}."""
    rules = []
    for sub, torch_sub in TORCH_SUBLAYER.items():
        names = NORM_NAMES if sub.startswith("norm") else DENSE_NAMES
        for torch_name, flax_name in names.items():
            kind = "linear" if flax_name == "kernel" else "id"
            rules.append(Rule(f"{torch_prefix}{torch_sub}{torch_suffix}.{torch_name}",
                              f"{flax_prefix}{sub}/{flax_name}", kind))
    return rules


def stem_rules() -> list[Rule]:
    """Everything outside the blocks (shared by ViTs, TLEG and SWS aux models)."""
    return [Rule("cls_token", "cls_token"), Rule("pos_embed", "pos_embed"),
            Rule("patch_embed.proj.weight", "patch_embed/kernel", "conv"),
            Rule("patch_embed.proj.bias", "patch_embed/bias"),
            Rule("norm.weight", "norm/scale"), Rule("norm.bias", "norm/bias"),
            Rule("fc_norm.weight", "fc_norm/scale"), Rule("fc_norm.bias", "fc_norm/bias"),
            Rule("head.weight", "head/kernel", "linear"), Rule("head.bias", "head/bias")]


VIT_RULES = stem_rules() + sublayer_rules("blocks.{layer}.", "blocks/")


def infer_stem(sd: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Architecture fields readable from the non-block keys of a ViT-like state dict."""
    for key in ("pos_embed", "patch_embed.proj.weight"):
        if key not in sd:
            fail(ConversionError, f"not a ViT state dict: no '{key}' (keys start with {sorted(sd)[:5]})")
    width, in_chans, patch, _ = sd["patch_embed.proj.weight"].shape
    class_token = "cls_token" in sd
    tokens = sd["pos_embed"].shape[1] - int(class_token)
    side = int(round(tokens**0.5))
    if side * side != tokens:
        fail(ConversionError, f"pos_embed has {tokens} patch tokens, not a square grid")
    return dict(width=int(width), in_chans=int(in_chans), patch_size=int(patch), image_size=side * int(patch),
                class_token=class_token, num_classes=int(sd["head.weight"].shape[0]) if "head.weight" in sd else 0)


def infer_vit(sd: Mapping[str, np.ndarray], num_heads: int | None = None, eps: float = 1e-6) -> ViT:
    """The Flax ViT a timm state dict describes (heads cannot be read from shapes: default width/64)."""
    kw = infer_stem(sd)
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not layers:
        fail(ConversionError, "not a ViT state dict: no blocks.N.* keys")
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    fc_norm = "fc_norm.weight" in sd
    kw.update(depth=max(layers) + 1, num_heads=num_heads or max(kw["width"] // 64, 1),
              mlp_dim=int(fc1.shape[0]) if fc1 is not None and fc1.shape[0] != 4 * kw["width"] else None,
              qkv_bias="blocks.0.attn.qkv.bias" in sd,
              pool="avg" if fc_norm or not kw["class_token"] else "token",
              final_norm="fc_norm" if fc_norm else "norm", eps=eps)
    return ViT(**kw)


def from_timm(sd: Mapping[str, np.ndarray], num_heads: int | None = None, eps: float = 1e-6,
              model: ViT | None = None) -> tuple[ViT, dict[str, Any]]:
    """(Flax ViT, params) from a timm ViT/DeiT state dict; `model` fixes the architecture instead."""
    model = model or infer_vit(sd, num_heads, eps)
    params = torch_to_flax(sd, VIT_RULES, abstract_params(model), "timm ViT state dict")
    return model, params


def timm_kwargs(model: ViT) -> dict[str, Any]:
    """`timm.create_model('vit_...', **kwargs)` arguments that build the same architecture (LayerNorm eps
    is not a create_model argument: pass norm_layer=partial(nn.LayerNorm, eps=...) when it is not 1e-6)."""
    return dict(img_size=model.image_size, patch_size=model.patch_size, in_chans=model.in_chans,
                num_classes=model.num_classes, embed_dim=model.width, depth=model.depth, num_heads=model.num_heads,
                mlp_ratio=model.hidden_dim / model.width, qkv_bias=model.qkv_bias, class_token=model.class_token,
                global_pool=model.pool, fc_norm=model.final_norm == "fc_norm", layer_norm_eps=model.eps)


def to_timm(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """timm state dict of a Flax ViT's params."""
    return flax_to_torch(params, VIT_RULES)
