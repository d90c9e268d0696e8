"""As-ViT scaling: grow a seed topology by depth and width, chosen by training-free proxies (paper §3.4).

Command:
  python -m learngene_jax.main --config=configs/asvit_grow.py --workdir=runs/asvit_grow
  python -m learngene_jax.main --config=configs/asvit_grow.py:smoke=True --workdir=/tmp/asvit_grow_tiny

Hardware: 2-core CPU, no accelerator. Wall time: with the proxies at 64² (--config.proxy.image_size=64) a
grow step scores 8–12 candidates in 123–190 s; a 600 s budget from the paper's seed gave 4 steps:
  3.55 M 8,2,3,2|4,1,2,1|4,1,4,1|4,1,6,1|32,40 → 7.40 M …|4,1,6,2|32,48 → 13.21 M …|4,1,6,3|32,56
  → 19.49 M 8,2,3,2|4,1,2,2|4,1,4,1|4,1,6,3|32,68 (params at 224², 1000 classes).
Reaching the 80 M stop takes an estimated 6–10 more steps (20–30 min at 64²; at the paper's 224² a candidate
costs ~25–30 s, so ~5–6 min per step, 1–1.5 h in all; not run here). The paper's largest (As-ViT Large, 88.1 M) is
8,2,3,5|4,1,2,2|4,1,4,5|4,1,6,2|32,180.
"""

import ml_collections

from learngene_jax.config_lib import parse_arg
from learngene_jax.methods.asvit.genotype import SEED
from learngene_jax.methods.asvit.proxies import default_proxy_config


def get_config(arg=None):
    """Paper setting by default; `smoke=True` is one step with four candidates on 32² inputs for tests."""
    smoke = parse_arg(arg, {"smoke": False})["smoke"]
    config = ml_collections.ConfigDict()
    config.task = "asvit_grow"  # entry point: learngene_jax.methods.asvit.grow.run(config, workdir)
    config.seed = 27  # official default --rand_seed of grow.py
    config.arch = SEED  # the searched seed topology
    config.proxy_width = 8  # initial width D of the narrow proxy networks
    config.width_scale = 4  # the real network is width_scale times wider than its proxy
    config.width_ratios = (0.05, 0.1, 0.15, 0.2)  # each step widens by one of these (rounded)
    config.param_limit_m = 110.0  # candidates above this many million params are dropped
    config.param_stop_m = 80.0  # stop once the chosen network has this many million params
    config.max_steps = 100
    config.time_budget_s = 0.0  # stop before a step once this many seconds have passed (0: no limit)
    config.count_image_size = 224  # resolution of the logged MACs (1000 classes)
    config.proxy = default_proxy_config(tiny=smoke)
    config.data = ml_collections.ConfigDict(dict(name="digits"))  # real images for the NTK proxy
    if smoke:
        config.max_steps = 1
        config.width_ratios = (0.2,)
    return config
