"""TLEG-Ti on ImageNet-1k, extrapolated from the official recipe (aux 150 epochs, descendants 50):
configs/learngene_imagenet.py with method=tleg,size=ti, which gives the hardware and what to expect.

The official TLEG code has no Aux-Ti model or command: the width (192, 3 heads) is DeiT-Ti's, the aux budget
(150 epochs) and drop-path 0.0 are Aux-S's, and the descendant budget (50 epochs) is the paper's Des-Ti.

    learngene train --config configs/tleg_ti.py:stage=aux --workdir runs/tleg_ti_aux \
        --config.distill.teacher_init=runs/levit_384 --config.data.data_dir=$TFDS_DATA_DIR
    learngene adapt --gene runs/tleg_ti_aux/gene --depth 12 --config configs/tleg_ti.py:stage=descendant \
        --workdir runs/tleg_ti_des12 --config.data.data_dir=$TFDS_DATA_DIR
"""

from pathlib import Path

from learngene_jax.config_lib import config_module


def get_config(arg=None):
    """`arg`: stage=aux|descendant|scratch, depth=N (descendants), gene=DIR."""
    recipe = config_module(Path(__file__).with_name("learngene_imagenet.py"))
    return recipe.get_config("method=tleg,size=ti," + (arg or ""))
