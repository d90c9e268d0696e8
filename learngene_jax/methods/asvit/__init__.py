"""As-ViT (Chen et al., ICLR 2022): training-free topology search and scaling of Vision Transformers.

`genotype` (strings and the search space), `model` (the network), `proxies` (length distortion, NTK condition
number), `search` (REINFORCE topology search), `grow` (depth/width scaling), `retokenize` (the trainer's step
variant for progressive re-tokenization)."""

from typing import Any

from learngene_jax import models, registry
from learngene_jax.methods.asvit.model import AsViT, from_genotype
from learngene_jax.methods.asvit.retokenize import retokenize_phases


@models.register("asvit")
def asvit(genotype: str | None = None, **kwargs: Any) -> AsViT:
    """As-ViT from a genotype string (default the searched seed); or give the parsed fields as kwargs."""
    return from_genotype(genotype, **kwargs) if genotype is not None else AsViT(**kwargs)


models.register_class(AsViT, "asvit")
registry.STEP_VARIANTS.register("retokenize", retokenize_phases)
registry.TASKS.register("asvit_search", "learngene_jax.methods.asvit.search:run")
registry.TASKS.register("asvit_grow", "learngene_jax.methods.asvit.grow:run")
