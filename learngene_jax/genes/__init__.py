"""Learngene methods behind one registry: each method's gene module (`methods/<name>/gene.py`) exposes the same
small contract (`NAME`, `META` (its metadata class), `AUX_CLASS` (the aux model the trainer exports a gene from,
or None), `aux_model`, `meta_from_aux`, `gene_shapes`, `extract`, `expand`, `descendant_depth`) and is added
with `register_method` when its package is imported."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import jax

from learngene_jax.errors import GeneError, fail
from learngene_jax.genes.core import Gene, GeneMeta, descendant, shape_mismatches
from learngene_jax.models.llama import abstract_lm_params
from learngene_jax.models.vit import abstract_params

METHODS: dict[str, ModuleType] = {}


def register_method(module: ModuleType) -> ModuleType:
    """Add a gene module (the contract above) under its `NAME`."""
    METHODS[module.NAME] = module
    return module


def _load_methods() -> None:
    from learngene_jax import methods  # late: method packages import this module to register

    methods.load()


def get_method(name: str) -> ModuleType:
    """The method module registered under `name`."""
    _load_methods()
    if name not in METHODS:
        fail(GeneError, f"unknown learngene method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_of(model: Any) -> ModuleType | None:
    """The method whose aux model `model` is (None for a plain model)."""
    _load_methods()
    return next((m for m in METHODS.values() if m.AUX_CLASS is not None and isinstance(model, m.AUX_CLASS)), None)


def meta_from_json(data: Any) -> Any:
    """Stored gene metadata parsed by its method's metadata class (validated there)."""
    if not isinstance(data, dict):
        fail(GeneError, f"gene metadata must be a JSON object, got {type(data).__name__}")
    if "method" not in data:
        fail(GeneError, "gene metadata names no learngene method; it was not written by learngene_jax")
    return get_method(data["method"]).META.from_json(data)


def expand(gene: Gene, depth: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """Descendant param tree of `depth` layers from `gene` (see each method's `expand`)."""
    return get_method(gene.meta.method).expand(gene, depth, **kwargs)


def descendant_depth(gene: Gene, depth: int | None, layers_source: Any = None) -> int:
    """The depth a descendant will have (SWS may take it from layers_source)."""
    return get_method(gene.meta.method).descendant_depth(gene.meta, depth, layers_source)


def aux_model(meta: GeneMeta, **overrides: Any):
    """The aux model of a gene's method and architecture."""
    return get_method(meta.method).aux_model(meta, **overrides)


def aux_params(gene: Gene) -> dict[str, Any]:
    """Params to run the gene's own aux model (fails when the aux had per-layer params outside the gene)."""
    aux = aux_model(gene.meta)
    problems = shape_mismatches(abstract_lm_params(aux) if hasattr(aux, "vocab_size") else abstract_params(aux),
                                gene.params)
    if problems:
        fail(GeneError, "the aux model needs params that are not part of this gene (" + "; ".join(problems[:3])
             + "); expand it to a descendant with a depth instead")
    return gene.params


def descendant_model(gene: Gene, depth: int | None, *, layers_source: Any = None, layout: str = "official",
                     num_classes: int | None = None, **overrides: Any):
    """The plain model (ViT, or Llama / GPT-2 for language-model genes) that `expand` fills for these arguments."""
    method = get_method(gene.meta.method)
    depth = descendant_depth(gene, depth, layers_source)
    if hasattr(method, "descendant_model"):  # language-model genes: no layouts or class heads
        return method.descendant_model(gene.meta, depth, **overrides)
    return descendant(gene.meta, depth, layout=layout, num_classes=num_classes, **overrides)


def extract_gene(aux_params: dict[str, Any], meta: GeneMeta) -> Gene:
    """Take the gene out of trained aux params."""
    return get_method(meta.method).extract(jax.device_get(aux_params), meta)


__all__ = ["METHODS", "Gene", "GeneMeta", "aux_model", "aux_params", "descendant_model", "expand", "extract_gene",
           "get_method", "method_of", "register_method"]
