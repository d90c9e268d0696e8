"""TLEG's Aux-Net: a ViT whose layer i is θ_B + (i/L)·θ_A, computed from the gene by the pure function
`tleg_layers`, which gene expansion into descendants reuses.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np

from learngene_jax.models.vit import SUBLAYERS, LayerParams, ViT, init_layers, layer_shapes

Array = jax.Array


def tleg_coefficients(depth: int) -> np.ndarray:
    """c_i = i / depth for zero-based layer i (the paper's (l-1)/L with 1-based l), rounded once to float32
    as the official `i / L` Python float is (on device, XLA would turn the division into a reciprocal product)."""
    return (np.arange(depth, dtype=np.float64) / depth).astype(np.float32)


def tleg_layers(blocks: Mapping[str, LayerParams], depth: int) -> LayerParams:
    """Stacked block params θ_i = θ_B + (i/depth)·θ_A for the expanded sub-layers; per-layer params
    (`blocks['layers']`, sub-layers that are not expanded) are passed through unchanged."""
    coef = tleg_coefficients(depth)

    def line(theta_b: Array, theta_a: Array) -> Array:
        c = coef.reshape((depth,) + (1,) * theta_b.ndim)
        return theta_b[None] + c * theta_a[None]

    expanded = jax.tree_util.tree_map(line, dict(blocks["theta_b"]), dict(blocks["theta_a"]))
    return {**dict(blocks.get("layers", {})), **expanded}


class TLEGAux(ViT):
    """TLEG Aux-Net: one copy of θ_A and θ_B per expanded sub-layer; layer i uses θ_B + (i/L)·θ_A.

    `expanded` picks the sub-layers that are linear expansions (the paper's ablation); the others are
    ordinary per-layer params that are not part of the gene.
    """

    final_norm: str = "norm"
    eps: float = 1e-5
    expanded: tuple[str, ...] = SUBLAYERS

    def layer_params(self) -> LayerParams:
        shapes = layer_shapes(self.width, self.hidden_dim, self.qkv_bias)
        unknown = set(self.expanded) - set(SUBLAYERS)
        if unknown or not self.expanded:
            raise ValueError(f"expanded must be a non-empty subset of {SUBLAYERS}, got {self.expanded}")

        def init(rng):
            rb, ra, rl = jax.random.split(rng, 3)
            gene_shapes = {k: v for k, v in shapes.items() if k in self.expanded}
            blocks = {"theta_b": init_layers(rb, gene_shapes),
                      # θ_A: linear weights trunc-normal like θ_B (not zero), LayerNorm γ_A = β_A = 0.
                      "theta_a": init_layers(ra, gene_shapes, norm_scale=0.0)}
            rest = {k: v for k, v in shapes.items() if k not in self.expanded}
            if rest:
                blocks["layers"] = init_layers(rl, rest, (self.depth,))
            return blocks

        layers = tleg_layers(self.param("blocks", init), self.depth)
        return {k: layers[k] for k in SUBLAYERS}
