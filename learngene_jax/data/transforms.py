"""Per-example image transforms on the host (numpy + PIL), the DeiT recipe's pieces each switchable:
random resized crop, flip, RandAugment (timm's `rand-m9-mstd0.5-inc1`), random erasing, and the eval
resize + center crop. Mixup/CutMix act on whole batches on device (`data/mix.py`).

Images leave the host as uint8 (4× fewer bytes than float32): `augment` returns the augmented uint8 image and
the random-erasing box, and `data/device.py` normalises and fills the box with noise inside the jitted step.
`train_transform` / `eval_transform` are the same decisions as one float32 host result (the reference the
device path is tested against, and what single-image tools use).

Randomness comes from a numpy Generator the pipeline seeds per (seed, epoch, position in the epoch), so an
example's augmentation does not depend on batch composition, worker, process or device count, or resumption.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


@dataclasses.dataclass(frozen=True)
class TransformConfig:
    """What to do to one image (see configs for the DeiT values)."""

    image_size: int = 224
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875  # eval: resize the shorter side to image_size / crop_pct, center crop
    random_resized_crop: bool = True
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    randaugment: bool = True
    randaugment_ops: int = 2
    randaugment_magnitude: float = 9.0
    randaugment_mstd: float = 0.5
    random_erasing: float = 0.25


def _to_pil(image: np.ndarray, channels: int) -> Image.Image:
    if image.shape[-1] == 1:
        pil = Image.fromarray(image[..., 0], "L")
        return pil.convert("RGB") if channels == 3 else pil
    pil = Image.fromarray(image)
    return pil.convert("L") if channels == 1 else pil.convert("RGB")


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(left, top, w, h) as torchvision's RandomResizedCrop.get_params (10 tries, then a center crop)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


# RandAugment, timm's "increasing" op set: magnitude m in [0, 10] maps to each op's strength.
_FILL = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)


def _sign(rng: np.random.Generator) -> float:
    return -1.0 if rng.random() < 0.5 else 1.0


def _affine(img: Image.Image, matrix: tuple[float, ...], resample: int) -> Image.Image:
    fill = _FILL if img.mode == "RGB" else _FILL[0]
    return img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)


def _enhance(cls):
    return lambda img, m, rng, resample: cls(img).enhance(1.0 + _sign(rng) * m / 10 * 0.9)


# name → op(img, magnitude, rng, resample); the geometric ops resample with the transform's interpolation, as
# timm's RandAugment does when create_transform is given one (DeiT: bicubic)
RAND_OPS = {
    "AutoContrast": lambda img, m, rng, resample: ImageOps.autocontrast(img),
    "Equalize": lambda img, m, rng, resample: ImageOps.equalize(img),
    "Invert": lambda img, m, rng, resample: ImageOps.invert(img),
    "Rotate": lambda img, m, rng, resample: img.rotate(_sign(rng) * m / 10 * 30, resample=resample,
                                                       fillcolor=_FILL if img.mode == "RGB" else _FILL[0]),
    # timm asks for 0 bits at m = 10, which Pillow >= 13 rejects; at least 1 bit is kept here
    "PosterizeIncreasing": lambda img, m, rng, resample: ImageOps.posterize(img, max(1, 4 - int(m / 10 * 4))),
    "SolarizeIncreasing": lambda img, m, rng, resample: ImageOps.solarize(img, 256 - int(m / 10 * 256)),
    "SolarizeAdd": lambda img, m, rng, resample: _solarize_add(img, int(m / 10 * 110)),
    "ColorIncreasing": _enhance(ImageEnhance.Color),
    "ContrastIncreasing": _enhance(ImageEnhance.Contrast),
    "BrightnessIncreasing": _enhance(ImageEnhance.Brightness),
    "SharpnessIncreasing": _enhance(ImageEnhance.Sharpness),
    "ShearX": lambda img, m, rng, resample: _affine(img, (1, _sign(rng) * m / 10 * 0.3, 0, 0, 1, 0), resample),
    "ShearY": lambda img, m, rng, resample: _affine(img, (1, 0, 0, _sign(rng) * m / 10 * 0.3, 1, 0), resample),
    "TranslateXRel": lambda img, m, rng, resample: _affine(
        img, (1, 0, _sign(rng) * m / 10 * 0.45 * img.size[0], 0, 1, 0), resample),
    "TranslateYRel": lambda img, m, rng, resample: _affine(
        img, (1, 0, 0, 0, 1, _sign(rng) * m / 10 * 0.45 * img.size[1]), resample),
}


def _solarize_add(img: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    lut = [min(255, i + add) if i < threshold else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def rand_augment(img: Image.Image, rng: np.random.Generator, num_ops: int = 2, magnitude: float = 9.0,
                 mstd: float = 0.5, prob: float = 0.5, resample: int = Image.BICUBIC) -> Image.Image:
    """timm RandAugment: `num_ops` random ops, each applied with probability `prob`, magnitude ~ N(m, mstd)
    clipped to [0, 10]; geometric ops resample with `resample`."""
    names = list(RAND_OPS)
    for name in rng.choice(names, size=num_ops, replace=True):
        if rng.random() > prob:
            continue
        m = float(np.clip(rng.normal(magnitude, mstd), 0, 10)) if mstd > 0 else magnitude
        img = RAND_OPS[str(name)](img, m, rng, resample)
    return img


def random_erase_box(height: int, width: int, rng: np.random.Generator, prob: float, scale=(0.02, 1 / 3),
                     ratio=(0.3, 1 / 0.3)) -> tuple[int, int, int, int]:
    """timm RandomErasing(mode='pixel', count 1): the (top, left, h, w) box to fill with normal noise on the
    normalised image, drawn with probability `prob` (10 tries); h = w = 0 when nothing is erased."""
    if rng.random() >= prob:
        return 0, 0, 0, 0
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = height * width * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if w < width and h < height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return 0, 0, 0, 0


def random_erase(x: np.ndarray, rng: np.random.Generator, prob: float, scale=(0.02, 1 / 3),
                 ratio=(0.3, 1 / 0.3)) -> np.ndarray:
    """timm RandomErasing(mode='pixel'): one box of normal noise on the normalised (H, W, C) image."""
    top, left, h, w = random_erase_box(x.shape[0], x.shape[1], rng, prob, scale, ratio)
    if not h:
        return x
    x = x.copy()
    x[top:top + h, left:left + w] = rng.standard_normal((h, w, x.shape[2])).astype(x.dtype)
    return x


def normalize(img: Image.Image | np.ndarray, cfg: TransformConfig) -> np.ndarray:
    """uint8 image → float32 (H, W, C), (x/255 − mean) / std (the device path, `data/device.py`, gives the same
    bits)."""
    x = np.asarray(img, np.float32) / 255.0
    if x.ndim == 2:
        x = x[..., None]
    return (x - np.asarray(cfg.mean[: x.shape[-1]], np.float32)) / np.asarray(cfg.std[: x.shape[-1]], np.float32)


def _as_array(img: Image.Image) -> np.ndarray:
    x = np.asarray(img, np.uint8)
    return x[..., None] if x.ndim == 2 else x


def augment(image: np.ndarray, rng: np.random.Generator, cfg: TransformConfig
            ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The training transform of one uint8 image up to normalisation: (uint8 (S, S, C) image, random-erasing
    box (top, left, h, w), all zero when nothing is erased)."""
    img = _to_pil(image, cfg.channels)
    size = (cfg.image_size, cfg.image_size)
    resample = _RESAMPLE[cfg.interpolation]
    if cfg.random_resized_crop:
        left, top, w, h = random_resized_crop_box(*img.size, rng, cfg.rrc_scale)
        img = img.resize(size, resample, box=(left, top, left + w, top + h))
    elif img.size != size:
        img = img.resize(size, resample)
    if cfg.flip and rng.random() < 0.5:
        img = ImageOps.mirror(img)
    if cfg.randaugment:
        img = rand_augment(img, rng, cfg.randaugment_ops, cfg.randaugment_magnitude, cfg.randaugment_mstd,
                           resample=resample)
    box = random_erase_box(cfg.image_size, cfg.image_size, rng, cfg.random_erasing) if cfg.random_erasing > 0 \
        else (0, 0, 0, 0)
    return _as_array(img), box


