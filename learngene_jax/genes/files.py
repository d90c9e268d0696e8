"""Genes as one .safetensors file: the arrays under '/'-joined param paths, the gene metadata as JSON in the header,
so that PyTorch (`safetensors.torch.load_file`) and the Hugging Face Hub read a gene without learngene_jax."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from learngene_jax import __version__
from learngene_jax.convert.table import flatten, unflatten
from learngene_jax.errors import GeneError, UserError, fail
from learngene_jax.genes import get_method, meta_from_json
from learngene_jax.genes.core import Gene, shape_mismatches

# Header keys (safetensors metadata is str → str). Prefixed so that they never clash with keys other tools read
# (transformers reads 'format').
FORMAT_KEY = "learngene_jax.format"  # what the file holds: 'gene', or 'model' (the weights of a hub.save_pretrained)
FORMAT_VERSION_KEY = "learngene_jax.format_version"
VERSION_KEY = "learngene_jax.version"
GENE_KEY = "learngene_jax.gene"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
EXPORT_HINT = "`python -m learngene_jax.convert gene-to-safetensors --gene GENE_DIR --out FILE.safetensors`"


def header(kind: str, **fields: str) -> dict[str, str]:
    """Header metadata of a learngene_jax file holding `kind` ('gene' or 'model'), plus `fields`."""
    return {FORMAT_KEY: kind, FORMAT_VERSION_KEY: str(FORMAT_VERSION), VERSION_KEY: __version__, **fields}


def write_tree(path: str | Path, tree: Mapping[str, Any], metadata: Mapping[str, str], *,
               overwrite: bool = False) -> Path:
    """Write a nested dict of arrays as one .safetensors file (keys 'a/b/c'); refuses to replace an existing file
    unless `overwrite`, and replaces it atomically (a finished temporary file is renamed)."""
    path = Path(path).absolute()
    if path.suffix != SUFFIX:
        fail(UserError, f"{path} does not end in {SUFFIX}; name the file FILE{SUFFIX}")
    if path.is_dir():
        fail(UserError, f"{path} is a directory; choose a file name ending in {SUFFIX}")
    if path.exists() and not overwrite:
        fail(UserError, f"{path} already exists; choose another file or pass --overwrite (overwrite=True)")
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in flatten(jax.device_get(dict(tree))).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(arrays, str(tmp), metadata=dict(metadata))
    os.replace(tmp, path)
    return path


def read_header(path: str | Path, what: str, error: type[UserError]) -> tuple[dict[str, str], dict[str, Any]]:
    """(header metadata, nested dict of array shapes) of a .safetensors file, read without loading the arrays;
    `error` is raised (naming `what`) for a missing, unreadable, truncated or corrupt file."""
    path = Path(path)
    if not path.exists():
        fail(error, f"no {what} at {path}: check the path")
    if path.is_dir():
        fail(error, f"{path} is a directory, not a {SUFFIX} {what}")
    from safetensors import safe_open

    try:
        with safe_open(str(path), "np") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            metadata = dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - any safetensors/IO failure is an unreadable file to the user
        fail(error, f"cannot read {what} {path} as safetensors (truncated or corrupt?): {type(e).__name__}: {e}; "
                    f"copy or export it again")
    return metadata, unflatten(shapes)


def check_format(path: str | Path, metadata: Mapping[str, str], kind: str, error: type[UserError]) -> None:
    """Fail unless the header says the file holds a learngene_jax `kind` of a format version this version reads."""
    found = metadata.get(FORMAT_KEY)
    if found is None:
        fail(error, f"{path} is a safetensors file but not a learngene_jax {kind}: its header has no learngene_jax "
                    f"metadata (plain timm/PyTorch weights?); convert timm weights into a model with `python -m "
                    f"learngene_jax.convert from-timm`, official aux checkpoints into a gene with `from-official`, "
                    f"and write gene files with {EXPORT_HINT}")
    if found != kind:
        fail(error, f"{path} holds a learngene_jax {found}, not a {kind}; "
                    + ("load its directory with learngene_jax.hub.from_pretrained" if found == "model"
                       else "load it with learngene_jax.genes.files.load_gene_safetensors"))
    version = metadata.get(FORMAT_VERSION_KEY, "")
    if not version.isdigit():
        fail(error, f"{path} has an invalid format version {version!r} in its header (corrupt?); export it again")
    if int(version) > FORMAT_VERSION:
        fail(error, f"{path} has format version {version}, newer than this learngene_jax reads ({FORMAT_VERSION}; "
                    f"written by learngene_jax {metadata.get(VERSION_KEY, '?')}); upgrade learngene_jax")


def read_tree(path: str | Path, expected: Mapping[str, Any], what: str, error: type[UserError]) -> dict[str, Any]:
    """The arrays of a .safetensors file as a nested dict, cast to the dtypes of `expected` (shapes already
    checked against it)."""
    from safetensors import safe_open

    dtypes = {k: getattr(v, "dtype", None) for k, v in flatten(expected).items()}
    try:
        with safe_open(str(path), "np") as f:
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        fail(error, f"cannot read the arrays of {what} {path} (truncated or corrupt?): {type(e).__name__}: {e}; "
                    f"copy or export it again")
    # A file edited in PyTorch (e.g. `.half()`) still loads as the dtypes the model computes in.
    return unflatten({k: a if dtypes[k] is None else a.astype(dtypes[k], copy=False) for k, a in arrays.items()})


def save_gene_safetensors(gene: Gene, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write `gene` as one .safetensors file (arrays under param paths such as 'blocks/qkv/kernel', metadata in
    the header); refuses to replace an existing file unless `overwrite`."""
    meta = json.dumps(gene.meta.to_json())
    return write_tree(path, gene.params, header("gene", **{GENE_KEY: meta}), overwrite=overwrite)


def load_gene_safetensors(path: str | Path) -> Gene:
    """Read a gene file written by `save_gene_safetensors`, checking its metadata and every array's shape against
    the method; GeneError (one line, naming the file) for anything else."""
    if Path(path).is_dir():
        fail(GeneError, f"{path} is a directory, not a {SUFFIX} gene file; Orbax gene directories are read with "
                        f"learngene_jax.genes.io.load_gene (--gene), or turned into a file with {EXPORT_HINT}")
    metadata, shapes = read_header(path, "gene file", GeneError)
    check_format(path, metadata, "gene", GeneError)
    try:
        data = json.loads(metadata[GENE_KEY])
    except (KeyError, json.JSONDecodeError) as e:
        fail(GeneError, f"gene file {path} has no readable gene metadata in its header ({type(e).__name__}: {e}); "
                        f"export it again with {EXPORT_HINT}")
    try:
        meta = meta_from_json(data)
    except GeneError as e:
        fail(GeneError, f"gene file {path}: {e}")
    expected = get_method(meta.method).gene_shapes(meta)
    problems = shape_mismatches(expected, shapes)
    if problems:
        fail(GeneError, f"gene file {path} does not match its own metadata ({meta.method} gene): "
                        + "; ".join(problems[:8]) + ("; ..." if len(problems) > 8 else "")
                        + f"; export the gene again with {EXPORT_HINT}")
    return Gene(read_tree(path, expected, "gene file", GeneError), meta)
