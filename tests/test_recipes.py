"""Every official setting of the recipes that call themselves official, pinned to the line of the official code it
comes from, and every config's fully resolved values pinned to a committed snapshot (tests/data/recipes/).

After a deliberate change to configs/ or to the recipe code, regenerate the snapshots with:

    python tests/test_recipes.py --update

The official table is not regenerated: a row changes only with its source.
"""

from __future__ import annotations

import json
import math
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from learngene_jax.config_lib import load_config
from learngene_jax.optim import decay_mask, lr_schedule, peak_lr, timm_epoch_lrs

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SNAPSHOTS = Path(__file__).resolve().parent / "data" / "recipes"
UPDATE = "python tests/test_recipes.py --update"

# The commits read (git show HEAD:<file> of each repository's newest snapshot; Yuanmou at the audited commit).
TLEG = "AlphaXia/TLEG@6e30a5c9bc0278cb7b852dcc20ff4cb68a187194"
SWS = "AlphaXia/SWS@2ad3b64c059b889337cdd3e6f6fec373b369cb1f"
DEIT = "facebookresearch/deit@7e160fe43f0252d17191b71cbb5826254114ea5b"
HEUR = "BruceQFWang/learngene@d145a5edfbf683b012148e8668a0fbf882eca620"
ASVIT = "VITA-Group/AsViT@e326ccaf63e05f241f8f48a0e045b63d221be62a"
POOL = "ZhenuYang/Yuanmou@f4a544de12bfce7a4b3e87e6011049392e59dcec:learngene_methods/learngene_pool"
NANOGPT = "karpathy/nanoGPT@3adf61e154c3fe3fca428ad6bc3818b27a3b8291"
# Where this project differs on purpose (README "Deliberate deviations from the official code").
DEVIATION = "learngene_jax docs/snippets/imagenet-deviations.md (deliberate deviation)"


def official_epoch_lrs(peak: float, epochs: int, warmup: int, warmup_lr: float, min_lr: float) -> list[float]:
    """The lr each epoch runs at when DeiT's `main.py` steps timm's `CosineLRScheduler(t_initial=epochs,
    warmup_t=warmup, warmup_lr_init=warmup_lr, lr_min=min_lr)` with `step(epoch)` after each epoch: the scheduler
    starts at f(0) and epoch e >= 1 runs at f(e - 1)."""
    def f(t: int) -> float:
        if t < warmup:
            return warmup_lr + t * (peak - warmup_lr) / warmup
        return min_lr + 0.5 * (peak - min_lr) * (1 + math.cos(math.pi * t / epochs))

    return [f(0)] + [f(e - 1) for e in range(1, epochs)]


# ---------------------------------------------------------------------------------------------------------------
# The official table: (recipe + arg, config key or `fact:NAME`, expected value, source "owner/repo@commit:file:line").
# ---------------------------------------------------------------------------------------------------------------

# TLEG and SWS `main.py` (DeiT's, extended) line of each harness argument.
MAIN_LINES = {
    TLEG: dict(size=48, data=160, interp=110, crop=178, aa=106, smoothing=109, repeated=116, reprob=123, mixup=133,
               cutmix=135, mixup_prob=139, switch=141, opt=62, eps=64, betas=66, clip=68, wd=73, lr=79, warmup_lr=87,
               min_lr=89, warmup=94, tau=152, dtype=150, drop_path=52, scale=328, step=426),
    SWS: dict(size=49, data=161, interp=111, crop=183, aa=107, smoothing=110, repeated=117, reprob=124, mixup=134,
              cutmix=136, mixup_prob=140, switch=142, opt=63, eps=65, betas=67, clip=69, wd=74, lr=80, warmup_lr=88,
              min_lr=90, warmup=95, tau=153, dtype=151, drop_path=53, scale=342, step=459),
    DEIT: dict(size=42, interp=102, crop=174, aa=98, smoothing=101, repeated=107, reprob=118, mixup=128, cutmix=130,
               mixup_prob=134, switch=136, opt=56, eps=58, betas=60, clip=62, wd=66, lr=71, warmup_lr=79, min_lr=81,
               warmup=86, drop_path=46, scale=350, step=432, epochs=35),
}


