"""Heur Learngene (AAAI 2022) and Auto Learngene (arXiv 2305.02279), which share one pipeline: a VGG ancestor
trained on a stream of tasks and widened between them (`widen`, `tasks`), the gene of its last blocks (`gene`) or
of the blocks chosen automatically (`auto`), descendants fine-tuned with an EWC penalty on the inherited blocks
(`ewc`, the trainer's `ewc` loss term); `run` drives the stages. For language models (`lm`, `lm_stream`): adapter
genes of a LoRA ancestor trained on a stream of text tasks, and layer genes for smaller descendants."""

from learngene_jax import genes, registry
from learngene_jax.methods.heur import ewc, gene, lm

genes.register_method(gene)
genes.register_method(lm)  # adapter genes of LoRA runs (language models)
registry.STUDENTS.register("layer_gene", "learngene_jax.methods.heur.lm:layer_gene_student")
registry.TASKS.register("lm_lora_stream", "learngene_jax.methods.heur.lm_stream:run")
registry.LOSS_TERMS.register("ewc", ewc.ewc_term)
registry.TASKS.register("heur", "learngene_jax.methods.heur.run:run")
registry.TASKS.register("auto", "learngene_jax.methods.heur.run:run_auto")
