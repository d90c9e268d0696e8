"""SWS-S on ImageNet-1k, the official recipe (aux 150 epochs, descendants 10 at lr 5e-5): configs/learngene_imagenet.py
with method=sws,size=s, which gives the hardware and what to expect.

    learngene train --config configs/sws_s.py:stage=aux --workdir runs/sws_s_aux \
        --config.distill.teacher_init=runs/levit_384 --config.data.data_dir=$TFDS_DATA_DIR
    learngene adapt --gene runs/sws_s_aux/gene --depth 12 --config configs/sws_s.py:stage=descendant \
        --workdir runs/sws_s_des12 --config.data.data_dir=$TFDS_DATA_DIR
"""

from pathlib import Path

from learngene_jax.config_lib import config_module


def get_config(arg=None):
    """`arg`: stage=aux|descendant|scratch, depth=N (descendants), gene=DIR."""
    recipe = config_module(Path(__file__).with_name("learngene_imagenet.py"))
    return recipe.get_config("method=sws,size=s," + (arg or ""))
