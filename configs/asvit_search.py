"""As-ViT topology search (REINFORCE over 4,556,250 genotypes, training-free proxies; paper §3.3).

Command:
  python -m learngene_jax.main --config=configs/asvit_search.py --workdir=runs/asvit_search
  python -m learngene_jax.main --config=configs/asvit_search.py:tiny --workdir=/tmp/asvit_search_tiny

Hardware: 2-core CPU (shared), no accelerator. Wall time: MEASURED_BELOW.
Result: MEASURED_BELOW. The paper's seed (V100, ImageNet images) is 8,2,3|4,1,2|4,1,4|4,1,6|32.
"""

from learngene_jax.asvit.search import default_config


def get_config(arg=None):
    """Paper setting by default; `tiny` is a seconds-long run for tests (see learngene_jax.asvit.search)."""
    return default_config(arg)
