"""Image files as they are: every Pillow mode of a user's image file → 8-bit RGB, upright, or a one-line refusal.

The one conversion used by image folders (`data/sources.py`, training and evaluation) and by `predict` on image
files, so a model sees the same pixels in both.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from learngene_jax.errors import DataError, fail

# torchvision's IMG_EXTENSIONS (datasets/folder.py) plus .gif; matched whatever their case (.JPG, .Png)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Modes whose PIL convert("RGB") is the right 8-bit colour image (1-bit as 0/255, CMYK and YCbCr via Pillow's
# own matrices, as torchvision's `pil_loader` gives them).
_COLOUR = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
_ALPHA = ("RGBA", "LA", "PA", "RGBa")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_said: set[str] = set()  # conversions already reported by this process


def is_image_file(path: Path) -> bool:
    """Whether `path` has an image suffix, in any case."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def _say_once(kind: str, message: str) -> None:
    if kind not in _said:
        _said.add(kind)
        print(f"note: {message}", file=sys.stderr, flush=True)


def to_rgb(im: Any, what: str) -> np.ndarray:
    """A PIL image → uint8 (H, W, 3), turned upright by its EXIF orientation (`ImageOps.exif_transpose`). Alpha is
    dropped (torchvision's and timm's `convert('RGB')`: the colour under transparent pixels is kept); 16-bit
    pixels are scaled by 255/65535 (rounded, not clipped); float pixels within [0, 1] by 255. DataError naming
    `what` for float or 32-bit integer pixels of unknown range and modes with no RGB meaning."""
    from PIL import ImageOps

    try:
        im = ImageOps.exif_transpose(im)
    except (OSError, ValueError, SyntaxError, TypeError):
        pass  # unreadable EXIF: the pixels as stored (what a loader without EXIF support gives)
    mode = im.mode
    if mode == "P" and "transparency" in im.info:
        mode, im = "RGBA", im.convert("RGBA")  # straight to RGB would warn and guess
    if mode in _COLOUR:
        return np.asarray(im.convert("RGB"))
    if mode in _ALPHA:
        _say_once("alpha", f"images with an alpha channel ({what}, ...) are read as RGB with the alpha dropped, as "
                           f"torchvision's and timm's convert('RGB') does (not composited over a background)")
        return np.asarray(im.convert("RGBA").convert("RGB"))
    if mode in _SIXTEEN_BIT or (mode == "I" and im.format == "PNG"):  # older Pillow opens 16-bit PNGs as "I"
        _say_once("16-bit", f"16-bit images ({what}, ...) are scaled to 8 bits by 255/65535")
        pixels = np.round(np.asarray(im).astype(np.float64) / 257.0)
    elif mode == "F":
        pixels = np.asarray(im, np.float64)
        low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
        if not (np.isfinite(low) and np.isfinite(high) and 0 <= low and high <= 1):
            fail(DataError, f"{what} holds 32-bit float pixels in {low:.4g}..{high:.4g}: only floats in [0, 1] "
                            f"have a known 8-bit meaning; save it as 8-bit (or 16-bit) PNG")
        _say_once("float", f"float images ({what}, ...) with pixels in [0, 1] are scaled by 255")
        pixels = np.round(pixels * 255.0)
    elif mode == "I":
        fail(DataError, f"{what} holds 32-bit integer pixels (Pillow mode I) of unknown range; save it as 8-bit or "
                        f"16-bit PNG")
    else:
        fail(DataError, f"{what} has Pillow mode {mode!r}, which has no RGB meaning here; save it as 8-bit RGB")
    gray = pixels.astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def read_image(path: Path) -> np.ndarray:
    """The image file at `path` as uint8 (H, W, 3) (see `to_rgb`); DataError for a file PIL cannot decode."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return to_rgb(im, str(path))
    except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for unreadable, truncated, bad files
        fail(DataError, f"cannot decode image {path} ({type(e).__name__}: {str(e)[:120]}); delete or replace "
                        f"the file")
