"""DeiT on ImageNet-1k: the harness the official TLEG, SWS, Learngene Pool and As-ViT code trains with (data,
augmentation, AdamW; Touvron et al. 2021 and facebookresearch/deit `main.py` defaults). The learngene recipes start
from it (configs/learngene_imagenet.py, lgpool_deit.py, asvit_train.py); alone it trains a DeiT from scratch:

    python -m learngene_jax.main --config=configs/deit.py:model=deit_s --workdir=runs/deit_s \
        --config.data.data_dir=$TFDS_DATA_DIR

Needs ImageNet prepared for tfds (array_record) and accelerators; not run on the project's CPU machines (the
DeiT paper: DeiT-S 79.8 top-1 after 300 epochs at batch 1024 on 8 GPUs, lr 5e-4 × batch / 512).
"""

import ml_collections

from learngene_jax.config_lib import base_config, parse_arg
from learngene_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def get_config(arg=None):
    """`arg`: model=NAME (a registered model, default deit_s), epochs=N (default 300)."""
    args = parse_arg(arg, {"model": "deit_s", "epochs": 300})
    c = deit_recipe(base_config())
    c.name = args["model"]
    c.model = ml_collections.ConfigDict({"name": args["model"], "drop_path_rate": 0.1})
    c.epochs = args["epochs"]
    c.optim.schedule = "cosine_epoch"  # DeiT's main.py steps timm's cosine scheduler after each epoch
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
