"""timm `VisionTransformer` (ViT/DeiT and the learngene descendants) ↔ the Flax `ViT`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
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
    return [Rule("cls_token", "cls_token"), Rule("dist_token", "dist_token"), Rule("pos_embed", "pos_embed"),
            Rule("patch_embed.proj.weight", "patch_embed/kernel", "conv"),
            Rule("patch_embed.proj.bias", "patch_embed/bias"),
            Rule("norm.weight", "norm/scale"), Rule("norm.bias", "norm/bias"),
            Rule("fc_norm.weight", "fc_norm/scale"), Rule("fc_norm.bias", "fc_norm/bias"),
            Rule("head.weight", "head/kernel", "linear"), Rule("head.bias", "head/bias"),
            Rule("head_dist.weight", "head_dist/kernel", "linear"), Rule("head_dist.bias", "head_dist/bias")]


VIT_RULES = stem_rules() + sublayer_rules("blocks.{layer}.", "blocks/")


# timm VisionTransformer options the Flax ViT cannot express: the key that reveals each, and its name.
UNSUPPORTED = (
    ("reg_token", "register tokens (timm reg_tokens)"),
    (".ls1.gamma", "layer scale (timm init_values: ls1/ls2.gamma)"),
    (".attn.q_norm.weight", "query/key normalisation (timm qk_norm)"),
    ("norm_pre.weight", "a pre-norm before the blocks (timm pre_norm)"),
    ("attn_pool.", "attention pooling (timm global_pool='map')"),
)


# timm ViTs whose MLP activation is not exact GELU (found by building every timm 1.x vit_* on the meta device and
# reading blocks[0].mlp.act): the SigLIP 2 ports use 'gelu_tanh' (SigLIP 1 ports use exact GELU), the OpenAI CLIP
# *_quickgelu ones 'quick_gelu'. A state dict does not record it; timm's config.json names the architecture.
TIMM_GELU_TANH = tuple(f"vit_{n}" for n in (
    "base_patch32_siglip_256", "base_patch32_siglip_gap_256", "large_patch16_siglip_512",
    "large_patch16_siglip_gap_512",
    *(f"so400m_patch16_siglip{g}_{s}" for g in ("", "_gap") for s in (256, 384, 512)),
    *(f"giantopt_patch16_siglip{g}_{s}" for g in ("", "_gap") for s in (256, 384))))
TIMM_ACT = {**dict.fromkeys(TIMM_GELU_TANH, "gelu_tanh"), **{f"vit_{n}_clip_quickgelu_{s}": "quick_gelu" for n, s in (
    ("base_patch32", 224), ("base_patch16", 224), ("large_patch14", 224), ("large_patch14", 336),
    ("huge_patch14", 224), ("huge_patch14", 378), ("gigantic_patch14", 224))}}


def unsupported_options(sd: Mapping[str, np.ndarray]) -> list[str]:
    """Names of the timm ViT options present in `sd` that the Flax ViT cannot express."""
    return [name for key, name in UNSUPPORTED if any(key in k for k in sd)]


def read_timm_config(checkpoint: str | Path) -> dict[str, Any]:
    """The config.json timm's save_for_hf / the Hub puts beside a checkpoint ({} when there is none or it is not
    timm's: no 'architecture')."""
    path = Path(checkpoint).parent / "config.json"
    try:
        cfg = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(ConversionError, f"{path} beside the checkpoint is unreadable ({type(e).__name__}: {e})")
    return cfg if isinstance(cfg, dict) and isinstance(cfg.get("architecture"), str) else {}


def timm_image_size(cfg: Mapping[str, Any]) -> tuple[int, int] | None:
    """(height, width) a timm config.json records (model_args img_size, else pretrained_cfg input_size); a
    ConversionError when its MLP activation is not the exact GELU the Flax ViT computes."""
    arch, args = cfg.get("architecture", ""), cfg.get("model_args") or {}
    act = args.get("act_layer") or TIMM_ACT.get(arch.split(".")[0], "gelu")  # 'name.tag' is a pretrained tag
    if act != "gelu":
        fail(ConversionError, f"config.json beside the checkpoint describes {arch} with act_layer={act!r} (timm); the "
                              f"Flax ViT computes exact GELU, so its outputs would differ: not converted")
    size = args.get("img_size") or (cfg.get("pretrained_cfg") or {}).get("input_size", [None])[1:]
    if isinstance(size, int):
        return size, size
    return (int(size[0]), int(size[1])) if isinstance(size, list | tuple) and len(size) == 2 else None