def harness_rows(spec: str, repo: str) -> list[tuple[str, str, Any, str]]:
    """The DeiT harness settings `spec` shares with the official `main.py` of `repo`."""
    line = MAIN_LINES[repo]

    def src(key: str, file: str = "main.py") -> str:
        return f"{repo}:{file}:{line[key]}"

    rows = [
        ("data.image_size", 224, src("size")),
        ("data.interpolation", "bicubic", src("interp")),
        ("data.crop_pct", 0.875, src("crop")),  # eval: resize 224 / 0.875 = 256, center crop 224
        ("aug.random_resized_crop", True, f"{repo}:datasets.py:43" if repo != DEIT else f"{repo}:datasets.py:82"),
        ("aug.flip", True, f"{repo}:datasets.py:43" if repo != DEIT else f"{repo}:datasets.py:82"),
        ("aug.randaugment", True, src("aa")),  # rand-m9-mstd0.5-inc1
        ("aug.randaugment_ops", 2, src("aa")),  # timm's default num_layers for 'rand-...' without n
        ("aug.randaugment_magnitude", 9.0, src("aa")),
        ("aug.randaugment_mstd", 0.5, src("aa")),
        ("aug.label_smoothing", 0.1, src("smoothing")),
        ("aug.repeated_aug", 3, src("repeated")),  # RASampler, 3 repeats
        ("aug.random_erasing", 0.25, src("reprob")),
        ("aug.mixup", 0.8, src("mixup")),
        ("aug.cutmix", 1.0, src("cutmix")),
        ("aug.mixup_prob", 1.0, src("mixup_prob")),
        ("aug.mixup_switch_prob", 0.5, src("switch")),
        ("optim.name", "adamw", src("opt")),
        ("optim.eps", 1e-8, src("eps")),
        ("optim.b1", 0.9, src("betas")),  # opt-betas None: torch AdamW's (0.9, 0.999)
        ("optim.b2", 0.999, src("betas")),
        ("optim.grad_clip", 0.0, src("clip")),  # clip-grad None
        ("optim.weight_decay", 0.05, src("wd")),
        ("optim.warmup_lr", 1e-6, src("warmup_lr")),
        ("optim.scale_lr", True, src("scale")),  # lr × global batch / 512
    ]
    if repo != DEIT:
        rows.append(("data.name", "imagenet2012", src("data")))
    return [(spec, key, value, source) for key, value, source in rows]


def learngene_rows() -> list[tuple[str, str, Any, str]]:
    """TLEG and SWS, aux, descendant and scratch, each size (configs/tleg_*.py, sws_*.py, learngene_imagenet.py)."""
    rows = []
    readme = {TLEG: f"{TLEG}:README.md", SWS: f"{SWS}:README.md"}
    # (method, size): (aux epochs, aux README line, descendant epochs, descendant README line, descendant lr, min lr)
    budgets = {
        ("tleg", "ti"): (150, "38 (Aux-S's; no official Aux-Ti)", 50, None, 5e-4, 1e-5),
        ("tleg", "s"): (150, "38", 35, "83", 5e-4, 1e-5),
        ("tleg", "b"): (100, "52", 40, "110", 5e-4, 1e-5),
        ("sws", "s"): (150, "35", 10, "53", 5e-5, 1e-6),
        ("sws", "b"): (100, "41", 10, "61", 1e-5, 1e-6),
    }
    aux_names = {"tleg": {"ti": "tleg_aux_ti", "s": "tleg_aux_s", "b": "tleg_aux_b"},
                 "sws": {"s": "sws_aux_s", "b": "sws_aux_b"}}
    aux_lines = {("tleg", "ti"): "37", ("tleg", "s"): "37", ("tleg", "b"): "51", ("sws", "s"): "35",
                 ("sws", "b"): "41"}
    for (method, size), (aux_epochs, aux_line, des_epochs, des_line, des_lr, des_min_lr) in budgets.items():
        repo = TLEG if method == "tleg" else SWS
        line = MAIN_LINES[repo]
        main = f"{repo}:main.py"
        batch_line = "34,38" if method == "tleg" else aux_line  # 4 GPUs × --batch-size 128
        for file, extra in ((f"{method}_{size}.py", ""), ("learngene_imagenet.py", f"method={method},size={size},")):
            aux, des, scratch = (f"{file}:{extra}stage={s}" for s in ("aux", "descendant", "scratch"))
            for spec in (aux, des, scratch):
                rows += harness_rows(spec, repo)
                rows += [
                    (spec, "batch_size", 512, f"{readme[repo]}:{batch_line}"),
                    (spec, "optim.lr", 5e-4 if spec != des else des_lr,
                     f"{readme[repo]}:{des_line}" if spec == des and method == "sws" else f"{main}:{line['lr']}"),
                    (spec, "optim.min_lr", 1e-5 if spec != des else des_min_lr,
                     f"{readme[repo]}:{des_line}" if spec == des and method == "sws" else f"{main}:{line['min_lr']}"),
                    (spec, "optim.schedule", "cosine_epoch", f"{main}:{line['step']}"),  # lr_scheduler.step(epoch)
                    (spec, "precision", "auto", DEVIATION),  # official: fp16 autocast + GradScaler (engine.py:63)
                ]
            # Stage 1: the Aux-Net distilled from LeViT-384, soft KD only (α = 1, T = 1).
            rows += [
                (aux, "model.name", aux_names[method][size], f"{readme[repo]}:{aux_lines[(method, size)]}"),
                (aux, "epochs", aux_epochs, f"{readme[repo]}:{aux_line}"),
                (aux, "model.drop_path_rate", 0.0 if method == "tleg" else 0.1,
                 f"{readme[repo]}:{aux_lines[(method, size)]}" if method == "tleg" else f"{main}:{line['drop_path']}"),
                (aux, "optim.warmup_epochs", 5, f"{main}:{line['warmup']}"),
                (aux, "distill.type", "soft", f"{readme[repo]}:{'41' if method == 'tleg' else aux_line}"),
                (aux, "distill.alpha", 1.0, f"{readme[repo]}:{'41' if method == 'tleg' else aux_line}"),
                (aux, "distill.temperature", 1.0, f"{main}:{line['tau']}"),
                (aux, "distill.teacher", "levit_384", f"{readme[repo]}:{'40' if method == 'tleg' else aux_line}"),
                (aux, "fact:epoch_lrs", official_epoch_lrs(5e-4, aux_epochs, 5, 1e-6, 1e-5),
                 f"{main}:{line['step']} (timm CosineLRScheduler stepped after each epoch)"),
                (aux, "fact:peak_lr", 5e-4, f"{main}:{line['scale']}"),
            ]
            # Stage 2: the descendant (depth 12 in the official commands), no warmup, no distillation.
            des_source = (f"{readme[repo]}:{des_line}" if des_line
                          else "TLEG paper (AAAI 2024) Des-Ti; no official command")
            rows += [
                (des, "model.name", "descendant", des_source),  # deit_{size}_patch16_224_L12 built from the gene
                (des, "depth", 12, des_source),
                (des, "epochs", des_epochs, des_source),
                (des, "optim.warmup_epochs", 0, des_source),
                (des, "model.drop_path_rate", 0.1, f"{main}:{line['drop_path']}"),
                (des, "distill.type", "none", f"{main}:{line['dtype']}"),
                (des, "fact:epoch_lrs", official_epoch_lrs(des_lr, des_epochs, 0, 1e-6, des_min_lr),
                 f"{main}:{line['step']} (timm CosineLRScheduler stepped after each epoch)"),
                (des, "fact:peak_lr", des_lr, f"{main}:{line['scale']}"),
            ]
            if method == "sws":
                rows.append((des, "layers_source", "0,0,0,1,1,1,2,2,3,3,4,4", des_source))
            # Scratch: the same descendant architecture trained as DeiT trains it.
            rows += [
                (scratch, "epochs", 300, f"{DEIT}:main.py:{MAIN_LINES[DEIT]['epochs']}"),
                (scratch, "model.depth", 12, des_source),
                (scratch, "model.drop_path_rate", 0.1, f"{DEIT}:main.py:{MAIN_LINES[DEIT]['drop_path']}"),
                (scratch, "optim.warmup_epochs", 5, f"{main}:{line['warmup']}"),
            ]
    return rows


