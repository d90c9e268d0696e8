"""The common ground of the offline recipes on scikit-learn's bundled digits (configs/demo.py, baselines.py,
lgpool_digits.py): 8×8 digits upsampled to 16×16, batch 32, eval batch 150, no augmentation (random shifts hurt
ViTs on this data, see shared/reference/digits-calibration.md). Alone it trains the default ViT-Ti:

    python -m learngene_jax.main --config=configs/digits.py --workdir=runs/digits
"""

import ml_collections

from learngene_jax.config_lib import base_config, parse_arg


def get_config(arg=None):
    """`arg`: task=NAME, name=LABEL (what the recipes that build on this one set)."""
    args = parse_arg(arg, {"task": "train", "name": "digits"})
    return digits_base(args["task"], args["name"])


def digits_base(task: str, name: str) -> ml_collections.ConfigDict:
    """Bundled digits upsampled to 16×16, batch 32, eval batch 150, no augmentation (random shifts hurt ViTs on
    this data, see shared/reference/digits-calibration.md): the common ground of the offline ViT recipes."""
    c = base_config()
    c.task, c.name = task, name
    c.data.image_size = 16
    c.batch_size = 32
    c.eval_batch_size = 150
    c.log_every_steps = 50
    return c
