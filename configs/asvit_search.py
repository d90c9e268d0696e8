"""As-ViT topology search (REINFORCE over 4,556,250 genotypes, training-free proxies; paper §3.3).

Command:
  python -m learngene_jax.main --config=configs/asvit_search.py --workdir=runs/asvit_search
  python -m learngene_jax.main --config=configs/asvit_search.py:tiny --workdir=/tmp/asvit_search_tiny

Hardware: 2-core CPU, no accelerator. Wall time: 28.2 s per step on average at 224² (15 steps measured with
--config.time_budget_s=420; each sampled architecture compiles anew), so ~3.9 h for the 500 steps.
Result: that 15-step run derived 6,2,6|3,1,3|3,2,2|4,1,6|64 (2.19 M params, 0.47 GMACs; the policy had barely
moved, entropy 15.3 → 14.5). The paper's seed (V100, ImageNet images) is 8,2,3|4,1,2|4,1,4|4,1,6|32.
"""

from learngene_jax.methods.asvit.search import default_config


def get_config(arg=None):
    """Paper setting by default; `tiny` is a seconds-long run for tests (see learngene_jax.methods.asvit.search)."""
    return default_config(arg)
