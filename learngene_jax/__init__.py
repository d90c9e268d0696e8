"""learngene_jax: learngene methods (TLEG, SWS, Heur/Auto Learngene, Learngene Pool, As-ViT) in JAX/Flax.

A large *ancestry* model is condensed into a small *gene*; genes expand into *descendant* models of any size.
"""

__version__ = "0.1.0"