def deit_rows() -> list[tuple[str, str, Any, str]]:
    """configs/deit.py: the DeiT harness alone (DeiT-S from scratch)."""
    spec, main = "deit.py:", f"{DEIT}:main.py"
    return harness_rows(spec, DEIT) + [
        (spec, "data.name", "imagenet2012", f"{DEIT}:README_deit.md:216"),
        (spec, "epochs", 300, f"{main}:35"),
        (spec, "model.name", "deit_s", f"{DEIT}:README_deit.md:216"),
        (spec, "model.drop_path_rate", 0.1, f"{main}:46"),
        (spec, "optim.lr", 5e-4, f"{main}:71"),
        (spec, "optim.min_lr", 1e-5, f"{main}:81"),
        (spec, "optim.warmup_epochs", 5, f"{main}:86"),
        (spec, "optim.schedule", "cosine_epoch", f"{main}:432"),  # lr_scheduler.step(epoch)
        # global 512 as the learngene runs use it (4 × 128, TLEG README.md:34,38); DeiT's own README trains DeiT-S
        # at 4 × 256 (README_deit.md:216) — the lr scales with the batch either way (main.py:350)
        (spec, "batch_size", 512, f"{TLEG}:README.md:38"),
        (spec, "distill.type", "none", f"{main}:145"),
        (spec, "fact:epoch_lrs", official_epoch_lrs(5e-4, 300, 5, 1e-6, 1e-5), f"{main}:432"),
    ]


