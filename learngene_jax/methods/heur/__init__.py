"""Heur Learngene (AAAI 2022) and Auto Learngene (arXiv 2305.02279), which share one pipeline: a VGG ancestor
trained on a stream of tasks and widened between them (`widen`, `tasks`), the gene of its last blocks (`gene`) or
of the blocks chosen automatically (`auto`), descendants fine-tuned with an EWC penalty on the inherited blocks
(`ewc`, the trainer's `ewc` loss term); `run` drives the stages."""

from learngene_jax import genes, registry
from learngene_jax.methods.heur import ewc, gene

genes.register_method(gene)
registry.LOSS_TERMS.register("ewc", ewc.ewc_term)
registry.TASKS.register("heur", "learngene_jax.methods.heur.run:run")
registry.TASKS.register("auto", "learngene_jax.methods.heur.run:run_auto")
