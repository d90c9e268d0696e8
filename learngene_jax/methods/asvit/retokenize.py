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
