"""Weight selection (Xu et al., "Initializing Models with Larger Ones", ICLR 2024), the initialisation baseline
that learngene methods are compared with: `select` holds the pure function; this package registers it as the
trainer's `weight_selection` student (config.init=MODEL_DIR, config.init_method=weight_selection)."""

from __future__ import annotations

from typing import Any

from learngene_jax import genes
from learngene_jax.methods.weight_selection.select import weight_selection
from learngene_jax.models.io import load_model
from learngene_jax.registry import STUDENTS
from learngene_jax.students import Student, dummy_images, registry_model


@STUDENTS.register("weight_selection")
def weight_selection_student(config: Any, num_classes: int) -> Student:
    """config.model (a smaller ViT) initialised by selecting layers and elements of the model at config.init."""
    source_model, source = load_model(config.init)
    model = registry_model(config, num_classes)

    def init(rng, loaded):
        fresh = model.init(rng, dummy_images(model), train=False)
        return {"params": weight_selection(loaded["params"], source_model, model, fresh["params"])}
    return Student(model, init, source, genes.method_of(model), f"weight_selection:{config.init}")
