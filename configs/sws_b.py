"""SWS-B on ImageNet-1k, the official recipe (aux 100 epochs, descendants 10 at lr 1e-5): configs/learngene_imagenet.py
with method=sws,size=b, which gives the hardware and what to expect.

    learngene train --config configs/sws_b.py:stage=aux --workdir runs/sws_b_aux \
        --config.distill.teacher_init=runs/levit_384 --config.data.data_dir=$TFDS_DATA_DIR
    learngene adapt --gene runs/sws_b_aux/gene --depth 12 --config configs/sws_b.py:stage=descendant \
        --workdir runs/sws_b_des12 --config.data.data_dir=$TFDS_DATA_DIR
"""

from pathlib import Path

from learngene_jax.config_lib import config_module


def get_config(arg=None):
    """`arg`: stage=aux|descendant|scratch, depth=N (descendants), gene=DIR."""
    recipe = config_module(Path(__file__).with_name("learngene_imagenet.py"))
    return recipe.get_config("method=sws,size=b," + (arg or ""))
