"""Model directories: weights (params and, for BatchNorm models, batch_stats) plus the architecture, so
a converted teacher or a trained ancestor can be reloaded by path alone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax

from learngene_jax import __version__, checkpointing
from learngene_jax.errors import UserError, fail
from learngene_jax.genes.core import shape_mismatches
from learngene_jax.models import model_from_spec, model_spec


def save_model(path: str | Path, module: nn.Module, variables: dict[str, Any], *, overwrite: bool = False,
               **extra: Any) -> Path:
    """Write a model directory; `extra` JSON fields (e.g. where the weights came from) are kept in the meta."""
    meta = {"kind": "model", **model_spec(module), "learngene_jax": __version__, **extra}
    return checkpointing.save_artifact(path, dict(variables), meta, overwrite=overwrite)


def abstract_variables(module: nn.Module) -> dict[str, Any]:
    """All variable collections of `module` as shapes (nothing allocated): image models take one image, language
    models (a `vocab_size` field) a few token ids."""
    if hasattr(module, "vocab_size"):
        x = jax.ShapeDtypeStruct((1, 8), "int32")
    else:
        x = jax.ShapeDtypeStruct((1, module.image_size, module.image_size, module.in_chans), "float32")
    return jax.eval_shape(lambda inputs: module.init(jax.random.key(0), inputs), x)


def load_model(path: str | Path, *, mesh: Any = None, strategy: str = "dp",
               sharding_rules: Sequence[tuple[str, Sequence[str | None]]] = (),
               **runtime: Any) -> tuple[nn.Module, dict[str, Any]]:
    """(module, variables) from a model directory, or from a Hugging Face Llama / Mistral / Qwen2 / GPT-2 directory
    (config.json + safetensors, read by `convert.hf.from_hf`: with a `mesh`, each param is read straight onto its
    sharding for `strategy` and `sharding_rules`); `runtime` sets fields such as dtype."""
    path = Path(path).expanduser()
    hf_files = ("config.json", "adapter_config.json")  # a PEFT adapter is named by convert.hf (not a model)
    if any((path / name).is_file() for name in hf_files) and not (path / "meta").exists():
        from learngene_jax.convert.hf import from_hf

        module, variables = from_hf(path, mesh, strategy, sharding_rules)
        return module.clone(**{k: v for k, v in runtime.items() if hasattr(module, k)}), variables
    meta = checkpointing.read_meta(path, "model directory")
    if meta.get("kind") != "model":
        fail(UserError, f"{path} holds a {meta.get('kind', 'foreign')} checkpoint, not a model directory "
                        f"(genes are used with --gene, not --model-dir)")
    module = model_from_spec(meta, **runtime)
    expected = dict(abstract_variables(module))
    problems = shape_mismatches(expected, checkpointing.stored_shapes(path, "model directory"))
    if problems:
        fail(UserError, f"model directory {path} does not match its architecture: " + "; ".join(problems[:8]))
    return module, checkpointing.load_params(path, expected, "model directory")
