"""SWS B on ImageNet-1k with the official recipe (DeiT harness; reference/learngene-methods.md).

Stage 1, distil the aux model from a LeViT-384 teacher (converted from timm weights you already have) and
save the gene in WORKDIR/gene:

    python -m learngene_jax.convert from-timm --arch levit_384 --checkpoint levit_384.pth --out runs/levit_384
    python -m learngene_jax.main --config=configs/sws_b.py:stage=aux --workdir=runs/sws_b_aux \
        --config.distill.teacher_init=runs/levit_384 --config.data.data_dir=$TFDS_DATA_DIR

Stage 2, expand the gene into a descendant of depth L and fine-tune it:

    python -m learngene_jax.main --config=configs/sws_b.py:stage=descendant,depth=12 \
        --workdir=runs/sws_b_des12 --config.gene=runs/sws_b_aux/gene

`stage=scratch,depth=L` trains the same descendant architecture from random init (300 epochs).
Hardware: the official runs used 4 GPUs at global batch 512 (lr scales with batch / 512). Not reproduced
here (no ImageNet on these machines); expected results are the papers' (see README).
"""

from pathlib import Path

from learngene_jax.config_lib import config_module, parse_arg


def get_config(arg=None):
    """`arg`: stage=aux|descendant|scratch, depth=N (descendants), gene=DIR."""
    args = parse_arg(arg, {"stage": "aux", "depth": 12, "gene": ""})
    recipe = config_module(Path(__file__).with_name("learngene_imagenet.py"))
    return recipe.learngene_imagenet("sws", "b", args["stage"], args["depth"], args["gene"])
