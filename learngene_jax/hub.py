"""Genes and trained models in the Hugging Face layout (config.json, model.safetensors, README.md), read back from
a local directory or the local Hugging Face cache; only `push_to_hub` uses the network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import flax.linen as nn

from learngene_jax import __version__
from learngene_jax.convert.table import flatten
from learngene_jax.errors import GeneError, UserError, fail
from learngene_jax.genes import meta_from_json
from learngene_jax.genes.core import Gene, shape_mismatches
from learngene_jax.genes.files import (
    check_format,
    header,
    load_gene_safetensors,
    read_header,
    read_tree,
    save_gene_safetensors,
    write_tree,
)
from learngene_jax.models import model_from_spec, model_spec
from learngene_jax.models.io import abstract_variables
from learngene_jax.models.vit import count_params

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
LIBRARY = "learngene_jax"
CONFIG_VERSION = 1


def save_pretrained(obj: Gene | tuple[nn.Module, dict[str, Any]], directory: str | Path, *,
                    overwrite: bool = False) -> Path:
    """Write a gene, or a (model, variables) pair, to `directory` as config.json + model.safetensors + README.md;
    refuses to replace an earlier export there unless `overwrite`."""
    directory = Path(directory).absolute()
    if directory.exists() and not directory.is_dir():
        fail(UserError, f"{directory} is a file; save_pretrained writes a directory")
    taken = [n for n in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME) if (directory / n).exists()]
    if taken and not overwrite:
        fail(UserError, f"{directory} already holds {', '.join(taken)}; choose another directory or pass "
                        f"--overwrite (overwrite=True)")
    config: dict[str, Any] = {"library_name": LIBRARY, "learngene_jax_version": __version__,
                              "format_version": CONFIG_VERSION}
    if isinstance(obj, Gene):
        save_gene_safetensors(obj, directory / WEIGHTS_NAME, overwrite=True)
        config.update(kind="gene", gene=obj.meta.to_json())
        card = _gene_card(obj)
    else:
        module, variables = obj
        variables = dict(variables)
        problems = shape_mismatches(dict(abstract_variables(module)), variables)
        if problems:
            fail(UserError, f"the variables do not fit the {type(module).__name__} they are saved with: "
                            + "; ".join(problems[:8]))
        write_tree(directory / WEIGHTS_NAME, variables, header("model"), overwrite=True)
        config.update(kind="model", model_spec=model_spec(module))
        card = _model_card(config["model_spec"], variables)
    (directory / CARD_NAME).write_text(card)
    # Written last: a directory with a config.json is a complete export.
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def from_pretrained(name: str | Path) -> Gene | tuple[nn.Module, dict[str, Any]]:
    """A Gene, or (model, variables), from a `save_pretrained` directory or a Hugging Face repo id that is already
    in the local Hugging Face cache (never downloaded here: UserError saying how to download it)."""
    directory = resolve(name)
    config = read_config(directory)
    weights = directory / WEIGHTS_NAME
    if config["kind"] == "gene":
        gene = load_gene_safetensors(weights)
        try:
            meta = meta_from_json(config.get("gene"))
        except GeneError as e:
            fail(GeneError, f"{directory / CONFIG_NAME}: {e}")
        if meta != gene.meta:
            fail(UserError, f"{directory / CONFIG_NAME} and {weights} describe different genes; export it again "
                            f"with save_pretrained")
        return gene
    spec = config.get("model_spec")
    if not (isinstance(spec, dict) and isinstance(spec.get("model"), str) and isinstance(spec.get("kwargs"), dict)):
        fail(UserError, f"{directory / CONFIG_NAME} has no valid model_spec ({{'model': name, 'kwargs': {{...}}}}); "
                        f"export the model again with save_pretrained")
    module = model_from_spec(spec)
    metadata, shapes = read_header(weights, "model weights", UserError)
    check_format(weights, metadata, "model", UserError)
    expected = dict(abstract_variables(module))
    problems = shape_mismatches(expected, shapes)
    if problems:
        fail(UserError, f"{weights} does not match the {spec['model']} model of {directory / CONFIG_NAME}: "
                        + "; ".join(problems[:8]) + "; export the model again with save_pretrained")
    return module, read_tree(weights, expected, "model weights", UserError)


def resolve(name: str | Path) -> Path:
    """`name` as a local directory, else as a Hugging Face repo id looked up in the local cache only."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        fail(UserError, f"{path} is a file; from_pretrained takes a directory written by save_pretrained or a "
                        f"Hugging Face repo id")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError:
        fail(UserError, f"no directory {name}; reading it as a Hugging Face repo id needs huggingface_hub: "
                        f"pip install huggingface_hub")
    try:
        return Path(snapshot_download(str(name), local_files_only=True))
    except HFValidationError:
        fail(UserError, f"no directory {name}, and {str(name)!r} is not a Hugging Face repo id (owner/name); "
                        f"check the path")
    except LocalEntryNotFoundError:
        fail(UserError, f"no directory {name}, and the Hugging Face repo {name} is not (fully) in the local cache; "
                        f"learngene_jax never downloads: run `hf download {name}` (`huggingface-cli download "
                        f"{name}` with huggingface_hub < 1.0) first")


