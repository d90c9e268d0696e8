"""Text generation with the decoder LMs (models/llama.py): a KV-cached prefill and one-token decode steps in one
`jax.jit` (the decode loop is a `jax.lax.while_loop` over a fixed-size cache, so it compiles once), prompts of
different lengths left-padded, greedy or sampled (temperature, top-k, top-p) from a seed, a per-sequence EOS stop."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from learngene_jax.models.kv_cache import KVCache, init_cache
from learngene_jax.models.llama import GPT2, Llama, check_context, check_tokens

Array = jax.Array


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """ValueError unless temperature is 0 (greedy) or ≥ 1e-6, top_k ≥ 0 (0: off) and 0 < top_p ≤ 1 (1: off)."""
    if not (np.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature}")
    if 0 < temperature < 1e-6:
        # Dividing float32 logits by so small a number overflows to inf/NaN, and sampling then emits id 0.
        raise ValueError(f"temperature must be 0 (greedy) or >= 1e-6, got {temperature}")
    if int(top_k) != top_k or top_k < 0:
        raise ValueError(f"top_k must be a whole number >= 0 (0: no top-k filter), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1] (1: no nucleus filter), got {top_p}")


def filter_logits(logits: Array, temperature: float, top_k: int = 0, top_p: float = 1.0) -> Array:
    """The logits (..., vocab) that sampling draws from, in Hugging Face's order: divided by `temperature` (> 0),
    then −inf outside the `top_k` largest (ties with the k-th kept), then −inf outside the nucleus — the largest
    tokens whose probabilities, taken in decreasing order, first reach `top_p` (a token is kept when the mass of the
    tokens above it is below top_p; the first token always)."""
    logits = logits.astype(jnp.float32) / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, int(top_k))[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1:
        ordered = -jnp.sort(-logits, axis=-1)  # decreasing
        probs = jax.nn.softmax(ordered, axis=-1)
        above = jnp.cumsum(probs, axis=-1) - probs
        kept = jnp.sum(above < top_p, axis=-1, keepdims=True)  # >= 1: the first token has nothing above it
        threshold = jnp.take_along_axis(ordered, kept - 1, axis=-1)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def next_token(logits: Array, key: Array, temperature: float, top_k: int = 0, top_p: float = 1.0) -> Array:
    """The next token (batch,) int32 from the last logits (batch, vocab): the argmax at temperature 0 (top-k and top-p
    never remove it), else a draw from softmax(filter_logits(...))."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filter_logits(logits, temperature, top_k, top_p), axis=-1).astype(jnp.int32)


