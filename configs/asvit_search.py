"""As-ViT topology search (REINFORCE over 4,556,250 genotypes, training-free proxies; paper §3.3).

Command:
  python -m learngene_jax.main --config=configs/asvit_search.py --workdir=runs/asvit_search
  python -m learngene_jax.main --config=configs/asvit_search.py:smoke=True --workdir=/tmp/asvit_search_tiny

Hardware: 2-core CPU, no accelerator. Wall time: 28.2 s per step on average at 224² (15 steps measured with
--config.time_budget_s=420; each sampled architecture compiles anew), so ~3.9 h for the 500 steps.
Result: that 15-step run derived 6,2,6|3,1,3|3,2,2|4,1,6|64 (2.19 M params, 0.47 GMACs; the policy had barely
moved, entropy 15.3 → 14.5). The paper's seed (V100, ImageNet images) is 8,2,3|4,1,2|4,1,4|4,1,6|32.
"""

import ml_collections

from learngene_jax.config_lib import parse_arg
from learngene_jax.methods.asvit.proxies import default_proxy_config


def get_config(arg=None):
    """Paper setting by default; `smoke=True` is a 3-step run on 32² inputs for tests."""
    smoke = parse_arg(arg, {"smoke": False})["smoke"]
    config = ml_collections.ConfigDict()
    config.task = "asvit_search"  # entry point: learngene_jax.methods.asvit.search.run(config, workdir)
    config.seed = 8  # official default --rand_seed
    config.steps = 500
    config.learning_rate = 0.08  # Adam
    config.ema_momentum = 0.9  # reward baseline
    config.buffer_size = 20  # window of the range that normalises each proxy change
    config.time_budget_s = 0.0  # stop before a step once this many seconds have passed (0: no limit)
    config.count_image_size = 224  # resolution of the logged params/MACs (1000 classes)
    config.proxy = default_proxy_config(tiny=smoke)
    config.data = ml_collections.ConfigDict(dict(name="digits"))  # real images for the NTK proxy
    if smoke:
        config.steps = 3
    return config
