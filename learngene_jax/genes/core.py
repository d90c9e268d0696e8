"""Genes as data: a param pytree plus metadata, and the parts of expansion every ViT method shares.

A gene is everything kept after stage 1; `expand` (per method) turns it into a plain-ViT descendant's
param tree. Nothing here does I/O; see `genes/io.py` for Orbax files.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from learngene_jax.errors import GeneError, fail
from learngene_jax.models.vit import SUBLAYERS, LayerParams, ViT, init_layers, layer_shapes, trunc_normal_02

FORMAT_VERSION = 1
LAYOUTS = ("official", "exact")


@dataclasses.dataclass(frozen=True)
class GeneMeta:
    """What a gene is: the method and the aux architecture it came from."""

    method: str
    width: int
    num_heads: int  # heads of the aux model
    depth: int  # aux depth
    patch_size: int
    image_size: int
    num_classes: int
    in_chans: int = 3
    mlp_dim: int = 0  # 0 means 4 * width
    eps: float = 1e-5
    pool: str = "avg"
    class_token: bool = False
    qkv_bias: bool = True
    descendant_num_heads: int = 0  # 0 means width // 64 (DeiT head size), or num_heads if that fails
    stage_sizes: tuple[int, ...] = ()  # SWS
    expanded: tuple[str, ...] = SUBLAYERS  # TLEG
    format_version: int = FORMAT_VERSION

    @property
    def hidden_dim(self) -> int:
        return self.mlp_dim or 4 * self.width

    @property
    def des_heads(self) -> int:
        """Heads of an `official` descendant: explicit, else DeiT's 64-dim heads."""
        if self.descendant_num_heads:
            return self.descendant_num_heads
        return self.width // 64 if self.width % 64 == 0 else self.num_heads

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GeneMeta:
        """Parse and validate stored metadata (unknown keys or a newer format are errors)."""
        return parse_meta(cls, data)

    def __str__(self) -> str:
        return json.dumps(self.to_json())


LM_ARCHS = ("llama", "gpt2")