def empty_cache(model: Llama | GPT2, batch: int, slots: int) -> KVCache:
    """A KV cache for `model` of `slots` tokens per sequence, in its compute dtype."""
    if isinstance(model, Llama):
        return init_cache(model.depth, batch, slots, model.num_kv_heads, model.hd, model.dtype)
    return init_cache(model.depth, batch, slots, model.num_heads, model.width // model.num_heads, model.dtype)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompts of different lengths as (tokens, mask), both (batch, longest), padded on the left with `pad_id`
    (mask 0), as Hugging Face pads for generation (padding_side='left')."""
    rows = [np.asarray(p, np.int64).reshape(-1) for p in prompts]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every prompt needs at least one token")
    longest = max(len(r) for r in rows)
    tokens = np.full((len(rows), longest), pad_id, np.int64)
    mask = np.zeros((len(rows), longest), np.int32)
    for i, r in enumerate(rows):
        tokens[i, longest - len(r):], mask[i, longest - len(r):] = r, 1
    return tokens, mask


def generate(model: Llama | GPT2, variables: dict[str, Any], prompts: Any, max_new_tokens: int, *,
             prompt_mask: Any = None, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             rng: Array | None = None, eos_id: int | Sequence[int] | None = None, pad_id: int | None = None
             ) -> np.ndarray:
    """`prompts` continued by up to `max_new_tokens` tokens, as transformers' `generate` returns them: (batch, prompt
    length + steps) int32, the prompts left-padded with `pad_id`, a sequence that has emitted an EOS id (`eos_id`: one
    or several) continued with `pad_id`, and generation ending early once every sequence has. `prompts`: a list of
    token-id lists of any lengths (left-padded here), or (batch, tokens) ids with `prompt_mask` (1 real, 0 left
    padding). Greedy at temperature 0, else sampled with `filter_logits` from `rng` (default key 0). `pad_id`
    defaults to the first EOS id, else 0 (transformers' default). ValueError for bad prompts or settings."""
    check_sampling(temperature, top_k, top_p)
    if int(max_new_tokens) != max_new_tokens or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a whole number >= 0, got {max_new_tokens}")
    eos = () if eos_id is None else tuple(int(e) for e in np.atleast_1d(eos_id))
    pad = int(pad_id if pad_id is not None else eos[0] if eos else 0)
    outside = [i for i in (*eos, pad) if not 0 <= i < model.vocab_size]
    if outside:
        raise ValueError(f"EOS / pad ids {outside} lie outside the vocabulary 0..{model.vocab_size - 1}")
    if isinstance(prompts, (list, tuple)) and prompt_mask is None:
        tokens, mask = left_pad(prompts, pad)
    else:
        tokens = np.asarray(prompts)
        mask = np.ones(tokens.shape, np.int32) if prompt_mask is None else np.asarray(prompt_mask).astype(np.int32)
        if mask.shape != tokens.shape or ((mask != 0) & (mask != 1)).any():
            raise ValueError(f"prompt_mask must be 0/1 of the prompts' shape {tokens.shape}, got {mask.shape}")
        if (np.diff(mask, axis=-1) < 0).any() or (mask.ndim == 2 and (mask.sum(-1) == 0).any()):
            raise ValueError("prompt_mask must be left padding (zeros before each prompt's tokens, at least one "
                             "token per prompt); pad prompts on the left for generation")
    tokens = check_tokens(tokens, model.vocab_size)
    check_context(model, tokens.shape[1] + int(max_new_tokens))  # every slot of the cache needs a position
    if not max_new_tokens:
        return tokens
    key = jax.random.key(0) if rng is None else rng
    out, steps = _generate(model, variables, jnp.asarray(tokens), jnp.asarray(mask), key, int(max_new_tokens),
                           (float(temperature), int(top_k), float(top_p)), eos, pad)
    return np.concatenate([tokens, np.asarray(out)[:, :int(steps)]], axis=1)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "sampling", "eos", "pad"))
def _generate(model: Llama | GPT2, variables: dict[str, Any], tokens: Array, mask: Array, key: Array,
              max_new_tokens: int, sampling: tuple[float, int, float], eos: tuple[int, ...], pad: int
              ) -> tuple[Array, Array]:
    """(new tokens (batch, max_new_tokens), how many steps ran): the prefill writes the prompts into the cache and
    gives the first token; each decode step feeds the last token back."""
    b, t = tokens.shape
    eos_ids = jnp.asarray(eos, jnp.int32)
    logits, cache = model.apply(variables, tokens, mask, cache=empty_cache(model, b, t + max_new_tokens))
    first = next_token(logits[:, -1], jax.random.fold_in(key, 0), *sampling)
    out = jnp.full((b, max_new_tokens), pad, jnp.int32).at[:, 0].set(first)

    def running(state):
        i, _, _, done = state
        return (i < max_new_tokens) & ~jnp.all(done)

    def step(state):
        i, cache, out, done = state
        last = jax.lax.dynamic_slice_in_dim(out, i - 1, 1, axis=1)
        logits, cache = model.apply(variables, last, cache=cache)
        token = jnp.where(done, pad, next_token(logits[:, -1], jax.random.fold_in(key, i), *sampling))
        out = jax.lax.dynamic_update_slice_in_dim(out, token[:, None], i, axis=1)
        return i + 1, cache, out, done | jnp.isin(token, eos_ids)

    steps, _, out, _ = jax.lax.while_loop(running, step, (jnp.int32(1), cache, out, jnp.isin(first, eos_ids)))
    return out, steps
