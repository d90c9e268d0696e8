"""Net2Wider (Chen et al., ICLR 2016) for the VGG ancestor: grow a block's channels without changing what the
network computes, so the ancestor keeps its knowledge while it gains capacity between tasks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from learngene_jax.errors import ConfigError, fail
from learngene_jax.models.vgg import VGGAncestor


def _copy(variables: dict[str, Any]) -> dict[str, Any]:
    """A nested dict of fresh numpy arrays (the input is never modified)."""
    return jax.tree_util.tree_map(lambda x: np.array(x), jax.device_get(dict(variables)))


def widen_block(model: VGGAncestor, variables: dict[str, Any], block: int, new_width: int,
                rng: np.random.Generator) -> tuple[VGGAncestor, dict[str, Any], np.ndarray]:
    """Widen `block` to `new_width` channels: (model, variables, source), where channel j of the result
    copies old channel source[j] (source[j] = j for the old channels).

    Each new channel replicates a randomly chosen old one: its conv kernel and bias, its BatchNorm scale and
    bias AND its running mean and variance (the official code copies the statistics of one new channel only,
    leaving the others with resized-tensor garbage). The next layer's incoming weights from an old channel and
    all its replicas are divided by the replica count, so the sum it computes is unchanged; the result equals
    the input network in eval mode (and in train mode: replicas have identical batch statistics)."""
    if not 0 <= block < len(model.widths):
        fail(ConfigError, f"cannot widen block {block}: the ancestor has blocks 0..{len(model.widths) - 1}")
    old = model.widths[block]
    if new_width <= old:
        fail(ConfigError, f"widening block {block} to {new_width} channels: it already has {old}")
    source = np.concatenate([np.arange(old), rng.integers(0, old, new_width - old)])
    replicas = np.bincount(source, minlength=old).astype(np.float32)[source]  # (new_width,) copies of my source
    out = _copy(variables)
    params, stats = out["params"], out["batch_stats"]
    name = f"block{block}"
    conv, bn = params[name]["conv"], params[name]["bn"]
    conv["kernel"], conv["bias"] = conv["kernel"][..., source], conv["bias"][source]
    bn["scale"], bn["bias"] = bn["scale"][source], bn["bias"][source]
    stats[name]["bn"]["mean"] = stats[name]["bn"]["mean"][source]
    stats[name]["bn"]["var"] = stats[name]["bn"]["var"][source]
    if block + 1 < len(model.widths):
        nxt = params[f"block{block + 1}"]["conv"]
        nxt["kernel"] = nxt["kernel"][:, :, source, :] / replicas[None, None, :, None]  # (3, 3, C_in, C_out)
    else:
        # The first Dense after the flatten: rows are ordered (h, w, c) with c fastest (NHWC reshape).
        dense = params["fc0" if model.hidden else "head"]
        kernel = dense["kernel"].reshape(-1, old, dense["kernel"].shape[-1])  # (H·W, C, out)
        dense["kernel"] = (kernel[:, source, :] / replicas[None, :, None]).reshape(-1, kernel.shape[-1])
    widths = list(model.widths)
    widths[block] = new_width
    return model.clone(widths=tuple(widths)), out, source


def widen(model: VGGAncestor, variables: dict[str, Any], growth: Sequence[Sequence[int]],
          rng: np.random.Generator) -> tuple[VGGAncestor, dict[str, Any]]:
    """Apply `growth`, a sequence of (block, channels to add) pairs, one Net2Wider step each, in order."""
    final_widths(model.widths, [growth])  # every step names a block and adds channels
    for block, add in growth:
        model, variables, _ = widen_block(model, variables, int(block), model.widths[int(block)] + int(add), rng)
    return model, variables


def final_widths(widths: Sequence[int], schedule: Sequence[Sequence[Sequence[int]]]) -> tuple[int, ...]:
    """The widths after every transition of `schedule` (each a sequence of (block, add) pairs)."""
    out = list(widths)
    for growth in schedule:
        for block, add in growth:
            if not 0 <= int(block) < len(out) or int(add) <= 0:
                fail(ConfigError, f"cannot widen block {block} by {add}: a widening step names a block in "
                                  f"0..{len(out) - 1} and adds a positive number of channels")
            out[int(block)] += int(add)
    return tuple(out)
