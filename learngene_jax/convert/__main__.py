"""python -m learngene_jax.convert {from-official,to-timm,from-timm,from-hf,to-hf,to-peft,from-peft,
gene-to-safetensors,safetensors-to-gene,save-pretrained} — checkpoints, gene files and Hugging Face-layout exports in
and out of the toolkit."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from learngene_jax import errors, genes, hub
from learngene_jax.convert import levit, official, state_dict, vit
from learngene_jax.convert.state_dict import read_json_object
from learngene_jax.errors import ConversionError, UserError, fail
from learngene_jax.genes.files import load_gene_safetensors, save_gene_safetensors
from learngene_jax.genes.io import load_gene, save_gene
from learngene_jax.models import TIMM_ALIASES, create_model
from learngene_jax.models.io import load_model, save_model
from learngene_jax.models.levit import VARIANTS as LEVIT_VARIANTS
from learngene_jax.models.vit import ViT, count_params

# What a timm name fixes beyond heads and eps, checked against the checkpoint's shapes: field → how to say it.
TIMM_ALIAS_FIELDS = {"width": "width", "depth": "depth", "patch_size": "patch size", "image_size": "image size",
                     "distilled": "distilled", "class_token": "class token", "pool": "pooling",
                     "final_norm": "final norm", "hidden_dim": "MLP width", "qkv_bias": "qkv bias"}


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
    # timm's config.json beside the file (save_for_hf, Hub snapshots) names the activation and the image size
    image_size = None if args.arch in LEVIT_VARIANTS else vit.timm_image_size(vit.read_timm_config(args.checkpoint))
    if args.arch == "vit":
        stored = vit.stored_timm_kwargs(state_dict.read_metadata(args.checkpoint))
        heads = args.num_heads if args.num_heads is not None else stored.get("num_heads")
        eps = args.eps if args.eps is not None else stored.get("layer_norm_eps", 1e-6)
        if stored:
            used = {k: v for k, v in (("heads", heads), ("eps", eps)) if v is not None}
            print(f"read timm_kwargs from the file's metadata: {stored} (using {used}; --num-heads/--eps override)")
        model, params = vit.from_timm(sd, num_heads=heads, eps=eps, pool=stored.get("global_pool"),
                                      image_size=image_size)
        save_model(args.out, model, {"params": params}, overwrite=args.overwrite, source=str(args.checkpoint))
        print(f"wrote {model.depth}-layer ViT (width {model.width}, heads {model.num_heads}, "
              f"{count_params(params):,} params) to {args.out}")
        return
    if args.num_heads is not None or args.eps is not None:
        fail(UserError, f"--num-heads and --eps apply to --arch vit; {args.arch} fixes its heads and eps")
    if args.arch in TIMM_ALIASES:
        model, params = vit.from_timm(sd, model=_timm_alias_model(sd, args.arch, image_size))
        save_model(args.out, model, {"params": params}, overwrite=args.overwrite, source=str(args.checkpoint))
        print(f"wrote {args.arch} (width {model.width}, heads {model.num_heads}, {model.num_classes} classes, "
              f"{count_params(params):,} params) to {args.out}")
        return
    layout = "facebookresearch" if levit.is_fb_layout(sd) else "timm"
    model, variables = levit.from_timm(sd, args.arch)
    save_model(args.out, model, variables, overwrite=args.overwrite, source=str(args.checkpoint), layout=layout)
    heads = "two heads (distilled)" if model.distilled else "one head"
    print(f"wrote {args.arch} from the {layout} layout ({model.image_size}x{model.image_size}, "
          f"{model.num_classes} classes, {heads}, {count_params(variables['params']):,} params) to {args.out}")


def _timm_alias_model(sd: Mapping[str, np.ndarray], arch: str, image_size: tuple[int, int] | None) -> ViT:
    """The ViT of timm's `arch` (its heads and eps) with the checkpoint's classes and input channels; a
    ConversionError names every architecture field where the checkpoint's shapes say otherwise."""
    want = create_model(arch)
    # heads cannot be read from shapes: the name gives them below
    found = vit.infer_vit(sd, num_heads=1, image_size=image_size)
    diffs = [f"{label} {getattr(found, f)} vs {getattr(want, f)}"
             for f, label in TIMM_ALIAS_FIELDS.items() if getattr(found, f) != getattr(want, f)]
    if diffs:
        fail(ConversionError, f"the checkpoint is not {arch} (checkpoint vs {arch}): " + ", ".join(diffs)
                              + "; pass the timm name of this model, or --arch vit to read the architecture from its "
                                "shapes (with --num-heads)")
    return found.clone(num_heads=want.num_heads, eps=want.eps)