def lgpool_rows() -> list[tuple[str, str, Any, str]]:
    """configs/lgpool_deit.py: Learngene Pool stage 1 (distil DeiT-B into instances) and stage 2 (stitch, fine-tune).
    Stage-1 harness values from conf_aux_tiny9.yaml, which the scripts' runs load (params.py:36)."""
    spec, yaml, build = "lgpool_deit.py:", f"{POOL}/configs/conf_aux_tiny9.yaml", f"{POOL}/configs/conf_build.yaml"
    distill_sh = f"{POOL}/script/distill-base12-base6.sh:7"
    finetune_sh = f"{POOL}/script/tiny6-base6-finetune-instance-ours-w-distill.sh:1"
    rows = [
        ("task", "lgpool", distill_sh),
        ("data.name", "imagenet2012", f"{yaml}:58"),
        ("data.image_size", 224, f"{yaml}:56"),
        ("data.interpolation", "bicubic", f"{yaml}:68"),
        ("aug.randaugment", True, f"{yaml}:66"),
        ("aug.randaugment_magnitude", 9.0, f"{yaml}:66"),
        ("aug.label_smoothing", 0.1, f"{yaml}:67"),
        ("aug.random_erasing", 0.25, f"{yaml}:71"),
        ("aug.mixup", 0.8, f"{yaml}:75"),
        ("aug.cutmix", 1.0, f"{yaml}:76"),
        ("aug.mixup_prob", 1.0, f"{yaml}:78"),
        ("aug.mixup_switch_prob", 0.5, f"{yaml}:79"),
        ("aug.repeated_aug", 3, f"{yaml}:69"),  # stage 1 (distill.py:50, RASampler under torch.distributed)
        ("optim.name", "adamw", f"{yaml}:59"),
        ("optim.eps", 1e-8, f"{yaml}:60"),
        ("optim.b1", 0.9, f"{yaml}:61"),
        ("optim.b2", 0.999, f"{yaml}:61"),
        ("optim.weight_decay", 0.05, f"{yaml}:64"),
        ("optim.warmup_lr", 1e-6, f"{yaml}:33"),
        ("optim.min_lr", 1e-5, f"{yaml}:34"),
        ("optim.warmup_epochs", 5, f"{yaml}:36"),
        ("optim.scale_lr", False, f"{POOL}/distill.py:134"),  # create_optimizer(args) with --lr as given
        ("optim.schedule", "cosine_epoch", f"{POOL}/distill.py:187"),  # lr_scheduler.step(epoch); main.py:233
        ("lgpool.teacher.name", "deit_b", distill_sh),
        ("lgpool.teacher_epochs", 0, f"{POOL}/distill.py:101"),  # pretrained=True: no teacher is trained
        ("lgpool.depth", 6, distill_sh),  # deit_tiny6 student
        ("lgpool.distill_epochs", 100, distill_sh),
        ("lgpool.distill_lr", 5e-4, distill_sh),
        # the toolkit weighs (1-a)·CE + a·(soft-CE + feature MSEs); official α·CE + (1-α)·(...) with α = 0.1
        ("lgpool.alpha", 0.9, f"{POOL}/engine.py:196"),
        ("lgpool.temperature", 1.0, f"{yaml}:54"),
        # feature points: Ti '[front,end]' (conf_aux_tiny9.yaml:55); B '[end]'. NB conf_aux_base9.yaml:55 also says
        # '[front,end]' and distill-base12-base6.sh:7 distils tiny6 with '[end]' — the sources disagree
        ("lgpool.points", (3, 1), f"{yaml}:55"),
        ("lgpool.kernel_size", 2, f"{POOL}/networks/learngenepool.py:41"),
        ("lgpool.stride", 1, f"{POOL}/networks/learngenepool.py:41"),
        ("lgpool.stitch_init", "projections", finetune_sh),  # --init_stitch_mode ours
        ("lgpool.finetune_epochs", 50, finetune_sh),
        ("lgpool.finetune_lr", 5e-4, finetune_sh),
        ("lgpool.ce_weight", 0.5, f"{build}:19"),  # (1 - distillation_alpha)·CE, losses.py:111
        ("lgpool.kd_weight", 0.5, f"{build}:19"),
        ("lgpool.finetune_aug.mixup", 0.0, f"{POOL}/main.py:232"),  # train_one_epoch(..., mixup_fn=None)
        ("lgpool.finetune_aug.cutmix", 0.0, f"{POOL}/main.py:232"),
        ("lgpool.finetune_aug.label_smoothing", 0.0, f"{POOL}/main.py:194"),  # plain CrossEntropyLoss
        ("lgpool.drop_path_rate", 0.0, f"{POOL}/models.py:40"),  # blocks rebuilt without drop-path
        ("batch_size", 512, distill_sh),  # --nproc_per_node 2 × --batch-size 256
        ("lgpool.finetune_batch_size", 256, finetune_sh),
        ("lgpool.finetune_aug.repeated_aug", 1, f"{POOL}/main.py:98"),  # single GPU: RandomSampler
        ("lgpool.ls_batch", 100, f"{build}:25"),  # stitch_init_bs
        ("lgpool.ls_pipeline", "train", f"{POOL}/main.py:156"),  # the least-squares batch is mixed training images
        ("fact:peak_lr", 5e-4, f"{POOL}/distill.py:134"),  # unscaled at any batch
        # what the recipe code (methods/lgpool/run.py) makes of them: each stage's resolved training config
        ("fact:stage:distill_0:model.drop_path_rate", 0.0, f"{POOL}/models.py:40"),
        ("fact:stage:distill_1:model.drop_path_rate", 0.0, f"{POOL}/models.py:40"),
        ("fact:stage:distill_0:batch_size", 512, distill_sh),
        ("fact:stage:distill_0:epochs", 100, distill_sh),
        ("fact:stage:distill_0:optim.lr", 5e-4, distill_sh),
        ("fact:stage:distill_0:optim.schedule", "cosine_epoch", f"{POOL}/distill.py:187"),
        ("fact:stage:distill_0:aug.repeated_aug", 3, f"{yaml}:69"),
        ("fact:stage:distill_0:aug.mixup", 0.8, f"{yaml}:75"),
        ("fact:stage:distill_0:distill.alpha", 0.9, f"{POOL}/engine.py:196"),
        ("fact:stage:finetune:batch_size", 256, finetune_sh),
        ("fact:stage:finetune:epochs", 50, finetune_sh),
        ("fact:stage:finetune:optim.lr", 5e-4, finetune_sh),
        ("fact:stage:finetune:optim.schedule", "cosine_epoch", f"{POOL}/main.py:233"),
        ("fact:stage:finetune:aug.repeated_aug", 1, f"{POOL}/main.py:98"),
        ("fact:stage:finetune:aug.mixup", 0.0, f"{POOL}/main.py:232"),
        ("fact:stage:finetune:aug.cutmix", 0.0, f"{POOL}/main.py:232"),
        ("fact:stage:finetune:aug.label_smoothing", 0.0, f"{POOL}/main.py:194"),
        ("fact:stage:finetune:objective", "lgpool_finetune", f"{build}:19"),
    ]
    rows = [(spec, key, value, source) for key, value, source in rows]
    tiny9_sh = f"{POOL}/script/tiny9-base9-finetune-instance-ours-w-distill.sh:1"
    rows += [("lgpool_deit.py:depth=9", "lgpool.depth", 9, f"{POOL}/configs/conf_aux_tiny9.yaml:41"),
             ("lgpool_deit.py:depth=9", "lgpool.finetune_batch_size", 128, tiny9_sh),
             ("lgpool_deit.py:depth=9", "lgpool.finetune_epochs", 50, tiny9_sh),
             ("lgpool_deit.py:depth=9", "lgpool.finetune_lr", 5e-4, tiny9_sh)]
    return rows


