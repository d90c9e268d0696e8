"""TLEG (Transformer as Linear Expansion of learnGene, AAAI 2024): layer i of a depth-L model is
θ_B + (i/L)·θ_A, so one pair (θ_A, θ_B) initialises descendants of any depth."""

from __future__ import annotations

from typing import Any

import jax

from learngene_jax.errors import GeneError, fail
from learngene_jax.genes.core import (
    Gene,
    GeneMeta,
    assemble_descendant,
    aux_kwargs,
    check_depth,
    descendant,
    meta_kwargs,
    shape_mismatches,
)
from learngene_jax.methods.tleg.aux_net import TLEGAux, tleg_layers
from learngene_jax.models.vit import abstract_params

NAME = "tleg"
META = GeneMeta
AUX_CLASS = TLEGAux


def aux_model(meta: GeneMeta, **overrides: Any) -> TLEGAux:
    """The aux model whose params hold this gene."""
    return TLEGAux(**{**aux_kwargs(meta), "expanded": tuple(meta.expanded), **overrides})


def meta_from_aux(model: TLEGAux) -> GeneMeta:
    """Gene metadata of a TLEG aux model."""
    return GeneMeta(method=NAME, expanded=tuple(model.expanded), **meta_kwargs(model))


def gene_shapes(meta: GeneMeta) -> dict[str, Any]:
    """Shapes of the gene params: the aux params without per-layer (non-expanded) sub-layers."""
    params = abstract_params(aux_model(meta))
    params["blocks"].pop("layers", None)
    return params


def extract(aux_params: dict[str, Any], meta: GeneMeta) -> Gene:
    """The gene inside trained aux params (drops sub-layers that are not linear expansions)."""
    params = {k: v for k, v in aux_params.items()}
    params["blocks"] = {k: v for k, v in aux_params["blocks"].items() if k != "layers"}
    problems = shape_mismatches(gene_shapes(meta), params)
    if problems:
        fail(GeneError, f"aux params do not fit the TLEG gene {meta.method} width {meta.width}: "
                        + "; ".join(problems))
    return Gene(params, meta)


def expand(gene: Gene, depth: int, *, layers_source: Any = None, layout: str = "official",
           num_classes: int | None = None, rng: jax.Array | None = None) -> dict[str, Any]:
    """Descendant params of `depth` layers: block i = θ_B + (i/depth)·θ_A (official `gene_tranfer`:
    the coefficient uses the descendant's depth). Non-expanded sub-layers are freshly initialised."""
    depth = descendant_depth(gene.meta, depth, layers_source)
    model = descendant(gene.meta, depth, layout=layout, num_classes=num_classes)
    layers = _expand_layers(gene.params["blocks"], depth)
    return assemble_descendant(gene, layers, model, rng)


def descendant_depth(meta: GeneMeta, depth: Any, layers_source: Any = None) -> int:
    """TLEG descendants are defined by their depth alone."""
    if layers_source is not None:
        fail(GeneError, "TLEG expansion takes no layers_source (that is SWS's); drop --layers-source")
    return check_depth(depth)


_expand_layers = jax.jit(tleg_layers, static_argnums=1)


__all__ = ["META", "NAME", "aux_model", "descendant_depth", "expand", "extract", "gene_shapes", "meta_from_aux"]
