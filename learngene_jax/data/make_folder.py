"""python -m learngene_jax.data.make_folder --out DIR --count 1200 — an ImageNet-like JPEG folder, offline.

Writes DIR/train/<class>/*.jpg (and DIR/validation/... with --validation N) from scikit-learn's two bundled
photos (china.jpg, flower.jpg, 640×427): random crops, scales, flips and colour shifts, saved as 500×375-ish
JPEGs at quality 90 like ImageNet's, for the input-pipeline benchmark and tests. Image i of a split depends
only on (seed, split, i), so the same arguments write the same bytes (with the same Pillow), whatever --jobs.
The folder appears complete or not at all (written next to DIR, then renamed); an existing DIR is reused only
when this tool wrote it with the same arguments (DIR/make_folder.json).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from learngene_jax.errors import UserError, fail, run

MANIFEST = "make_folder.json"
QUALITY = 90
SPLITS = ("train", "validation")


def parse_size(text: str) -> tuple[int, int]:
    """'500x375' → (500, 375): width and height of a landscape image (portraits swap them)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        fail(UserError, f"--size must be WIDTHxHEIGHT such as 500x375, got {text!r}")
    if min(width, height) < 16:
        fail(UserError, f"--size {text} is too small: both sides must be >= 16 pixels")
    return width, height


def settings(args: argparse.Namespace) -> dict:
    """What determines the folder's bytes (stored in DIR/make_folder.json)."""
    return {"tool": "learngene_jax.data.make_folder", "version": 1, "count": args.count,
            "validation": args.validation, "classes": args.classes, "seed": args.seed, "size": list(args.size),
            "quality": QUALITY}


def synthesize(photos: list[np.ndarray], rng: np.random.Generator, label: int, classes: int,
               size: tuple[int, int]) -> Image.Image:
    """One image of class `label`: a random crop of one photo, resized to `size` (20% portrait), flipped at
    random, with the class's colour cast and a per-image brightness and channel jitter."""
    photo = photos[label % len(photos)]
    h, w = photo.shape[:2]
    area = h * w * rng.uniform(0.2, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = min(w, round(np.sqrt(area * aspect))), min(h, round(np.sqrt(area / aspect)))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = size if rng.random() >= 0.2 else size[::-1]
    img = Image.fromarray(photo).resize(out, Image.BICUBIC, box=(left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    # a class's colour cast: a fixed rotation of the channel gains, so classes differ in colour as well as photo
    phase = 2 * np.pi * label / classes + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    gains = (1 + 0.25 * np.cos(phase)) * rng.uniform(0.85, 1.15, 3) * rng.uniform(0.7, 1.3)
    x = np.asarray(img, np.float32) * gains.astype(np.float32) + rng.uniform(-20, 20)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


def class_name(label: int) -> str:
    """The folder of class `label` (sorted order = label order, as torchvision and FolderSource read it)."""
    return f"class_{label:03d}"


def write_image(root: Path, split: str, seed: int, classes: int, size: tuple[int, int], i: int) -> None:
    """Image i of `split` (class i mod classes), from its own random stream."""
    label = i % classes
    rng = np.random.default_rng([seed, SPLITS.index(split), i])
    img = synthesize(_photos(), rng, label, classes, size)
    img.save(root / split / class_name(label) / f"{split}_{i:06d}.jpg", quality=QUALITY)


@functools.cache
def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)  # china.jpg, flower.jpg: (427, 640, 3) uint8


def write_split(root: Path, split: str, count: int, args: argparse.Namespace) -> None:
    """`count` images of `split`, written by `args.jobs` processes."""
    for label in range(args.classes):
        (root / split / class_name(label)).mkdir(parents=True)
    write = functools.partial(write_image, root, split, args.seed, args.classes, args.size)
    if args.jobs == 1:
        for i in range(count):
            write(i)
        return
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        list(pool.map(write, range(count), chunksize=16))


def _check_reusable(out: Path, want: dict) -> bool:
    """Whether `out` can be reused as is; a one-line error when it exists but cannot."""
    if not out.exists():
        return False
    if not out.is_dir():
        fail(UserError, f"--out {out} exists and is not a folder: pass another --out")
    if not any(out.iterdir()):
        return False
    try:
        have = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        fail(UserError, f"--out {out} exists, is not empty and was not written by make_folder: pass another --out")
    if have != want:
        diff = ", ".join(f"{k}={have.get(k)} (asked {v})" for k, v in want.items() if have.get(k) != v)
        fail(UserError, f"--out {out} was written by make_folder with other settings: {diff}; "
                        f"pass another --out or delete it")
    found = sum(1 for _ in out.glob("*/*/*.jpg"))
    if found != want["count"] + want["validation"]:
        fail(UserError, f"--out {out} holds {found} images where its manifest says "
                        f"{want['count'] + want['validation']}: delete it and run again")
    return True


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m learngene_jax.data.make_folder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the folder to write (DIR/train/<class>/*.jpg)")
    p.add_argument("--count", type=int, required=True, help="training images")
    p.add_argument("--validation", type=int, default=0, help="validation images (0: no validation split)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="500x375", help="WIDTHxHEIGHT of landscape images (ImageNet's typical)")
    p.add_argument("--jobs", type=int, default=1, help="processes writing images (the bytes do not depend on it)")
    return p


def main(argv: list[str] | None = None) -> None:
    """Validate, then write the folder (or reuse it)."""
    args = build_parser().parse_args(argv)
    args.size = parse_size(args.size)
    if args.classes < 1:
        fail(UserError, f"--classes must be >= 1, got {args.classes}")
    if args.count < args.classes:
        fail(UserError, f"--count {args.count} must be at least --classes {args.classes} (one image per class)")
    if args.validation and args.validation < args.classes:
        fail(UserError, f"--validation {args.validation} must be 0 or at least --classes {args.classes}")
    if args.validation < 0 or args.seed < 0:
        fail(UserError, "--validation and --seed must be >= 0")
    if args.jobs < 1:
        fail(UserError, f"--jobs must be >= 1, got {args.jobs}")
    out = Path(args.out).expanduser()
    want = settings(args)
    if _check_reusable(out, want):
        print(f"reusing {out}: make_folder wrote it with the same settings ({args.count} train images)")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_split(tmp, "train", args.count, args)
        if args.validation:
            write_split(tmp, "validation", args.validation, args)
        (tmp / MANIFEST).write_text(json.dumps(want, indent=1) + "\n")
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    split = f" + {args.validation} validation" if args.validation else ""
    print(f"wrote {args.count} train{split} JPEGs ({args.classes} classes, about {args.size[0]}x{args.size[1]}, "
          f"quality {QUALITY}, seed {args.seed}) to {out}")


if __name__ == "__main__":
    run(main)
