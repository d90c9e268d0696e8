"""SWS (Stage-wise Weight Sharing, IJCAI 2024): the aux model's layers are grouped into stages that share
one block each; a descendant copies a stage's block into each of its layers (`layers_source`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

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
from learngene_jax.methods.sws.aux_net import SWSAux, sws_layers
from learngene_jax.models.vit import abstract_params

NAME = "sws"
META = GeneMeta
AUX_CLASS = SWSAux

# Layer lists that the official SWS code publishes for a (stage sizes, depth); they win over the rule.
OFFICIAL_LAYERS_SOURCE = {((3, 3, 4, 3, 3), 12): (0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4)}


def aux_model(meta: GeneMeta, **overrides: Any) -> SWSAux:
    """The aux model whose params hold this gene."""
    return SWSAux(**{**aux_kwargs(meta), "stage_sizes": tuple(meta.stage_sizes), **overrides})


def meta_from_aux(model: SWSAux) -> GeneMeta:
    """Gene metadata of an SWS aux model."""
    return GeneMeta(method=NAME, stage_sizes=tuple(model.stage_sizes), **meta_kwargs(model))


def gene_shapes(meta: GeneMeta) -> dict[str, Any]:
    """Shapes of the gene params (all of the aux params)."""
    return abstract_params(aux_model(meta))


def extract(aux_params: dict[str, Any], meta: GeneMeta) -> Gene:
    """The gene of a trained SWS aux: all of its params (one block per stage plus the shared parts)."""
    problems = shape_mismatches(gene_shapes(meta), aux_params)
    if problems:
        fail(GeneError, f"aux params do not fit the SWS gene of stages {meta.stage_sizes}: " + "; ".join(problems))
    return Gene(dict(aux_params), meta)


def default_layers_source(stage_sizes: Sequence[int], depth: int) -> tuple[int, ...]:
    """Stage id per descendant layer, in stage order, grown one layer at a time from depth 1, so that:
    the last stage (whose output the copied `fc_norm` and head were trained on) is always present; no stage
    loses layers when the depth grows; the official list is kept where the SWS code publishes one (3,3,4,3,3 →
    12 layers: 0,0,0,1,1,1,2,2,3,3,4,4 — not proportional: the 4-layer stage gets two) and the aux depth
    reproduces the aux layout.

    Depth 1 is the last stage. Each next layer goes to a stage that has none yet (earliest first), else to the
    stage furthest below its share of the next anchor (the official list, then the aux layout: anchor counts ·
    d / anchor depth, never above the anchor's count; past the aux depth, stage sizes · d / L); ties go to the
    earlier stage.
    """
    depth = check_depth(depth)
    sizes = np.asarray([int(s) for s in stage_sizes], np.int64)
    aux_depth = int(sizes.sum())
    anchors = [(len(source), np.bincount(source, minlength=len(sizes)))
               for (stages, _), source in OFFICIAL_LAYERS_SOURCE.items() if stages == tuple(sizes)]
    anchors = sorted(a for a in anchors if a[0] < aux_depth) + [(aux_depth, sizes)]
    counts = np.zeros(len(sizes), np.int64)
    counts[-1] = 1
    for d in range(2, depth + 1):
        anchor_depth, anchor = next(((n, a) for n, a in anchors if n >= d), (d, None))
        if anchor is None:  # deeper than the aux: proportional to the stage sizes
            deficit = sizes * d / aux_depth - counts
        else:
            deficit = np.where(counts < anchor, anchor * d / anchor_depth - counts, -np.inf)
        deficit = np.where((counts == 0) & np.isfinite(deficit), np.inf, deficit)  # every stage before any doubles
        counts[int(np.argmax(deficit))] += 1  # argmax takes the first (earliest) stage on a tie
    return tuple(s for s, n in enumerate(counts) for _ in range(int(n)))


def resolve_layers_source(meta: GeneMeta, depth: int | None, layers_source: Any) -> tuple[int, ...]:
    """Validate a user's layers_source (list or 'a,b,c' string) against the gene, or apply the default."""
    num_stages = len(meta.stage_sizes)
    if layers_source is None:
        if depth is None:
            fail(GeneError, "give a descendant depth or a layers_source")
        return default_layers_source(meta.stage_sizes, depth)
    if isinstance(layers_source, str):
        try:
            layers_source = [int(s) for s in layers_source.split(",") if s.strip()]
        except ValueError:
            fail(GeneError, f"layers_source must be comma-separated stage ids, got {layers_source!r}")
    source = tuple(int(s) for s in layers_source)
    bad = sorted({s for s in source if not 0 <= s < num_stages})
    if bad:
        fail(GeneError, f"layers_source names unknown stages {bad}; this gene has stages 0..{num_stages - 1}")
    if depth is not None and check_depth(depth) != len(source):
        fail(GeneError, f"layers_source has {len(source)} entries but depth is {depth}")
    check_depth(len(source))
    return source


def descendant_depth(meta: GeneMeta, depth: Any, layers_source: Any = None) -> int:
    """Depth of the descendant: given, or the length of layers_source."""
    return len(resolve_layers_source(meta, depth, layers_source))


def expand(gene: Gene, depth: int | None = None, *, layers_source: Any = None, layout: str = "official",
           num_classes: int | None = None, rng: jax.Array | None = None) -> dict[str, Any]:
    """Descendant params whose layer i copies stage layers_source[i] (default: `default_layers_source`)."""
    source = resolve_layers_source(gene.meta, depth, layers_source)
    model = descendant(gene.meta, len(source), layout=layout, num_classes=num_classes)
    return assemble_descendant(gene, _expand_layers(gene.params["blocks"], source), model, rng)


_expand_layers = jax.jit(sws_layers, static_argnums=1)