def _gene_to_safetensors(args: argparse.Namespace) -> None:
    gene = load_gene(args.gene)
    save_gene_safetensors(gene, args.out, overwrite=args.overwrite)
    print(f"wrote {gene.meta.method} gene ({count_params(gene.params):,} params) to {args.out}")


def _safetensors_to_gene(args: argparse.Namespace) -> None:
    gene = load_gene_safetensors(args.file)
    save_gene(args.out, gene, overwrite=args.overwrite)
    print(f"wrote {gene.meta.method} gene ({count_params(gene.params):,} params) to {args.out}")


def _save_pretrained(args: argparse.Namespace) -> None:
    obj = load_gene(args.gene) if args.gene else load_model(args.model)
    hub.save_pretrained(obj, args.out, overwrite=args.overwrite)
    what = f"{obj.meta.method} gene" if args.gene else f"{type(obj[0]).__name__} model"
    print(f"wrote the {what} as {hub.CONFIG_NAME}, {hub.WEIGHTS_NAME} and {hub.CARD_NAME} to {args.out} "
          f"(read it with learngene_jax.hub.from_pretrained; upload with learngene_jax.hub.push_to_hub)")


def _from_hf(args: argparse.Namespace) -> None:
    from learngene_jax.convert import hf
    from learngene_jax.models.llama import Llama

    model, variables = hf.from_hf(args.checkpoint)
    save_model(args.out, model, variables, overwrite=args.overwrite, origin=f"hf:{args.checkpoint}")
    kept = [n for n in hf.HF_SIDE_FILES if (Path(args.checkpoint) / n).is_file()]
    for name in kept:  # the tokenizer and generation settings travel with the weights (to-hf writes them back)
        shutil.copyfile(Path(args.checkpoint) / name, Path(args.out).expanduser() / name)
    print(f"wrote {type(model).__name__} ({model.model_type if isinstance(model, Llama) else 'gpt2'}, "
          f"{count_params(variables['params']):,} params, {model.depth} layers) to {args.out}"
          + (f" with its {', '.join(kept)}" if kept else ""))


def _to_hf(args: argparse.Namespace) -> None:
    from learngene_jax.convert import hf
    from learngene_jax.models.llama import GPT2, Llama

    model, variables = load_model(args.model_dir)
    if not isinstance(model, Llama | GPT2):
        fail(ConversionError, f"{args.model_dir} holds a {type(model).__name__}; to-hf writes Llama and GPT-2 "
                              f"models (ViTs: use to-timm)")
    # tokenizer.json: written by training (data/tokenize.py) or kept by from-hf, as the other side files
    side = {n: Path(args.model_dir).expanduser() / n for n in hf.HF_SIDE_FILES}
    side = {n: path for n, path in side.items() if path.is_file()}
    configs = {n: read_json_object(side[n], f"a Hugging Face {n}")
               for n in ("tokenizer_config.json", "generation_config.json") if n in side}
    hf.to_hf(model, variables, args.out, overwrite=args.overwrite,
             tokenizer=side["tokenizer.json"].read_text() if "tokenizer.json" in side else None, dtype=args.dtype,
             max_shard_size=args.max_shard_size, tokenizer_config=configs.get("tokenizer_config.json"),
             generation_config=configs.get("generation_config.json"))
    written = json.loads((Path(args.out).expanduser() / "config.json").read_text())["architectures"][0]
    print(f"wrote {written} ({args.dtype}) to {args.out} (transformers reads it with from_pretrained({args.out!r}))"
          + (" with its tokenizer" if "tokenizer.json" in side else ""))


