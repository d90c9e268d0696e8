"""Parameter and multiply-accumulate (MAC) counts of transformer models from their architecture alone, the one
counter behind every table (params, GMACs), the Learngene Pool's configuration costs and As-ViT's budgets.

Convention (fvcore, as in the DeiT and SN-Net tables): MACs of dense layers, the patch convolution and attention's
two matmuls; norms, softmax, GELU and residual adds count zero. XLA counts 2 FLOPs per MAC of those same matmuls
plus the elementwise work, so its cost analysis lands 0.5–1.5% above 2 × these counts (tests/test_param_counts.py).
"""

from __future__ import annotations

from typing import Any


def block_macs(tokens: int, width: int, hidden: int, inner: int | None = None, attended: int | None = None) -> int:
    """MACs of one pre-norm transformer block on `tokens` tokens: qkv (width → 3·inner), the score and value matmuls
    over `attended` keys per query (default: all tokens), the projection (inner → width), the MLP (width → hidden →
    width). `inner` (default width) is heads × head size."""
    inner = width if inner is None else inner
    attended = tokens if attended is None else attended
    return tokens * width * 3 * inner + 2 * tokens * attended * inner + tokens * inner * width \
        + 2 * tokens * width * hidden


def block_params(width: int, hidden: int, qkv_bias: bool = True, inner: int | None = None, norms: int = 2) -> int:
    """Parameters of one transformer block: `norms` LayerNorms (scale and bias), qkv, projection, MLP (with biases)."""
    inner = width if inner is None else inner
    return norms * 2 * width + width * 3 * inner + (3 * inner if qkv_bias else 0) + inner * width + width \
        + width * hidden + hidden + hidden * width + width


def vit_macs(model: Any) -> int:
    """MACs of one image's forward pass through a plain ViT/DeiT (`models.vit.ViT` fields): patch embedding,
    `depth` blocks over patches + prefix tokens, the head(s). DeiT-Ti/S/B at 224²: 1.3 / 4.6 / 17.6 G."""
    tokens = model.num_patches + model.num_prefix_tokens
    patch = model.num_patches * model.patch_size ** 2 * model.in_chans * model.width
    heads = model.width * model.num_classes * (1 + int(getattr(model, "distilled", False)))
    return int(patch + model.depth * block_macs(tokens, model.width, model.hidden_dim) + heads)