def read_config(directory: Path) -> dict[str, Any]:
    """The config.json of a `save_pretrained` directory, checked to be one this version of learngene_jax reads."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        fail(UserError, f"{directory} has no {CONFIG_NAME}: not a directory written by learngene_jax's "
                        f"save_pretrained (`python -m learngene_jax.convert save-pretrained`)")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(UserError, f"{path} is unreadable (truncated or corrupt?): {type(e).__name__}: {e}")
    if not isinstance(config, dict) or config.get("library_name") != LIBRARY:
        library = config.get("library_name", "no library") if isinstance(config, dict) else "no library"
        fail(UserError, f"{path} was not written by learngene_jax (library_name: {library}); load it with the "
                        f"library that wrote it")
    version = config.get("format_version")
    if not isinstance(version, int) or version > CONFIG_VERSION:
        fail(UserError, f"{path} has format version {version!r}, which this learngene_jax ({__version__}) does not "
                        f"read; upgrade learngene_jax")
    if config.get("kind") not in ("gene", "model"):
        fail(UserError, f"{path} has kind {config.get('kind')!r}; expected 'gene' or 'model'")
    return config


def push_to_hub(directory: str | Path, repo_id: str, *, private: bool = False,
                commit_message: str = "Upload with learngene_jax") -> str:
    """Upload a `save_pretrained` directory to the Hugging Face Hub (network; log in with `hf auth login` first)
    after checking that `from_pretrained` reads it; returns the commit URL."""
    from_pretrained(Path(directory))
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    return str(api.upload_folder(folder_path=str(directory), repo_id=repo_id, commit_message=commit_message))


_USAGE = """```python
from learngene_jax.hub import from_pretrained

{target} = from_pretrained("<repo id or local directory>")
```

`{weights}` holds the arrays under '/'-joined Flax param paths (`{example}`); PyTorch reads it with
`safetensors.torch.load_file`. `{config}` holds the {what}.
"""


def _card(tags: list[str], title: str, text: str, usage: str) -> str:
    front = "\n".join(["---", f"library_name: {LIBRARY}", "tags:", *[f"- {t}" for t in tags], "---"])
    return f"{front}\n\n# {title}\n\n{text}\n\n{usage}"


def _gene_card(gene: Gene) -> str:
    method = gene.meta.method
    text = (f"A {method} learngene ({count_params(gene.params):,} params) exported by learngene_jax {__version__}. "
            f"Descendants are built from it by the learngene_jax `{method}` method (`learngene_jax.genes`).")
    example = min(flatten(gene.params), default="")
    usage = _USAGE.format(target="gene", weights=WEIGHTS_NAME, example=example, config=CONFIG_NAME,
                          what="gene metadata (method and aux architecture)")
    return _card(["learngene", method, "jax", "flax"], f"{method} learngene", text, usage)


def _model_card(spec: dict[str, Any], variables: dict[str, Any]) -> str:
    name = spec["model"]
    text = (f"A {name} model ({count_params(variables.get('params', {})):,} params) exported by learngene_jax "
            f"{__version__}; run it with `model.apply(variables, images)` on (batch, height, width, channels) "
            f"images.")
    example = min(flatten(variables), default="")
    usage = _USAGE.format(target="model, variables", weights=WEIGHTS_NAME, example=example, config=CONFIG_NAME,
                          what="model spec (the registered model name and its arguments)")
    return _card(["learngene", name, "jax", "flax"], f"{name} model", text, usage)
