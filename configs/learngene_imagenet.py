"""TLEG and SWS on ImageNet-1k with the official recipes (DeiT harness, configs/deit.py; budgets from
reference/learngene-methods.md). configs/tleg_{ti,s,b}.py and sws_{s,b}.py are this file for one method and size.

Stage 1 distils the Aux-Net from a LeViT-384 teacher (converted from timm weights you already have) and saves the
gene in WORKDIR/gene; stage 2 expands the gene into a descendant of depth L and fine-tunes it; `stage=scratch`
trains the same descendant architecture from random init (300 epochs):

    learngene convert from-timm --arch levit_384 --checkpoint levit_384.pth --out runs/levit_384
    learngene train --config configs/learngene_imagenet.py:method=tleg,size=s,stage=aux --workdir runs/tleg_s_aux \
        --config.distill.teacher_init=runs/levit_384 --config.data.data_dir=$TFDS_DATA_DIR
    learngene adapt --gene runs/tleg_s_aux/gene --depth 12 --workdir runs/tleg_s_des12 \
        --config configs/learngene_imagenet.py:method=tleg,size=s,stage=descendant

Hardware: the official runs used 4 GPUs at global batch 512 (lr scales with batch / 512). Not reproduced here (no
ImageNet on these machines); expected results are the papers' (docs/methods/tleg.md, docs/methods/sws.md).
"""

from pathlib import Path

import ml_collections

from learngene_jax.config_lib import base_config, config_module, parse_arg
from learngene_jax.errors import ConfigError, fail

HERE = Path(__file__).parent


def get_config(arg=None):
    """`arg`: method=tleg|sws, size=ti|s|b, stage=aux|descendant|scratch, depth=N, gene=DIR."""
    args = parse_arg(arg, {"method": "tleg", "size": "s", "stage": "aux", "depth": 12, "gene": ""})
    if args["method"] not in ("tleg", "sws") or args["size"] not in AUX_EPOCHS:
        fail(ConfigError, f"method must be tleg or sws and size one of {sorted(AUX_EPOCHS)}, got "
                          f"{args['method']!r}, {args['size']!r}")
    if args["method"] == "sws" and args["size"] not in SWS_DES:
        fail(ConfigError, f"SWS has official recipes for sizes {sorted(SWS_DES)} only (AlphaXia/SWS has no Aux-Ti or "
                          f"Des-Ti), got size={args['size']!r}: use size=s or size=b")
    return learngene_imagenet(args["method"], args["size"], args["stage"], args["depth"], args["gene"])


# Official stage-1 / stage-2 budgets (reference/learngene-methods.md).
AUX_EPOCHS = {"ti": 150, "s": 150, "b": 100}
TLEG_DES_EPOCHS = {"ti": 50, "s": 35, "b": 40}
SWS_DES = {"s": dict(epochs=10, lr=5e-5), "b": dict(epochs=10, lr=1e-5)}


def learngene_imagenet(method: str, size: str, stage: str, depth: int, gene: str = "") -> ml_collections.ConfigDict:
    """The official ImageNet recipe of TLEG/SWS for one size and stage ('aux', 'descendant' or 'scratch')."""
    if stage not in ("aux", "descendant", "scratch"):
        fail(ConfigError, f"stage must be aux, descendant or scratch, got {stage!r}")
    c = config_module(HERE / "deit.py").deit_recipe(base_config())
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