def _to_peft(args: argparse.Namespace) -> None:
    from learngene_jax.convert import peft
    from learngene_jax.methods.heur import lm
    from learngene_jax.models import lora

    if args.gene:
        gene, dropout = load_gene(args.gene), 0.0
        if gene.meta.method != lm.NAME:
            fail(ConversionError, f"{args.gene} is a {gene.meta.method} gene; to-peft writes adapter genes "
                                  f"({lm.NAME}: WORKDIR/gene of a LoRA run) and LoRA runs' models (--model-dir)")
    else:
        model, variables = load_model(args.model_dir)
        if not lora.is_lora(model):
            fail(ConversionError, f"{args.model_dir} holds a {type(model).__name__} without LoRA adapters; to-peft "
                                  f"writes the adapters of a LoRA run (WORKDIR/model of a run with lora.rank > 0)")
        gene, dropout = lm.extract(variables["params"], lm.meta_from_aux(model)), model.lora_dropout
    out = lm.to_peft(gene, args.out, base_name=args.base_name, rslora=args.rslora, dropout=dropout,
                     overwrite=args.overwrite)
    m = gene.meta
    print(f"wrote the LoRA adapters (rank {m.rank}, scale {m.scale:g}, targets {','.join(m.targets)}, layers "
          f"{','.join(map(str, m.layers))}) as {peft.CONFIG_NAME} + {peft.WEIGHTS[0]} to {out} (PEFT reads it with "
          f"PeftModel.from_pretrained(BASE_MODEL, {str(out)!r}))")


