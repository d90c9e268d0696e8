"""Train an As-ViT with progressive re-tokenization (paper §4.2): the patch embedding starts strided and
dilated (stride 16 dilation 5, then stride 8 dilation 2) and ends at its own stride 4, switching at 80/300
and 130/300 of the epochs. Parameters never change shape; only the token grid does.

    python -m learngene_jax.main --config=configs/asvit_train.py --workdir=runs/asvit_digits
    python -m learngene_jax.main --config=configs/asvit_train.py:data=imagenet --workdir=gs://.../asvit_large \
        --config.model.genotype=8,2,3,5\\|4,1,2,2\\|4,1,4,5\\|4,1,6,2\\|32,180

`digits` (default): the searched seed topology on the bundled digits at 32², 30 epochs, CPU minutes.
`imagenet`: the DeiT harness for 300 epochs at 224² (the paper's schedule; its training code was never
released, so augmentation and optimizer follow DeiT). `retok=0` trains at stride 4 throughout, for comparison.
"""

from pathlib import Path

import ml_collections

from learngene_jax.config_lib import base_config, config_module, parse_arg
from learngene_jax.errors import ConfigError, fail
from learngene_jax.methods.asvit.genotype import SEED

HERE = Path(__file__).parent

# (fraction of the epochs at which a phase starts, stride, dilation): the paper's 0/80/130 of 300.
PHASES = ((0.0, 16, 5), (80 / 300, 8, 2), (130 / 300, 4, 1))


def schedule(epochs: int) -> tuple[tuple[int, int, int], ...]:
    """PHASES at integer epochs of a run of `epochs` epochs."""
    return tuple((round(start * epochs), stride, dilation) for start, stride, dilation in PHASES)


def get_config(arg=None):
    """`arg`: data=digits|imagenet,epochs=N,retok=1|0."""
    args = parse_arg(arg, {"data": "digits", "epochs": 0, "retok": 1})
    if args["data"] == "imagenet":
        c = config_module(HERE / "deit.py").deit_recipe(base_config())
        c.epochs = args["epochs"] or 300
        c.model = ml_collections.ConfigDict({"name": "asvit", "genotype": SEED})
    elif args["data"] == "digits":
        c = base_config()
        c.epochs = args["epochs"] or 30
        c.data.image_size = 32  # a multiple of 32: four stages of stride-2 merging
        c.model = ml_collections.ConfigDict({"name": "asvit", "genotype": SEED})
        c.batch_size = 64
        c.optim.update({"scale_lr": False, "lr": 1e-3, "warmup_epochs": 1.0, "weight_decay": 0.05})
    else:
        fail(ConfigError, f"configs/asvit_train.py: data must be digits or imagenet, got {args['data']!r}")
    c.name = f"asvit_{args['data']}" + ("" if args["retok"] else "_noretok")
    c.retokenize = schedule(c.epochs) if args["retok"] else ()
    return c
