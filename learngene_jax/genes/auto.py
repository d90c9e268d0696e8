"""Auto Learngene: choose the gene blocks from how much each ancestor block changes while the ancestor keeps
learning new tasks; the blocks that change least are taken to hold its most general knowledge.

The criterion, per block l of the ancestor (K_l its conv kernel, tasks t = 1..T-1 of the continual sequence;
the first task starts from random weights and says nothing about kept knowledge, so it is left out):

  statistic 'weights':   Δ_l(t) = ‖K_l^end(t) − K_l^start(t)‖_F / ‖K_l^start(t)‖_F
  statistic 'gradients': G_l(t) = ‖∇_{K_l} L_t(θ^start(t))‖_F / ‖K_l^start(t)‖_F

where θ^start(t) is what task t starts from (the Net2Wider-widened end of task t−1, with a fresh head) and
θ^end(t) what it ends with. Because widening preserves the function, Δ_l(t) is the change from task t−1's
knowledge to task t's with the widening itself not counted (both sides have the widened shape), and new channels
are compared with the copies they started as. L_t is task t's mean cross-entropy over its training images,
BatchNorm in train mode (as training sees it). The score of a block is the mean over t; the gene is the window
of `n` consecutive blocks (a descendant stacks them) with the smallest summed score.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from learngene_jax.distill.losses import cross_entropy
from learngene_jax.errors import ConfigError, fail

STATISTICS = ("weights", "gradients")


def _kernels(params: dict[str, Any], num_blocks: int) -> list[np.ndarray]:
    return [np.asarray(params[f"block{i}"]["conv"]["kernel"], np.float64) for i in range(num_blocks)]


def relative_change(start: dict[str, Any], end: dict[str, Any], num_blocks: int) -> np.ndarray:
    """Δ_l = ‖K_l^end − K_l^start‖_F / ‖K_l^start‖_F per block (params trees of the same widened ancestor)."""
    out = []
    for a, b in zip(_kernels(start, num_blocks), _kernels(end, num_blocks), strict=True):
        if a.shape != b.shape:
            fail(ConfigError, f"relative change needs same-shaped kernels (compare a task's start with its end), "
                              f"got {a.shape} and {b.shape}")
        out.append(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-12))
    return np.asarray(out)


def relative_gradient(model: nn.Module, variables: dict[str, Any], batches: Iterable[tuple[Any, Any]],
                      num_blocks: int, rng: jax.Array | None = None) -> np.ndarray:
    """G_l = ‖∇_{K_l} L‖_F / ‖K_l‖_F per block, L the mean cross-entropy over `batches` of (images, labels)
    in train mode as training sees it: BatchNorm on batch statistics and dropout on, its masks drawn from `rng`
    (default key 0; batch i uses fold_in(rng, i)); the gradient of each batch is weighted by its size."""
    rest = {k: v for k, v in variables.items() if k != "params"}
    rng = jax.random.key(0) if rng is None else rng

    @jax.jit
    def batch_grad(params, images, labels, key):
        def loss(p):
            logits, _ = model.apply({"params": p, **rest}, images, train=True, mutable=["batch_stats"],
                                    rngs={"dropout": key})
            return jnp.sum(cross_entropy(logits, labels))
        return jax.grad(loss)(params)

    total, count = None, 0
    for i, (images, labels) in enumerate(batches):
        grads = batch_grad(variables["params"], jnp.asarray(images), jnp.asarray(labels), jax.random.fold_in(rng, i))
        total = grads if total is None else jax.tree_util.tree_map(jnp.add, total, grads)
        count += len(labels)
    if not count:
        fail(ConfigError, "relative_gradient needs at least one batch of examples")
    grads = _kernels(jax.tree_util.tree_map(lambda g: g / count, jax.device_get(total)), num_blocks)
    return np.asarray([np.linalg.norm(g) / max(np.linalg.norm(k), 1e-12)
                       for g, k in zip(grads, _kernels(variables["params"], num_blocks), strict=True)])


def select_blocks(scores: Sequence[float], n: int) -> tuple[int, ...]:
    """The `n` consecutive blocks with the smallest summed score (the earliest window on a tie)."""
    scores = np.asarray(scores, np.float64)
    if not 1 <= n <= len(scores):
        fail(ConfigError, f"auto.layers must be in 1..{len(scores)} (the ancestor's blocks), got {n}")
    sums = np.convolve(scores, np.ones(n), mode="valid")  # sums[s] = scores[s] + ... + scores[s + n - 1]
    start = int(np.argmin(sums))
    return tuple(range(start, start + n))


def least_changing(scores: Sequence[float], n: int) -> tuple[int, ...]:
    """The `n` individually least-changing blocks, in block order (reported next to the chosen window)."""
    return tuple(sorted(int(i) for i in np.argsort(np.asarray(scores), kind="stable")[:n]))
