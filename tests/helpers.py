"""Small builders shared by tests."""

import jax
import jax.numpy as jnp

from learngene_jax import genes
from learngene_jax.models import create_model

TINY = dict(width=48, num_heads=3, image_size=32, patch_size=8, num_classes=10)


def tiny_gene(method: str, seed: int = 0, **overrides):
    """A randomised gene of a tiny aux model (TLEG depth 4; SWS stages 2,1,2)."""
    from conftest import randomize

    kw = dict(TINY, depth=4) if method == "tleg" else dict(TINY, depth=5, stage_sizes=(2, 1, 2))
    kw.update(overrides)
    model = create_model(f"{method}_aux", **kw)
    x = jnp.zeros((1, kw["image_size"], kw["image_size"], 3))
    params = randomize(model.init(jax.random.key(seed), x)["params"], seed)
    meta = genes.get_method(method).meta_from_aux(model)
    return model, params, genes.extract_gene(params, meta)


def images(n=2, size=32, seed=1):
    """Random normalised NHWC images."""
    return jax.random.normal(jax.random.key(seed), (n, size, size, 3))


def tiny_train_config(**changes):
    """A seconds-long training config on digits: 2-layer ViT of width 32, batch 64, one epoch."""
    from learngene_jax.config_lib import base_config, with_changes

    c = base_config()
    c.name = "tiny"
    c.model.update({"name": "vit", "width": 32, "num_heads": 2, "patch_size": 4, "depth": 2, "scan_layers": True})
    c.epochs, c.batch_size, c.eval_batch_size = 1, 64, 160
    c.log_every_steps = 5
    c.optim.update({"scale_lr": False, "lr": 1e-3})
    c.checkpoint.every_steps = 10
    return with_changes(c, **changes)
