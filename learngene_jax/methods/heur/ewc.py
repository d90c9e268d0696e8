"""EWC (elastic weight consolidation), the trainer's `ewc` loss term: λ/2 · Σ F·(θ − θ*)² over the params named
in a saved anchor (used by Heur Learngene on the inherited layers only), and the diagonal Fisher F it weighs them
with."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from learngene_jax import checkpointing
from learngene_jax.errors import ConfigError, fail
from learngene_jax.genes.core import shape_mismatches


def ewc_penalty(params: Any, anchor: Any, fisher: Any) -> jax.Array:
    """Σ F·(θ − θ*)² over the leaves of `anchor` (a sub-tree of `params`), without the λ/2."""
    total = jnp.zeros((), jnp.float32)
    for key, sub in anchor.items():
        if isinstance(sub, dict):
            total = total + ewc_penalty(params[key], sub, fisher[key])
        else:
            total = total + jnp.sum(fisher[key] * (params[key].astype(jnp.float32) - sub) ** 2)
    return total


def empirical_fisher(log_likelihood: Callable[[Any, jax.Array, jax.Array], jax.Array], params: Any,
                     batches: Iterable[tuple[Any, Any]]) -> Any:
    """Diagonal empirical Fisher F = mean over real examples of (∂ log p(y|x) / ∂θ)², one gradient per example
    (`log_likelihood(params, image, label)` scores one example; `batches` yields (images, labels) arrays)."""
    grad = jax.grad(log_likelihood)

    @jax.jit
    def batch_sum(params, images, labels):
        # a scan over the examples keeps one gradient in memory at a time, not a batch of them
        def add(total, example):
            g = grad(params, *example)
            return jax.tree_util.tree_map(lambda t, x: t + jnp.square(x.astype(jnp.float32)), total, g), None
        zeros = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        return jax.lax.scan(add, zeros, (images, labels))[0]

    total, count = None, 0
    for images, labels in batches:
        sums = batch_sum(params, jnp.asarray(images), jnp.asarray(labels))
        total = sums if total is None else jax.tree_util.tree_map(jnp.add, total, sums)
        count += len(labels)
    if not count:
        fail(ConfigError, "the Fisher needs at least one example")
    return jax.tree_util.tree_map(lambda t: t / count, total)


def save_ewc(path: str | Path, anchor: Any, fisher: Any, *, overwrite: bool = False) -> Path:
    """Write an EWC anchor (θ* and the diagonal Fisher F, same nested keys as the params they cover)."""
    problems = shape_mismatches(anchor, fisher)
    if problems:
        fail(ConfigError, "EWC anchor and Fisher differ: " + "; ".join(problems))
    return checkpointing.save_artifact(path, {"anchor": anchor, "fisher": fisher}, {"kind": "ewc"},
                                       overwrite=overwrite)


def load_ewc(path: str | Path, params_shape: Any) -> dict[str, Any]:
    """{'anchor', 'fisher'} from `save_ewc`, checked against the student's params."""
    meta = checkpointing.read_meta(path, "EWC anchor")
    if meta.get("kind") != "ewc":
        fail(ConfigError, f"{path} is a {meta.get('kind')} checkpoint, not an EWC anchor")
    shapes = checkpointing.stored_shapes(path, "EWC anchor")
    problems = _subtree_problems(shapes["anchor"], params_shape)
    if problems:
        fail(ConfigError, f"EWC anchor {path} does not fit the student: " + "; ".join(problems[:5]))
    target = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), shapes,
                                    is_leaf=lambda x: isinstance(x, tuple))
    return checkpointing.load_params(path, target, "EWC anchor")


def _subtree_problems(sub: dict[str, Any], full: Any, prefix: str = "") -> list[str]:
    problems = []
    for key, value in sub.items():
        if key not in full:
            problems.append(f"{prefix}{key} is not a student param")
        elif isinstance(value, dict):
            problems += _subtree_problems(value, full[key], f"{prefix}{key}/")
        elif tuple(value) != tuple(full[key].shape):
            problems.append(f"{prefix}{key} has shape {tuple(value)}, the student's {tuple(full[key].shape)}")
    return problems


def ewc_term(config: Any, abstract_params: Any) -> tuple[dict[str, Any], Callable] | None:
    """The trainer's `ewc` loss term: λ/2 · Σ F·(θ − θ*)² with λ = config.ewc.weight and the anchor at
    config.ewc.path (None when λ is 0); the anchor's arrays are frozen step inputs, never trained or saved."""
    weight = float(config.ewc.weight)
    if not weight:
        return None
    if not config.ewc.path:
        fail(ConfigError, "ewc.weight > 0 needs --config.ewc.path (an anchor written by methods.heur.ewc.save_ewc)")
    frozen = load_ewc(config.ewc.path, abstract_params)

    def loss(params: Any, anchor: dict[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
        penalty = ewc_penalty(params, anchor["anchor"], anchor["fisher"])
        return 0.5 * weight * penalty, {"ewc": penalty}
    return frozen, loss