def _grid_side(sd: Mapping[str, np.ndarray], patch: int, image_size: tuple[int, int] | None) -> int:
    """The side of the square patch grid of `pos_embed` (one row per prefix token, then the patches); a
    ConversionError names a non-square grid with its sizes, and a table without a class-token row."""
    rows = int(sd["pos_embed"].shape[1]) - int("dist_token" in sd)
    tokens = rows - int("cls_token" in sd)
    if image_size is not None and image_size[0] != image_size[1]:
        h, w = image_size
        fail(ConversionError, f"the checkpoint's image size is {h}×{w} px ({h // patch}×{w // patch} patches of "
                              f"{patch} px, pos_embed {rows} rows): a non-square patch grid, which the Flax ViT "
                              f"does not support (it takes square images)")
    side = int(round(tokens**0.5))
    if side * side == tokens:
        return side
    if "cls_token" in sd and int(round(rows**0.5)) ** 2 == rows:  # shapes alone cannot tell these two apart
        s = int(round(rows**0.5))
        fail(ConversionError, f"pos_embed has {rows} rows beside the class token: either a non-square patch grid "
                              f"of {tokens} positions ({_grids(tokens)}) with a class-token row, or a square {s}×{s} "
                              f"grid in a position table without a class-token row (timm no_embed_class=True); the "
                              f"Flax ViT supports neither")
    fail(ConversionError, f"pos_embed has {tokens} patch positions, not a square number: a non-square patch grid "
                          f"({_grids(tokens)}), which the Flax ViT does not support (it takes square images)")


