"""`python -m learngene_jax.methods.asvit.flops`: XLA's FLOP count of As-ViT's re-tokenization phases (paper §4.2)
as a workdir that `python -m learngene_jax.results record` keeps (docs quote its shares)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """`python -m learngene_jax.methods.asvit.flops --genotype G [--genotype G2] [--img 224] --out DIR`:
    the FLOP share of each re-tokenization phase (paper schedule) for each genotype ('seed', 'large' or a genotype
    string) into DIR/summary.json and DIR/summary.md (a workdir that `learngene_jax.results record` keeps)."""
    import argparse
    import json
    import shlex
    import sys

    from learngene_jax.errors import make_dir
    from learngene_jax.methods.asvit import genotype as gt
    from learngene_jax.methods.asvit.retokenize import phase_flops

    p = argparse.ArgumentParser(prog="python -m learngene_jax.methods.asvit.flops", description=main.__doc__)
    p.add_argument("--genotype", action="append", required=True, help="'seed', 'large' or a genotype string")
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--out", required=True, help="output workdir")
    args = p.parse_args(argv)
    out = make_dir(args.out, "--out")
    named = {"seed": gt.SEED, "large": gt.LARGE}
    result = {name: {"genotype": named.get(name, name), "image_size": args.img,
                     "phases": phase_flops(named.get(name, name), args.img)} for name in args.genotype}
    (out / "summary.json").write_text(json.dumps({"retokenization_flops": result}, indent=1) + "\n")
    md = ["# As-ViT re-tokenization: forward FLOPs per phase (XLA count, batch 1)", "",
          "| genotype | phase (epoch, stride, dilation) | first grid | GFLOPs | share of stride 4 |",
          "|---|---|---|---|---|"]
    for name, r in result.items():
        md += [f"| {name} | ({ph['start_epoch']}, {ph['stride']}, {ph['dilation']}) | {ph['tokens']}² | "
               f"{ph['flops'] / 1e9:.3f} | {100 * ph['share']:.1f}% |" for ph in r["phases"]]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    (out / "commands.txt").write_text(f"python -m learngene_jax.methods.asvit.flops {argv_text}\n")
    print("\n".join(md))


if __name__ == "__main__":
    from learngene_jax import errors

    errors.run(main)
