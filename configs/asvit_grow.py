"""As-ViT scaling: grow a seed topology by depth and width, chosen by training-free proxies (paper §3.4).

Command:
  python -m learngene_jax.main --config=configs/asvit_grow.py --workdir=runs/asvit_grow
  python -m learngene_jax.main --config=configs/asvit_grow.py:tiny --workdir=/tmp/asvit_grow_tiny

Hardware: 2-core CPU (shared), no accelerator. Wall time: MEASURED_BELOW.
Result: MEASURED_BELOW. The paper's largest (As-ViT Large, 88.1 M) is 8,2,3,5|4,1,2,2|4,1,4,5|4,1,6,2|32,180.
"""

import ml_collections

from learngene_jax.asvit.genotype import SEED
from learngene_jax.asvit.proxies import default_proxy_config
from learngene_jax.errors import ConfigError, fail


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Paper setting by default; `tiny` is one step with four candidates on 32² inputs for tests."""
    config = ml_collections.ConfigDict()
    config.task = "asvit_grow"  # entry point: learngene_jax.asvit.grow.run(config, workdir)
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
    config.proxy = default_proxy_config()
    config.data = ml_collections.ConfigDict(dict(name="digits"))  # real images for the NTK proxy
    if arg == "tiny":
        config.max_steps = 1
        config.width_ratios = (0.2,)
        config.proxy.image_size = 32
        config.proxy.repeats = 2
        config.proxy.ntk_images = 8
        config.proxy.fast_compile = True
    elif arg:
        fail(ConfigError, f"unknown variant {arg!r} of configs/asvit_grow.py; known: tiny")
    return config
