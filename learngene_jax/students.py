"""Where a run's student and its initial weights come from: builders registered in `registry.STUDENTS` by the code
that owns them. Here: `scratch` (a fresh registry model), `inherit` (a trained model directory's weights, the
pre-train-then-fine-tune baseline) and `gene` (a learngene's descendant); methods add others (weight selection).
The trainer asks `student_kind(config)` and calls the builder, knowing nothing about any method."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict, unflatten_dict

from learngene_jax import data, genes, logs
from learngene_jax.convert import peft
from learngene_jax.data.tokenize import check_table
from learngene_jax.errors import ConfigError, fail
from learngene_jax.genes.io import load_gene
from learngene_jax.models import RUNTIME_FIELDS, compute_dtype, create_model, lora
from learngene_jax.models.io import load_model
from learngene_jax.models.llama import GPT2, Llama, remat_policy
from learngene_jax.models.vit import ViT, resample_pos_embed
from learngene_jax.registry import STUDENTS


@dataclasses.dataclass
class Student:
    """The model being trained and where its initial weights come from."""

    model: nn.Module
    init: Callable[[jax.Array, Any], dict[str, Any]]  # (rng, source) → variables
    source: Any  # arrays `init` starts from (gene params, a model's variables) or None
    method: ModuleType | None  # the learngene method when the model is an aux model
    origin: str  # 'scratch', 'gene:DIR' or 'init:DIR', for logs and summaries
    # which params the optimizer updates (a predicate on the param path's key names); None: all of them
    trainable: Callable[[tuple[str, ...]], bool] | None = None


def student_kind(config: Any) -> str:
    """The registered builder this config asks for: `gene` with config.gene, `lora` with config.lora.rank > 0,
    config.init_method with config.init, else `scratch`."""
    if config.gene:
        return "gene"
    lora_cfg = config.lora
    if not lora_cfg.rank and (lora_cfg.gene or lora_cfg.gene_layers):
        fail(ConfigError, "lora.gene / lora.gene_layers start LoRA adapters: set lora.rank (the gene's rank) too")
    if lora_cfg.gene_layers and not lora_cfg.gene:
        fail(ConfigError, "lora.gene_layers places the adapters of lora.gene: pass --config.lora.gene=GENE_DIR")
    if lora_cfg.rank:
        if config.init_method != "inherit":
            fail(ConfigError, f"lora.rank > 0 adapts the model of config.init as it is; init_method="
                              f"{config.init_method!r} does not combine with LoRA (drop one of them)")
        return "lora"
    if not config.init and config.init_method != "inherit":
        fail(ConfigError, f"init_method={config.init_method!r} builds the student from a trained model: pass "
                          f"--config.init=MODEL_DIR")
    return config.init_method if config.init else "scratch"


def build_student(config: Any, num_classes: int) -> Student:
    """The student of this run, from the builder `student_kind(config)` names."""
    kind = student_kind(config)
    if config.init and kind not in STUDENTS:
        fail(ConfigError, f"unknown init_method {kind!r}; known: "
                          f"{', '.join(n for n in STUDENTS.names() if n not in ('gene', 'scratch'))}")
    return STUDENTS.get(kind)(config, num_classes)


def model_kwargs(config: Any) -> dict[str, Any]:
    """config.model without its name, lists as tuples; a remat setting no model knows is a ConfigError."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model.items() if k != "name"}
    if "remat" in kwargs:
        try:
            remat_policy(kwargs["remat"])
        except ValueError as e:
            fail(ConfigError, f"config.model.{e} (language models take a policy name, ViTs true/false)")
    return kwargs


def runtime_kwargs(config: Any) -> dict[str, Any]:
    """The run-time model fields this config sets (compute dtype, scan, remat, drop path, ...)."""
    return {"dtype": compute_dtype(config.precision),
            **{k: v for k, v in model_kwargs(config).items() if k in RUNTIME_FIELDS}}


def registry_model(config: Any, num_classes: int) -> nn.Module:
    """config.model built from the registry, with the data's classes, image size and channels by default."""
    if config.model.name == "descendant":
        fail(ConfigError, "config.model.name='descendant' expands a gene: pass --config.gene=GENE_DIR (a stage-1 "
                          "WORKDIR/gene or a converted official gene) and --config.depth=N")
    if data.is_text(config):  # a language model: the corpus's vocabulary, positions for one window by default
        defaults = {"vocab_size": num_classes, "max_positions": config.data.context}
    else:
        defaults = {"num_classes": num_classes, "image_size": config.data.image_size, "in_chans": config.data.channels}
    dtype = compute_dtype(config.precision)
    model = create_model(config.model.name, **{**defaults, **model_kwargs(config)}, dtype=dtype)
    if data.is_text(config) and hasattr(model, "vocab_size"):  # config.model.vocab_size may pad the table
        check_table(model.vocab_size, num_classes, f"config.model ({config.model.name})")
    return model


