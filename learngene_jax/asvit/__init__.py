"""As-ViT (Chen et al., ICLR 2022): training-free topology search and scaling of Vision Transformers.

`genotype` (strings and the search space), `proxies` (length distortion, NTK condition number), `search`
(REINFORCE topology search), `grow` (depth/width scaling); the network is `learngene_jax.models.asvit`.
"""