def train_transform(image: np.ndarray, rng: np.random.Generator, cfg: TransformConfig) -> np.ndarray:
    """The training transform of one uint8 image as one float32 (S, S, C) host result: `augment`, normalise,
    and the erasing box filled with normal noise from `rng`."""
    x, (top, left, h, w) = augment(image, rng, cfg)
    x = normalize(x, cfg)
    if h:
        x[top:top + h, left:left + w] = rng.standard_normal((h, w, x.shape[2])).astype(x.dtype)
    return x


def eval_image(image: np.ndarray, cfg: TransformConfig) -> np.ndarray:
    """Resize the shorter side to image_size / crop_pct, then center crop image_size (crop_pct 1: plain resize);
    uint8 (S, S, C)."""
    img = _to_pil(image, cfg.channels)
    resample = _RESAMPLE[cfg.interpolation]
    if cfg.crop_pct >= 1.0:
        img = img.resize((cfg.image_size, cfg.image_size), resample)
    else:
        short = int(math.floor(cfg.image_size / cfg.crop_pct))
        w, h = img.size
        scale = short / min(w, h)
        img = img.resize((max(short, round(w * scale)), max(short, round(h * scale))), resample)
        w, h = img.size
        left, top = (w - cfg.image_size) // 2, (h - cfg.image_size) // 2
        img = img.crop((left, top, left + cfg.image_size, top + cfg.image_size))
    return _as_array(img)


def eval_transform(image: np.ndarray, cfg: TransformConfig) -> np.ndarray:
    """`eval_image`, normalised: float32 (S, S, C)."""
    return normalize(eval_image(image, cfg), cfg)
