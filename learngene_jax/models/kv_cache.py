"""The key/value cache of the decoder LMs (models/llama.py) for generation (models/generation.py): fixed-size buffers
written at one slot index that the whole batch shares (prompts are left-padded to one length), so that the prefill and
the one-token decode step each compile once, whatever the prompts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class KVCache(NamedTuple):
    """Keys and values of every layer, (depth, batch, slots, kv_heads, head_dim) each — inside a layer that layer's
    (batch, slots, kv_heads, head_dim) — with `valid` (batch, slots), True where a slot holds a real token (not left
    padding, not yet unwritten), and `index` (), the slot the next token goes to."""

    k: Array
    v: Array
    valid: Array
    index: Array


def init_cache(depth: int, batch: int, slots: int, kv_heads: int, head_dim: int, dtype: Any) -> KVCache:
    """An empty cache of `slots` token slots per sequence (the prompt length plus the tokens to generate)."""
    shape = (depth, batch, slots, kv_heads, head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch, slots), bool),
                   jnp.zeros((), jnp.int32))


def positions(cache: KVCache, padding: Array | None, t: int) -> Array:
    """Positions (batch, t) of `t` new tokens: a real token's position is the number of real tokens before it in its
    sequence, so left padding takes none (Hugging Face's generate: attention_mask.cumsum(−1) − 1); padding gets 0."""
    new = jnp.ones((cache.valid.shape[0], t), jnp.int32) if padding is None else padding.astype(jnp.int32)
    before = jnp.sum(cache.valid, axis=1, keepdims=True, dtype=jnp.int32)
    return jnp.where(new > 0, before + jnp.cumsum(new, axis=1) - 1, 0)


def attend(cache: KVCache, q: Array, k: Array, v: Array, implementation: str | None) -> tuple[Array, KVCache]:
    """Causal attention of `q` (batch, t, heads, head_dim), the tokens of slots index … index + t − 1, over one
    layer's cache with their `k`, `v` (batch, t, kv_heads, head_dim) written in. A query reads the valid slots up to
    its own, and always its own slot: a left-padding query then never has an all-masked row (its output is never
    read, but a fused kernel may return NaN for such a row, and 0 · NaN would reach the real tokens)."""
    t, slots = q.shape[1], cache.k.shape[1]
    k_all = jax.lax.dynamic_update_slice_in_dim(cache.k, k.astype(cache.k.dtype), cache.index, axis=1)
    v_all = jax.lax.dynamic_update_slice_in_dim(cache.v, v.astype(cache.v.dtype), cache.index, axis=1)
    query_slot = (cache.index + jnp.arange(t))[:, None]
    key_slot = jnp.arange(slots)[None, :]
    mask = (key_slot <= query_slot) & (cache.valid[:, None, None, :] | (key_slot == query_slot))  # (b, 1, t, slots)
    attended = jax.nn.dot_product_attention(q, k_all, v_all, mask=mask, implementation=implementation)
    return attended, cache._replace(k=k_all, v=v_all)


def scan_layers(layer: Callable[[Array, Any, KVCache | None], tuple[Array, KVCache | None]], x: Array, xs: Any,
                cache: KVCache | None, padding: Array | None, unroll: int | bool) -> tuple[Array, KVCache | None]:
    """`jax.lax.scan` of `layer(x, xs_l, layer_cache) → (x, layer_cache)` over the stacked per-layer inputs `xs`.
    Without a cache `layer_cache` is None; with one, each layer reads and writes its slice, and the cache returned
    holds the new tokens' slots (valid where `padding` is 1, every slot when None) with its index past them."""
    if cache is None:
        x, _ = jax.lax.scan(lambda x, p: (layer(x, p, None)[0], None), x, xs, unroll=unroll)
        return x, None
    b, t = x.shape[:2]
    new = jnp.ones((b, t), bool) if padding is None else padding.astype(bool)
    valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, new, cache.index, axis=1)

    def body(x, p_kv):
        p, (k, v) = p_kv
        x, layer_cache = layer(x, p, KVCache(k, v, valid, cache.index))
        return x, (layer_cache.k, layer_cache.v)

    x, (k, v) = jax.lax.scan(body, x, (xs, (cache.k, cache.v)), unroll=unroll)
    return x, KVCache(k, v, valid, cache.index + t)
