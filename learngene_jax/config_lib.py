"""Shared pieces of `configs/*.py`: the full default training config (every key a run may set, so an unknown
override is an error), `arg` parsing, and the learngene recipes of the official code."""

from __future__ import annotations

from typing import Any

import ml_collections

from learngene_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from learngene_jax.errors import ConfigError, fail

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
    c.log_every_steps = 20
    c.precision = "float32"  # or bfloat16, or auto (bfloat16 on GPU/TPU, float32 on CPU): the compute dtype;
    # params and optimizer state stay float32

    c.model = ml_collections.ConfigDict({"name": "vit_ti"})  # registry name; other keys are model fields

    # Learngene: a gene to expand into the student (descendant runs) and how.
    c.gene = ""
    c.depth = 0
    c.layers_source = ""
    c.layout = "official"
    c.init = ""  # a model directory whose weights initialise the student
    c.retokenize = ()  # ((start_epoch, stride, dilation), ...): progressive re-tokenization of the patch embedding
    c.init_method = "inherit"  # inherit: all of its weights (pre-train then fine-tune); weight_selection: see baselines

    c.data = ml_collections.ConfigDict(dict(
        name="digits", data_dir="", path="", train_split="train", eval_split="test", image_size=16, channels=3,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=1.0,
        workers=0,  # grain worker processes that decode and transform (0: in this process, for small data/debugging)
        image_key="image", label_key="label",
        classes=(), shots=0, subset_seed=0))  # a task: only these classes (relabelled), `shots` train examples each
    c.aug = ml_collections.ConfigDict(dict(
        random_resized_crop=False, rrc_scale_min=0.08, flip=False, randaugment=False, randaugment_ops=2,
        randaugment_magnitude=9.0, randaugment_mstd=0.5, random_erasing=0.0, mixup=0.0, cutmix=0.0,
        mixup_switch_prob=0.5, mixup_prob=1.0, label_smoothing=0.0, repeated_aug=1))
    c.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=5e-4, scale_lr=True, min_lr=1e-5, warmup_lr=1e-6, warmup_epochs=0.0,
        schedule="cosine",  # per step; cosine_epoch: timm's scheduler stepped after each epoch (official); constant
        weight_decay=0.05, b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False, grad_clip=0.0))
    c.objective = "classification"  # see distill/objectives.py
    c.distill = ml_collections.ConfigDict(dict(type="none", teacher="", teacher_init="", alpha=0.5,
                                               temperature=1.0))
    c.ewc = ml_collections.ConfigDict(dict(weight=0.0, path=""))  # see regularizers.py

    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, num_devices=0))  # num_devices 0: all
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
    c.optim.schedule = "cosine_epoch"  # the official main.py steps timm's cosine scheduler after each epoch
    c.precision = "auto"  # the official runs use AMP: bfloat16 compute on GPU/TPU, float32 on CPU
    if stage == "aux":
        # TLEG's official aux commands pass --drop-path 0.0 (Aux-S, Aux-B); SWS keeps DeiT's default 0.1
        c.model = ml_collections.ConfigDict({"name": f"{method}_aux_{size}",
                                             "drop_path_rate": 0.0 if method == "tleg" else 0.1})
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


def digits_base(task: str, name: str) -> ml_collections.ConfigDict:
    """Bundled digits upsampled to 16×16, batch 32, eval batch 150, no augmentation (random shifts hurt ViTs on
    this data, see shared/reference/digits-calibration.md): the common ground of the offline ViT recipes."""
    c = base_config()
    c.task, c.name = task, name
    c.data.image_size = 16
    c.batch_size = 32
    c.eval_batch_size = 150
    c.log_every_steps = 50
    return c


def digits_demo(smoke: bool = False) -> ml_collections.ConfigDict:
    """The offline demo's shared settings (configs/demo.py, configs/baselines.py): `digits_base` with patch 4
    (16 tokens), AdamW 5e-4 unscaled, cosine with 5% warmup."""
    c = digits_base("demo", "demo")
    c.optim.update({"scale_lr": False, "lr": 5e-4, "min_lr": 1e-5, "weight_decay": 0.05})
    c.checkpoint.every_steps = 10_000
    c.demo = ml_collections.ConfigDict(dict(
        width=192, heads=3, patch_size=4, depths=(2, 4, 6, 8), teacher_widths=(32, 64), teacher_epochs=10,
        tleg_depth=12, sws_stage_sizes=(3, 3, 4, 3, 3), aux_epochs=16, kd_alpha=1.0, kd_temperature=1.0,
        finetune_epochs=1, scratch_factor=3, warmup_fraction=0.05, scan_layers=True))
    if smoke:
        c.demo.update(dict(width=32, heads=2, depths=(1, 2), teacher_widths=(8,), teacher_epochs=1, tleg_depth=2,
                           sws_stage_sizes=(1, 1), aux_epochs=1, finetune_epochs=1, scratch_factor=2))
        c.batch_size = 64
    return c


# Official Heur Learngene CIFAR-100 ancestor schedule (BruceQFWang/learngene `add_conv`/`add_width`): one block
# widened between each pair of the 21 continual tasks, front to back, to [64,64,128,128,256,256,256,512×6].
HEUR_CIFAR_WIDEN = tuple(((block, add),) for block, add in zip(
    (2, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12), (64,) * 8 + (128,) * 12, strict=True))