def _from_peft(args: argparse.Namespace) -> None:
    from learngene_jax.methods.heur import lm
    from learngene_jax.models import lora
    from learngene_jax.models.llama import GPT2, Llama

    base, variables = lora.folded(*load_model(args.base))
    if type(base) not in (Llama, GPT2):
        fail(ConversionError, f"{args.base} holds a {type(base).__name__}; --base takes the Llama / GPT-2 the "
                              f"adapter was trained on (a Hugging Face or model directory)")
    gene = lm.from_peft(args.adapter, base, variables["params"])
    save_gene(args.out, gene, overwrite=args.overwrite)
    m = gene.meta
    print(f"wrote {m.method} gene (rank {m.rank}, scale {m.scale:g}, targets {','.join(m.targets)}, layers "
          f"{','.join(map(str, m.layers))}) to {args.out}; start a LoRA run from it with --config.init={args.base} "
          f"--config.lora.gene={args.out} --config.lora.rank={m.rank}")


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
    o.add_argument("--stage-sizes", type=errors.int_list, default=None, help="SWS stage sizes (default 3,3,4,3,3)")
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
    f.add_argument("--arch", default="vit", choices=["vit", *TIMM_ALIASES, *LEVIT_VARIANTS],
                   help="architecture of the checkpoint: any ViT/DeiT (read from its shapes), a timm ViT/DeiT name "
                        "(e.g. deit_tiny_patch16_224: fixes heads and eps, checked against the shapes) or a LeViT "
                        "variant (image size, classes and heads read from the weights; timm or facebookresearch "
                        "keys)")
    f.add_argument("--num-heads", type=int, default=None,
                   help="ViT attention heads (default: the file's timm_kwargs metadata as to-timm writes it, else "
                        "width/64)")
    f.add_argument("--eps", type=float, default=None,
                   help="ViT LayerNorm eps (default: the file's metadata, else 1e-6 as timm)")
    f.add_argument("--overwrite", action="store_true")
    f.set_defaults(func=_from_timm)

    hf_in = sub.add_parser("from-hf", help="Hugging Face LlamaForCausalLM / GPT2LMHeadModel dir → model directory")
    hf_in.add_argument("--checkpoint", required=True, metavar="HF_DIR",
                       help="config.json + the weights from_pretrained reads (model.safetensors, its index with "
                            "shards, pytorch_model.bin or its index; that order)")
    hf_in.add_argument("--out", required=True, metavar="MODEL_DIR")
    hf_in.add_argument("--overwrite", action="store_true")
    hf_in.set_defaults(func=_from_hf)

    hf_out = sub.add_parser("to-hf", help="Llama / GPT-2 model directory → Hugging Face directory (from_pretrained)")
    hf_out.add_argument("--model-dir", required=True)
    hf_out.add_argument("--out", required=True, metavar="HF_DIR")
    hf_out.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="dtype of the written weights (default float32)")
    hf_out.add_argument("--max-shard-size", default="5GB", metavar="SIZE",
                        help="weights above this size go in shards with model.safetensors.index.json, as "
                             "save_pretrained (default 5GB; e.g. 2GB, 500MiB)")
    hf_out.add_argument("--overwrite", action="store_true")
    hf_out.set_defaults(func=_to_hf)

    pe = sub.add_parser("to-peft", help="a LoRA run's adapters or an adapter gene → PEFT adapter directory "
                                        "(PeftModel.from_pretrained)")
    adapters = pe.add_mutually_exclusive_group(required=True)
    adapters.add_argument("--model-dir", metavar="MODEL_DIR", help="WORKDIR/model of a LoRA run (lora.rank > 0)")
    adapters.add_argument("--gene", metavar="GENE_DIR", help="an adapter gene (heur_lora: WORKDIR/gene of a LoRA run)")
    pe.add_argument("--out", required=True, metavar="ADAPTER_DIR")
    pe.add_argument("--base-name", default=None, metavar="NAME_OR_PATH",
                    help="base_model_name_or_path to record (the base the adapters belong to; default: none)")
    pe.add_argument("--rslora", action="store_true",
                    help="write use_rslora=true and lora_alpha = scale·√r (as a run with lora.rslora=True); default "
                         "lora_alpha = scale·r — PEFT computes the same scale either way")
    pe.add_argument("--overwrite", action="store_true")
    pe.set_defaults(func=_to_peft)

    pi = sub.add_parser("from-peft", help="PEFT LoRA adapter directory → adapter gene (start LoRA runs with "
                                          "--config.lora.gene)")
    pi.add_argument("--adapter", required=True, metavar="ADAPTER_DIR",
                    help="adapter_config.json + adapter_model.safetensors (or .bin)")
    pi.add_argument("--base", required=True, metavar="BASE_DIR",
                    help="the Llama / GPT-2 it adapts (Hugging Face or model directory)")
    pi.add_argument("--out", required=True, metavar="GENE_DIR")
    pi.add_argument("--overwrite", action="store_true")
    pi.set_defaults(func=_from_peft)

    g = sub.add_parser("gene-to-safetensors", help="gene directory → one .safetensors file (metadata in its header)")
    g.add_argument("--gene", required=True, metavar="GENE_DIR")
    g.add_argument("--out", required=True, metavar="FILE.safetensors")
    g.add_argument("--overwrite", action="store_true")
    g.set_defaults(func=_gene_to_safetensors)

    r = sub.add_parser("safetensors-to-gene", help="gene .safetensors file → gene directory")
    r.add_argument("--file", required=True, metavar="FILE.safetensors")
    r.add_argument("--out", required=True, metavar="GENE_DIR")
    r.add_argument("--overwrite", action="store_true")
    r.set_defaults(func=_safetensors_to_gene)

    h = sub.add_parser("save-pretrained", help="gene or model directory → Hugging Face layout (config.json, "
                                               "model.safetensors, README.md)")
    source = h.add_mutually_exclusive_group(required=True)
    source.add_argument("--gene", metavar="GENE_DIR", help="gene directory")
    source.add_argument("--model", metavar="MODEL_DIR", help="model directory (from-timm, or a trained model)")
    h.add_argument("--out", required=True)
    h.add_argument("--overwrite", action="store_true")
    h.set_defaults(func=_save_pretrained)
    return p


def main(argv: list[str] | None = None) -> None:
    """Parse and run one conversion."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    args.func(args)
    print(f"done in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    errors.run(main)
