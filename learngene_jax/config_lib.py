"""Shared pieces of `configs/*.py`: the full default training config (every key a run may set, so an unknown
override is an error), `arg` parsing, and the learngene recipes of the official code."""

from __future__ import annotations

from typing import Any

import ml_collections

from learngene_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from learngene_jax.errors import ConfigError, fail


def parse_arg(arg: str | None, defaults: dict[str, Any]) -> dict[str, Any]:
    """'size=s,stage=aux' → {'size': 's', 'stage': 'aux'} merged over `defaults`; values typed like defaults."""
    out = dict(defaults)
    for part in filter(None, (arg or "").split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in defaults:
            fail(ConfigError, f"config argument {part!r} is not one of {sorted(defaults)} (form: key=value,...)")
        default = defaults[key]
        try:
            out[key] = type(default)(value) if default is not None and not isinstance(default, bool) else (
                value.lower() in ("1", "true", "yes") if isinstance(default, bool) else value)
        except ValueError:
            fail(ConfigError, f"config argument {key}={value!r} must be a {type(default).__name__}")
    return out


def with_changes(config: ml_collections.ConfigDict, **changes: Any) -> ml_collections.ConfigDict:
    """A copy of `config` with `changes` applied: dotted keys ('optim.lr') reach into sections, dict values
    become sections."""
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
    c.batch_size = 128  # global, over all devices and processes
    c.eval_batch_size = 0  # 0: same as batch_size
    c.eval_every_epochs = 1
    c.eval_at_start = False  # also evaluate the initial weights (e.g. an untrained gene-initialised descendant)
    c.log_every_steps = 20
    c.precision = "float32"  # or bfloat16: compute dtype; params and optimizer state stay float32

    c.model = ml_collections.ConfigDict({"name": "vit_ti"})  # registry name; other keys are model fields

    # Learngene: a gene to expand into the student (descendant runs) and how.
    c.gene = ""
    c.depth = 0
    c.layers_source = ""
    c.layout = "official"
    c.init = ""  # a model directory whose weights initialise the student (pre-train then fine-tune)

    c.data = ml_collections.ConfigDict(dict(
        name="digits", data_dir="", path="", train_split="train", eval_split="test", image_size=16, channels=3,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=1.0, workers=4,
        image_key="image", label_key="label",
        classes=(), shots=0, subset_seed=0))  # a task: only these classes (relabelled), `shots` train examples each
    c.aug = ml_collections.ConfigDict(dict(
        random_resized_crop=False, rrc_scale_min=0.08, flip=False, randaugment=False, randaugment_ops=2,
        randaugment_magnitude=9.0, randaugment_mstd=0.5, random_erasing=0.0, mixup=0.0, cutmix=0.0,
        mixup_switch_prob=0.5, mixup_prob=1.0, label_smoothing=0.0, repeated_aug=1))
    c.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=5e-4, scale_lr=True, min_lr=1e-5, warmup_lr=1e-6, warmup_epochs=0.0, schedule="cosine",
        weight_decay=0.05, b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False, grad_clip=0.0))
    c.objective = "classification"  # see distill/objectives.py
    c.distill = ml_collections.ConfigDict(dict(type="none", teacher="", teacher_init="", alpha=0.5,
                                               temperature=1.0))
    c.ewc = ml_collections.ConfigDict(dict(weight=0.0, path=""))  # see regularizers.py

    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
    c.sharding = ml_collections.ConfigDict(dict(strategy="dp", rules=()))
    c.checkpoint = ml_collections.ConfigDict(dict(every_steps=500, keep=2))
    return c


def deit_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The DeiT ImageNet harness the official TLEG/SWS runs use (data, augmentation, AdamW)."""
    c.data.update(dict(name="imagenet2012", train_split="train", eval_split="validation", image_size=224,
                       mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic", crop_pct=0.875, workers=16))
    c.aug.update(dict(random_resized_crop=True, flip=True, randaugment=True, random_erasing=0.25, mixup=0.8,
                      cutmix=1.0, mixup_switch_prob=0.5, label_smoothing=0.1, repeated_aug=3))
    c.optim.update(dict(name="adamw", lr=5e-4, min_lr=1e-5, warmup_lr=1e-6, warmup_epochs=5, weight_decay=0.05))
    c.batch_size = 512
    c.log_every_steps = 100
    c.checkpoint.every_steps = 2000
    return c


# Official stage-1 / stage-2 budgets (reference/learngene-methods.md).
AUX_EPOCHS = {"ti": 150, "s": 150, "b": 100}
TLEG_DES_EPOCHS = {"ti": 50, "s": 35, "b": 40}
SWS_DES = {"s": dict(epochs=10, lr=5e-5), "b": dict(epochs=10, lr=1e-5)}


def learngene_imagenet(method: str, size: str, stage: str, depth: int, gene: str = "") -> ml_collections.ConfigDict:
    """The official ImageNet recipe of TLEG/SWS for one size and stage ('aux', 'descendant' or 'scratch')."""
    if stage not in ("aux", "descendant", "scratch"):
        fail(ConfigError, f"stage must be aux, descendant or scratch, got {stage!r}")
    c = deit_recipe(base_config())
    c.name = f"{method}_{size}_{stage}" + (f"_L{depth}" if stage != "aux" else "")
    if stage == "aux":
        c.model = ml_collections.ConfigDict({"name": f"{method}_aux_{size}", "drop_path_rate": 0.1})
        c.epochs = AUX_EPOCHS[size]
        # LeViT-384 teacher, soft KD only (α = 1, T = 1): the official distillation setting.
        c.distill.update(dict(type="soft", teacher="levit_384", alpha=1.0, temperature=1.0))
        return c
    c.model = ml_collections.ConfigDict({"name": f"vit_{size}", "depth": depth, "drop_path_rate": 0.1})
    if stage == "descendant":
        c.model = ml_collections.ConfigDict({"name": "descendant", "drop_path_rate": 0.1})
        c.gene, c.depth = gene, depth
        if method == "sws":
            c.epochs, c.optim.lr = SWS_DES[size]["epochs"], SWS_DES[size]["lr"]
            c.optim.min_lr = 1e-6
        else:
            c.epochs = TLEG_DES_EPOCHS[size]
        c.optim.warmup_epochs = 0
        if method == "sws" and depth == 12:
            c.layers_source = "0,0,0,1,1,1,2,2,3,3,4,4"
    else:
        c.epochs = 300
    return c
