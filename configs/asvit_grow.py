"""As-ViT scaling: grow a seed topology by depth and width, chosen by training-free proxies (paper §3.4).

Command:
  python -m learngene_jax.main --config=configs/asvit_grow.py --workdir=runs/asvit_grow
  python -m learngene_jax.main --config=configs/asvit_grow.py:tiny --workdir=/tmp/asvit_grow_tiny

Hardware: 2-core CPU, no accelerator. Wall time: with the proxies at 64² (--config.proxy.image_size=64) a
grow step scores 8–12 candidates in 123–190 s; a 600 s budget from the paper's seed gave 4 steps:
  3.55 M 8,2,3,2|4,1,2,1|4,1,4,1|4,1,6,1|32,40 → 7.40 M …|4,1,6,2|32,48 → 13.21 M …|4,1,6,3|32,56
  → 19.49 M 8,2,3,2|4,1,2,2|4,1,4,1|4,1,6,3|32,68 (params at 224², 1000 classes).
Reaching the 80 M stop takes an estimated 6–10 more steps (20–30 min at 64²; at the paper's 224² a candidate
costs ~25–30 s, so ~5–6 min per step, 1–1.5 h in all; not run here). The paper's largest (As-ViT Large, 88.1 M) is
8,2,3,5|4,1,2,2|4,1,4,5|4,1,6,2|32,180.
"""

from learngene_jax.methods.asvit.grow import default_config


def get_config(arg=None):
    """Paper setting by default; `tiny` is a seconds-long run for tests (see learngene_jax.methods.asvit.grow)."""
    return default_config(arg)
