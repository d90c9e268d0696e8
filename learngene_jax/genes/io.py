"""Genes on disk: an Orbax directory with the gene params and its metadata, validated on load."""

from __future__ import annotations

from pathlib import Path

from learngene_jax import __version__, checkpointing
from learngene_jax.errors import GeneError, fail
from learngene_jax.genes import get_method, meta_from_json
from learngene_jax.genes.core import Gene, shape_mismatches


def save_gene(path: str | Path, gene: Gene, *, overwrite: bool = False) -> Path:
    """Write a gene directory (refuses to replace an existing one unless `overwrite`)."""
    meta = {"kind": "gene", "gene": gene.meta.to_json(), "learngene_jax": __version__}
    return checkpointing.save_artifact(path, gene.params, meta, overwrite=overwrite)


def load_gene(path: str | Path) -> Gene:
    """Read a gene directory, checking its metadata and every array's shape against the method."""
    stored = checkpointing.read_meta(path, "gene")
    if stored.get("kind") != "gene":
        fail(GeneError, f"{path} holds a {stored.get('kind', 'foreign')} checkpoint, not a gene; genes are written "
                        f"by the aux stage or `python -m learngene_jax.convert from-official`")
    meta = meta_from_json(stored.get("gene"))
    expected = get_method(meta.method).gene_shapes(meta)
    problems = shape_mismatches(expected, checkpointing.stored_shapes(path, "gene"))
    if problems:
        fail(GeneError, f"gene at {path} does not match its own metadata ({meta.method} gene): "
                        + "; ".join(problems[:8]) + ("; ..." if len(problems) > 8 else ""))
    return Gene(checkpointing.load_params(path, expected, "gene"), meta)
