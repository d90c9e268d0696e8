"""`expand`: gene → descendant params (`genes.expand`) against the official PyTorch rule."""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from learngene_jax.bench.runner import jax_cache, step_row, time_calls


def frameworks(args: argparse.Namespace) -> list[str]:
    """JAX, then PyTorch unless --skip-torch."""
    return ["jax"] + ([] if args.skip_torch else ["torch"])


def run_one(args: argparse.Namespace, framework: str) -> dict[str, Any]:
    """Gene → descendant param tree: `genes.expand` (jitted; results ready) vs the official PyTorch rule
    (`gene_tranfer`: i/L·θ_A + θ_B per layer and sub-layer tensor)."""
    import jax

    from learngene_jax import genes
    from learngene_jax.methods.tleg import gene as tleg
    from learngene_jax.models import create_model
    from learngene_jax.models.vit import count_params

    jax_cache()
    aux = create_model(f"tleg_aux_{args.size}")
    meta = tleg.meta_from_aux(aux)
    params = jax.jit(aux.init)(jax.random.key(0), np.zeros((1, 224, 224, 3), np.float32))["params"]
    gene = genes.extract_gene(params, meta)
    jax.block_until_ready(gene.params)
    size = count_params(genes.expand(gene, args.depth))
    if framework == "jax":
        seconds = time_calls(lambda: jax.block_until_ready(genes.expand(gene, args.depth)), args.steps, args.warmup)
    else:
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        pairs = [(torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b)))
                 for a, b in zip(jax.tree.leaves(gene.params["blocks"]["theta_a"]),
                                 jax.tree.leaves(gene.params["blocks"]["theta_b"]), strict=True)]

        def torch_expand() -> None:
            [i / args.depth * a + b for i in range(args.depth) for a, b in pairs]

        seconds = time_calls(torch_expand, args.steps, args.warmup)
    row = step_row(framework, seconds, 1, device="cpu", model=f"tleg_aux_{args.size}->L{args.depth}", img=224,
                   descendant_params=size)
    return {**row, "images_per_s": 0.0}
