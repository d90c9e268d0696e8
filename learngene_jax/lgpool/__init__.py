"""Learngene Pool (Shi et al., AAAI 2024): distil small learngene instances from a large ViT, stitch them
SN-Net style into a pool of variable-sized descendants, fine-tune the pool, evaluate every configuration."""

from learngene_jax.lgpool.run import run

__all__ = ["run"]
