"""SWS's Aux-Net: a ViT with one shared block per stage, computed from the gene by the pure function
`sws_layers`, which gene expansion into descendants reuses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from learngene_jax.models.vit import LayerParams, ViT, init_layers, layer_shapes


def sws_layers(blocks: Mapping[str, LayerParams], layers_source: Sequence[int]) -> LayerParams:
    """Stacked block params where layer i is a copy of stage `layers_source[i]`'s shared params."""
    index = jnp.asarray(layers_source, jnp.int32)
    return jax.tree_util.tree_map(lambda stage_params: stage_params[index], dict(blocks["stages"]))


def stage_map(stage_sizes: Sequence[int]) -> list[int]:
    """Aux layer → stage id, e.g. (3,3,4,3,3) → [0,0,0,1,1,1,2,2,2,2,3,3,3,4,4,4]."""
    return [stage for stage, size in enumerate(stage_sizes) for _ in range(size)]


class SWSAux(ViT):
    """SWS Aux-Net: `stage_sizes` stages (default 3,3,4,3,3 = 16 layers), one shared block per stage."""

    final_norm: str = "norm"
    eps: float = 1e-5
    stage_sizes: tuple[int, ...] = (3, 3, 4, 3, 3)

    def layer_params(self) -> LayerParams:
        if sum(self.stage_sizes) != self.depth or min(self.stage_sizes) < 1:
            raise ValueError(f"stage_sizes {self.stage_sizes} must be positive and sum to depth {self.depth}")
        shapes = layer_shapes(self.width, self.hidden_dim, self.qkv_bias)
        init = lambda rng: {"stages": init_layers(rng, shapes, (len(self.stage_sizes),))}
        return sws_layers(self.param("blocks", init), stage_map(self.stage_sizes))
