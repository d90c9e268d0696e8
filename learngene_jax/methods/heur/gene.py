"""Heur Learngene (AAAI 2022): the gene is a run of consecutive Conv-BN-ReLU blocks (official: the last 3) of the
VGG ancestor trained task after task, BatchNorm running statistics included; a descendant stacks it onto a
random lower stack and an MLP head. Auto Learngene picks the blocks instead (`methods/heur/auto.py`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from learngene_jax.errors import GeneError, fail
from learngene_jax.genes.core import FORMAT_VERSION, Gene, parse_meta, shape_mismatches
from learngene_jax.models.vgg import VGGAncestor, VGGDescendant, init_variables

NAME = "heur"
# The trainer exports no Heur gene by itself (it sees only params, and the block choice is the pipeline's):
# `learngene_jax.methods.heur.run` cuts it out of the final ancestor.
AUX_CLASS = None
OFFICIAL_GENE_BLOCKS = 3  # official `get_layers_19_20`: the last 3 Conv-BN-ReLU blocks


@dataclasses.dataclass(frozen=True)
class HeurGeneMeta:
    """What a Heur/Auto gene is: which ancestor blocks, their widths, and the ancestor it came from."""

    method: str
    blocks: tuple[int, ...]  # consecutive ancestor block indices
    ancestor_widths: tuple[int, ...]  # the final ancestor's widths
    ancestor_pool_after: tuple[int, ...]
    image_size: int
    in_chans: int = 3
    selection: str = "heur"  # 'heur' (the last blocks) or 'auto:<statistic>'
    format_version: int = FORMAT_VERSION

    @property
    def widths(self) -> tuple[int, ...]:
        """Output channels of each gene block."""
        return tuple(self.ancestor_widths[b] for b in self.blocks)

    @property
    def in_width(self) -> int:
        """Channels that enter the first gene block."""
        return self.ancestor_widths[self.blocks[0] - 1] if self.blocks[0] else self.in_chans

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HeurGeneMeta:
        """Parse and validate stored metadata."""
        meta = parse_meta(cls, data)
        check_blocks(meta.blocks, len(meta.ancestor_widths))
        return meta

    def __str__(self) -> str:
        return json.dumps(self.to_json())


META = HeurGeneMeta


def check_blocks(blocks: Sequence[int], num_blocks: int) -> tuple[int, ...]:
    """Gene blocks must be a non-empty run of consecutive ancestor blocks (a descendant stacks them)."""
    blocks = tuple(int(b) for b in blocks)
    if not blocks or blocks[0] < 0 or blocks[-1] >= num_blocks or blocks != tuple(range(blocks[0], blocks[-1] + 1)):
        fail(GeneError, f"gene blocks {blocks} must be consecutive block indices of the {num_blocks}-block ancestor")
    return blocks


def last_blocks(num_blocks: int, n: int = OFFICIAL_GENE_BLOCKS) -> tuple[int, ...]:
    """The hand-picked Heur choice: the last `n` blocks."""
    if not 1 <= n <= num_blocks:
        fail(GeneError, f"cannot take the last {n} blocks of a {num_blocks}-block ancestor")
    return tuple(range(num_blocks - n, num_blocks))


def meta_from_aux(model: VGGAncestor, blocks: Sequence[int] | None = None, selection: str = "heur") -> HeurGeneMeta:
    """Gene metadata for `blocks` (default: the official last 3) of a trained ancestor."""
    blocks = check_blocks(last_blocks(len(model.widths)) if blocks is None else blocks, len(model.widths))
    return HeurGeneMeta(method=NAME, blocks=blocks, ancestor_widths=tuple(model.widths),
                        ancestor_pool_after=tuple(model.pool_after), image_size=model.image_size,
                        in_chans=model.in_chans, selection=selection)


def aux_model(meta: HeurGeneMeta, **overrides: Any) -> VGGAncestor:
    """The final ancestor's architecture (its classifier sizes are not part of the gene)."""
    return VGGAncestor(**{"image_size": meta.image_size, "in_chans": meta.in_chans,
                          "widths": tuple(meta.ancestor_widths), "pool_after": tuple(meta.ancestor_pool_after),
                          **overrides})