# Official Heur Learngene widening between the 21 CIFAR-100 continual tasks (network_wider_cifar100.py:24-25).
HEUR_ADD_CONV = (2, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12)
HEUR_ADD_WIDTH = (64,) * 8 + (128,) * 12
HEUR_WIDEN = tuple(((block, add),) for block, add in zip(HEUR_ADD_CONV, HEUR_ADD_WIDTH, strict=True))


def heur_rows() -> list[tuple[str, str, Any, str]]:
    """configs/heur_vgg.py:dataset=cifar100, the official protocol."""
    spec = "heur_vgg.py:dataset=cifar100"
    ancestor, inherit = f"{HEUR}:collective-model/val_lifelong_cifar100.py", f"{HEUR}:inheritable_cifar100_wEWC.py"
    wider, zoo, data = (f"{HEUR}:utils/network_wider_cifar100.py", f"{HEUR}:utils/model_zoo_cifar100.py",
                        f"{HEUR}:utils/data_cifar_mk.py")
    rows = [
        ("task", "heur", f"{HEUR}:README.md:70"),
        ("data.name", "cifar100", f"{HEUR}:README.md:29"),
        ("data.image_size", 32, f"{HEUR}:utils/cifar100_dataloader.py:131"),
        ("data.mean", (0.5070751592371323, 0.48654887331495095, 0.4409178433670343), f"{data}:27"),
        ("data.std", (0.2673342858792401, 0.2564384629170883, 0.27615047132568404), f"{data}:28"),
        ("aug.flip", True, f"{HEUR}:utils/cifar100_dataloader.py:132"),
        ("heur.split", (64, 16, 20), f"{data}:111"),  # base classes range(0, 64); novel range(0, 20) at :208
        ("heur.continual_ways", 5, f"{ancestor}:138"),
        ("heur.continual_shots", 300, f"{ancestor}:138"),
        # the script's default; README.md:43 passes --num_works 50, but the widening schedule has 20 steps (21 tasks)
        ("heur.continual_tasks", 21, f"{ancestor}:46"),
        ("heur.inheritable_ways", 5, f"{inherit}:98"),
        ("heur.inheritable_tasks", 10, f"{inherit}:48"),  # the script's default; README.md:70 passes 5
        ("heur.shots", 10, f"{HEUR}:README.md:70"),  # [10 or 20]
        ("heur.ewc_weight", 40.0, f"{HEUR}:utils/Ewc_class.py:19"),
        ("heur.ancestor.widths", (64, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256), f"{wider}:20"),
        ("heur.ancestor.pool_after", (1, 3, 6, 9, 12), f"{wider}:22"),
        ("heur.ancestor.widen", HEUR_WIDEN, f"{wider}:24"),
        ("heur.ancestor.hidden", (1024, 1024), f"{wider}:166"),
        ("heur.ancestor.dropout", 0.5, f"{wider}:168"),  # nn.Dropout()
        ("heur.ancestor.epochs", 100, f"{ancestor}:36"),
        ("heur.ancestor.batch_size", 16, f"{ancestor}:34"),  # the script's default; README.md:43 passes 64
        ("heur.ancestor.lr", 1e-3, f"{ancestor}:38"),
        ("heur.descendant.lower_widths", (64, 128, 256, 512), f"{zoo}:14"),  # cfg 'B'
        ("heur.descendant.lower_pool_after", (0, 1, 2), f"{zoo}:14"),
        ("heur.descendant.final_pool", True, f"{zoo}:32"),
        ("heur.descendant.hidden", (1024, 1024), f"{zoo}:35"),
        ("heur.descendant.dropout", 0.0, f"{zoo}:34"),  # no Dropout in the descendant's classifier
        ("heur.descendant.epochs", 30, f"{HEUR}:README.md:70"),
        ("heur.descendant.batch_size", 32, f"{inherit}:34"),
        ("heur.descendant.lr", 5e-3, f"{inherit}:38"),
        ("optim.name", "sgd", f"{inherit}:177"),
        ("optim.momentum", 0.9, f"{inherit}:40"),
        ("optim.weight_decay", 5e-4, f"{inherit}:177"),
        ("optim.scale_lr", False, f"{inherit}:177"),
        ("optim.schedule", "constant", f"{inherit}:52"),  # step decay at epoch 110 of 30: never
        ("optim.warmup_epochs", 0.0, f"{inherit}:177"),
    ]
    return [(spec, key, value, source) for key, value, source in rows]


