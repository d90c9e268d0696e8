"""Learngene Pool, paper setting: DeiT-B teacher → DeiT-Ti and DeiT-B shaped instances of 6 (or 9) blocks on
ImageNet, stitched Ti→B (2 + 16 = 18 descendants at depth 6, 2 + 25 = 27 at depth 9), the pool fine-tuned
50 epochs with 0.5·CE + 0.5·soft KD from DeiT-B.

    python -m learngene_jax.convert from-timm --checkpoint deit_base_patch16_224.pth --out runs/deit_b --num-heads 12
    python -m learngene_jax.main --config=configs/lgpool_deit.py[:depth=9] --workdir=runs/lgpool_deit \
        --config.lgpool.teacher_init=runs/deit_b --config.data.data_dir=TFDS_DIR

Needs ImageNet prepared for tfds (array_record) and accelerators; not run on the project's CPU machines.
Official recipe as the official *scripts* run it (Yuanmou @f4a544d, learngene_methods/learngene_pool/script/;
the yaml files its readme points to say batch 256 / 128 at lr 1e-4 for stages 1 / 2 instead):
- stage 1 (`distill-base12-base6.sh`: 2 GPUs × batch 256, 100 epochs, lr 5e-4, --alpha 0.1): the DeiT harness
  (configs/deit.py: RandAugment, random erasing, mixup/cutmix, label smoothing 0.1, repeated augmentation ×3,
  which the 2-process run's RASampler applies) at global batch 512; students with no drop-path (the official
  `ViT_OutMidMap` rebuilds its blocks without it); the tiny student on three feature points ('[front,end]',
  whose checkpoint the pool loads, networks/learngenepool.py:108, though the script passes '[end]'), the
  others on the last one ('[end]');
- stage 2 (`tiny6-base6-finetune-instance-ours-w-distill.sh`: one GPU, batch 256, 50 epochs, lr 5e-4; the
  depth-9 script `tiny9-base9-...` batch 128): stitch layers from the trained Ti projections
  (`stitch_init='projections'`), 0.5·CE on hard labels + 0.5·KD, training transforms but no mixup or label
  smoothing, a plain RandomSampler (no repeated augmentation); the least-squares init, when asked for, fits
  one batch of 100 training images mixed as in training (`stitch_init_bs`, `initialize_model_stitching_layer`);
- both stages: AdamW (wd 0.05), timm's CosineLRScheduler stepped after each epoch (`optim.schedule=
  'cosine_epoch'`), 5 warm-up epochs from 1e-6, min lr 1e-5; lrs not scaled by batch size
  (`optim.scale_lr=False`; DeiT's harness scales).
Differences: docs/methods/lgpool.md, "Deviations from the official code". `instances=ti+s+b` adds a Small
instance stitched Ti→S→B (SN-Net's nearest pairs).
"""

from pathlib import Path

import ml_collections

from learngene_jax.config_lib import base_config, config_module, parse_arg
from learngene_jax.models import VIT_SIZES

HERE = Path(__file__).parent

# Feature points per instance size in the official runs: 3 = '[front,end]', 1 = '[end]'.
OFFICIAL_POINTS = {"ti": 3, "s": 1, "b": 1}
# Stage-2 batch per depth in the official scripts (tiny6-base6-finetune-*.sh 256, tiny9-base9-finetune-*.sh 128).
FINETUNE_BATCH = {6: 256, 9: 128}


def get_config(arg=None):
    """`arg`: depth=6|9, instances=ti+b (DeiT sizes joined by '+'; ti+s+b stitches Ti→S→B)."""
    args = parse_arg(arg, {"depth": 6, "instances": "ti+b"})
    sizes = args["instances"].split("+")
    c = config_module(HERE / "deit.py").deit_recipe(base_config())
    c.task, c.name = "lgpool", f"lgpool_deit_L{args['depth']}"
    c.batch_size = 512  # stage 1: 2 processes × --batch-size 256
    c.optim.scale_lr = False  # the official scripts pass --lr 5e-4 as the lr itself
    c.optim.schedule = "cosine_epoch"  # distill.py and main.py step timm's scheduler after each epoch
    c.lgpool = ml_collections.ConfigDict(dict(
        teacher_init="",  # required: a DeiT-B model directory (python -m learngene_jax.convert from-timm ...)
        teacher=dict(name="deit_b"), teacher_epochs=0, teacher_lr=5e-4,  # no teacher is trained here
        widths=tuple(VIT_SIZES[s]["width"] for s in sizes), heads=tuple(VIT_SIZES[s]["num_heads"] for s in sizes),
        depth=args["depth"], points=tuple(OFFICIAL_POINTS[s] for s in sizes),
        drop_path_rate=0.0,  # ViT_OutMidMap rebuilds the students' blocks without drop-path
        distill_epochs=100, distill_lr=5e-4,
        alpha=0.9,  # the toolkit's distillation weight: (1-a)·CE + a·(soft-CE + feature MSEs); paper α = 0.1
        temperature=1.0,
        pairs=tuple(f"{k}-{k + 1}" for k in range(len(sizes) - 1)), kernel_size=2, stride=1,
        stitch_init="projections", compare_stitch_init=False, ls_batch=100, ls_pipeline="train",
        finetune_epochs=50, finetune_lr=5e-4, finetune_batch_size=FINETUNE_BATCH.get(args["depth"], 256),
        ce_weight=0.5, kd_weight=0.5,
        # stage 2 on hard labels, one process with a plain RandomSampler: no repeated augmentation
        finetune_aug=dict(mixup=0.0, cutmix=0.0, label_smoothing=0.0, repeated_aug=1),
        export=(),
    ))
    return c
