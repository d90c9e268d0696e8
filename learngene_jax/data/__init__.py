"""Data from config: sources (tfds, bundled digits, .npz, image folders), host transforms in grain worker
processes, uint8 global batches (normalised on device by `data.device`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from learngene_jax.data import digits
from learngene_jax.data.pipeline import Loader
from learngene_jax.data.sources import FolderSource, Source, SubsetSource, TfdsSource, npz_source
from learngene_jax.data.transforms import TransformConfig
from learngene_jax.errors import DataError, fail

DEFAULT_DIGITS_DIR = Path("~/.cache/learngene_jax/tfds")


def is_text(config: Any) -> bool:
    """Whether config.data names a text corpus (language models: token windows instead of images)."""
    from learngene_jax.data.text import CORPORA

    return config.data.name in CORPORA


def make_source(data: Any, split: str, *, train: bool = False) -> Source:
    """The split `split` of the dataset that `config.data` names, restricted to `data.classes` when set
    (with `data.shots` examples per class on the training split)."""
    source = _base_source(data, split)
    if data.get("classes"):
        return SubsetSource(source, data.classes, data.shots if train else 0, data.get("subset_seed", 0))
    return source


def _base_source(data: Any, split: str) -> Source:
    name = data.name
    if name == "npz":
        return npz_source(_required(data, "path", "an .npz file"), split)
    if name == "folder":
        return FolderSource(_required(data, "path", "an image-folder root"), split)
    data_dir = data.get("data_dir") or None
    if name == digits.NAME:
        data_dir = digits.prepare(Path(data_dir or DEFAULT_DIGITS_DIR).expanduser())
    return TfdsSource(name, split, data_dir, data.get("image_key", "image"), data.get("label_key", "label"))


def _required(data: Any, key: str, what: str) -> str:
    value = data.get(key)
    if not value:
        fail(DataError, f"data.name={data.name!r} needs data.{key} ({what}): pass --config.data.{key}=...")
    return value


def transform_config(config: Any, train: bool) -> TransformConfig:
    """The per-example transform settings of `config.data` / `config.aug`."""
    data, aug = config.data, config.aug
    kw = dict(image_size=data.image_size, channels=data.channels, mean=tuple(data.mean), std=tuple(data.std),
              interpolation=data.interpolation, crop_pct=data.crop_pct)
    if not train:
        return TransformConfig(**kw)
    return TransformConfig(**kw, random_resized_crop=aug.random_resized_crop, rrc_scale=(aug.rrc_scale_min, 1.0),
                           flip=aug.flip, randaugment=aug.randaugment, randaugment_ops=aug.randaugment_ops,
                           randaugment_magnitude=aug.randaugment_magnitude, randaugment_mstd=aug.randaugment_mstd,
                           random_erasing=aug.random_erasing)


def make_loader(config: Any, split: str, *, train: bool, batch_size: int, process_index: int = 0,
                process_count: int = 1, source: Source | None = None, device_shards: int = 1) -> Loader:
    """A Loader over `split` with the train or eval transform; `device_shards` is the number of devices the
    global batch is split over (the rows of each device's shard are dealt as DeiT's RASampler deals them)."""
    if is_text(config):
        from learngene_jax.data import text

        return text.TextLoader(text.text_source(config.data, split, train), batch_size, seed=int(config.seed),
                               train=train, process_index=process_index, process_count=process_count,
                               workers=int(config.data.workers))
    source = source if source is not None else make_source(config.data, split, train=train)
    return Loader(source, transform_config(config, train), batch_size, seed=int(config.seed), train=train,
                  process_index=process_index, process_count=process_count,
                  repeats=config.aug.repeated_aug if train else 1, workers=int(config.data.workers),
                  device_shards=device_shards)


__all__ = ["Loader", "Source", "is_text", "make_loader", "make_source", "transform_config"]
