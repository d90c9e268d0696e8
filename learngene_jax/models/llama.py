"""Decoder-only language models: Llama (RMSNorm, rotary positions in Hugging Face's rotate-half convention, SwiGLU,
grouped-query attention, tied or untied embeddings) and GPT-2 (LayerNorm, learned positions, tanh-GELU; nanoGPT's
variant with `bias=False`, exact GELU, its init and dropout).

Both keep their layers' params stacked along a leading depth axis (`layers/<name>`: (depth, ...)) and run them with
`jax.lax.scan`, as the ViT does: a learngene aux model only has to override `layer_params` (TLEG computes the stack
from θ_A, θ_B), and conversion to and from Hugging Face is a table (convert/hf.py). Attention goes through
`jax.nn.dot_product_attention` (causal), so GPUs can use the fused kernel.
"""

from __future__ import annotations

import zlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from learngene_jax.models.kv_cache import KVCache, attend, scan_layers
from learngene_jax.models.kv_cache import positions as cache_positions

Array = jax.Array
LayerParams = dict[str, Any]


def normal_02(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    """N(0, 0.02²), the initialiser of Llama's and GPT-2's linear layers and embeddings (Hugging Face)."""
    return 0.02 * jax.random.normal(key, shape, dtype)


def rms_norm(x: Array, scale: Array, eps: float) -> Array:
    """x · rsqrt(mean(x²) + eps) in float32, cast back, times `scale` (Hugging Face's LlamaRMSNorm)."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return scale.astype(x.dtype) * normed.astype(x.dtype)


def layer_norm(x: Array, scale: Array, bias: Array | None, eps: float) -> Array:
    """LayerNorm over the last axis, statistics in float32; `bias` None: none (nanoGPT's LayerNorm(bias=False))."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps) * scale
    return (y if bias is None else y + bias).astype(x.dtype)


def dropout(x: Array, rate: float, rng: Array | None) -> Array:
    """Inverted dropout (zero with probability `rate`, scale the rest by 1/(1 − rate)); `x` itself when `rng` is
    None or `rate` is 0 (evaluation)."""
    if rng is None or not rate:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def rope_tables(positions: Array, head_dim: int, theta: float, inv_freq: Array | None = None) -> tuple[Array, Array]:
    """cos, sin of shape (batch, tokens, head_dim) for `positions` (batch, tokens): frequencies θ^(−2j/head_dim)
    (or `inv_freq`, scaled ones: `Llama.rope_frequencies`), each repeated for both halves of the head (Hugging Face's
    `cat(freqs, freqs)`)."""
    if inv_freq is None:
        inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """x (batch, tokens, heads, head_dim) rotated: x·cos + rotate_half(x)·sin with rotate_half(x) = [−x₂, x₁]
    (dimension j pairs with j + head_dim/2, Hugging Face's convention; Meta's checkpoints pair 2j, 2j+1)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos[:, :, None, :] + rotated * sin[:, :, None, :]).astype(x.dtype)


def project(y: Array, p: LayerParams, name: str, lora_scale: float, lora_dropout: float = 0.0,
            rng: Array | None = None) -> Array:
    """y @ W for the layer param `name`, plus (α/r)·(drop(y) A) B when the layer carries LoRA adapters `name_lora_a`
    (in, r) and `name_lora_b` (r, out) (models/lora.py): the unmerged LoRA forward, which never forms W + AB. The
    adapter's input is dropped with `lora_dropout` when `rng` is given (training), a mask of its own per weight, as
    PEFT's lora_dropout (one nn.Dropout per adapted layer, on the adapter's branch only)."""
    out = y @ p[name]
    if f"{name}_lora_a" in p:
        key = None if rng is None else jax.random.fold_in(rng, zlib.crc32(name.encode()) & 0x7FFFFFFF)
        out = out + lora_scale * ((dropout(y, lora_dropout, key) @ p[f"{name}_lora_a"]) @ p[f"{name}_lora_b"])
    return out


# Activation checkpointing of each decoder layer (`remat`): which intermediates the backward pass keeps instead of
# recomputing them. full: only each layer's input (the least memory, one more forward per layer); dots_saveable: the
# outputs of every matmul; dots_with_no_batch_dims_saveable: those of the weight matmuls (projections, MLP), not of
# attention's batched ones (maxtext's usual trade).
REMAT_POLICIES = {"none": None, "full": jax.checkpoint_policies.nothing_saveable,
                  "dots_saveable": jax.checkpoint_policies.dots_saveable,
                  "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def remat_policy(remat: str | bool) -> str:
    """The name in REMAT_POLICIES that a model's `remat` field means (True: full, False: none); ValueError for any
    other value."""
    name = {True: "full", False: "none"}.get(remat, remat) if isinstance(remat, bool) else remat
    if name not in REMAT_POLICIES:
        raise ValueError(f"remat must be one of {', '.join(REMAT_POLICIES)} (or true/false), got {remat!r}")
    return name


def rematted(layer: Any, remat: str | bool) -> Any:
    """`layer` under jax.checkpoint with the `remat` policy (itself for none). prevent_cse=False: it runs inside
    lax.scan, which already keeps XLA from merging the recomputation away (jax.checkpoint's documentation)."""
    name = remat_policy(remat)
    if name == "none":
        return layer
    return jax.checkpoint(layer, policy=REMAT_POLICIES[name], prevent_cse=False)


def select_attention(platform: str, platform_version: str, compute_capability: str | None, dtype: Any,
                     head_dim: int) -> str:
    """The jax.nn.dot_product_attention implementation to use when none is asked for: cuDNN's fused kernel on an
    NVIDIA GPU of compute capability 8.0 or more with bf16/fp16 inputs and a head dim that is a multiple of 8 up to
    128 (the kernel's limits: jax's cudnn check_is_flash_attention and check_layout), else XLA (CPUs, TPUs, ROCm,
    fp32). jax's own `implementation=None` takes XLA everywhere (jax 0.10: "defaults to XLA for now")."""
    if platform != "gpu" or "cuda" not in platform_version.lower() or compute_capability is None:
        return "xla"
    major_minor = tuple(int(x) for x in compute_capability.split(".")[:2])
    if major_minor < (8, 0) or jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return "xla"
    return "cudnn" if head_dim % 8 == 0 and head_dim <= 128 else "xla"


def attention_implementation(requested: str | None, dtype: Any, head_dim: int) -> str:
    """`requested` ('xla' or 'cudnn'), or for None the one `select_attention` picks for the default device."""
    if requested is not None:
        return requested
    device = jax.devices()[0]
    return select_attention(device.platform, getattr(device.client, "platform_version", ""),
                            getattr(device, "compute_capability", None), dtype, head_dim)


def causal_attention(q: Array, k: Array, v: Array, padding: Array | None, implementation: str | None,
                     drop_rate: float = 0.0, rng: Array | None = None) -> Array:
    """Causal softmax attention, q (batch, tokens, heads, head_dim) and k, v with kv_heads dividing heads (query
    head j reads kv head j // (heads / kv_heads), as Hugging Face's repeat_kv); `padding` (batch, tokens) is 1
    for real tokens, 0 for padding (padded keys are not attended to), or a boolean (batch, 1, tokens, tokens) mask
    of the keys each query may see on top of causality (`segment_mask`). With `rng` and `drop_rate` > 0 the attention
    probabilities are dropped (GPT-2's attn_pdrop, nanoGPT's attn_dropout), through an explicit softmax:
    jax.nn.dot_product_attention has no dropout."""
    mask = None if padding is None else (padding if padding.ndim == 4 else padding[:, None, None, :]).astype(bool)
    if rng is None or not drop_rate:
        implementation = attention_implementation(implementation, q.dtype, q.shape[-1])
        return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True, implementation=implementation)
    t, heads = q.shape[1], q.shape[2]
    k, v = (jnp.repeat(z, heads // z.shape[2], axis=2) for z in (k, v))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / np.sqrt(q.shape[-1])  # (b, heads, t, t)
    allowed = jnp.tril(jnp.ones((t, t), bool))[None, None]
    if mask is not None:
        allowed = allowed & mask
    probs = jax.nn.softmax(jnp.where(allowed, scores, jnp.finfo(jnp.float32).min), axis=-1).astype(q.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", dropout(probs, drop_rate, rng), v)


def segment_mask(segments: Array) -> Array:
    """The `padding` mask (batch, 1, tokens, tokens) of documents packed in one row: `segments` (batch, tokens) names
    each token's document, and a query sees only the keys of its own document (with positions restarting at each
    document, every document's logits are those it has alone)."""
    return segments[:, None, :, None] == segments[:, None, None, :]


ROPE_TYPES = ("default", "linear", "dynamic", "llama3")


class Llama(nn.Module):
    """A Llama-family decoder (Llama 2/3, TinyLlama, ...): `__call__(tokens (batch, tokens) int32) → logits
    (batch, tokens, vocab)`. Field names follow Hugging Face's LlamaConfig where they differ only in spelling:
    width = hidden_size, depth = num_hidden_layers, mlp_dim = intermediate_size."""

    vocab_size: int = 32000
    width: int = 4096
    depth: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    head_dim: int = 0  # 0: width // num_heads
    mlp_dim: int = 11008
    eps: float = 1e-5  # rms_norm_eps (Llama 2 files: 1e-5)
    rope_theta: float = 10000.0
    max_positions: int = 4096
    tie_embeddings: bool = False
    # rope_scaling (transformers' modeling_rope_utils): default, linear, dynamic (NTK) or llama3 (Llama 3.1+), with
    # its factor, llama3's low/high_freq_factor and original_max_position_embeddings
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_positions: int = 8192
    qkv_bias: bool = False  # biases on q, k, v (LlamaConfig.attention_bias; Qwen2)
    out_bias: bool = False  # a bias on o (LlamaConfig.attention_bias)
    mlp_bias: bool = False  # biases on gate, up, down (LlamaConfig.mlp_bias)
    sliding_window: int = 0  # Mistral / Qwen2 sliding-window attention: exact up to this context, refused past it
    model_type: str = "llama"  # the Hugging Face architecture it is (and exports as): llama, mistral or qwen2
    dtype: Any = jnp.float32  # compute dtype; params stay float32
    scan_unroll: int | bool = 1  # layers per scan iteration (True: no loop; ~7 % faster CPU steps, longer compiles)
    attention_impl: str | None = None  # jax.nn.dot_product_attention's implementation (None: `select_attention`)
    remat: str | bool = "none"  # activation checkpointing of each layer in training: a REMAT_POLICIES name
    attention_dropout: float = 0.0  # LlamaConfig.attention_dropout: attention probabilities, in training only
    lora_scale: float = 0.0  # α/r of LoRA adapters in the layer params (models/lora.py); unused without them
    lora_dropout: float = 0.0  # PEFT's lora_dropout on the adapters' input, in training only

    @property
    def hd(self) -> int:
        return self.head_dim or self.width // self.num_heads

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of one decoder layer's params (Flax kernels are (in, out))."""
        d, h, kv, hd, f = self.width, self.num_heads, self.num_kv_heads, self.hd, self.mlp_dim
        shapes = {"attn_norm": (d,), "q": (d, h * hd), "k": (d, kv * hd), "v": (d, kv * hd), "o": (h * hd, d),
                  "mlp_norm": (d,), "gate": (d, f), "up": (d, f), "down": (f, d)}
        biases = {"q": self.qkv_bias, "k": self.qkv_bias, "v": self.qkv_bias, "o": self.out_bias,
                  "gate": self.mlp_bias, "up": self.mlp_bias, "down": self.mlp_bias}
        return {**shapes, **{f"{n}_bias": shapes[n][-1:] for n, on in biases.items() if on}}

    def init_layers(self, key: Array, shapes: dict[str, tuple[int, ...]], lead: tuple[int, ...] = ()) -> LayerParams:
        """Fresh params for `shapes` with leading axes `lead`: norms 1, biases 0, everything else N(0, 0.02²)."""
        keys = jax.random.split(key, len(shapes))
        return {name: jnp.ones(lead + shape) if name.endswith("norm") else
                jnp.zeros(lead + shape) if name.endswith("_bias") else normal_02(k, lead + shape)
                for k, (name, shape) in zip(keys, shapes.items(), strict=True)}

    def rope_frequencies(self, seq_len: Array | int) -> Array:
        """(head_dim/2,) float32 rotary frequencies θ^(−2j/head_dim) scaled as `rope_type` says, as transformers'
        modeling_rope_utils computes them: linear divides them by the factor; llama3 divides those of wavelength
        above original/low_freq_factor by it, keeps those below original/high_freq_factor and interpolates between;
        dynamic (NTK-aware) raises θ to θ·(factor·n/max_positions − factor + 1)^(d/(d−2)) when the sequence length
        n = `seq_len` (the largest position + 1 of the batch) exceeds max_positions, and is the default below."""
        d = self.hd
        exponents = np.arange(0, d, 2, dtype=np.float32) / d
        inv_freq = 1.0 / (self.rope_theta ** exponents)  # float32 (numpy: a Python float scalar is weak)
        factor = self.rope_factor
        if self.rope_type == "linear":
            return jnp.asarray(inv_freq / np.float32(factor))
        if self.rope_type == "llama3":
            low, high, old = self.rope_low_freq_factor, self.rope_high_freq_factor, self.rope_original_positions
            wavelen = 2 * np.pi / inv_freq
            scaled = np.where(wavelen > old / low, inv_freq / factor, inv_freq)
            smooth = (old / wavelen - low) / (high - low)
            medium = ~(wavelen < old / high) & ~(wavelen > old / low)
            return jnp.asarray(np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled))
        if self.rope_type == "dynamic":
            n = jnp.maximum(jnp.asarray(seq_len, jnp.float32), self.max_positions)
            base = self.rope_theta * (factor * n / self.max_positions - (factor - 1)) ** (d / (d - 2))
            return 1.0 / (base ** jnp.asarray(exponents))
        if self.rope_type != "default":
            raise ValueError(f"rope_type must be one of {ROPE_TYPES}, got {self.rope_type!r}")
        return jnp.asarray(inv_freq)

    def layer_params(self) -> LayerParams:
        """Stacked (depth, ...) layer params; learngene aux models compute them from their gene instead."""
        return self.param("layers", lambda key: self.init_layers(key, self.layer_shapes(), (self.depth,)))

    def layer(self, x: Array, p: LayerParams, cos: Array, sin: Array, padding: Array | None,
              rng: Array | None = None, cache: KVCache | None = None) -> tuple[Array, KVCache | None]:
        """One pre-norm decoder layer: attention then SwiGLU MLP, each added to the residual stream; `rng`
        (training with dropout): the attention probabilities and the LoRA adapters' inputs are dropped; `cache`
        (generation): this layer's KV cache, which attention reads and writes (returned; None without one)."""
        b, t, _ = x.shape
        p = jax.tree_util.tree_map(lambda a: a.astype(self.dtype), p)
        attn_key, lora_key = (None, None) if rng is None else tuple(jax.random.split(rng))

        def proj(z: Array, name: str) -> Array:
            out = project(z, p, name, self.lora_scale, self.lora_dropout, lora_key)
            return out + p[f"{name}_bias"] if f"{name}_bias" in p else out

        y = rms_norm(x, p["attn_norm"], self.eps)
        q = apply_rope(proj(y, "q").reshape(b, t, self.num_heads, self.hd), cos, sin)
        k = apply_rope(proj(y, "k").reshape(b, t, self.num_kv_heads, self.hd), cos, sin)
        v = proj(y, "v").reshape(b, t, self.num_kv_heads, self.hd)
        if cache is None:
            attended = causal_attention(q, k, v, padding, self.attention_impl, self.attention_dropout, attn_key)
        else:
            attended, cache = attend(cache, q, k, v, self.attention_impl)
        x = x + proj(attended.reshape(b, t, -1), "o")
        y = rms_norm(x, p["mlp_norm"], self.eps)
        return x + proj(jax.nn.silu(proj(y, "gate")) * proj(y, "up"), "down"), cache

    @nn.compact
    def __call__(self, tokens: Array, padding: Array | None = None, positions: Array | None = None,
                 train: bool = False, cache: KVCache | None = None, hidden: bool = False
                 ) -> Array | tuple[Array, KVCache]:
        """Logits (batch, tokens, vocab); with a KV `cache` (models/generation.py): (logits, the updated cache);
        `hidden`: the final hidden states (batch, tokens, width) instead of logits (`output_head` turns them into
        logits, e.g. a chunk at a time: objectives/language.py)."""
        embed = self.param("embed", normal_02, (self.vocab_size, self.width))
        layers = self.layer_params()
        norm = self.param("norm", nn.initializers.ones, (self.width,))
        if positions is None:
            positions = (jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape) if cache is None
                         else cache_positions(cache, padding, tokens.shape[1]))
        # dynamic RoPE scales θ with the batch's longest position, as transformers (max(position_ids) + 1)
        inv_freq = self.rope_frequencies(jnp.max(positions) + 1 if self.rope_type == "dynamic" else 0)
        cos, sin = rope_tables(positions, self.hd, self.rope_theta, inv_freq)
        x = jnp.take(jnp.asarray(embed, self.dtype), tokens, axis=0)
        keys = None  # per-layer dropout keys, scanned with the layers (make_rng cannot run inside the scan)
        if train and (self.attention_dropout or self.lora_dropout):
            keys = jax.random.split(self.make_rng("dropout"), self.depth)

        def layer(x, pk, layer_cache):
            return self.layer(x, pk[0], cos.astype(self.dtype), sin.astype(self.dtype), padding, pk[1], layer_cache)

        x, cache = scan_layers(layer if cache is not None else rematted(layer, self.remat), x, (layers, keys), cache,
                               padding, self.scan_unroll)
        x = rms_norm(x, norm, self.eps)
        if hidden:
            return x if cache is None else (x, cache)
        head = embed.T if self.tie_embeddings else self.param("lm_head", normal_02, (self.width, self.vocab_size))
        logits = (x @ head.astype(self.dtype)).astype(jnp.float32)
        return logits if cache is None else (logits, cache)


class GPT2(nn.Module):
    """GPT-2: `__call__(tokens (batch, tokens) int32) → logits (batch, tokens, vocab)`, the head tied to the token
    embedding. Fields: width = n_embd, depth = n_layer, num_heads = n_head, max_positions = n_positions (nanoGPT's
    block_size); nanoGPT's model.py is `bias=False, gelu_approximate=False, position_std=0.02` with its `dropout`."""

    vocab_size: int = 50257
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 0  # 0: 4 · width (n_inner)
    eps: float = 1e-5
    max_positions: int = 1024
    bias: bool = True  # biases in every linear map and LayerNorm (GPT-2); False: none (nanoGPT's bias=False)
    gelu_approximate: bool = True  # tanh GELU (GPT-2's gelu_new); False: exact erf GELU (nanoGPT's nn.GELU())
    position_std: float = 0.01  # init std of wpe: OpenAI's GPT-2 model.py; nanoGPT and Hugging Face draw 0.02
    dropout: float = 0.0  # embeddings, attention probabilities and both residual branches, in training only
    # Hugging Face's GPT2Config rates (its defaults: 0.1 each), each None = `dropout` (nanoGPT's single rate)
    embd_pdrop: float | None = None  # token + position embeddings
    attn_pdrop: float | None = None  # attention probabilities
    resid_pdrop: float | None = None  # the attention and MLP branches before the residual sums
    dtype: Any = jnp.float32
    scan_unroll: int | bool = 1  # layers per scan iteration (True: no loop; ~7 % faster CPU steps, longer compiles)
    attention_impl: str | None = None
    remat: str | bool = "none"  # activation checkpointing of each block in training: a REMAT_POLICIES name
    lora_scale: float = 0.0  # α/r of LoRA adapters in the layer params (models/lora.py); unused without them
    lora_dropout: float = 0.0  # PEFT's lora_dropout on the adapters' input, in training only

    @property
    def hidden(self) -> int:
        return self.mlp_dim or 4 * self.width

    @property
    def drop_rates(self) -> tuple[float, float, float]:
        """(embeddings, attention probabilities, residual branches): each pdrop, or `dropout` where it is None."""
        return tuple(self.dropout if r is None else r for r in (self.embd_pdrop, self.attn_pdrop, self.resid_pdrop))

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of one block's params (Conv1D weights are already (in, out), like Flax kernels); no `*_bias`
        entries when `bias` is False."""
        d, f = self.width, self.hidden
        shapes = {"ln_1_scale": (d,), "ln_1_bias": (d,), "c_attn": (d, 3 * d), "c_attn_bias": (3 * d,),
                  "attn_proj": (d, d), "attn_proj_bias": (d,), "ln_2_scale": (d,), "ln_2_bias": (d,),
                  "c_fc": (d, f), "c_fc_bias": (f,), "mlp_proj": (f, d), "mlp_proj_bias": (d,)}
        return shapes if self.bias else {k: v for k, v in shapes.items() if not k.endswith("_bias")}

    def init_layers(self, key: Array, shapes: dict[str, tuple[int, ...]], lead: tuple[int, ...] = ()) -> LayerParams:
        """GPT-2's init: LayerNorm 1/0, biases 0, weights N(0, 0.02²), residual projections N(0, (0.02/√(2L))²)
        (nanoGPT's c_proj, the same rule)."""
        keys = jax.random.split(key, len(shapes))
        out = {}
        for k, (name, shape) in zip(keys, shapes.items(), strict=True):
            if name.endswith("_scale"):
                out[name] = jnp.ones(lead + shape)
            elif name.endswith("bias"):
                out[name] = jnp.zeros(lead + shape)
            else:
                std = 0.02 / (2 * self.depth) ** 0.5 if name.endswith("proj") else 0.02
                out[name] = std * jax.random.normal(k, lead + shape)
        return out

    def layer_params(self) -> LayerParams:
        """Stacked (depth, ...) block params; learngene aux models compute them from their gene instead."""
        return self.param("layers", lambda key: self.init_layers(key, self.layer_shapes(), (self.depth,)))

    def layer(self, x: Array, p: LayerParams, padding: Array | None, rng: Array | None = None,
              cache: KVCache | None = None) -> tuple[Array, KVCache | None]:
        """One pre-norm block: attention then the GELU MLP, each added to the residual stream; `rng` (training
        with dropout): the attention probabilities, both branches and the LoRA adapters' inputs are dropped;
        `cache` (generation): this layer's KV cache, which attention reads and writes (returned; None without one)."""
        b, t, d = x.shape
        hd = d // self.num_heads
        p = jax.tree_util.tree_map(lambda a: a.astype(self.dtype), p)
        bias = p.get if self.bias else (lambda _name: None)
        keys = (None,) * 3 if rng is None else tuple(jax.random.split(rng, 3))
        lora_key = None if rng is None else jax.random.fold_in(rng, 3)
        _, attn_rate, resid_rate = self.drop_rates

        def proj(z: Array, name: str) -> Array:
            return _add(project(z, p, name, self.lora_scale, self.lora_dropout, lora_key), bias(f"{name}_bias"))

        y = layer_norm(x, p["ln_1_scale"], bias("ln_1_bias"), self.eps)
        q, k, v = jnp.split(proj(y, "c_attn"), 3, axis=-1)
        q, k, v = (z.reshape(b, t, self.num_heads, hd) for z in (q, k, v))
        if cache is None:
            attended = causal_attention(q, k, v, padding, self.attention_impl, attn_rate, keys[0]).reshape(b, t, d)
        else:
            attended, cache = attend(cache, q, k, v, self.attention_impl)
            attended = attended.reshape(b, t, d)
        x = x + dropout(proj(attended, "attn_proj"), resid_rate, keys[1])
        y = layer_norm(x, p["ln_2_scale"], bias("ln_2_bias"), self.eps)
        hidden = jax.nn.gelu(proj(y, "c_fc"), approximate=self.gelu_approximate)
        return x + dropout(proj(hidden, "mlp_proj"), resid_rate, keys[2]), cache

    @nn.compact
    def __call__(self, tokens: Array, padding: Array | None = None, positions: Array | None = None,
                 train: bool = False, cache: KVCache | None = None, hidden: bool = False
                 ) -> Array | tuple[Array, KVCache]:
        """Logits (batch, tokens, vocab); with a KV `cache` (models/generation.py): (logits, the updated cache);
        `hidden`: the final hidden states (batch, tokens, width) instead of logits (`output_head` turns them into
        logits, e.g. a chunk at a time: objectives/language.py)."""
        wte = self.param("wte", normal_02, (self.vocab_size, self.width))
        wpe = self.param("wpe", lambda k, s: self.position_std * jax.random.normal(k, s),
                         (self.max_positions, self.width))
        layers = self.layer_params()
        ln_f = self.param("ln_f", lambda k: {"scale": jnp.ones(self.width), "bias": jnp.zeros(self.width)}
                          if self.bias else {"scale": jnp.ones(self.width)})
        if positions is None:
            positions = (jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape) if cache is None
                         else cache_positions(cache, padding, tokens.shape[1]))
        x = jnp.take(jnp.asarray(wte), tokens, axis=0) + jnp.take(jnp.asarray(wpe), positions, axis=0)
        x = x.astype(self.dtype)
        keys = None  # per-layer dropout keys, scanned with the layers (make_rng cannot run inside the scan)
        if train and (any(self.drop_rates) or self.lora_dropout):
            embed_key, layers_key = jax.random.split(self.make_rng("dropout"))
            x = dropout(x, self.drop_rates[0], embed_key)
            keys = jax.random.split(layers_key, self.depth)
        def layer(x, pk, layer_cache):
            return self.layer(x, pk[0], padding, pk[1], layer_cache)

        x, cache = scan_layers(layer if cache is not None else rematted(layer, self.remat), x, (layers, keys), cache,
                               padding, self.scan_unroll)
        x = layer_norm(x, ln_f["scale"], ln_f.get("bias"), self.eps)
        if hidden:
            return x if cache is None else (x, cache)
        logits = (x @ wte.T.astype(self.dtype)).astype(jnp.float32)
        return logits if cache is None else (logits, cache)


def _add(x: Array, bias: Array | None) -> Array:
    return x if bias is None else x + bias


def output_head(model: Llama | GPT2, params: dict[str, Any]) -> Array:
    """The (width, vocab) matrix that turns `model`'s final hidden states into its logits: GPT-2's and a tied Llama's
    token embedding, transposed, else the Llama's lm_head."""
    if isinstance(model, GPT2):
        return params["wte"].T
    return params["embed"].T if model.tie_embeddings else params["lm_head"]


def abstract_lm_params(model: Llama | GPT2) -> dict[str, Any]:
    """The LM's param tree as `jax.ShapeDtypeStruct`s (nothing is allocated)."""
    tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    return jax.eval_shape(lambda t: model.init(jax.random.key(0), t), tokens)["params"]


def check_tokens(tokens: Any, vocab_size: int) -> np.ndarray:
    """Token ids (batch, tokens) as int32, checked: whole numbers in 0..vocab_size−1 (an embedding lookup in JAX
    would clamp any other id silently). ValueError otherwise."""
    array = np.asarray(tokens)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"expected int32 token ids of shape (batch, tokens), got {array.dtype} {array.shape}")
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        raise ValueError(f"token ids must lie in 0..{vocab_size - 1} (the model's vocabulary), got "
                         f"{array.min()}..{array.max()}")
    return array.astype(np.int32)


def context_limit(model: Any) -> tuple[int, str] | None:
    """(the most tokens per sequence `model` computes as intended, what sets that limit) for a Llama / GPT-2 or a
    model built on one; None for any other model. GPT-2's learned table has n_positions rows and a lookup past it
    reads NaN (jnp.take fills), which training would only report later as a diverged loss; a Llama was trained on
    max_position_embeddings positions (its config's limit; Llama 3.1's llama3 scaling is already counted in it), a
    dynamic-RoPE Llama is meant to reach factor × that; a sliding window narrower than the context is not implemented
    (up to the window, sliding-window attention is plain causal attention: exact)."""
    if isinstance(model, GPT2):
        return model.max_positions, f"GPT-2's learned position table (n_positions={model.max_positions})"
    if not isinstance(model, Llama):
        return None
    limit, why = model.max_positions, f"the Llama's max_position_embeddings={model.max_positions}"
    if model.rope_type == "dynamic":
        limit = int(model.max_positions * model.rope_factor)
        why = (f"the reach of the Llama's dynamic RoPE (factor {model.rope_factor} × max_position_embeddings "
               f"{model.max_positions})")
    if 0 < model.sliding_window < limit:
        limit = model.sliding_window
        why = (f"the {model.model_type} model's sliding_window={limit} (attention over a window narrower than the "
               f"context is not implemented; up to the window it is exact)")
    return limit, why


def check_context(model: Any, length: int) -> None:
    """ValueError when `length` tokens per sequence exceed `context_limit(model)` (any other model passes)."""
    found = context_limit(model)
    if found is not None and length > found[0]:
        raise ValueError(f"{length} tokens per sequence exceed {found[1]}")

