"""Offline demo of the whole learngene story on scikit-learn's bundled digits (README command one).

    python -m learngene_jax.main --config=configs/demo.py --workdir=runs/demo

Teacher CNN → TLEG aux (depth 12) and SWS aux (stages 3,3,4,3,3) distilled from it → genes expanded to
descendants of depths 2/4/6/8, fine-tuned briefly → scratch ViTs of the same depths for the same and 3× the
budget → runs/demo/summary.{md,json,png}. Hardware: 2-core CPU, no GPU. Wall time and results: see README.
`configs/demo.py:smoke=True` is a seconds-long version for tests.
"""

import ml_collections

from learngene_jax.config_lib import base_config, parse_arg


def get_config(arg=None):
    """`arg`: smoke=True for a tiny version (tests)."""
    args = parse_arg(arg, {"smoke": False})
    c = base_config()
    c.task, c.name = "demo", "demo"
    # Digits 8×8 upsampled to 16×16, patch 4 (16 tokens); no augmentation: random shifts hurt ViTs on this data
    # (shared/reference/digits-calibration.md). AdamW 5e-4 unscaled, batch 32, cosine with 5% warmup.
    c.data.image_size = 16
    c.batch_size = 32
    c.eval_batch_size = 150
    c.log_every_steps = 50
    c.optim.update({"scale_lr": False, "lr": 5e-4, "min_lr": 1e-5, "weight_decay": 0.05})
    c.checkpoint.every_steps = 10_000
    c.demo = ml_collections.ConfigDict(dict(
        width=192, heads=3, patch_size=4, depths=(2, 4, 6, 8), teacher_widths=(32, 64), teacher_epochs=10,
        tleg_depth=12, sws_stage_sizes=(3, 3, 4, 3, 3), aux_epochs=20, kd_alpha=1.0, kd_temperature=1.0,
        finetune_epochs=1, scratch_factor=3, warmup_fraction=0.05))
    if args["smoke"]:
        c.demo.update(dict(width=32, heads=2, depths=(1, 2), teacher_widths=(8,), teacher_epochs=1, tleg_depth=2,
                           sws_stage_sizes=(1, 1), aux_epochs=1, finetune_epochs=1, scratch_factor=2))
        c.batch_size = 64
    return c
