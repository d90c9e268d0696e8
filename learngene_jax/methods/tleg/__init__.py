"""TLEG (Transformer as Linear Expansion of learnGene, AAAI 2024): the gene is one (θ_A, θ_B) pair per
sub-layer; layer l of a depth-L model is θ_B + (l−1)/L·θ_A. `aux_net` is the Aux-Net, `gene` the contract."""

from learngene_jax import genes, models
from learngene_jax.methods.tleg import gene, lm
from learngene_jax.methods.tleg.aux_net import TLEGAux

genes.register_method(gene)
genes.register_method(lm)  # decoder language models (Llama, GPT-2)
for _arch, _cls in lm.AUX.items():
    models.register_model_class(f"tleg_{_arch}", _cls)
models.register_model_class("tleg_aux", TLEGAux)
for _size, _dims in models.VIT_SIZES.items():
    models.register(f"tleg_aux_{_size}")(lambda _d=_dims, **kw: TLEGAux(**{**_d, **kw}))