def dummy_images(model: nn.Module) -> jax.Array:
    """One zero input to initialise the model: an image (1, height, width, channels), or token ids (1, 8) for a
    language model."""
    if hasattr(model, "vocab_size"):
        return jnp.zeros((1, 8), jnp.int32)
    return jnp.zeros((1, model.image_size, model.image_size, model.in_chans), jnp.float32)


@STUDENTS.register("scratch")
def scratch(config: Any, num_classes: int) -> Student:
    """A fresh registry model (for an aux model, its gene is saved at the end)."""
    model = registry_model(config, num_classes)
    return Student(model, lambda rng, _: model.init(rng, dummy_images(model), train=False), None,
                   genes.method_of(model), "scratch")


@STUDENTS.register("gene")
def from_gene(config: Any, num_classes: int) -> Student:
    """The descendant that config.gene expands into at config.depth (`genes.expand`)."""
    gene = load_gene(config.gene)
    kwargs = model_kwargs(config)
    expand_kw = dict(layers_source=config.layers_source or None, layout=config.layout, num_classes=num_classes)
    model = genes.descendant_model(gene, config.depth or None, **expand_kw, **runtime_kwargs(config))
    for key, value in kwargs.items():
        if key not in RUNTIME_FIELDS and getattr(model, key, value) != value:
            fail(ConfigError, f"gene {config.gene} has {key}={getattr(model, key)} but config.model.{key}="
                              f"{value}; drop the override or use a gene that matches")
    if data.is_text(config) and hasattr(model, "vocab_size"):
        check_table(model.vocab_size, num_classes, f"the descendant of gene {config.gene}")
    if not data.is_text(config) and config.data.image_size != gene.meta.image_size:
        fail(ConfigError, f"gene {config.gene} takes {gene.meta.image_size}px images but data.image_size is "
                          f"{config.data.image_size}")

    def init(rng, gene_params):
        return {"params": genes.expand(genes.Gene(gene_params, gene.meta), config.depth or None, rng=rng,
                                       **expand_kw)}
    return Student(model, init, gene.params, None, f"gene:{config.gene}")


@STUDENTS.register("inherit")
def inherit(config: Any, num_classes: int) -> Student:
    """All weights of the model directory config.init that still fit (a new head for another class count)."""
    runtime = runtime_kwargs(config)
    model, variables = load_model(config.init, **runtime)
    if data.is_text(config) and not hasattr(model, "vocab_size"):
        fail(ConfigError, f"init {config.init} holds a {type(model).__name__}, not a language model (Llama / GPT-2); "
                          f"a text corpus trains language models")
    if hasattr(model, "vocab_size"):  # a language model keeps its table (padded past the tokenizer or not)
        if not data.is_text(config):
            fail(ConfigError, f"init {config.init} is a language model with a {model.vocab_size}-token vocabulary; "
                              f"it trains on a text corpus (objective 'lm'), here {config.data.name} with "
                              f"{num_classes} classes")
        check_table(model.vocab_size, num_classes, f"init {config.init}")
        return Student(model, lambda rng, loaded: loaded, variables, genes.method_of(model), f"init:{config.init}")
    model, variables = fit_image_size(config.init, model, variables, config.data.image_size)
    if model.num_classes != num_classes:
        if not model.num_classes:
            logs.info(f"init: {config.init} has no head; this run adds a fresh {num_classes}-class head")
        model = model.clone(num_classes=num_classes)

    def init(rng, loaded):
        fresh = flatten_dict(model.init(rng, dummy_images(model), train=False))
        old = flatten_dict(loaded)
        # keep every loaded array whose shape still fits (all but a head for a new class count, or a head the
        # loaded model never had)
        return unflatten_dict({k: old[k] if k in old and old[k].shape == v.shape else v for k, v in fresh.items()})
    return Student(model, init, variables, genes.method_of(model), f"init:{config.init}")


