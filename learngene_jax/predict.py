"""python -m learngene_jax.predict — logits of a gene's aux model, an expanded descendant, or a model
directory, on normalised float32 images (--images, a .npy), image files (--images, one file or a folder of them,
read as image folders are read for training, resized and normalised with --mean/--std) or, for language models,
int32 token ids (--tokens, (batch, tokens)) from a .npy file or a text file (--text, encoded with the tokenizer saved
with the model, or --tokenizer) (eval mode); --text with --generate N writes the text continued by N tokens."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from learngene_jax import errors, genes
from learngene_jax.data.images import is_image_file, read_image
from learngene_jax.errors import UserError, check_out_file, fail
from learngene_jax.genes.io import load_gene
from learngene_jax.models.io import load_model


def to_nhwc(images: np.ndarray, layout: str, in_chans: int, what: str = "input") -> np.ndarray:
    """(N, C, H, W) or (N, H, W, C) → (N, H, W, C), dtype kept; 'auto' decides by which axis has `in_chans`
    entries."""
    if images.ndim != 4:
        fail(UserError, f"images must be a 4-D array (N, C, H, W) or (N, H, W, C), got shape {images.shape}")
    if layout == "auto":
        first, last = images.shape[1] == in_chans, images.shape[-1] == in_chans
        if not (first or last):
            fail(UserError, f"{what}: images of shape {images.shape} have no axis of {in_chans} channels (axis 1: "
                            f"{images.shape[1]}, last: {images.shape[-1]}); the model takes {in_chans}-channel images")
        if first == last:
            fail(UserError, f"cannot tell the layout of images of shape {images.shape}: pass --layout-images "
                            f"nchw or nhwc")
        layout = "nchw" if first else "nhwc"
    if layout == "nchw":
        images = images.transpose(0, 2, 3, 1)
    if images.shape[-1] != in_chans:
        fail(UserError, f"images have {images.shape[-1]} channels in layout {layout}; the model takes {in_chans}")
    return np.ascontiguousarray(images)


def check_normalised(images: np.ndarray, image_size: int, what: str, allow_unit_range: bool = False) -> None:
    """Refuse what would silently give wrong logits: raw pixels (an integer dtype, or values beyond ±10, which
    (x − mean)/std of 8-bit pixels never reaches for the usual std ≥ 0.1·255), pixels scaled to [0, 1] (every
    value in [0, 1]; normalised images go below 0 — `allow_unit_range` accepts them), NaNs, no images, and
    another image size."""
    if images.shape[1:3] != (image_size, image_size):
        fail(UserError, f"{what}: images are {images.shape[1]}×{images.shape[2]} but the model takes "
                        f"{image_size}×{image_size}; resize or crop them first")
    if not np.issubdtype(images.dtype, np.floating):
        fail(UserError, f"{what}: images are {images.dtype} pixels; predict takes normalised float32 images — "
                        f"(x / 255 − mean) / std with the mean and std the model was trained with")
    if not len(images):
        fail(UserError, f"{what}: holds no images (shape {images.shape})")
    if not np.isfinite(images).all():
        fail(UserError, f"{what}: images contain NaN or infinite values")
    if np.abs(images).max() > 10:
        fail(UserError, f"{what}: image values reach {np.abs(images).max():.4g}: these look like raw pixels, not "
                        f"normalised images; pass (x / 255 − mean) / std with the model's training mean and std")
    if not allow_unit_range and images.min() >= 0 and images.max() <= 1:
        fail(UserError, f"{what}: every value is within [0, 1]: these look like pixels scaled by 1/255, not "
                        f"normalised images (which go below 0); pass (x − mean) / std, or --allow-unit-range if "
                        f"they really are normalised")


def image_files(path: Path) -> list[Path]:
    """The image files `path` names: itself, or those directly in a folder (sorted by name); [] for other paths."""
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and is_image_file(f))
        if not files:
            fail(UserError, f"--images: the folder {path} holds no image files (looked for any case of "
                            f".jpg .png .tif ...)")
        return files
    return [path] if is_image_file(path) else []


def read_image_files(files: list[Path], model: nn.Module, args: argparse.Namespace) -> np.ndarray:
    """Image files → normalised float32 (N, S, S, C): the image-folder decoding (`data.images.read_image`), then
    the evaluation resize/crop and normalisation of training (`data.transforms.eval_transform`)."""
    from learngene_jax.data.transforms import TransformConfig, eval_transform

    if args.mean is None or args.std is None:
        fail(UserError, "--images: image files need the normalisation the model was trained with: pass --mean and "
                        "--std (the config's data.mean / data.std, e.g. --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5)")
    try:
        mean, std = ([float(v) for v in text.split(",")] for text in (args.mean, args.std))
    except ValueError:
        fail(UserError, f"--mean/--std: expected comma-separated numbers, got {args.mean!r} and {args.std!r}")
    if len(mean) != model.in_chans or len(std) != model.in_chans or min(std) <= 0:
        fail(UserError, f"--mean/--std: the model takes {model.in_chans} channels; give {model.in_chans} means and "
                        f"{model.in_chans} positive stds")
    if max(mean) > 1 or min(mean) < 0 or max(std) > 1:
        fail(UserError, f"--mean/--std are fractions of the 0-255 range, as data.mean / data.std (e.g. 0.485 for "
                        f"ImageNet), got {args.mean} and {args.std}: divide pixel-unit values by 255")
    cfg = TransformConfig(image_size=model.image_size, channels=model.in_chans, mean=tuple(mean), std=tuple(std),
                          interpolation=args.interpolation, crop_pct=args.crop_pct)
    return np.stack([eval_transform(read_image(f), cfg) for f in files]).astype(np.float32)


def batched_apply(model: nn.Module, variables: dict[str, Any], images: np.ndarray, batch_size: int) -> np.ndarray:
    """Eval-mode logits for all images, in batches (the last batch padded to keep one compiled shape)."""
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        pad = batch_size - len(chunk) if len(images) > batch_size else 0
        x = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)]) if pad else chunk
        out.append(np.asarray(apply(variables, jnp.asarray(x)))[: len(chunk)])
    return np.concatenate(out)


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """The flags that name a model (--gene [--depth ...] or --model-dir), which `resolve_model` reads; shared by
    predict, generate and eval-lm."""
    p.add_argument("--gene", help="gene directory: runs the aux model, or a descendant with --depth")
    p.add_argument("--model-dir", help="model directory (converted or trained model)")
    p.add_argument("--depth", type=int, default=None, help="expand the gene to a descendant of this depth")
    p.add_argument("--layers-source", default=None, help="SWS: stage id per descendant layer")
    p.add_argument("--layout", default="official", choices=["official", "exact"], help="descendant layout")


def resolve_model(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any]]:
    """The model and variables the flags name."""
    if (args.gene is None) == (args.model_dir is None):
        fail(UserError, "give exactly one of --gene and --model-dir")
    if args.model_dir is not None:
        if args.depth is not None or args.layers_source is not None:
            fail(UserError, "--depth and --layers-source apply to --gene, not --model-dir")
        return load_model(args.model_dir)
    gene = load_gene(args.gene)
    if args.depth is None and args.layers_source is None:
        return genes.aux_model(gene.meta), {"params": genes.aux_params(gene)}
    kw = dict(layers_source=args.layers_source, layout=args.layout)
    return genes.descendant_model(gene, args.depth, **kw), {"params": genes.expand(gene, args.depth, **kw)}


def text_tokenizer(args: argparse.Namespace, model: nn.Module) -> Any:
    """The tokenizer --text is encoded with: --tokenizer, else the model directory's tokenizer.json; a char
    vocabulary of another size than the model's table, or any vocabulary larger than it, is refused."""
    from learngene_jax.data.tokenize import CharTokenizer, check_table, get_tokenizer

    spec = args.tokenizer
    if spec is None:
        if args.model_dir is None or not (Path(args.model_dir).expanduser() / "tokenizer.json").is_file():
            fail(UserError, f"--text: {args.model_dir or args.gene} has no tokenizer.json (byte-level and older runs "
                            f"save none): pass --tokenizer bytes, or the tokenizer.json the model was trained with")
        spec = str(Path(args.model_dir).expanduser() / "tokenizer.json")
    tokenizer = get_tokenizer(spec)
    if isinstance(tokenizer, CharTokenizer) and tokenizer.vocab_size != model.vocab_size:
        fail(UserError, f"--text: the char vocabulary of {spec} has {tokenizer.vocab_size} characters but the "
                        f"model's table has {model.vocab_size} rows: it is not the vocabulary the model was trained "
                        f"with; pass that run's WORKDIR/model/tokenizer.json")
    check_table(model.vocab_size, tokenizer.vocab_size, "the model")
    return tokenizer


