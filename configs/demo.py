"""Offline demo of the whole learngene story on scikit-learn's bundled digits (README command one).

    python -m learngene_jax.main --config=configs/demo.py --workdir=runs/demo

Teacher CNN → TLEG aux (depth 12) and SWS aux (stages 3,3,4,3,3) distilled from it → genes expanded to
descendants of depths 2/4/6/8, fine-tuned briefly → scratch ViTs of the same depths for the same and 3× the
budget → runs/demo/summary.{md,json,png}. Hardware: 2-core CPU, no GPU. Wall time and results: see README.
`configs/demo.py:smoke=True` is a seconds-long version for tests.
"""

from learngene_jax.config_lib import digits_demo, parse_arg


def get_config(arg=None):
    """`arg`: smoke=True for a tiny version (tests)."""
    return digits_demo(parse_arg(arg, {"smoke": False})["smoke"])
