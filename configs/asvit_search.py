"""As-ViT topology search (REINFORCE over 4,556,250 genotypes, training-free proxies; paper §3.3).

Command:
  python -m learngene_jax.main --config=configs/asvit_search.py --workdir=runs/asvit_search
  python -m learngene_jax.main --config=configs/asvit_search.py:tiny --workdir=/tmp/asvit_search_tiny

Hardware: 2-core CPU (shared), no accelerator. Wall time: MEASURED_BELOW.
Result: MEASURED_BELOW. The paper's seed (V100, ImageNet images) is 8,2,3|4,1,2|4,1,4|4,1,6|32.
"""

import ml_collections

from learngene_jax.asvit.proxies import default_proxy_config
from learngene_jax.errors import ConfigError, fail


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Paper setting by default; `tiny` is a 3-step run on 32² inputs for tests."""
    config = ml_collections.ConfigDict()
    config.task = "asvit_search"  # entry point: learngene_jax.asvit.search.run(config, workdir)
    config.seed = 8  # official default --rand_seed
    config.steps = 500
    config.learning_rate = 0.08  # Adam
    config.ema_momentum = 0.9  # reward baseline
    config.buffer_size = 20  # window of the range that normalises each proxy change
    config.time_budget_s = 0.0  # stop before a step once this many seconds have passed (0: no limit)
    config.count_image_size = 224  # resolution of the logged params/MACs (1000 classes)
    config.proxy = default_proxy_config()
    config.data = ml_collections.ConfigDict(dict(name="digits"))  # real images for the NTK proxy
    if arg == "tiny":
        config.steps = 3
        config.proxy.image_size = 32
        config.proxy.repeats = 2
        config.proxy.ntk_images = 8
        config.proxy.fast_compile = True
    elif arg:
        fail(ConfigError, f"unknown variant {arg!r} of configs/asvit_search.py; known: tiny")
    return config
