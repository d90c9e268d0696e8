"""Offline demo of the whole learngene story on scikit-learn's bundled digits (README command one).

    python -m learngene_jax.main --config=configs/demo.py --workdir=runs/demo

Teacher CNN → TLEG aux (depth 12) and SWS aux (stages 3,3,4,3,3) distilled from it → genes expanded to
descendants of depths 2/4/6/8, fine-tuned briefly → scratch ViTs of the same depths for the same and 3× the
budget → runs/demo/summary.{md,json,png}. Hardware: 2-core CPU, no GPU. Wall time and results: see
docs/getting-started.md. `configs/demo.py:smoke=True` is a seconds-long version for tests.
"""

from pathlib import Path

import ml_collections

from learngene_jax.config_lib import load_config, parse_arg

HERE = Path(__file__).parent


def get_config(arg=None):
    """`arg`: smoke=True for a tiny version (tests). The demo's settings, shared with configs/baselines.py:
    configs/digits.py with patch 4 (16 tokens), AdamW 5e-4 unscaled, cosine with 5% warmup."""
    smoke = parse_arg(arg, {"smoke": False})["smoke"]
    c = load_config(HERE / "digits.py", "task=demo,name=demo")
    c.optim.update({"scale_lr": False, "lr": 5e-4, "min_lr": 1e-5, "weight_decay": 0.05})
    c.checkpoint.every_steps = 10_000
    c.demo = ml_collections.ConfigDict(dict(
        width=192, heads=3, patch_size=4, depths=(2, 4, 6, 8), teacher_widths=(32, 64), teacher_epochs=10,
        tleg_depth=12, sws_stage_sizes=(3, 3, 4, 3, 3), aux_epochs=16, kd_alpha=1.0, kd_temperature=1.0,
        finetune_epochs=1, scratch_factor=3, warmup_fraction=0.05, scan_layers=True))
    if smoke:
        c.demo.update(dict(width=32, heads=2, depths=(1, 2), teacher_widths=(8,), teacher_epochs=1, tleg_depth=2,
                           sws_stage_sizes=(1, 1), aux_epochs=1, finetune_epochs=1, scratch_factor=2))
        c.batch_size = 64
    return c