def _grids(tokens: int) -> str:
    """'e.g. 8×6 or 12×4 patches': the grids of `tokens` positions nearest to square."""
    pairs = [(tokens // w, w) for w in range(int(tokens**0.5), 0, -1) if tokens % w == 0][:2]
    return "e.g. " + " or ".join(f"{h}×{w}" for h, w in pairs) + " patches"


def infer_stem(sd: Mapping[str, np.ndarray], image_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Architecture fields readable from the non-block keys of a ViT-like state dict; a ConversionError names
    every timm option the Flax ViT cannot express (`unsupported_options`) before any shape arithmetic, then a
    non-square patch grid (`image_size`: (height, width) when known, e.g. from timm's config.json)."""
    for key in ("pos_embed", "patch_embed.proj.weight"):
        if key not in sd:
            fail(ConversionError, f"not a ViT state dict: no '{key}' (keys start with {sorted(sd)[:5]})")
    unsupported = unsupported_options(sd)
    if unsupported:
        fail(ConversionError, f"this timm ViT uses {'; '.join(unsupported)}, which the Flax ViT does not "
                              f"support; convert a plain ViT/DeiT checkpoint")
    width, in_chans, patch, _ = sd["patch_embed.proj.weight"].shape
    class_token, distilled = "cls_token" in sd, "dist_token" in sd
    if distilled and not (class_token and "head_dist.weight" in sd) and "head.weight" in sd:
        fail(ConversionError, "a dist_token without a class token and a head_dist is not DeiT's distilled model")
    side = _grid_side(sd, int(patch), image_size)
    return dict(width=int(width), in_chans=int(in_chans), patch_size=int(patch), image_size=side * int(patch),
                class_token=class_token, distilled=distilled,
                num_classes=int(sd["head.weight"].shape[0]) if "head.weight" in sd else 0)


def infer_vit(sd: Mapping[str, np.ndarray], num_heads: int | None = None, eps: float = 1e-6,
              pool: str | None = None, image_size: tuple[int, int] | None = None) -> ViT:
    """The Flax ViT a timm state dict describes (heads cannot be read from shapes: default width/64; `pool`
    'token'|'avg' overrides the pooling guessed from the keys; `image_size` (height, width) when known)."""
    kw = infer_stem(sd, image_size)
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not layers:
        fail(ConversionError, "not a ViT state dict: no blocks.N.* keys")
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    fc_norm = "fc_norm.weight" in sd
    heads = num_heads or max(kw["width"] // 64, 1)
    if kw["width"] % heads:
        fail(ConversionError, f"width {kw['width']} is not divisible by {heads} heads: pass --num-heads with a "
                              f"divisor of {kw['width']} (the heads the model was trained with)")
    kw.update(depth=max(layers) + 1, num_heads=heads,
              mlp_dim=int(fc1.shape[0]) if fc1 is not None and fc1.shape[0] != 4 * kw["width"] else None,
              qkv_bias="blocks.0.attn.qkv.bias" in sd,
              pool=pool or ("avg" if (fc_norm or not kw["class_token"]) and not kw["distilled"] else "token"),
              final_norm="fc_norm" if fc_norm else "norm", eps=eps)
    return ViT(**kw)


def from_timm(sd: Mapping[str, np.ndarray], num_heads: int | None = None, eps: float = 1e-6,
              model: ViT | None = None, pool: str | None = None,
              image_size: tuple[int, int] | None = None) -> tuple[ViT, dict[str, Any]]:
    """(Flax ViT, params) from a timm ViT/DeiT state dict; `model` fixes the architecture instead."""
    model = model or infer_vit(sd, num_heads, eps, pool, image_size)
    params = torch_to_flax(sd, VIT_RULES, abstract_params(model), "timm ViT state dict")
    return model, params


def timm_kwargs(model: ViT) -> dict[str, Any]:
    """`timm.create_model('vit_...', **kwargs)` arguments that build the same architecture (LayerNorm eps
    is not a create_model argument: pass norm_layer=partial(nn.LayerNorm, eps=...) when it is not 1e-6;
    `distilled=True` means timm.models.deit.VisionTransformerDistilled with the other arguments)."""
    return dict(img_size=model.image_size, patch_size=model.patch_size, in_chans=model.in_chans,
                num_classes=model.num_classes, embed_dim=model.width, depth=model.depth, num_heads=model.num_heads,
                mlp_ratio=model.hidden_dim / model.width, qkv_bias=model.qkv_bias, class_token=model.class_token,
                global_pool=model.pool, fc_norm=model.final_norm == "fc_norm", layer_norm_eps=model.eps,
                **({"distilled": True} if model.distilled else {}))


def stored_timm_kwargs(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The `timm_kwargs` that `to-timm` stores in a .safetensors file's metadata ({} when absent); raises
    ConversionError when present but not a JSON object with valid heads/eps/pool."""
    if "timm_kwargs" not in metadata:
        return {}
    try:
        kw = json.loads(metadata["timm_kwargs"])
    except json.JSONDecodeError as e:
        fail(ConversionError, f"the file's timm_kwargs metadata is not JSON ({e}); pass --num-heads and --eps")
    if not isinstance(kw, dict):
        fail(ConversionError, "the file's timm_kwargs metadata is not a JSON object; pass --num-heads and --eps")
    heads, eps, pool = kw.get("num_heads"), kw.get("layer_norm_eps"), kw.get("global_pool")
    if (heads is not None and not (isinstance(heads, int) and heads > 0)) or (
            eps is not None and not (isinstance(eps, int | float) and eps > 0)) or pool not in (None, "token", "avg"):
        fail(ConversionError, f"the file's timm_kwargs metadata has invalid num_heads/layer_norm_eps/global_pool "
                              f"({heads!r}, {eps!r}, {pool!r}); pass --num-heads and --eps")
    return {k: v for k, v in (("num_heads", heads), ("layer_norm_eps", eps), ("global_pool", pool))
            if v is not None}


def to_timm(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """timm state dict of a Flax ViT's params."""
    return flax_to_torch(params, VIT_RULES)