def predict_text(args: argparse.Namespace) -> None:
    """--text: logits (1, tokens, vocab) of the encoded text, or with --generate the text continued (decoded)."""
    from learngene_jax.data.text import read_text
    from learngene_jax.data.tokenize import CharTokenizer
    from learngene_jax.models.generation import check_sampling, generate
    from learngene_jax.models.llama import check_context

    model, variables = resolve_model(args)
    if not hasattr(model, "vocab_size"):
        fail(UserError, f"{type(model).__name__} takes --images; --text is for language models")
    tokenizer = text_tokenizer(args, model)
    text = read_text(args.text, "--text")
    ids = tokenizer.ids(text, args.text) if isinstance(tokenizer, CharTokenizer) else tokenizer.encode([text.encode()])
    tokens = np.asarray(ids, np.int32)[None]
    if args.generate < 0:
        fail(UserError, f"--generate must be >= 0, got {args.generate}")
    try:
        check_sampling(args.temperature, 0, 1.0)
    except ValueError as e:
        fail(UserError, f"--{e}")
    try:
        check_context(model, tokens.shape[1] + args.generate)
    except ValueError as e:
        fail(UserError, f"--text: {tokens.shape[1]} tokens{f' + {args.generate} generated' if args.generate else ''}: "
                        f"{e}; shorten the text")
    if not args.generate:
        logits = batched_apply(model, variables, tokens, 1)
        np.save(args.out, logits)
        print(f"saved logits {logits.shape} of {args.text} ({tokens.shape[1]} tokens) to {args.out}")
        return
    seq = generate(model, variables, tokens, args.generate, temperature=args.temperature,
                   rng=jax.random.key(args.seed))
    continued = tokenizer.decode(np.asarray(seq)[0, tokens.shape[1]:])
    Path(args.out).expanduser().write_text(text + continued)
    print(text + continued)