def asvit_rows() -> list[tuple[str, str, Any, str]]:
    """configs/asvit_search.py and asvit_grow.py: the paper settings (VITA-Group/AsViT search/)."""
    search, grow = f"{ASVIT}:search/reinforce.py", f"{ASVIT}:search/grow.py"
    rows = [
        ("asvit_search.py:", "task", "asvit_search", f"{ASVIT}:README.md:52"),
        ("asvit_search.py:", "seed", 8, f"{search}:221"),
        ("asvit_search.py:", "steps", 500, f"{search}:217"),
        ("asvit_search.py:", "learning_rate", 0.08, f"{search}:216"),
        ("asvit_search.py:", "ema_momentum", 0.9, f"{search}:218"),
        ("asvit_search.py:", "buffer_size", 20, f"{search}:225"),
        ("asvit_search.py:", "count_image_size", 224, f"{search}:136"),
        ("asvit_grow.py:", "task", "asvit_grow", f"{ASVIT}:README.md:60"),
        ("asvit_grow.py:", "seed", 27, f"{grow}:230"),
        ("asvit_grow.py:", "arch", "8,2,3|4,1,2|4,1,4|4,1,6|32", f"{ASVIT}:README.md:54"),
        ("asvit_grow.py:", "proxy_width", 8, f"{grow}:20"),
        ("asvit_grow.py:", "width_scale", 4, f"{grow}:17"),
        ("asvit_grow.py:", "width_ratios", (0.05, 0.1, 0.15, 0.2), f"{grow}:207"),
        ("asvit_grow.py:", "param_limit_m", 110.0, f"{grow}:18"),
        ("asvit_grow.py:", "param_stop_m", 80.0, f"{grow}:18"),
        ("asvit_grow.py:", "count_image_size", 224, f"{grow}:175"),
    ]
    for spec, script, lines in (("asvit_search.py:", search, (136, 224, 155, 223)),
                                ("asvit_grow.py:", grow, (175, 233, 186, 232))):
        rows += [
            (spec, "proxy.image_size", 224, f"{script}:{lines[0]}"),
            (spec, "proxy.repeats", 5, f"{script}:{lines[1]}"),  # --repeat
            (spec, "proxy.curve_points", 10, f"{script}:{lines[2]}"),  # _size_curve
            (spec, "proxy.ntk_images", 16, f"{script}:{lines[3]}"),  # --batch_size for ntk
        ]
    return rows


def nanogpt_step_lrs(lr: float, min_lr: float, warmup: int, decay_iters: int, steps: int) -> list[float]:
    """nanoGPT's get_lr(it) for it = 0 .. steps − 1 (train.py:231-242): lr·(it + 1)/(warmup + 1) during warm-up,
    then cosine from lr to min_lr at decay_iters."""
    def get_lr(it: int) -> float:
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        if it > decay_iters:
            return min_lr
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * (it - warmup) / (decay_iters - warmup))) * (lr - min_lr)

    return [get_lr(it) for it in range(steps)]


def nanogpt_rows() -> list[tuple[str, str, Any, str]]:
    """configs/nanogpt_shakespeare_char.py: README's CPU command over config/train_shakespeare_char.py and train.py's
    defaults; model.py's architecture, init and weight-decay groups as facts of the built model."""
    spec = "nanogpt_shakespeare_char.py:"
    readme, cfg = f"{NANOGPT}:README.md:85", f"{NANOGPT}:config/train_shakespeare_char.py"
    train, model, prepare = (f"{NANOGPT}:train.py", f"{NANOGPT}:model.py",
                             f"{NANOGPT}:data/shakespeare_char/prepare.py")
    rows = [
        ("data.context", 64, readme),  # --block_size=64
        ("batch_size", 12, readme),  # --batch_size=12 (gradient_accumulation_steps = 1, config:17)
        ("model.depth", 4, readme),  # --n_layer=4
        ("model.num_heads", 4, readme),  # --n_head=4
        ("model.width", 128, readme),  # --n_embd=128
        ("max_steps", 2000, readme),  # --max_iters=2000: the model evaluated at iter 2000 has taken 2000 steps
        ("model.dropout", 0.0, readme),  # --dropout=0.0
        ("data.tokenizer", "char", f"{prepare}:24"),  # chars = sorted(list(set(data)))
        ("data.sampling", "random", f"{train}:123"),  # ix = torch.randint(len(data) - block_size, (batch_size,))
        ("optim.lr", 1e-3, f"{cfg}:27"),
        ("optim.min_lr", 1e-4, f"{cfg}:30"),
        ("optim.b2", 0.99, f"{cfg}:31"),
        ("optim.warmup_steps", 100, f"{cfg}:33"),
        ("optim.scale_lr", False, f"{train}:258"),  # lr = get_lr(iter_num), unscaled
        ("optim.name", "adamw", f"{model}:284"),
        ("optim.eps", 1e-8, f"{model}:284"),  # torch.optim.AdamW's default (none passed)
        ("optim.b1", 0.9, f"{train}:61"),
        ("optim.weight_decay", 0.1, f"{train}:60"),
        ("optim.grad_clip", 1.0, f"{train}:63"),
        ("optim.schedule", "cosine", f"{train}:65"),  # decay_lr = True
        ("model.bias", False, f"{train}:56"),
        ("model.gelu_approximate", False, f"{model}:83"),  # nn.GELU(): exact erf
        ("model.position_std", 0.02, f"{model}:168"),  # nn.Embedding: N(0, 0.02), wpe included
        ("fact:model:eps", 1e-5, f"{model}:27"),  # F.layer_norm(..., 1e-5)
        ("fact:model:hidden", 512, f"{model}:82"),  # c_fc: 4 · n_embd
        # lr of each of the 2000 steps: --lr_decay_iters=2000 (README) with warmup and min_lr of the config
        ("fact:step_lrs", nanogpt_step_lrs(1e-3, 1e-4, 100, 2000, 2000), f"{train}:231-242"),
        # params that decay: every >= 2-D tensor (wte = the tied lm_head, wpe, the four matrices of each block)
        ("fact:decayed", ["layers/attn_proj", "layers/c_attn", "layers/c_fc", "layers/mlp_proj", "wpe", "wte"],
         f"{model}:270"),
    ]
    return [(spec, key, value, source) for key, value, source in rows]


