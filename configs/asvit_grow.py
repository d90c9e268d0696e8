"""As-ViT scaling: grow a seed topology by depth and width, chosen by training-free proxies (paper §3.4).

Command:
  python -m learngene_jax.main --config=configs/asvit_grow.py --workdir=runs/asvit_grow
  python -m learngene_jax.main --config=configs/asvit_grow.py:tiny --workdir=/tmp/asvit_grow_tiny

Hardware: 2-core CPU (shared), no accelerator. Wall time: MEASURED_BELOW.
Result: MEASURED_BELOW. The paper's largest (As-ViT Large, 88.1 M) is 8,2,3,5|4,1,2,2|4,1,4,5|4,1,6,2|32,180.
"""

from learngene_jax.asvit.grow import default_config


def get_config(arg=None):
    """Paper setting by default; `tiny` is a seconds-long run for tests (see learngene_jax.asvit.grow)."""
    return default_config(arg)
