"""python -m learngene_jax.convert {from-official,to-timm,from-timm} — checkpoints in and out of the toolkit
(from-timm reads timm ViT/DeiT and LeViT state dicts, and LeViT checkpoints of facebookresearch/LeViT)."""

from __future__ import annotations

import argparse
import json
import time

import jax

from learngene_jax import cli, genes
from learngene_jax.convert import levit, official, state_dict, vit
from learngene_jax.errors import UserError, fail
from learngene_jax.genes.io import load_gene, save_gene
from learngene_jax.models.io import save_model
from learngene_jax.models.levit import VARIANTS as LEVIT_VARIANTS
from learngene_jax.models.vit import count_params


def _from_official(args: argparse.Namespace) -> None:
    sd = state_dict.read_state_dict(args.checkpoint)
    gene = official.gene_from_official(args.method, sd, num_heads=args.num_heads, depth=args.depth,
                                       stage_sizes=args.stage_sizes, descendant_num_heads=args.descendant_heads)
    save_gene(args.out, gene, overwrite=args.overwrite)
    m = gene.meta
    print(f"wrote {m.method} gene ({count_params(gene.params):,} params; width {m.width}, heads {m.num_heads}, "
          f"aux depth {m.depth}, patch {m.patch_size}, image {m.image_size}, classes {m.num_classes}) to {args.out}")


def _to_timm(args: argparse.Namespace) -> None:
    gene = load_gene(args.gene)
    kw = dict(layers_source=args.layers_source, layout=args.layout, num_classes=args.num_classes)
    model = genes.descendant_model(gene, args.depth, **kw)
    params = jax.device_get(genes.expand(gene, args.depth, **kw))
    timm_kw = vit.timm_kwargs(model)
    state_dict.write_safetensors(args.out, vit.to_timm(params), {"timm_kwargs": json.dumps(timm_kw)})
    print(f"wrote {model.depth}-layer descendant ({count_params(params):,} params) to {args.out}")
    print("build it with timm.models.vision_transformer.VisionTransformer(" +
          ", ".join(f"{k}={v!r}" for k, v in timm_kw.items() if k != "layer_norm_eps") +
          f", norm_layer=partial(torch.nn.LayerNorm, eps={timm_kw['layer_norm_eps']}))")


def _from_timm(args: argparse.Namespace) -> None:
    sd = state_dict.read_state_dict(args.checkpoint)
    if args.num_heads is not None and args.num_heads < 1:
        fail(UserError, f"--num-heads must be >= 1, got {args.num_heads}")
    if args.eps is not None and not args.eps > 0:
        fail(UserError, f"--eps must be a positive LayerNorm epsilon (timm: 1e-6), got {args.eps}")
    if args.arch == "vit":
        stored = vit.stored_timm_kwargs(state_dict.read_metadata(args.checkpoint))
        heads = args.num_heads if args.num_heads is not None else stored.get("num_heads")
        eps = args.eps if args.eps is not None else stored.get("layer_norm_eps", 1e-6)
        if stored:
            used = {k: v for k, v in (("heads", heads), ("eps", eps)) if v is not None}
            print(f"read timm_kwargs from the file's metadata: {stored} (using {used}; --num-heads/--eps override)")
        model, params = vit.from_timm(sd, num_heads=heads, eps=eps, pool=stored.get("global_pool"))
        save_model(args.out, model, {"params": params}, overwrite=args.overwrite, source=str(args.checkpoint))
        print(f"wrote {model.depth}-layer ViT (width {model.width}, heads {model.num_heads}, "
              f"{count_params(params):,} params) to {args.out}")
        return
    if args.num_heads is not None or args.eps is not None:
        fail(UserError, f"--num-heads and --eps apply to --arch vit; {args.arch} fixes its heads and eps")
    layout = "facebookresearch" if levit.is_fb_layout(sd) else "timm"
    model, variables = levit.from_timm(sd, args.arch)
    save_model(args.out, model, variables, overwrite=args.overwrite, source=str(args.checkpoint), layout=layout)
    heads = "two heads (distilled)" if model.distilled else "one head"
    print(f"wrote {args.arch} from the {layout} layout ({model.image_size}x{model.image_size}, "
          f"{model.num_classes} classes, {heads}, {count_params(variables['params']):,} params) to {args.out}")


def build_parser() -> argparse.ArgumentParser:
    """The converter's command line."""
    p = argparse.ArgumentParser(prog="python -m learngene_jax.convert", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    o = sub.add_parser("from-official", help="official TLEG/SWS aux checkpoint (.pth) → gene directory")
    o.add_argument("--method", required=True, choices=sorted(official.RULES))
    o.add_argument("--checkpoint", required=True)
    o.add_argument("--out", required=True)
    o.add_argument("--num-heads", type=int, default=None,
                   help="aux heads (not stored in the file; default width/64; the official SWS Aux-S uses 12)")
    o.add_argument("--descendant-heads", type=int, default=0,
                   help="heads of `official`-layout descendants (default width/64, as DeiT)")
    o.add_argument("--stage-sizes", type=cli.int_list, default=None, help="SWS stage sizes (default 3,3,4,3,3)")
    o.add_argument("--depth", type=int, default=12, help="TLEG aux depth L (default 12, as the official runs)")
    o.add_argument("--overwrite", action="store_true")
    o.set_defaults(func=_from_official)

    t = sub.add_parser("to-timm", help="gene → descendant as a timm VisionTransformer .safetensors")
    t.add_argument("--gene", required=True)
    t.add_argument("--depth", type=int, default=None)
    t.add_argument("--layers-source", default=None, help="SWS: stage id per layer, e.g. 0,0,0,1,1,1,2,2,3,3,4,4")
    t.add_argument("--layout", default="official", choices=["official", "exact"])
    t.add_argument("--num-classes", type=int, default=None, help="new head size (default: the gene's)")
    t.add_argument("--out", required=True)
    t.set_defaults(func=_to_timm)

    f = sub.add_parser("from-timm", help="timm ViT/DeiT or LeViT state dict → model directory")
    f.add_argument("--checkpoint", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--arch", default="vit", choices=["vit", *LEVIT_VARIANTS],
                   help="architecture of the checkpoint: any ViT/DeiT (read from its shapes) or a LeViT variant "
                        "(image size, classes and heads read from the weights; timm or facebookresearch keys)")
    f.add_argument("--num-heads", type=int, default=None,
                   help="ViT attention heads (default: the file's timm_kwargs metadata as to-timm writes it, else "
                        "width/64)")
    f.add_argument("--eps", type=float, default=None,
                   help="ViT LayerNorm eps (default: the file's metadata, else 1e-6 as timm)")
    f.add_argument("--overwrite", action="store_true")
    f.set_defaults(func=_from_timm)
    return p


def main(argv: list[str] | None = None) -> None:
    """Parse and run one conversion."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    args.func(args)
    print(f"done in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    cli.run(main)
