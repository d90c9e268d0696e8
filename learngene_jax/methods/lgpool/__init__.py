"""Learngene Pool (Shi et al., AAAI 2024): distil small learngene instances from a large ViT, stitch them
SN-Net style into a pool of variable-sized descendants, fine-tune the pool, evaluate every configuration.
`models` (student with projections, pool, stitched ViT), `objectives` (the trainer objectives it registers),
`descendants` (stitching and export), `run` (the stages)."""

from learngene_jax import registry
from learngene_jax.methods.lgpool import objectives  # noqa: F401 - registers the pool objectives
from learngene_jax.methods.lgpool.models import LearngenePool, PoolStudent, StitchedViT
from learngene_jax.models import register_model_class

# stage-1 student with its feature projections, the stitched pool, a stitched descendant
for _name, _cls in (("lgpool_student", PoolStudent), ("lgpool", LearngenePool), ("stitched_vit", StitchedViT)):
    register_model_class(_name, _cls)
registry.TASKS.register("lgpool", "learngene_jax.methods.lgpool.run:run")
