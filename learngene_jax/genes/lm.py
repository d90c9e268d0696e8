"""What every language-model gene method shares: the plain decoder a gene expands into, the architecture fields it
records, and the expanded parts copied from the gene (embeddings, final norm, head) — the LM counterpart of
`core.assemble_descendant`."""

from __future__ import annotations

from typing import Any

import jax

from learngene_jax.errors import GeneError, fail
from learngene_jax.genes.core import LMGeneMeta, check_depth
from learngene_jax.models.llama import GPT2, Llama

PLAIN = {"llama": Llama, "gpt2": GPT2}
NOT_ARCHITECTURE = {"parent", "name", "depth", "dtype", "attention_impl", "scan_unroll", "remat", "expanded",
                    "stage_sizes", "lora_scale", "lora_dropout"}


def arch_of(model: Any) -> str:
    """'llama' or 'gpt2' for a (possibly aux) decoder."""
    for arch, cls in PLAIN.items():
        if isinstance(model, cls):
            return arch
    fail(GeneError, f"{type(model).__name__} is not a Llama or GPT-2 decoder")


def lm_fields(model: Any) -> tuple[tuple[str, Any], ...]:
    """The architecture fields of a decoder except its depth (sorted (name, value) pairs)."""
    return tuple(sorted((f, getattr(model, f)) for f in model.__dataclass_fields__ if f not in NOT_ARCHITECTURE))


def plain_decoder(meta: LMGeneMeta, depth: int, **overrides: Any) -> Llama | GPT2:
    """The plain Llama / GPT-2 of `depth` layers that a gene with `meta` expands into."""
    return PLAIN[meta.arch](**{**dict(meta.fields), **overrides}, depth=check_depth(depth))


def assemble(gene_params: dict[str, Any], section: str, layers: dict[str, Any], model: Llama | GPT2,
             rng: jax.Array | None) -> dict[str, Any]:
    """Descendant params: the gene's top-level params (embeddings, final norm, head) and `layers` (stacked); layer
    params the gene does not hold (e.g. TLEG sub-layers that were not expanded) are freshly initialised."""
    shapes = model.layer_shapes()
    missing = {k: v for k, v in shapes.items() if k not in layers}
    if missing:
        key = jax.random.key(0) if rng is None else rng
        layers = {**layers, **model.init_layers(key, missing, (model.depth,))}
    out = {k: v for k, v in gene_params.items() if k != section}
    out["layers"] = {k: layers[k] for k in shapes}
    return out
