"""SWS (Stage-wise Weight Sharing, IJCAI 2024): the gene is one shared block per stage of the Aux-Net; a
descendant copies stage `layers_source[i]`'s block into its layer i. `aux_net` is the Aux-Net, `gene` the contract."""

from learngene_jax import genes, models
from learngene_jax.methods.sws import gene, lm
from learngene_jax.methods.sws.aux_net import SWSAux

genes.register_method(gene)
genes.register_method(lm)  # decoder language models (Llama, GPT-2)
for _arch, _cls in lm.AUX.items():
    models.register_model_class(f"sws_{_arch}", _cls)
models.register_model_class("sws_aux", SWSAux, depth=16)
for _size, _dims in models.VIT_SIZES.items():
    # The official SWS Aux-S uses 12 heads of dim 32 (Des-S uses 6 of dim 64); Aux-B is 12 x 64.
    models.register(f"sws_aux_{_size}")(lambda _d=_dims, _s=_size, **kw: SWSAux(
        **{**_d, "depth": 16, **({"num_heads": 12} if _s == "s" else {}), **kw}))
