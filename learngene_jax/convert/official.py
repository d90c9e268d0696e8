"""Official TLEG (AlphaXia/TLEG) and SWS (AlphaXia/SWS) aux checkpoints → genes.

TLEG keys: blocks.block.<sub>.instances.0.{weight,bias}_{base,ilayer} (base = θ_B, ilayer = θ_A).
SWS keys: blocks.block.<sub>.instances.<stage>.{weight,bias}. Both add the timm stem keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from learngene_jax.convert.table import Rule, torch_to_flax
from learngene_jax.convert.vit import TORCH_SUBLAYER, infer_stem, sublayer_rules
from learngene_jax.errors import ConversionError, fail
from learngene_jax.genes import get_method
from learngene_jax.genes.core import Gene, GeneMeta

STEM_RULES = [Rule("pos_embed", "pos_embed"), Rule("patch_embed.proj.weight", "patch_embed/kernel", "conv"),
              Rule("patch_embed.proj.bias", "patch_embed/bias"), Rule("norm.weight", "norm/scale"),
              Rule("norm.bias", "norm/bias"), Rule("head.weight", "head/kernel", "linear"),
              Rule("head.bias", "head/bias")]


def _tleg_rules() -> list[Rule]:
    rules = list(STEM_RULES)
    for part, theta in (("base", "theta_b"), ("ilayer", "theta_a")):
        for r in sublayer_rules("blocks.block.", f"blocks/{theta}/", ".instances.0"):
            torch = re.sub(r"\.(weight|bias)$", rf".\1_{part}", r.torch)
            rules.append(Rule(torch, r.flax, r.kind))
    return rules


RULES = {"tleg": _tleg_rules(), "sws": STEM_RULES + sublayer_rules("blocks.block.", "blocks/stages/",
                                                                    ".instances.{layer}")}


def official_meta(method: str, sd: Mapping[str, np.ndarray], *, num_heads: int | None = None,
                  depth: int = 12, stage_sizes: Sequence[int] | None = None,
                  descendant_num_heads: int = 0) -> GeneMeta:
    """Gene metadata read from an official aux state dict: width, patch, image size, classes and MLP size from
    the shapes; heads from `num_heads` (default width/64); TLEG depth from `depth` (official: 12); SWS stage
    sizes from `stage_sizes` (default 3,3,4,3,3), checked against the number of stages in the file."""
    get_method(method)
    kw = infer_stem(sd)
    if kw.pop("class_token") | kw.pop("distilled"):
        fail(ConversionError, "official TLEG/SWS aux models have no class or distillation token, but this "
                              "checkpoint has one")
    fc1 = [k for k in sd if k.startswith(f"blocks.block.{TORCH_SUBLAYER['fc1']}.instances.") and "weight" in k]
    if not fc1:
        fail(ConversionError, f"not an official {method.upper()} aux checkpoint: no blocks.block.mlp.fc1.* keys")
    kw["mlp_dim"] = int(sd[fc1[0]].shape[0])
    kw["num_heads"] = num_heads or max(kw["width"] // 64, 1)
    kw["eps"] = 1e-5
    kw["descendant_num_heads"] = descendant_num_heads
    if method == "sws":
        stages = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.block\.norm1\.instances\.(\d+)\.", k))}
        sizes = tuple(stage_sizes) if stage_sizes else (3, 3, 4, 3, 3)
        if len(sizes) != len(stages):
            fail(ConversionError, f"checkpoint has {len(stages)} stages but --stage-sizes gives {len(sizes)}: "
                                  f"pass --stage-sizes with {len(stages)} entries")
        return GeneMeta(method="sws", depth=sum(sizes), stage_sizes=sizes, **kw)
    return GeneMeta(method="tleg", depth=depth, **kw)


def gene_from_official(method: str, sd: Mapping[str, np.ndarray], **meta_kwargs) -> Gene:
    """Gene from an official aux state dict (see `official_meta` for what is inferred)."""
    meta = official_meta(method, sd, **meta_kwargs)
    expected = get_method(method).gene_shapes(meta)
    params = torch_to_flax(sd, RULES[method], expected, f"official {method.upper()} checkpoint")
    return Gene(params, meta)