# optax computes a schedule in float32: ~1e-7 of the peak lr, 1.2e-5 relative to the smallest (peak/101, step 0); a
# wrong warm-up (it/warmup) or decay length is off by 1 % or more
TOLERANCE = {"fact:step_lrs": 2e-5}
OFFICIAL = learngene_rows() + deit_rows() + lgpool_rows() + heur_rows() + asvit_rows() + nanogpt_rows()


@cache
def resolved(spec: str) -> dict:
    """`configs/FILE:ARG` loaded as the command line loads it (the file's `get_config(arg)`), as a plain dict."""
    file, _, arg = spec.partition(":")
    return json.loads(json.dumps(load_config(CONFIGS / file, arg or None).to_dict(), sort_keys=True))


def fact(spec: str, name: str) -> Any:
    """A value the recipe code derives from the config: the peak lr or the lr of every epoch."""
    file, _, arg = spec.partition(":")
    config = load_config(CONFIGS / file, arg or None)
    if name.startswith("stage:"):  # stage:NAME:key — a Learngene Pool stage's config as methods/lgpool/run.py builds it
        _, stage, key = name.split(":")
        return lookup(lgpool_stage(config, stage).to_dict(), key)
    if name.startswith("model:"):  # model:FIELD — a field or property of the model the config builds
        from learngene_jax.models import create_model

        kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
        return getattr(create_model(config.model.name, **kwargs), name.removeprefix("model:"))
    if name == "step_lrs":  # the lr of every step of the run (config.max_steps)
        import numpy as np

        schedule = lr_schedule(config.optim, config.batch_size, 1, config.max_steps)
        return [float(lr) for lr in np.asarray(schedule(np.arange(config.max_steps)))]
    if name == "decayed":  # the params that get weight decay (optim.decay_mask), as slash-joined paths
        from learngene_jax.models import create_model
        from learngene_jax.models.llama import abstract_lm_params

        kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
        mask = decay_mask(abstract_lm_params(create_model(config.model.name, vocab_size=65, **kwargs)))
        flat_mask = jax_paths(mask)
        return sorted(path for path, decayed in flat_mask.items() if decayed)
    peak = peak_lr(config.optim, config.batch_size)
    if name == "peak_lr":
        return peak
    if name == "epoch_lrs":
        return [float(x) for x in timm_epoch_lrs(config.optim, peak, config.epochs)]
    raise KeyError(name)


def lgpool_stage(config: Any, stage: str) -> Any:
    """The training config of Learngene Pool stage `distill_K` or `finetune`, built by the recipe code."""
    from learngene_jax.methods.lgpool import run as lgpool_run
    from learngene_jax.models import create_model
    from learngene_jax.stages import stage_config

    distill = {"type": "soft", "teacher": "", "teacher_init": "DEIT_B_DIR", "alpha": config.lgpool.alpha,
               "temperature": config.lgpool.temperature}
    if stage == "finetune":
        return stage_config(config, stage, **lgpool_run.finetune_stage(config, distill))
    k = int(stage.removeprefix("distill_"))
    return stage_config(config, stage, **lgpool_run.distill_stage(config.lgpool, create_model("deit_b"), distill, k))


