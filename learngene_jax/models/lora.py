"""LoRA (Hu et al., 2021) for the stacked decoder layers of models/llama.py: beside each target weight W (in, out)
of each chosen layer, adapters A (in, r) and B (r, out); the layer computes y W + (α/r)·(y A) B (rsLoRA: α/√r) without
forming W + AB. A starts as PEFT's kaiming_uniform(a=√5) (uniform ±1/√in), B at 0, so a fresh adapter changes
nothing. `merge` folds adapters into W (for export), `unmerge` takes them out again.

Params of a LoRA model: the base model's (`layers`, embeddings, ...) plus `lora` = {f"{target}_lora_a": (depth, in, r),
f"{target}_lora_b": (depth, r, out)}; layers outside `lora_layers` hold adapters that stay multiplied by 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from learngene_jax.models.llama import GPT2, LayerParams, Llama
from learngene_jax.models.vit import module_fields

Array = jax.Array
LLAMA_TARGETS = ("q", "k", "v", "o")  # PEFT's usual q_proj, k_proj, v_proj, o_proj; add gate, up, down for all
GPT2_TARGETS = ("c_attn", "attn_proj")


class LoRADecoder:
    """Mixin over Llama / GPT-2: adds the `lora` adapters to every chosen layer's params."""

    def layer_params(self) -> LayerParams:
        base = super().layer_params()
        shapes = self.layer_shapes()
        unknown = set(self.lora_targets) - set(shapes)
        if unknown or self.lora_rank < 1:
            raise ValueError(f"LoRA needs rank >= 1 and targets among {sorted(shapes)}, got rank {self.lora_rank}, "
                             f"targets {sorted(self.lora_targets)}")

        def init(key):
            out = {}
            for k, name in zip(jax.random.split(key, len(self.lora_targets)), self.lora_targets, strict=True):
                fan_in, fan_out = shapes[name]
                bound = 1.0 / math.sqrt(fan_in)
                out[f"{name}_lora_a"] = jax.random.uniform(k, (self.depth, fan_in, self.lora_rank), jnp.float32,
                                                           -bound, bound)
                out[f"{name}_lora_b"] = jnp.zeros((self.depth, self.lora_rank, fan_out), jnp.float32)
            return out

        adapters = self.param("lora", init)
        chosen = layer_mask(self.depth, self.lora_layers)
        # the base layers are frozen (the trainer's optimizer leaves them alone too): no weight gradients for them
        base = jax.tree_util.tree_map(jax.lax.stop_gradient, base)
        return {**base, **{k: v * chosen.reshape(-1, 1, 1) for k, v in adapters.items()}}


class LoRALlama(LoRADecoder, Llama):
    """Llama with LoRA adapters."""

    lora_rank: int = 8
    lora_targets: tuple[str, ...] = LLAMA_TARGETS
    lora_layers: tuple[int, ...] = ()  # () = every layer (PEFT's layers_to_transform)


class LoRAGPT2(LoRADecoder, GPT2):
    """GPT-2 with LoRA adapters."""

    lora_rank: int = 8
    lora_targets: tuple[str, ...] = GPT2_TARGETS
    lora_layers: tuple[int, ...] = ()


def layer_mask(depth: int, layers: Sequence[int]) -> np.ndarray:
    """(depth,) float32: 1 for the layers that carry adapters (all when `layers` is empty)."""
    if any(not 0 <= i < depth for i in layers):
        raise ValueError(f"lora_layers {tuple(layers)} must lie in 0..{depth - 1}")
    mask = np.ones(depth, np.float32) if not layers else np.zeros(depth, np.float32)
    mask[list(layers)] = 1.0
    return mask


def with_lora(model: Llama | GPT2, rank: int, alpha: float, targets: Sequence[str] | None = None,
              layers: Sequence[int] = (), rslora: bool = False, dropout: float = 0.0) -> LoRALlama | LoRAGPT2:
    """The LoRA version of `model`: scale α/r (rsLoRA: α/√r), `targets` default to the attention projections,
    `dropout` on the adapters' input in training (PEFT's lora_dropout)."""
    cls, default = (LoRALlama, LLAMA_TARGETS) if isinstance(model, Llama) else (LoRAGPT2, GPT2_TARGETS)
    scale = alpha / (math.sqrt(rank) if rslora else rank)
    fields = {k: v for k, v in module_fields(model).items() if not k.startswith("lora_")}
    return cls(**fields, lora_rank=rank, lora_scale=scale, lora_targets=tuple(targets or default),
               lora_layers=tuple(layers), lora_dropout=dropout)


def default_targets(model: Llama | GPT2) -> tuple[str, ...]:
    """The targets `with_lora` adapts when none are given."""
    return LLAMA_TARGETS if isinstance(model, Llama) else GPT2_TARGETS


def plain(model: LoRALlama | LoRAGPT2) -> Llama | GPT2:
    """The plain decoder under the adapters (what `merge`d params run in)."""
    cls = Llama if isinstance(model, LoRALlama) else GPT2
    return cls(**{k: v for k, v in module_fields(model).items() if not k.startswith("lora_")})


def folded(model: Llama | GPT2, variables: dict[str, Any]) -> tuple[Llama | GPT2, dict[str, Any]]:
    """(model, variables) as a plain decoder: a LoRA model's adapters merged into its weights, others as they are."""
    if not is_lora(model):
        return model, variables
    return plain(model), {"params": merge(model, variables["params"])}


def is_lora(model: Any) -> bool:
    """Whether `model` carries LoRA adapters."""
    return isinstance(model, LoRADecoder)


def delta(model: LoRALlama | LoRAGPT2, lora: dict[str, Array]) -> dict[str, Array]:
    """(α/r)·A B per target, stacked (depth, in, out), zero for layers without adapters."""
    chosen = jnp.asarray(layer_mask(model.depth, model.lora_layers)).reshape(-1, 1, 1)
    return {name: model.lora_scale * chosen * jnp.einsum("lir,lro->lio", lora[f"{name}_lora_a"],
                                                          lora[f"{name}_lora_b"]) for name in model.lora_targets}


def merge(model: LoRALlama | LoRAGPT2, params: dict[str, Any]) -> dict[str, Any]:
    """Plain-model params with the adapters folded in: W + (α/r)·A B (what `convert to-hf` exports)."""
    d = delta(model, params["lora"])
    out = {k: v for k, v in params.items() if k != "lora"}
    out["layers"] = {k: v + d[k] if k in d else v for k, v in params["layers"].items()}
    return out


def unmerge(model: LoRALlama | LoRAGPT2, merged: dict[str, Any], lora: dict[str, Array]) -> dict[str, Any]:
    """Inverse of `merge`: the base weights W = merged − (α/r)·A B, with `lora` back beside them."""
    d = delta(model, lora)
    out = dict(merged)
    out["layers"] = {k: v - d[k] if k in d else v for k, v in merged["layers"].items()}
    return {**out, "lora": lora}
