"""SWS for decoder language models: the aux Llama / GPT-2 has `stage_sizes` stages with one shared layer each; a
descendant of any depth copies stage `layers_source[i]` into its layer i (default rule as for ViTs, see gene.py);
embeddings, final norm and head are shared. The descendant is a plain Llama / GPT-2."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from learngene_jax.errors import GeneError, fail
from learngene_jax.genes.core import Gene, LMGeneMeta, shape_mismatches
from learngene_jax.genes.lm import arch_of, assemble, lm_fields, plain_decoder
from learngene_jax.methods.sws.aux_net import stage_map, sws_layers
from learngene_jax.methods.sws.gene import resolve_layers_source
from learngene_jax.models.llama import GPT2, LayerParams, Llama, abstract_lm_params

NAME = "sws_lm"
META = LMGeneMeta
SECTION = "sws"  # the aux param holding {'stages': stacked (num_stages, ...) layer params}


class SWSDecoder:
    """Mixin over Llama / GPT-2: one shared layer per stage, repeated `stage_sizes[s]` times."""

    def layer_params(self) -> LayerParams:
        sizes: Sequence[int] = self.stage_sizes
        if sum(sizes) != self.depth or min(sizes) < 1:
            raise ValueError(f"stage_sizes {tuple(sizes)} must be positive and sum to depth {self.depth}")
        init = lambda key: {"stages": self.init_layers(key, self.layer_shapes(), (len(sizes),))}  # noqa: E731
        return sws_layers(self.param(SECTION, init), stage_map(sizes))


class SWSLlama(SWSDecoder, Llama):
    """SWS Aux-Net over Llama."""

    stage_sizes: tuple[int, ...] = (1,)


class SWSGPT2(SWSDecoder, GPT2):
    """SWS Aux-Net over GPT-2."""

    stage_sizes: tuple[int, ...] = (1,)


AUX_CLASS = (SWSLlama, SWSGPT2)
AUX = {"llama": SWSLlama, "gpt2": SWSGPT2}


def aux_model(meta: LMGeneMeta, **overrides: Any) -> SWSLlama | SWSGPT2:
    """The aux decoder whose params are this gene."""
    return AUX[meta.arch](**{**dict(meta.fields), "depth": meta.depth, "stage_sizes": meta.stage_sizes, **overrides})


def meta_from_aux(model: SWSLlama | SWSGPT2) -> LMGeneMeta:
    """Gene metadata of an SWS aux decoder."""
    return LMGeneMeta(method=NAME, arch=arch_of(model), fields=lm_fields(model), depth=model.depth,
                      stage_sizes=tuple(model.stage_sizes))


def gene_shapes(meta: LMGeneMeta) -> dict[str, Any]:
    """Shapes of the gene params: all of the aux params."""
    return abstract_lm_params(aux_model(meta))


def extract(aux_params: dict[str, Any], meta: LMGeneMeta) -> Gene:
    """The gene is the whole trained aux."""
    problems = shape_mismatches(gene_shapes(meta), aux_params)
    if problems:
        fail(GeneError, "aux params do not fit the SWS LM gene: " + "; ".join(problems[:5]))
    return Gene(dict(aux_params), meta)


def descendant_depth(meta: LMGeneMeta, depth: Any, layers_source: Any = None) -> int:
    """Depth of the descendant: given, or the length of layers_source."""
    return len(resolve_layers_source(meta, depth, layers_source))


def descendant_model(meta: LMGeneMeta, depth: int, **overrides: Any) -> Llama | GPT2:
    """The plain decoder `expand` fills."""
    return plain_decoder(meta, depth, **overrides)


def expand(gene: Gene, depth: int | None = None, *, layers_source: Any = None, rng: jax.Array | None = None,
           **unused: Any) -> dict[str, Any]:
    """Plain-decoder params whose layer i copies stage layers_source[i] (default: the SWS rule)."""
    source = resolve_layers_source(gene.meta, depth, layers_source)
    layers = _expand_layers(gene.params[SECTION], source)
    return assemble(gene.params, SECTION, layers, plain_decoder(gene.meta, len(source)), rng)


_expand_layers = jax.jit(sws_layers, static_argnums=1)
