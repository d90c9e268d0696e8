"""Baselines next to the learngene results on the bundled digits (scratch, pre-train → fine-tune, weight
selection, TLEG, SWS), with params stored for initialisation and training cost.

    python -m learngene_jax.main --config=configs/baselines.py --workdir=runs/demo

Run in the demo's workdir, it reuses the demo's teacher, genes and runs and adds an 8-layer ancestor ViT
trained from scratch plus the weight-selection and pre-train → fine-tune runs. 2-core CPU. Results: see
docs/results.md. `:smoke=True` is a seconds-long version for tests.
"""

from pathlib import Path

import ml_collections

from learngene_jax.config_lib import load_config, parse_arg


def get_config(arg=None):
    """`arg`: smoke=True for a tiny version (tests)."""
    smoke = parse_arg(arg, {"smoke": False})["smoke"]
    c = load_config(Path(__file__).with_name("demo.py"), f"smoke={smoke}")
    c.task, c.name = "baselines", "baselines"
    c.baselines = ml_collections.ConfigDict(dict(ancestor_depth=2 if smoke else 8,
                                                 ancestor_epochs=1 if smoke else 10))
    return c
