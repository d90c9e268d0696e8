"""TLEG for decoder language models: layer i of a depth-L Llama or GPT-2 is θ_B + (i/L)·θ_A for every expanded layer
param (default: all of them, norms included; θ_A's norm scales and biases start at 0), the embeddings, final norm
and head are shared. The gene is all of that except non-expanded per-layer params; a descendant of any depth is a
plain Llama / GPT-2 (`convert to-hf` exports it)."""

from __future__ import annotations

from typing import Any

import jax

from learngene_jax.errors import GeneError, fail
from learngene_jax.genes.core import Gene, LMGeneMeta, check_depth, shape_mismatches
from learngene_jax.genes.lm import arch_of, assemble, lm_fields, plain_decoder
from learngene_jax.methods.tleg.aux_net import tleg_layers
from learngene_jax.models.llama import GPT2, LayerParams, Llama, abstract_lm_params

NAME = "tleg_lm"
META = LMGeneMeta
SECTION = "tleg"  # the aux param holding {'theta_a', 'theta_b'[, 'layers']}


class TLEGDecoder:
    """Mixin over Llama / GPT-2: the stacked layer params come from one (θ_A, θ_B) pair per expanded param."""

    def layer_params(self) -> LayerParams:
        shapes = self.layer_shapes()
        expanded = tuple(self.expanded) or tuple(shapes)
        unknown = set(expanded) - set(shapes)
        if unknown:
            raise ValueError(f"expanded names unknown layer params {sorted(unknown)}; known: {sorted(shapes)}")

        def init(key):
            kb, ka, kl = jax.random.split(key, 3)
            gene = {k: shapes[k] for k in expanded}
            theta_a = self.init_layers(ka, gene)
            # norm scales and biases of θ_A start at 0, so every layer starts with θ_B's (as TLEG's ViT Aux-Net)
            theta_a = {k: v * 0 if k.endswith(("norm", "scale", "bias")) else v for k, v in theta_a.items()}
            blocks = {"theta_b": self.init_layers(kb, gene), "theta_a": theta_a}
            rest = {k: v for k, v in shapes.items() if k not in expanded}
            if rest:
                blocks["layers"] = self.init_layers(kl, rest, (self.depth,))
            return blocks

        layers = tleg_layers(self.param(SECTION, init), self.depth)
        return {k: layers[k] for k in shapes}


class TLEGLlama(TLEGDecoder, Llama):
    """TLEG Aux-Net over Llama."""

    expanded: tuple[str, ...] = ()


class TLEGGPT2(TLEGDecoder, GPT2):
    """TLEG Aux-Net over GPT-2."""

    expanded: tuple[str, ...] = ()


AUX_CLASS = (TLEGLlama, TLEGGPT2)
AUX = {"llama": TLEGLlama, "gpt2": TLEGGPT2}


def aux_model(meta: LMGeneMeta, **overrides: Any) -> TLEGLlama | TLEGGPT2:
    """The aux decoder whose params hold this gene."""
    return AUX[meta.arch](**{**dict(meta.fields), "depth": meta.depth, "expanded": meta.expanded, **overrides})


def meta_from_aux(model: TLEGLlama | TLEGGPT2) -> LMGeneMeta:
    """Gene metadata of a TLEG aux decoder."""
    return LMGeneMeta(method=NAME, arch=arch_of(model), fields=lm_fields(model), depth=model.depth,
                      expanded=tuple(model.expanded))


def gene_shapes(meta: LMGeneMeta) -> dict[str, Any]:
    """Shapes of the gene params: the aux params without per-layer (non-expanded) params."""
    params = abstract_lm_params(aux_model(meta))
    params[SECTION].pop("layers", None)
    return params


def extract(aux_params: dict[str, Any], meta: LMGeneMeta) -> Gene:
    """The gene inside trained aux params (drops per-layer params that are not linear expansions)."""
    params = dict(aux_params)
    params[SECTION] = {k: v for k, v in aux_params[SECTION].items() if k != "layers"}
    problems = shape_mismatches(gene_shapes(meta), params)
    if problems:
        fail(GeneError, "aux params do not fit the TLEG LM gene: " + "; ".join(problems[:5]))
    return Gene(params, meta)


def descendant_depth(meta: LMGeneMeta, depth: Any, layers_source: Any = None) -> int:
    """TLEG descendants are defined by their depth alone."""
    if layers_source is not None:
        fail(GeneError, "TLEG expansion takes no layers_source (that is SWS's); drop it")
    return check_depth(depth)


def descendant_model(meta: LMGeneMeta, depth: int, **overrides: Any) -> Llama | GPT2:
    """The plain decoder `expand` fills."""
    return plain_decoder(meta, depth, **overrides)


def expand(gene: Gene, depth: int, *, layers_source: Any = None, rng: jax.Array | None = None,
           **unused: Any) -> dict[str, Any]:
    """Plain-decoder params of `depth` layers: layer i = θ_B + (i/depth)·θ_A; non-expanded params fresh."""
    depth = descendant_depth(gene.meta, depth, layers_source)
    layers = _expand_layers(gene.params[SECTION], depth)
    return assemble(gene.params, SECTION, layers, plain_decoder(gene.meta, depth), rng)


_expand_layers = jax.jit(tleg_layers, static_argnums=1)