def jax_paths(tree: Any) -> dict[str, Any]:
    """{'a/b': leaf} of a pytree of dicts."""
    import jax

    return {"/".join(str(k.key) for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def lookup(config: dict, key: str) -> Any:
    """config['a']['b'] for key 'a.b'."""
    value = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            pytest.fail(f"no key {key!r} (missing {part!r})")
        value = value[part]
    return value


def plain(value: Any) -> Any:
    """Tuples as lists (JSON's view), for comparing a config value with a table value."""
    return json.loads(json.dumps(value))


def same(got: Any, want: Any, rel_tol: float = 1e-12) -> bool:
    """Equal; numbers to `rel_tol` relative (derived values are sums and products), whether int or float."""
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(same(g, w, rel_tol) for g, w in zip(got, want, strict=True))
    numbers = [isinstance(v, int | float) and not isinstance(v, bool) for v in (got, want)]
    if all(numbers):  # ml_collections keeps a key's type: warmup_epochs=5 reads back as 5.0
        return math.isclose(got, want, rel_tol=rel_tol, abs_tol=0.0)
    return type(got) is type(want) and got == want


@pytest.mark.parametrize("spec,key,expected,source", OFFICIAL, ids=[f"{r[0]}|{r[1]}" for r in OFFICIAL])
def test_official_setting(spec: str, key: str, expected: Any, source: str):
    """Each recipe that calls itself official sets each value as the official code does (or as the README states)."""
    got = fact(spec, key.removeprefix("fact:")) if key.startswith("fact:") else lookup(resolved(spec), key)
    assert same(plain(got), plain(expected), TOLERANCE.get(key, 1e-12)), (
        f"configs/{spec} {key} = {got!r}, the official value is {expected!r} ({source})")


# ---------------------------------------------------------------------------------------------------------------
# Snapshots: every config file under configs/, each documented variant, resolved in full.
# ---------------------------------------------------------------------------------------------------------------

VARIANTS = {
    "asvit_grow.py": ("", "smoke=True"),
    "asvit_search.py": ("", "smoke=True"),
    "asvit_train.py": ("", "retok=0", "data=imagenet"),
    "auto_vgg.py": ("", "dataset=cifar100", "statistic=weights", "statistic=gradients", "smoke=True"),
    "baselines.py": ("", "smoke=True"),
    "deit.py": ("", "model=deit_ti"),
    "demo.py": ("", "smoke=True"),
    "digits.py": ("",),
    "digits_vit.py": ("",),
    "heur_vgg.py": ("", "dataset=cifar100", "smoke=True"),
    "learngene_imagenet.py": tuple(f"method={m},size={s},stage={t}" for m, sizes in (("tleg", "ti s b"), ("sws", "s b"))
                                   for s in sizes.split() for t in ("aux", "descendant", "scratch")),
    "lgpool_deit.py": ("", "depth=9", "instances=ti+s+b"),
    "lgpool_digits.py": ("", "smoke=True"),
    "lm_anchor.py": ("", "smoke=True"),
    "lm_demo.py": ("", "smoke=True"),
    "lm_hf_teacher.py": tuple(f"method={m},stage={s}" for m in ("tleg", "sws")
                              for s in ("aux", "descendant", "scratch")) + ("smoke=True",),
    "lm_lora.py": ("", "smoke=True"),
    "nanogpt_shakespeare_char.py": ("", "smoke=True"),
    **{f"{m}.py": ("stage=aux", "stage=descendant", "stage=descendant,depth=6", "stage=scratch")
       for m in ("tleg_ti", "tleg_s", "tleg_b", "sws_s", "sws_b")},
}
SNAPSHOT_SPECS = [f"{file}:{arg}" for file, args in VARIANTS.items() for arg in args]


def snapshot_path(spec: str) -> Path:
    """tests/data/recipes/<file stem>[__<arg>].json, the arg spelled with safe characters."""
    file, _, arg = spec.partition(":")
    name = Path(file).stem + (f"__{re.sub(r'[^A-Za-z0-9_.+-]', '_', arg.replace('=', '-'))}" if arg else "")
    return SNAPSHOTS / f"{name}.json"


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b': leaf} of a nested dict."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}.{key}" if prefix else key))
    return out


def test_every_config_has_variants():
    """Every config file is snapshotted, and every snapshot belongs to a listed variant."""
    files = sorted(p.name for p in CONFIGS.glob("*.py"))
    assert sorted(VARIANTS) == files, f"list the variants of new config files in VARIANTS, then run `{UPDATE}`"
    stale = sorted({p.name for p in SNAPSHOTS.glob("*.json")} - {snapshot_path(s).name for s in SNAPSHOT_SPECS})
    assert not stale, f"snapshots with no listed variant: {stale}; run `{UPDATE}`"


@pytest.mark.parametrize("spec", SNAPSHOT_SPECS)
def test_config_snapshot(spec: str):
    """The fully resolved config equals its committed snapshot."""
    path = snapshot_path(spec)
    assert path.is_file(), f"no snapshot {path.relative_to(REPO)}; run `{UPDATE}`"
    want, got = flat(json.loads(path.read_text())), flat(resolved(spec))
    changed = [f"  {k}: {want[k]!r} -> {got[k]!r}" for k in sorted(want.keys() & got.keys()) if want[k] != got[k]]
    changed += [f"  {k}: removed (was {want[k]!r})" for k in sorted(want.keys() - got.keys())]
    changed += [f"  {k}: added ({got[k]!r})" for k in sorted(got.keys() - want.keys())]
    assert not changed, (f"configs/{spec} differs from {path.relative_to(REPO)}:\n" + "\n".join(changed) +
                         f"\nIf the change is deliberate (and the official table above still holds), run `{UPDATE}`")


def update_snapshots() -> None:
    """Write every snapshot anew and remove those of variants no longer listed."""
    SNAPSHOTS.mkdir(parents=True, exist_ok=True)
    keep = set()
    for spec in SNAPSHOT_SPECS:
        path = snapshot_path(spec)
        keep.add(path.name)
        path.write_text(json.dumps(resolved(spec), indent=1, sort_keys=True) + "\n")
    for path in SNAPSHOTS.glob("*.json"):
        if path.name not in keep:
            path.unlink()
    print(f"wrote {len(keep)} snapshots to {SNAPSHOTS.relative_to(REPO)}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(f"usage: {UPDATE}")
    update_snapshots()