CIFAR100_MEAN = (0.5070751592371323, 0.48654887331495095, 0.4409178433670343)
CIFAR100_STD = (0.2673342858792401, 0.2564384629170883, 0.27615047132568404)


def heur_recipe(dataset: str = "digits", smoke: bool = False) -> ml_collections.ConfigDict:
    """Heur/Auto Learngene settings: the official CIFAR-100 protocol, a scaled-down digits version, or a smoke test.

    Digits (10 classes): base 0..4, no open-world pool, novel 5..9; 3-way tasks, 5 shots. Five novel classes give
    C(5,3) = 10 distinct 3-way inheritable tasks (6 are used: ≥ 5 to average over) and five base classes 10
    distinct ancestor tasks; 2-way 10-shot digits tasks are solved (~0.98 top-1) by gene and scratch descendants
    alike, so they would not tell the two apart. The open-world pool (held out, like the validation classes of the
    64/16/20 few-shot convention) is empty because nothing trains on it and digits has no classes to spare.
    """
    if dataset not in ("digits", "cifar100"):
        fail(ConfigError, f"heur recipes exist for digits and cifar100, got {dataset!r}")
    c = base_config()
    c.task, c.name = "heur", f"heur_{dataset}"
    c.log_every_steps = 50
    c.checkpoint.update(dict(every_steps=1_000_000, keep=1))  # stages are short: the final save is enough
    # Official: SGD momentum 0.9, weight decay 5e-4, constant learning rate (its step decay never triggers).
    c.optim.update(dict(name="sgd", momentum=0.9, weight_decay=5e-4, scale_lr=False, schedule="constant",
                        warmup_epochs=0.0))
    c.heur = ml_collections.ConfigDict(dict(
        split=(64, 16, 20), shuffle_classes=True, task_seed=0, continual_ways=5, continual_tasks=21,
        continual_shots=300, inheritable_ways=5, inheritable_tasks=10, shots=10,
        gene_blocks=3, ewc_weight=40.0, fisher_examples=0, auto_examples=256, scratch=True,
        ancestor=dict(widths=(64, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256),
                      pool_after=(1, 3, 6, 9, 12), hidden=(1024, 1024), dropout=0.5, widen=HEUR_CIFAR_WIDEN,
                      epochs=100, batch_size=16, lr=1e-3),
        descendant=dict(lower_widths=(64, 128, 256, 512), lower_pool_after=(0, 1, 2), final_pool=True,
                        hidden=(1024, 1024), dropout=0.0, epochs=30, batch_size=32, lr=5e-3)))
    # Auto Learngene: statistic pseudo_descendant (the paper's criterion, methods/heur/auto.py) or the least-change
    # statistics weights|gradients; layers 0: heur.gene_blocks. The pseudo descendant trains on continual task
    # `pseudo_task` for `epochs` (SGD lr, momentum 0.9, wd 5e-4), meta step after each step: Adam meta_lr,
    # inner_steps matching-only trial steps, matching weight beta (L2T-ww: T=2, β=0.5).
    c.auto = ml_collections.ConfigDict(dict(statistic="pseudo_descendant", layers=0, pseudo_task=-1, epochs=10,
                                            batch_size=32, lr=0.01, meta_lr=1e-3, inner_steps=2, beta=0.5))
    if dataset == "cifar100":
        c.data.update(dict(name="cifar100", image_size=32, mean=CIFAR100_MEAN, std=CIFAR100_STD, crop_pct=1.0))
        c.aug.flip = True  # official trains with flips and padded crops; eval images are not augmented
        return c
    # Digits, 16×16: four 2×2 pools would leave 1×1 maps under the 6 last blocks (3×3 convs reduced to their
    # centre tap), so the ancestor pools after blocks 1, 3, 6 only (16 → 2); widths are the official ones / 4.
    c.data.update(dict(image_size=16, channels=3))
    c.eval_batch_size = 100
    c.heur.update(dict(split=(5, 0, 5), shuffle_classes=False, continual_ways=3, continual_tasks=5, continual_shots=0,
                       inheritable_ways=3, inheritable_tasks=6, shots=5))
    # Scaled down: 3 epochs per ancestor task at lr 1e-2 (official 100 at 1e-3) reach ~1.0 top-1 on its classes.
    c.heur.ancestor.update(dict(
        widths=(16, 16, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64), pool_after=(1, 3, 6), hidden=(256, 256),
        dropout=0.0, epochs=3, batch_size=16, lr=1e-2,
        widen=(((2, 16), (3, 16), (4, 32)), ((5, 32), (6, 32), (7, 64)), ((8, 64), (9, 64)),
               ((10, 64), (11, 64), (12, 64)))))
    # 15 training images per task (3 classes × 5 shots): batch 5 gives 3 steps an epoch, 90 in the official 30 epochs
    c.heur.descendant.update(dict(lower_widths=(16, 32, 64, 128), hidden=(128, 128), epochs=30, batch_size=5))
    if smoke:
        c.name = "heur_smoke"
        c.heur.update(dict(continual_tasks=2, inheritable_tasks=2, auto_examples=64))
        c.auto.update(dict(epochs=1, batch_size=16))
        c.heur.ancestor.update(dict(widths=(4, 4, 8, 8, 8, 8), pool_after=(1, 3), hidden=(16,), epochs=1,
                                    batch_size=32, widen=(((2, 4), (4, 4), (5, 4)),)))
        c.heur.descendant.update(dict(lower_widths=(4, 8), lower_pool_after=(0, 1), hidden=(16,), epochs=2))
    return c