@STUDENTS.register("lora")
def lora_student(config: Any, num_classes: int) -> Student:
    """The decoder of the model directory config.init, frozen, with LoRA adapters (config.lora: rank, alpha,
    targets, layers, rslora) that alone train; an adapter gene (config.lora.gene) starts the adapters of its
    layers (config.lora.gene_layers), the rest start as PEFT's (A random, B = 0)."""
    cfg = config.lora
    if not config.init:
        fail(ConfigError, "lora.rank > 0 fine-tunes the decoder of a model directory: pass --config.init=MODEL_DIR "
                          "(a trained Llama / GPT-2, e.g. from `learngene convert from-hf`)")
    base, variables = load_model(config.init, **runtime_kwargs(config))
    if not isinstance(base, (Llama, GPT2)):
        fail(ConfigError, f"lora needs a Llama or GPT-2 model directory; {config.init} holds a {type(base).__name__}")
    if not data.is_text(config):
        fail(ConfigError, f"lora: {config.init} has a {base.vocab_size}-token vocabulary; train it on a text corpus "
                          f"(objective 'lm'), here {config.data.name} with {num_classes} classes")
    check_table(base.vocab_size, num_classes, f"lora: {config.init}")
    base, variables = lora.folded(base, variables)  # a LoRA run's model directory: its adapters join the frozen base
    shapes = {n: shape for n, shape in base.layer_shapes().items() if len(shape) == 2}
    targets = _names(cfg.targets)
    layers = tuple(int(i) for i in _names(cfg.layers))
    unknown = sorted(set(targets) - set(shapes))
    if unknown:
        fail(ConfigError, f"lora.targets: unknown {unknown}; the layer weights are {sorted(shapes)} (on the command "
                          f"line: --config.lora.targets=\"('q','v')\")")
    widest = min(min(shapes[t]) for t in targets or lora.default_targets(base))
    if not 1 <= int(cfg.rank) <= widest or int(cfg.rank) != cfg.rank:
        fail(ConfigError, f"lora.rank must be an integer in 1..{widest} (the narrowest adapted weight), got {cfg.rank}")
    if not float(cfg.alpha) > 0:
        fail(ConfigError, f"lora.alpha must be > 0 (the adapters' scale is α/r), got {cfg.alpha}")
    if any(not 0 <= i < base.depth for i in layers) or len(set(layers)) != len(layers):
        fail(ConfigError, f"lora.layers must be distinct layers in 0..{base.depth - 1}, got {layers}")
    dropout = cfg.get("dropout", 0.0)
    if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        fail(ConfigError, f"lora.dropout must be a probability in [0, 1) (PEFT's lora_dropout), got {dropout!r}")
    model = lora.with_lora(base, int(cfg.rank), float(cfg.alpha), targets or None, layers, bool(cfg.rslora),
                           float(dropout))
    gene = _adapter_gene(cfg.gene, model, base, variables) if cfg.gene else None
    method = genes.get_method(gene.meta.method) if gene else None
    if gene is not None and not hasattr(method, "lora_adapters"):
        fail(ConfigError, f"lora.gene={cfg.gene} is a {gene.meta.method} gene; it takes an adapter gene "
                          f"(WORKDIR/gene of a LoRA run, or a selection of its layers)")
    if gene is not None and not cfg.get("other_base", False):
        method.check_base(gene, variables["params"], cfg.gene)

    def init(rng, loaded):
        adapters = model.init(rng, dummy_images(model), train=False)["params"]["lora"]
        if gene is not None:
            adapters = method.lora_adapters(gene, model, tuple(int(i) for i in _names(cfg.gene_layers)), adapters)
        return {"params": {**loaded["params"], "lora": adapters}}
    origin = f"lora:{config.init}" + (f"+gene:{cfg.gene}" if cfg.gene else "")
    return Student(model, init, variables, genes.method_of(model), origin,
                   trainable=lambda path: path[0] == "lora")


def _adapter_gene(path: str, model: nn.Module, base: Llama | GPT2, variables: dict[str, Any]) -> Any:
    """The gene lora.gene names: a gene directory, or a PEFT adapter directory read as an adapter gene of `base` by
    the method whose genes start LoRA `model`'s adapters."""
    if (Path(path).expanduser() / peft.CONFIG_NAME).is_file():
        return genes.method_of(model).from_peft(path, base, variables["params"])
    return load_gene(path)


def _names(value: Any) -> tuple[Any, ...]:
    """A tuple setting whose items may arrive from the command line as comma-separated strings ('q,v' or ('q,v',))."""
    items = (value,) if isinstance(value, str) else tuple(value)
    return tuple(part.strip() if isinstance(item, str) else item for item in items
                 for part in (item.split(",") if isinstance(item, str) else (item,)) if part != "")


def fit_image_size(path: str, model: nn.Module, variables: dict[str, Any], image_size: int
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """A loaded model for `image_size` images: unchanged when it already takes them; a plain ViT gets its
    position table resampled (said in the log); anything else is a ConfigError."""
    trained = getattr(model, "image_size", image_size)
    if trained == image_size:
        return model, variables
    if type(model) is not ViT or image_size % model.patch_size:
        fail(ConfigError, f"init {path} takes {trained}px images but data.image_size is {image_size}; only a plain "
                          f"ViT's position table can be resampled (to a multiple of its patch size "
                          f"{getattr(model, 'patch_size', '?')}): set data.image_size={trained}")
    new = model.clone(image_size=image_size)
    params = dict(variables["params"])
    params["pos_embed"] = resample_pos_embed(params["pos_embed"], model.num_prefix_tokens, new.grid)
    logs.info(f"init: {path} was trained on {trained}px images; resampled its position embeddings from a "
              f"{model.grid}×{model.grid} to a {new.grid}×{new.grid} grid (bicubic, as timm) for {image_size}px")
    return new, {**variables, "params": params}


