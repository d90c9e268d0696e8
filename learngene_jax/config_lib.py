"""What every `configs/*.py` shares: the full default training config (every key a run may set, so an unknown
override is an error), `:key=value` argument parsing, and loading a config file (one recipe may build on
another, as flax's `configs/tpu.py` imports `default.py`). The recipes themselves live in `configs/`."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections

from learngene_jax.errors import ConfigError, UserError, fail

BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def parse_arg(arg: str | None, defaults: dict[str, Any]) -> dict[str, Any]:
    """'size=s,stage=aux' → {'size': 's', 'stage': 'aux'} merged over `defaults`; values typed like defaults."""
    out = dict(defaults)
    for part in filter(None, (arg or "").split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in defaults:
            fail(ConfigError, f"config argument {part!r} is not one of {sorted(defaults)} (form: key=value,...)")
        default = defaults[key]
        if isinstance(default, bool):
            if value.lower() not in BOOLEANS:
                fail(ConfigError, f"config argument {key}={value!r} must be true or false (or 1/0, yes/no)")
            out[key] = BOOLEANS[value.lower()]
            continue
        try:
            out[key] = type(default)(value) if default is not None else value
        except ValueError:
            fail(ConfigError, f"config argument {key}={value!r} must be a {type(default).__name__}")
    return out


def with_changes(config: ml_collections.ConfigDict, **changes: Any) -> ml_collections.ConfigDict:
    """A copy of `config` with `changes` set; keys may be dotted ('optim.lr'); a dict value replaces a section."""
    c = ml_collections.ConfigDict(config.to_dict())
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        target = c
        for part in parents:
            target = target[part]
        target[leaf] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
    return c


def base_config() -> ml_collections.ConfigDict:
    """Every key of a training run with its default (a plain supervised run on digits)."""
    c = ml_collections.ConfigDict()
    c.task = "train"  # what main dispatches to: train | demo | asvit_search | asvit_grow | ...
    c.name = ""  # a label for logs and summaries
    c.seed = 0
    c.epochs = 10
    c.max_steps = 0  # > 0 caps the run (and its lr schedule) at this many steps
    c.batch_size = 128  # global, over all devices and processes
    c.eval_batch_size = 0  # 0: same as batch_size
    c.eval_every_epochs = 1
    c.eval_at_start = False  # also evaluate the initial weights (e.g. an untrained gene-initialised descendant)
    c.eval_every_steps = 0  # > 0: also evaluate every this many steps (a loss-vs-epochs curve in final.json)
    c.log_every_steps = 20
    c.profile_steps = 0  # > 0: jax.profiler trace of this many steps after the first, compiling, one (WORKDIR/profile)
    c.precision = "float32"  # or bfloat16, or auto (bfloat16 on GPU/TPU, float32 on CPU): the compute dtype;
    # params and optimizer state stay float32
    # storage dtype of what never trains: a frozen teacher's weights and the frozen params of a run that trains some
    # (LoRA's base); auto: bfloat16 on GPU/TPU, float32 on CPU. The trained params stay float32.
    c.frozen_precision = "auto"
    c.loss_chunk = 0  # objective 'lm': > 0 computes the head and the losses this many tokens per row at a time

    c.model = ml_collections.ConfigDict({"name": "vit_ti"})  # registry name; other keys are model fields

    # Learngene: a gene to expand into the student (descendant runs) and how.
    c.gene = ""
    c.depth = 0
    c.layers_source = ""
    c.layout = "official"
    c.init = ""  # a model directory whose weights initialise the student
    c.retokenize = ()  # ((start_epoch, stride, dilation), ...): progressive re-tokenization of the patch embedding
    # inherit: all of its weights (pre-train then fine-tune); weight_selection: see methods/weight_selection
    c.init_method = "inherit"
    # init_method='layer_gene' (language models, methods/heur/lm.py): a decoder of `depth` layers with these layers
    # of the init model at its bottom (Inheritune) or top (Heur), fresh layers elsewhere
    c.layer_gene = ml_collections.ConfigDict(dict(layers=(), place="bottom"))

    c.data = ml_collections.ConfigDict(dict(
        name="digits", data_dir="", path="", train_split="train", eval_split="test", image_size=16, channels=3,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=1.0,
        workers=0,  # grain worker processes that decode and transform (0: in this process, for small data/debugging)
        image_key="image", label_key="label",
        classes=(), shots=0, subset_seed=0,  # a task: only these classes (relabelled), `shots` train examples each
        # text corpora (data/text.py): tokens per window, validation windows (0: the whole split, non-overlapping)
        context=128, eval_windows=128,
        text_key="text",  # tfds_text / hf_dataset: the feature (column) holding each example's text
        hf_config="",  # hf_dataset: the dataset's configuration (subset) name, e.g. wikitext-2-raw-v1
        # text: '' (bytes), char, bpe:N (trained on the corpus), or a tokenizer.json / model directory holding one
        tokenizer="",
        documents=(),  # text: only the documents whose names match these fnmatch patterns (a task of a stream)
        # text: train on a random `fraction` of the train documents, drawn from subset_seed (a data-fraction sweep)
        fraction=1.0,
        # text training windows: shuffle (each epoch a permutation of the non-overlapping windows: every token once)
        # or random (nanoGPT: uniform random offsets, with replacement)
        sampling="shuffle",
        document_mask=False))  # text: attention and positions stay within each packed document
    c.aug = ml_collections.ConfigDict(dict(
        random_resized_crop=False, rrc_scale_min=0.08, flip=False, randaugment=False, randaugment_ops=2,
        randaugment_magnitude=9.0, randaugment_mstd=0.5, random_erasing=0.0, mixup=0.0, cutmix=0.0,
        mixup_switch_prob=0.5, mixup_prob=1.0, label_smoothing=0.0, repeated_aug=1))
    c.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=5e-4, scale_lr=True, min_lr=1e-5, warmup_lr=1e-6, warmup_epochs=0.0,
        warmup_steps=0,  # > 0: warm up over this many steps instead of warmup_epochs (token streams of any size)
        schedule="cosine",  # per step; cosine_epoch: timm's scheduler stepped after each epoch (official); constant
        weight_decay=0.05, b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False, grad_clip=0.0,
        accum_steps=1))  # > 1: each step's gradient is summed over this many microbatches of the batch (less memory)
    c.objective = "classification"  # see objectives/classification.py
    c.distill = ml_collections.ConfigDict(dict(type="none", teacher="", teacher_init="", alpha=0.5,
                                               temperature=1.0))
    c.ewc = ml_collections.ConfigDict(dict(weight=0.0, path=""))  # see methods/heur/ewc.py
    # LoRA fine-tuning of the decoder in config.init (models/lora.py; rank 0 = off): only the adapters train.
    # `gene`: an adapter gene (methods/heur/lm.py) whose adapters start the layers `gene_layers` (default: the
    # gene's own layers); the other adapters start as PEFT's (A random, B = 0).
    # `other_base`: allow a gene trained on another base decoder of the same architecture (normally an error).
    # `gene` may also be a PEFT adapter directory (convert/peft.py). `dropout`: PEFT's lora_dropout.
    c.lora = ml_collections.ConfigDict(dict(rank=0, alpha=16.0, targets=(), layers=(), rslora=False, gene="",
                                            gene_layers=(), other_base=False, dropout=0.0))

    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, num_devices=0))  # num_devices 0: all
    c.sharding = ml_collections.ConfigDict(dict(strategy="dp", rules=()))
    c.checkpoint = ml_collections.ConfigDict(dict(every_steps=500, keep=2))
    return c


# Where `configs/` is in a source checkout (relative config paths are also looked up there).
CHECKOUT = Path(__file__).resolve().parents[1]


def config_module(path: str | Path) -> ModuleType:
    """The config file at `path` as a module (loaded once per file), for recipes that build on another."""
    file = Path(path).expanduser()
    if not file.is_file() and not file.is_absolute() and (CHECKOUT / file).is_file():
        file = CHECKOUT / file
    if not file.is_file():
        fail(UserError, f"config file {path}: no such file")
    name = f"learngene_jax_config_{hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:12]}_{file.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def load_config(spec: str | Path, arg: str | None = None) -> ml_collections.ConfigDict:
    """`configs/X.py[:key=value,...]` (or a path and `arg`) → that file's `get_config(arg)`."""
    path, _, spec_arg = str(spec).partition(":")
    return config_module(path).get_config(arg if arg is not None else (spec_arg or None))