@dataclasses.dataclass(frozen=True)
class LMGeneMeta:
    """What a language-model gene is: its method, the aux decoder's family (`arch`: llama | gpt2) and its
    architecture fields (`fields`: vocab_size, width, heads, ... as sorted (name, value) pairs, hashable so a Gene
    can be a jit argument), the aux depth, and the method's own settings."""

    method: str
    arch: str
    fields: tuple[tuple[str, Any], ...]
    depth: int
    expanded: tuple[str, ...] = ()  # TLEG: the layer params that are θ_B + c·θ_A (empty: all of them)
    stage_sizes: tuple[int, ...] = ()  # SWS
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (`fields` as an object)."""
        return {**dataclasses.asdict(self), "fields": dict(self.fields)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LMGeneMeta:
        """Parse and validate stored metadata (unknown keys, a newer format or an unknown arch are errors)."""
        return parse_lm_meta(cls, data)


def parse_lm_meta(cls: type, data: Any) -> Any:
    """`parse_meta` for language-model gene metadata: `fields` (a JSON object of the decoder's architecture) become
    sorted (name, value) pairs, and `arch` must be one of LM_ARCHS."""
    if not isinstance(data, Mapping) or not isinstance(data.get("fields"), Mapping):
        fail(GeneError, "language-model gene metadata needs a `fields` object (the decoder's architecture)")
    meta = parse_meta(cls, {**data, "fields": tuple(sorted(
        (k, tuple(v) if isinstance(v, list) else v) for k, v in data["fields"].items()))})
    if meta.arch not in LM_ARCHS:
        fail(GeneError, f"gene arch {meta.arch!r} is not one of {LM_ARCHS}")
    return meta

    def __str__(self) -> str:
        return json.dumps(self.to_json())


def parse_meta(cls: type, data: Any) -> Any:
    """Build the gene-metadata dataclass `cls` from stored JSON: unknown keys, a newer format or missing fields
    are errors; JSON lists become tuples."""
    if not isinstance(data, Mapping):
        fail(GeneError, f"gene metadata must be a JSON object, got {type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        fail(GeneError, f"gene metadata has unknown keys {unknown}; it was written by another tool or "
                        f"a newer learngene_jax")
    version = data.get("format_version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        fail(GeneError, f"gene format version {version} is newer than this learngene_jax supports "
                        f"({FORMAT_VERSION}); upgrade learngene_jax")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    except TypeError as e:
        fail(GeneError, f"gene metadata is incomplete: {e}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Gene:
    """A learngene: `params` (pytree of arrays) and `meta` (static; its method's metadata class)."""

    params: dict[str, Any]
    meta: Any = dataclasses.field(metadata=dict(static=True))


def aux_kwargs(meta: GeneMeta) -> dict[str, Any]:
    """ViT fields shared by every aux model built from `meta`."""
    return dict(num_classes=meta.num_classes, image_size=meta.image_size, patch_size=meta.patch_size,
                in_chans=meta.in_chans, width=meta.width, depth=meta.depth, num_heads=meta.num_heads,
                mlp_dim=meta.mlp_dim or None, class_token=meta.class_token, pool=meta.pool, eps=meta.eps,
                qkv_bias=meta.qkv_bias)


def meta_kwargs(model: ViT) -> dict[str, Any]:
    """GeneMeta fields read from an aux model."""
    return dict(width=model.width, num_heads=model.num_heads, depth=model.depth, patch_size=model.patch_size,
                image_size=model.image_size, num_classes=model.num_classes, in_chans=model.in_chans,
                mlp_dim=model.mlp_dim or 0, eps=model.eps, pool=model.pool, class_token=model.class_token,
                qkv_bias=model.qkv_bias)


def check_depth(depth: Any) -> int:
    """A descendant depth must be an integer >= 1."""
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
        fail(GeneError, f"descendant depth must be an integer >= 1, got {depth!r}")
    return int(depth)


def descendant(meta: GeneMeta, depth: int, *, layout: str = "official", num_classes: int | None = None,
               **overrides: Any) -> ViT:
    """The plain ViT a gene expands into.

    `official`: average tokens, then `fc_norm` with eps 1e-6, descendant heads (what the official
    pipeline trains). `exact`: norm over tokens, then average, with the aux eps and heads, so that a
    descendant at the aux depth computes exactly the aux model's function.
    """
    depth = check_depth(depth)
    if layout not in LAYOUTS:
        fail(GeneError, f"unknown descendant layout {layout!r}; use one of {LAYOUTS}")
    kw = aux_kwargs(meta)
    kw.update(depth=depth, num_classes=meta.num_classes if num_classes is None else num_classes)
    if layout == "official":
        kw.update(final_norm="fc_norm" if meta.pool == "avg" else "norm", eps=1e-6, num_heads=meta.des_heads)
    else:
        kw.update(final_norm="norm")
    kw.update(overrides)
    return ViT(**kw)


def assemble_descendant(gene: Gene, layers: LayerParams, model: ViT, rng: jax.Array | None) -> dict[str, Any]:
    """Descendant params: the expanded `layers`, the gene's patch embed, pos_embed (and cls token),
    final norm (as `norm` or `fc_norm`) and, when the class count matches, its head. Sub-layers missing
    from `layers` and a head for a new class count are freshly initialised from `rng`."""
    rng = jax.random.key(0) if rng is None else rng
    rng_layers, rng_head = jax.random.split(rng)
    p = gene.params
    missing = [s for s in SUBLAYERS if s not in layers]
    if missing:
        shapes = layer_shapes(model.width, model.hidden_dim, model.qkv_bias)
        layers = {**layers, **init_layers(rng_layers, {s: shapes[s] for s in missing}, (model.depth,))}
    out: dict[str, Any] = {"patch_embed": p["patch_embed"], "pos_embed": p["pos_embed"],
                           "blocks": {s: layers[s] for s in SUBLAYERS}, model.final_norm: p["norm"]}
    if model.class_token:
        out["cls_token"] = p["cls_token"]
    if model.num_classes:
        if model.num_classes == gene.meta.num_classes:
            out["head"] = p["head"]
        else:
            out["head"] = {"kernel": trunc_normal_02(rng_head, (model.width, model.num_classes), jnp.float32),
                           "bias": jnp.zeros((model.num_classes,), jnp.float32)}
    return out


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x) if isinstance(x, tuple | list) else tuple(np.shape(x) if not hasattr(x, "shape") else x.shape)


def shape_mismatches(expected: Mapping[str, Any], got: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every missing, extra and mis-shaped key between two nested dicts of arrays/shapes."""
    problems = []
    for key in sorted(set(expected) | set(got)):
        path = f"{prefix}{key}"
        if key not in got:
            problems.append(f"missing {path}")
        elif key not in expected:
            problems.append(f"extra {path}")
        elif isinstance(expected[key], Mapping) or isinstance(got[key], Mapping):
            if not (isinstance(expected[key], Mapping) and isinstance(got[key], Mapping)):
                problems.append(f"{path} has the wrong structure")
            else:
                problems.extend(shape_mismatches(expected[key], got[key], path + "/"))
        else:
            want, have = _shape(expected[key]), _shape(got[key])
            if want != have:
                problems.append(f"{path} has shape {have}, expected {want}")
    return problems