def main(argv: list[str] | None = None) -> None:
    """Run the model on the images and save the logits."""
    p = argparse.ArgumentParser(prog="python -m learngene_jax.predict", description=__doc__)
    add_model_flags(p)
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--images", help=".npy of float32 images, already normalised; or an image file, or a folder of "
                                       "them (rows in file-name order; needs --mean/--std)")
    data.add_argument("--tokens", help=".npy of integer token ids (batch, tokens), for language models")
    data.add_argument("--text", help="a UTF-8 text file, for language models: encoded with --tokenizer")
    p.add_argument("--tokenizer", help="--text: bytes, a tokenizer.json, or a directory holding one (default: the "
                                       "model directory's, saved by training)")
    p.add_argument("--generate", type=int, default=0,
                   help="--text: continue it by this many tokens and write the decoded text to --out (not logits)")
    p.add_argument("--temperature", type=float, default=0.0, help="--generate: 0 greedy, else sampled")
    p.add_argument("--seed", type=int, default=0, help="--generate: the sampling seed")
    p.add_argument("--layout-images", default="auto", choices=["auto", "nchw", "nhwc"])
    p.add_argument("--mean", help="image files: the training data.mean, comma-separated (e.g. 0.5,0.5,0.5)")
    p.add_argument("--std", help="image files: the training data.std, comma-separated")
    p.add_argument("--crop-pct", type=float, default=1.0,
                   help="image files: resize the shorter side to size / crop-pct and center crop (1: plain resize)")
    p.add_argument("--interpolation", default="bilinear", choices=["bilinear", "bicubic", "nearest"])
    p.add_argument("--out", required=True, help="where to save the logits (.npy)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--allow-unit-range", action="store_true",
                   help="accept images whose values all lie in [0, 1] (refused by default: unnormalised pixels)")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        fail(UserError, f"--batch-size must be >= 1, got {args.batch_size}")
    check_out_file(args.out)
    if (args.generate or args.tokenizer) and not args.text:
        fail(UserError, "--generate and --tokenizer go with --text")
    if args.text:
        predict_text(args)
        return
    source = args.images or args.tokens
    files = image_files(Path(source).expanduser()) if args.images else []
    if not files:
        try:
            images = np.load(source, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            fail(UserError, f"cannot read {'images' if args.images else 'tokens'} from {source}: {e}")
    model, variables = resolve_model(args)
    if files:
        if hasattr(model, "vocab_size"):
            fail(UserError, f"{type(model).__name__} takes --tokens")
        logits = batched_apply(model, variables, read_image_files(files, model, args), args.batch_size)
        np.save(args.out, logits)
        print(f"saved logits {logits.shape} of {len(files)} image files (rows in file-name order) to {args.out}")
        return
    if not isinstance(images, np.ndarray):
        fail(UserError, f"{source} holds several arrays (an .npz?); save one array with np.save")
    if hasattr(model, "vocab_size") != bool(args.tokens):
        fail(UserError, f"{type(model).__name__} takes {'--tokens' if hasattr(model, 'vocab_size') else '--images'}")
    if args.tokens:
        from learngene_jax.models.llama import check_context, check_tokens, context_limit

        try:
            tokens = check_tokens(images, model.vocab_size)
        except ValueError as e:
            fail(UserError, f"{source}: {e}")
        try:
            check_context(model, tokens.shape[1])
        except ValueError as e:
            fail(UserError, f"{source}: {e}; pass rows of at most {context_limit(model)[0]} tokens")
        if not tokens.size:
            fail(UserError, f"{source}: holds no tokens (shape {tokens.shape}); predict needs at least one row of "
                            f"at least one token")
        logits = batched_apply(model, variables, tokens, args.batch_size)
        np.save(args.out, logits)
        print(f"saved logits {logits.shape} to {args.out}")
        return
    images = to_nhwc(images, args.layout_images, model.in_chans, args.images)
    check_normalised(images, model.image_size, args.images, args.allow_unit_range)
    images = images.astype(np.float32)
    logits = batched_apply(model, variables, images, args.batch_size)
    np.save(args.out, logits)
    print(f"saved logits {logits.shape} to {args.out}")


if __name__ == "__main__":
    errors.run(main)
