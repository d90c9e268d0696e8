"""As-ViT's progressive re-tokenization as a step variant of the trainer: from some epochs on, the patch
embedding runs with another stride and dilation (the paper trains with overlapping tokens first); the model as
exported and evaluated at the end keeps its own tokenization."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from learngene_jax.errors import ConfigError, fail


def retokenize_phases(config: Any, model: nn.Module) -> list[tuple[int, dict[str, int]]]:
    """config.retokenize (start_epoch, stride, dilation) rows → sorted (start_epoch, model overrides) phases; a
    phase with the model's own tokenization has no overrides. Empty when config.retokenize is empty."""
    phases = sorted(tuple(int(v) for v in phase) for phase in config.get("retokenize", ()))
    if not phases:
        return []
    if not {"patch_stride", "patch_dilation"} <= set(getattr(model, "__dataclass_fields__", {})):
        fail(ConfigError, f"config.retokenize needs a patch-embedding model; {type(model).__name__} has none")
    for phase in phases:
        if len(phase) != 3 or phase[0] < 0 or phase[1] < 1 or phase[2] < 1:
            fail(ConfigError, f"config.retokenize phases are (start_epoch >= 0, stride >= 1, dilation >= 1), "
                              f"got {phase}")
    native = (model.token_stride, model.patch_dilation)
    return [(start, {} if (stride, dilation) == native else {"patch_stride": stride, "patch_dilation": dilation})
            for start, stride, dilation in phases]


# The paper's schedule (As-ViT §4.2, configs/asvit_train.py): stride 16 dilation 5 from epoch 0, stride 8 dilation 2
# from 80, the native stride 4 from 130 (of 300).
PAPER_SCHEDULE = ((0, 16, 5), (80, 8, 2), (130, 4, 1))


def phase_flops(genotype: str, image_size: int = 224,
                schedule: tuple[tuple[int, int, int], ...] = PAPER_SCHEDULE) -> list[dict[str, Any]]:
    """XLA's FLOP count of one image's forward pass (batch 1, fp32) in each re-tokenization phase of `schedule`,
    and its share of the native (stride 4, dilation 1) forward. Returns one dict per phase: start_epoch, stride,
    dilation, tokens (first-stage grid side), flops, share. Lowered and compiled on the CPU; nothing runs.

    Raises ConfigError (one line) for a bad genotype, or a stride that does not divide `image_size`."""
    import jax
    import jax.numpy as jnp

    from learngene_jax.methods.asvit.model import from_genotype

    def flops(model: nn.Module) -> float:
        x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
        params = jax.eval_shape(model.init, jax.random.key(0), x)
        cost = jax.jit(model.apply).lower(params, x).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost  # older jax returns one dict per device
        return float(cost["flops"])

    native = flops(from_genotype(genotype, image_size=image_size, num_classes=1000))
    rows = []
    for start, stride, dilation in schedule:
        model = from_genotype(genotype, image_size=image_size, num_classes=1000, patch_stride=stride,
                              patch_dilation=dilation)
        count = flops(model)
        rows.append({"start_epoch": start, "stride": stride, "dilation": dilation, "tokens": image_size // stride,
                     "flops": count, "share": round(count / native, 4)})
    return rows


def main(argv: list[str] | None = None) -> None:
    """`python -m learngene_jax.methods.asvit.retokenize --genotype G [--genotype G2] [--img 224] --out DIR`:
    the FLOP share of each re-tokenization phase (paper schedule) for each genotype ('seed', 'large' or a genotype
    string) into DIR/summary.json and DIR/summary.md (a workdir that `learngene_jax.results record` keeps)."""
    import argparse
    import json
    import shlex
    import sys
    from pathlib import Path

    from learngene_jax.methods.asvit import genotype as gt

    p = argparse.ArgumentParser(prog="python -m learngene_jax.methods.asvit.retokenize", description=main.__doc__)
    p.add_argument("--genotype", action="append", required=True, help="'seed', 'large' or a genotype string")
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--out", required=True, help="output workdir")
    args = p.parse_args(argv)
    named = {"seed": gt.SEED, "large": gt.LARGE}
    result = {name: {"genotype": named.get(name, name), "image_size": args.img,
                     "phases": phase_flops(named.get(name, name), args.img)} for name in args.genotype}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"retokenization_flops": result}, indent=1) + "\n")
    md = ["# As-ViT re-tokenization: forward FLOPs per phase (XLA count, batch 1)", "",
          "| genotype | phase (epoch, stride, dilation) | first grid | GFLOPs | share of stride 4 |", "|---|---|---|---|---|"]
    for name, r in result.items():
        md += [f"| {name} | ({ph['start_epoch']}, {ph['stride']}, {ph['dilation']}) | {ph['tokens']}² | "
               f"{ph['flops'] / 1e9:.3f} | {100 * ph['share']:.1f}% |" for ph in r["phases"]]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    (out / "commands.txt").write_text(f"python -m learngene_jax.methods.asvit.retokenize {argv_text}\n")
    print("\n".join(md))


if __name__ == "__main__":
    from learngene_jax import cli

    cli.run(main)
