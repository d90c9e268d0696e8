"""Learngene Pool, paper setting: DeiT-B teacher → DeiT-Ti and DeiT-B shaped instances of 6 (or 9) blocks on
ImageNet, stitched Ti→B (2 + 16 = 18 descendants at depth 6, 2 + 25 = 27 at depth 9), the pool fine-tuned
50 epochs with CE + 0.5 soft KD from DeiT-B.

    python -m learngene_jax.convert from-timm --checkpoint deit_base_patch16_224.pth --out runs/deit_b --num-heads 12
    python -m learngene_jax.main --config=configs/lgpool_deit.py[:depth=9] --workdir=runs/lgpool_deit \
        --config.lgpool.teacher_init=runs/deit_b --config.data.data_dir=TFDS_DIR

Needs ImageNet prepared for tfds (array_record) and accelerators; not run on the project's CPU machines.
Official recipe (Learngene Pool README and scripts, Yuanmou @f4a544d): students distilled 100 epochs at lr
5e-4 (DeiT harness), the tiny student on three feature points ('[front,end]'), the others on the last one
('[end]'); stitch layers from the trained Ti projections (`stitch_init='projections'`); pool 50 epochs,
batch 128, lr 5e-4, loss 0.5·CE on hard labels + 0.5·KD, no mixup or label smoothing. Learning rates are
not scaled by batch size here, as there (`optim.scale_lr=False`; DeiT's harness scales). Differences: README
"Deliberate deviations". `instances=ti+s+b` adds a Small instance stitched Ti→S→B (SN-Net's nearest pairs).
"""

from pathlib import Path

import ml_collections

from learngene_jax.config_lib import base_config, config_module, parse_arg
from learngene_jax.models import VIT_SIZES

HERE = Path(__file__).parent

# Feature points per instance size in the official runs: 3 = '[front,end]', 1 = '[end]'.
OFFICIAL_POINTS = {"ti": 3, "s": 1, "b": 1}


def get_config(arg=None):
    """`arg`: depth=6|9, instances=ti+b (DeiT sizes joined by '+'; ti+s+b stitches Ti→S→B)."""
    args = parse_arg(arg, {"depth": 6, "instances": "ti+b"})
    sizes = args["instances"].split("+")
    c = config_module(HERE / "deit.py").deit_recipe(base_config())
    c.task, c.name = "lgpool", f"lgpool_deit_L{args['depth']}"
    c.batch_size = 256
    c.optim.scale_lr = False  # the official scripts pass --lr 5e-4 as the lr itself
    c.lgpool = ml_collections.ConfigDict(dict(
        teacher_init="",  # required: a DeiT-B model directory (python -m learngene_jax.convert from-timm ...)
        teacher=dict(name="deit_b"), teacher_epochs=0, teacher_lr=5e-4,  # no teacher is trained here
        widths=tuple(VIT_SIZES[s]["width"] for s in sizes), heads=tuple(VIT_SIZES[s]["num_heads"] for s in sizes),
        depth=args["depth"], points=tuple(OFFICIAL_POINTS[s] for s in sizes), drop_path_rate=0.1,
        distill_epochs=100, distill_lr=5e-4,
        alpha=0.9,  # the toolkit's distillation weight: (1-a)·CE + a·(soft-CE + feature MSEs); paper α = 0.1
        temperature=1.0,
        pairs=tuple(f"{k}-{k + 1}" for k in range(len(sizes) - 1)), kernel_size=2, stride=1,
        stitch_init="projections", compare_stitch_init=False, ls_batch=64,
        finetune_epochs=50, finetune_lr=5e-4, finetune_batch_size=128, ce_weight=0.5, kd_weight=0.5,
        finetune_aug=dict(mixup=0.0, cutmix=0.0, label_smoothing=0.0),  # stage 2 on hard labels
        export=(),
    ))
    return c
