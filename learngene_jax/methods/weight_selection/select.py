"""Initialisation baselines that learngene methods are compared with, as pure functions on param trees.

- weight selection (Xu et al., "Initializing Models with Larger Ones", ICLR 2024): a smaller ViT takes the
  first N blocks of a larger trained one (layer selection) and, in every tensor, evenly spaced elements along
  each axis that shrank (uniform element selection), with the same residual-stream channels everywhere and the
  q, k, v parts of qkv selected alike;
- pre-train then fine-tune is `config.init` with `init_method='inherit'` (all of the ancestor's weights);
- scratch is no init at all.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from learngene_jax.convert.table import flatten, unflatten
from learngene_jax.errors import ConfigError, fail
from learngene_jax.models.vit import ViT

# How each axis of a ViT param is indexed: L layers, D residual width, H MLP hidden, Q the [q|k|v] rows,
# None kept as is (must match).
AXES = {
    "blocks/norm1/scale": "LD", "blocks/norm1/bias": "LD", "blocks/norm2/scale": "LD", "blocks/norm2/bias": "LD",
    "blocks/qkv/kernel": "LDQ", "blocks/qkv/bias": "LQ", "blocks/proj/kernel": "LDD", "blocks/proj/bias": "LD",
    "blocks/fc1/kernel": "LDH", "blocks/fc1/bias": "LH", "blocks/fc2/kernel": "LHD", "blocks/fc2/bias": "LD",
    "patch_embed/kernel": "...D", "patch_embed/bias": "D", "pos_embed": "..D", "cls_token": "..D",
    "norm/scale": "D", "norm/bias": "D", "fc_norm/scale": "D", "fc_norm/bias": "D", "head/kernel": "D.",
    "head/bias": ".",
}
# The final norm sits before pooling (`norm`) or after it (`fc_norm`); either initialises the other.
ALIASES = {"fc_norm/scale": "norm/scale", "fc_norm/bias": "norm/bias", "norm/scale": "fc_norm/scale",
           "norm/bias": "fc_norm/bias"}


def uniform_indices(big: int, small: int) -> np.ndarray:
    """`small` evenly spaced indices out of `big` (every k-th element when big = k·small)."""
    if small > big:
        fail(ConfigError, f"weight selection needs a smaller target: {small} > {big}")
    return (np.arange(small) * big) // small


def weight_selection(source: dict[str, Any], source_model: ViT, target_model: ViT,
                     fresh: dict[str, Any]) -> dict[str, Any]:
    """Params of `target_model` selected from `source` (params of the larger `source_model`); leaves with no
    counterpart (e.g. a head for another class count, a class token the source lacks) come from `fresh`."""
    if target_model.depth > source_model.depth:
        fail(ConfigError, f"weight selection takes the first N blocks: the target has {target_model.depth}, "
                          f"the source only {source_model.depth}")
    if (target_model.patch_size, target_model.image_size, target_model.in_chans) != (
            source_model.patch_size, source_model.image_size, source_model.in_chans):
        fail(ConfigError, "weight selection needs the same patch size, image size and input channels")
    width = uniform_indices(source_model.width, target_model.width)
    index = {"L": np.arange(target_model.depth), "D": width,
             "H": uniform_indices(source_model.hidden_dim, target_model.hidden_dim),
             "Q": np.concatenate([part * source_model.width + width for part in range(3)])}
    src, out = flatten(source), {}
    for path, leaf in flatten(fresh).items():
        key = path if path in src else ALIASES.get(path)
        if key not in src or path not in AXES:
            out[path] = leaf
            continue
        value = src[key]
        for axis, kind in enumerate(AXES[path]):
            if kind in index:
                value = jnp.take(value, index[kind], axis=axis)  # traceable: runs inside the jitted init
        out[path] = value if value.shape == np.shape(leaf) else leaf  # e.g. a head for a new class count
    return unflatten(out)