def gene_shapes(meta: HeurGeneMeta) -> dict[str, Any]:
    """{'params': {gene{j}: conv kernel/bias, bn scale/bias}, 'batch_stats': {gene{j}: bn mean/var}}."""
    def shape(*dims):
        return jax.ShapeDtypeStruct(dims, jnp.float32)

    params, stats = {}, {}
    c_in = meta.in_width
    for j, width in enumerate(meta.widths):
        params[f"gene{j}"] = {"conv": {"kernel": shape(3, 3, c_in, width), "bias": shape(width)},
                              "bn": {"scale": shape(width), "bias": shape(width)}}
        stats[f"gene{j}"] = {"bn": {"mean": shape(width), "var": shape(width)}}
        c_in = width
    return {"params": params, "batch_stats": stats}


def extract(ancestor_variables: dict[str, Any], meta: HeurGeneMeta) -> Gene:
    """The gene inside a trained ancestor's variables: blocks `meta.blocks` renamed gene0.., with their BN stats."""
    variables = jax.device_get(ancestor_variables)
    try:
        tree = {coll: {f"gene{j}": variables[coll][f"block{b}"] for j, b in enumerate(meta.blocks)}
                for coll in ("params", "batch_stats")}
    except KeyError as e:
        fail(GeneError, f"the ancestor variables have no {e.args[0]}: pass params and batch_stats of a VGG ancestor")
    problems = shape_mismatches(gene_shapes(meta), tree)
    if problems:
        fail(GeneError, f"ancestor blocks {meta.blocks} do not fit the gene metadata: " + "; ".join(problems[:5]))
    return Gene(jax.tree_util.tree_map(np.asarray, tree), meta)


def descendant_model(meta: HeurGeneMeta, *, num_classes: int, lower_widths: Sequence[int] = (64, 128, 256, 512),
                     lower_pool_after: Sequence[int] = (0, 1, 2), **fields: Any) -> VGGDescendant:
    """The descendant of this gene. Its last lower block feeds the gene, so its width is the gene's input width
    (official: 512 for the last 3 blocks); a gene that starts at block 0 takes the images itself (no lower stack)."""
    lower = () if meta.blocks[0] == 0 else (*tuple(lower_widths)[:-1], meta.in_width)
    pools = tuple(p for p in lower_pool_after if p < len(lower))
    return VGGDescendant(num_classes=num_classes, image_size=meta.image_size, in_chans=meta.in_chans,
                         lower_widths=lower, lower_pool_after=pools, gene_widths=meta.widths, **fields)


def expand(gene: Gene, descendant: VGGDescendant, *, rng: jax.Array) -> dict[str, Any]:
    """Descendant variables: `descendant.init(rng)` with every gene block (params and BN statistics) replaced by
    the gene's. A Heur gene is inherited as is: the descendant is given as a model, not a depth."""
    if tuple(descendant.gene_widths) != gene.meta.widths:
        fail(GeneError, f"the descendant's gene_widths {tuple(descendant.gene_widths)} differ from the gene's "
                        f"{gene.meta.widths}; build it with heur.descendant_model")
    variables = jax.tree_util.tree_map(np.asarray, init_variables(descendant, rng))
    problems = shape_mismatches({c: {k: variables[c][k] for k in gene.params[c]} for c in gene.params}, gene.params)
    if problems:
        fail(GeneError, "the gene does not fit the descendant: " + "; ".join(problems[:5]))
    for coll, blocks in gene.params.items():
        variables[coll] = {**variables[coll], **blocks}
    return variables


def descendant_depth(meta: HeurGeneMeta, depth: Any, layers_source: Any = None) -> int:
    """Heur genes are not expanded to a depth: they are inherited by the Heur pipeline."""
    del meta, depth, layers_source
    fail(GeneError, "a heur gene is not expanded by depth into a ViT; its descendants are trained by "
                    "`--config=configs/heur_vgg.py` (config.task='heur'), see learngene_jax/methods/heur/run.py")


__all__ = ["META", "NAME", "HeurGeneMeta", "aux_model", "check_blocks", "descendant_depth", "descendant_model",
           "expand", "extract", "gene_shapes", "last_blocks", "meta_from_aux"]
