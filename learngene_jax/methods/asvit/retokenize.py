"""As-ViT's progressive re-tokenization as a step variant of the trainer: from some epochs on, the patch
embedding runs with another stride and dilation (the paper trains with overlapping tokens first); the model as
exported and evaluated at the end keeps its own tokenization."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from learngene_jax.errors import ConfigError, fail


def retokenize_phases(config: Any, model: nn.Module) -> list[tuple[int, dict[str, int]]]:
    """config.retokenize (start_epoch, stride, dilation) rows → sorted (start_epoch, model overrides) phases; a
    phase with the model's own tokenization has no overrides. Empty when config.retokenize is empty."""
    phases = sorted(tuple(int(v) for v in phase) for phase in config.get("retokenize", ()))
    if not phases:
        return []
    if not {"patch_stride", "patch_dilation"} <= set(getattr(model, "__dataclass_fields__", {})):
        fail(ConfigError, f"config.retokenize needs a patch-embedding model; {type(model).__name__} has none")
    for phase in phases:
        if len(phase) != 3 or phase[0] < 0 or phase[1] < 1 or phase[2] < 1:
            fail(ConfigError, f"config.retokenize phases are (start_epoch >= 0, stride >= 1, dilation >= 1), "
                              f"got {phase}")
    native = (model.token_stride, model.patch_dilation)
    return [(start, {} if (stride, dilation) == native else {"patch_stride": stride, "patch_dilation": dilation})
            for start, stride, dilation in phases]


# The paper's schedule (As-ViT §4.2, configs/asvit_train.py): stride 16 dilation 5 from epoch 0, stride 8 dilation 2
# from 80, the native stride 4 from 130 (of 300).
PAPER_SCHEDULE = ((0, 16, 5), (80, 8, 2), (130, 4, 1))


def phase_flops(genotype: str, image_size: int = 224,
                schedule: tuple[tuple[int, int, int], ...] = PAPER_SCHEDULE) -> list[dict[str, Any]]:
    """XLA's FLOP count of one image's forward pass (batch 1, fp32) in each re-tokenization phase of `schedule`,
    and its share of the native (stride 4, dilation 1) forward. Returns one dict per phase: start_epoch, stride,
    dilation, tokens (first-stage grid side), flops, share. Lowered and compiled on the CPU; nothing runs.

    Raises ConfigError (one line) for a bad genotype, or a stride that does not divide `image_size`."""
    import jax
    import jax.numpy as jnp

    from learngene_jax.methods.asvit.model import from_genotype

    def flops(model: nn.Module) -> float:
        x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
        params = jax.eval_shape(model.init, jax.random.key(0), x)
        cost = jax.jit(model.apply).lower(params, x).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost  # older jax returns one dict per device
        return float(cost["flops"])

    native = flops(from_genotype(genotype, image_size=image_size, num_classes=1000))
    rows = []
    for start, stride, dilation in schedule:
        model = from_genotype(genotype, image_size=image_size, num_classes=1000, patch_stride=stride,
                              patch_dilation=dilation)
        count = flops(model)
        rows.append({"start_epoch": start, "stride": stride, "dilation": dilation, "tokens": image_size // stride,
                     "flops": count, "share": round(count / native, 4)})
    return rows

