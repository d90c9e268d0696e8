"""Random-access image-classification sources: any prepared tfds dataset, the bundled digits, users'
`.npz` arrays and image folders. Each gives uint8 (H, W, C) images and integer labels by index.

Sources are picklable and cheap to send: the input pipeline's worker processes (`data/pipeline.py`) receive
them, open their files there and decode images there (tfds records are read as raw bytes and decoded with PIL
in the worker, not in the training process)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from learngene_jax import logs
from learngene_jax.data.images import IMAGE_SUFFIXES, is_image_file, read_image, to_rgb
from learngene_jax.errors import DataError, fail


class Source:
    """A split of a dataset: `len(source)`, `source.num_classes`, `source.get(indices)`."""

    name: str
    num_classes: int

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, indices: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
        """Images (uint8, H×W×C) and labels of the examples at `indices`."""
        raise NotImplementedError

    def labels(self) -> np.ndarray:
        """Every example's label (reads the whole split once where labels are not held apart)."""
        chunk = 1024
        return np.concatenate([self.get(range(i, min(i + chunk, len(self))))[1] for i in range(0, len(self), chunk)])


def _as_hwc(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return image[..., None] if image.ndim == 2 else image


def default_tfds_dir() -> Path:
    """$TFDS_DATA_DIR, else ~/tensorflow_datasets (tfds' own default)."""
    return Path(os.environ.get("TFDS_DATA_DIR", Path.home() / "tensorflow_datasets")).expanduser()


def prepared_tfds_builder(name: str, data_dir: str | Path | None, key: str) -> tuple[Any, Path]:
    """(builder, data dir) of the tfds dataset `name` prepared in array_record format in `data_dir` (default: the
    tfds default); nothing is downloaded. DataError naming `key` (the config key that names the dataset) otherwise."""
    import tensorflow_datasets as tfds

    data_dir = Path(data_dir).expanduser() if data_dir else default_tfds_dir()
    build_hint = f"`tfds build {name} --data_dir {data_dir} --file_format=array_record`"
    try:
        builder = tfds.builder(name, data_dir=str(data_dir))
    except Exception as e:  # noqa: BLE001 - tfds raises many types for unknown names
        fail(DataError, f"unknown tfds dataset {name!r} ({type(e).__name__}); check {key}")
    if not builder.is_prepared():
        fail(DataError, f"dataset {name!r} is not prepared in {data_dir}: prepare it with {build_hint} "
                        f"(or point --config.data.data_dir at the directory that has it)")
    if "array_record" not in str(builder.info.file_format).lower():
        fail(DataError, f"dataset {name!r} in {data_dir} is in {builder.info.file_format} format; random access "
                        f"needs array_record: rebuild it with {build_hint}")
    return builder, data_dir


def open_tfds_split(name: str, split: str, data_dir: str | Path, splits: Sequence[str], key: str,
                    decoders: Any = None) -> Any:
    """The random-access tfds source of `split` of a prepared dataset: a split name or tfds slicing ('train[:80%]',
    'train[80%:]', 'train[:1000]+test'); a DataError naming the dataset's `splits` and `key` (the setting) otherwise."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(name, split=split, data_dir=str(data_dir), download=False, decoders=decoders)
    except Exception as e:  # noqa: BLE001 - tfds raises many types for a bad split
        first = splits[0] if splits else "train"
        fail(DataError, f"cannot open split {split!r} of {name!r} (splits: {list(splits)}; hold out part of one "
                        f"with slices such as '{first}[:80%]' and '{first}[80%:]'): {type(e).__name__}; set {key}")


class TfdsSource(Source):
    """A split of a tfds dataset already prepared (array_record format) in `data_dir`; nothing is downloaded."""

    def __init__(self, name: str, split: str, data_dir: str | Path | None = None, image_key: str = "image",
                 label_key: str = "label"):
        import tensorflow_datasets as tfds

        builder, data_dir = prepared_tfds_builder(name, data_dir, "data.name")
        features = builder.info.features
        if image_key not in features or label_key not in features:
            fail(DataError, f"dataset {name!r} has features {sorted(features)}; set data.image_key/data.label_key")
        self.name, self.split, self._data_dir = name, split, str(data_dir)
        self.num_classes = int(features[label_key].num_classes)
        self._image_key, self._label_key = image_key, label_key
        # Images stay encoded (raw bytes) until `get` decodes them, in whichever process calls it.
        self._encoded = isinstance(features[image_key], tfds.features.Image)
        self._data, self._splits = None, sorted(builder.info.splits)
        self._length = len(self._open())

    def _open(self):
        if self._data is None:
            import tensorflow_datasets as tfds

            decoders = {self._image_key: tfds.decode.SkipDecoding()} if self._encoded else None
            self._data = open_tfds_split(self.name, self.split, self._data_dir, self._splits,
                                         "data.train_split / data.eval_split", decoders)
        return self._data

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}  # each process opens its own readers

    def __len__(self) -> int:
        return self._length

    def get(self, indices: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
        indices = [int(i) for i in indices]
        records = self._open().__getitems__(indices)
        images = [_decode(r[self._image_key], f"example {i} of {self.name}:{self.split}") if self._encoded
                  else _as_hwc(r[self._image_key]) for i, r in zip(indices, records, strict=True)]
        return images, np.asarray([r[self._label_key] for r in records], np.int32)


def _decode(encoded: bytes, what: str) -> np.ndarray:
    """PNG/JPEG bytes → uint8 (H, W, C) in the image's own channels (1 for grayscale, 3 for colour; other modes
    through `images.to_rgb`)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(encoded)) as im:
            return _as_hwc(np.asarray(im)) if im.mode in ("L", "RGB") else to_rgb(im, what)
    except (OSError, ValueError, SyntaxError) as e:
        fail(DataError, f"cannot decode {what} ({type(e).__name__}: {str(e)[:120]}); the prepared dataset is "
                        f"damaged: rebuild it with `tfds build`")


def as_uint8_nhwc(images: np.ndarray, name: str) -> np.ndarray:
    """User images as uint8 (N, H, W, C), converting what is unambiguous and saying so on stderr:
    (N, H, W) → one channel; channels-first (N, C, H, W) with C ∈ {1, 3, 4} and a last axis that is not → NHWC;
    floats within [0, 1] → ×255 (rounded); floats or integers within [0, 255] → uint8. Raises DataError for
    other shapes, negative values (already normalised?), values above 255, NaNs and non-numeric arrays."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        fail(DataError, f"{name}: images must be (N, H, W[, C]), got shape {images.shape}")
    if images.shape[1] in (1, 3, 4) and images.shape[-1] not in (1, 3, 4):
        logs.note(f"{name}: images {images.shape} look channels-first (N, C, H, W); transposed to (N, H, W, C)")
        images = images.transpose(0, 2, 3, 1)
    if images.shape[-1] not in (1, 3, 4):
        fail(DataError, f"{name}: images {images.shape} have {images.shape[-1]} channels; expected 1, 3 or 4 "
                        f"(grayscale, RGB, RGBA) in the last axis (or the second, channels-first)")
    if images.dtype == np.uint8:
        return images
    if not (np.issubdtype(images.dtype, np.floating) or np.issubdtype(images.dtype, np.integer)
            or images.dtype == np.bool_):
        fail(DataError, f"{name}: images have dtype {images.dtype}; save pixels as uint8 or floats")
    if not images.size:
        return images.astype(np.uint8)
    low, high = float(np.min(images)), float(np.max(images))
    if not (np.isfinite(low) and np.isfinite(high)):
        fail(DataError, f"{name}: images contain NaN or infinite values")
    if low < 0:
        fail(DataError, f"{name}: images go down to {low:.3g}: they look normalised already; save raw pixels "
                        f"(uint8 0..255 or floats in 0..1), the pipeline normalises them")
    if high > 255:
        fail(DataError, f"{name}: images go up to {high:.3g}; save 8-bit pixels (0..255, or floats in 0..1)")
    if np.issubdtype(images.dtype, np.floating) and high <= 1.0:
        logs.note(f"{name}: float images within [0, 1]: scaled by 255 to 8-bit pixels")
        images = images * 255.0
    return np.round(images).astype(np.uint8)


def as_int_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """Labels as int32 (N,); floats are accepted only when they are whole numbers. Raises DataError otherwise
    (and for labels of another shape)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        fail(DataError, f"{name}: labels must be one integer class id per image (N,), got shape {labels.shape} "
                        f"(one-hot labels? save labels.argmax(1))")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            fail(DataError, f"{name}: labels are floats that are not whole numbers (e.g. "
                            f"{labels[np.flatnonzero(labels != np.round(labels))[:1]].tolist()}); save class ids")
    elif not np.issubdtype(labels.dtype, np.integer):
        fail(DataError, f"{name}: labels have dtype {labels.dtype}; save integer class ids")
    return labels.astype(np.int32)


class ArraySource(Source):
    """Images and labels held in memory (users' `.npz`: keys `{split}_images`, `{split}_labels`)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int, name: str = "arrays"):
        images = as_uint8_nhwc(images, name)
        labels = as_int_labels(labels, name)
        if len(images) != len(labels):
            fail(DataError, f"{name}: {len(images)} images but {len(labels)} labels")
        self.name, self.num_classes = name, int(num_classes)
        self._images, self._labels = images, labels
        if len(self._labels) and (self._labels.min() < 0 or self._labels.max() >= self.num_classes):
            fail(DataError, f"{name}: labels must be in 0..{self.num_classes - 1}")

    def __len__(self) -> int:
        return len(self._labels)

    def get(self, indices: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
        idx = np.asarray(indices, np.int64)
        return list(self._images[idx]), self._labels[idx]

    def labels(self) -> np.ndarray:
        return self._labels


def npz_source(path: str | Path, split: str, num_classes: int | None = None) -> ArraySource:
    """A split of a `.npz` with `{split}_images` (N, H, W[, C], or channels-first) and `{split}_labels` (N,);
    the class count is 1 + the largest label over every `*_labels` array unless given. Raises DataError for a
    missing, damaged or foreign file, missing arrays, and labels that skip class ids."""
    path = Path(path).expanduser()
    example = "np.savez(path, train_images=..., train_labels=..., test_images=..., test_labels=...)"
    if not path.is_file():
        fail(DataError, f"no .npz at {path}: save one with {example}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            fail(DataError, f"{path} holds one array, not an .npz archive of named arrays; save it with {example}")
        with archive:
            keys = set(archive.files)
            if f"{split}_images" not in keys or f"{split}_labels" not in keys:
                fail(DataError, f"{path} has no {split}_images/{split}_labels arrays (it has {sorted(keys)})")
            data = {k: archive[k] for k in keys if k.endswith("_labels") or k == f"{split}_images"}
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile/pickle/OS errors of a damaged or foreign file
        fail(DataError, f"cannot read {path} as .npz ({type(e).__name__}: {str(e)[:100]}); save it again with "
                        f"{example}")
    if num_classes is None:
        used = sorted({int(v) for k, a in data.items() if k.endswith("_labels")
                       for v in np.unique(as_int_labels(a, f"{path.name}:{k}"))})
        num_classes = 1 + used[-1] if used else 0
        unused = sorted(set(range(num_classes)) - set(used))
        if unused:
            fail(DataError, f"{path}: the labels of all splits use {len(used)} class ids but reach "
                            f"{num_classes - 1}: ids {unused[:8]}{' …' if len(unused) > 8 else ''} never occur; "
                            f"relabel to 0..{len(used) - 1} (a stray label would add empty classes)")
    return ArraySource(data[f"{split}_images"], data[f"{split}_labels"], num_classes, name=f"{path.name}:{split}")


class FolderSource(Source):
    """`root/split/<class name>/<image files>` (class ids in sorted order of the names, as torchvision)."""

    def __init__(self, root: str | Path, split: str):
        root = Path(root).expanduser()
        folder = root / split
        if not folder.is_dir():
            fail(DataError, f"no image folder {folder}: expected {root}/{split}/<class>/<images>")
        # Class ids come from every split's class folders (sorted names, as torchvision), so a split that lacks a
        # class (a small validation split) keeps the same ids as the others.
        splits = [d for d in sorted(root.iterdir()) if d == folder or (d.is_dir() and any(
            c.is_dir() and any(is_image_file(f) for f in c.iterdir()) for c in d.iterdir()))]
        class_dirs = {c.name for d in splits for c in d.iterdir() if c.is_dir()}
        empty = sorted(n for n in class_dirs if not any(
            is_image_file(f) for d in splits if (d / n).is_dir() for f in (d / n).iterdir()))
        if empty:
            fail(DataError, f"class folders without images under {root}: {empty[:5]}; add images or remove them "
                            f"(an empty class would still get an id and a logit)")
        classes = sorted(class_dirs)
        self._files = [(f, c) for c, name in enumerate(classes) if (folder / name).is_dir()
                       for f in sorted((folder / name).iterdir()) if is_image_file(f)]
        if not self._files:
            fail(DataError, f"no images under {folder}/<class>/ (looked for {', '.join(IMAGE_SUFFIXES)})")
        self.name, self.num_classes, self.classes = f"{folder}", len(classes), classes

    def __len__(self) -> int:
        return len(self._files)

    def labels(self) -> np.ndarray:
        return np.asarray([label for _, label in self._files], np.int32)

    def get(self, indices: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
        files = [self._files[int(i)] for i in indices]
        return [read_image(path) for path, _ in files], np.asarray([label for _, label in files], np.int32)


class SubsetSource(Source):
    """The examples of `classes` (relabelled 0..len(classes)-1 in the given order), optionally only `shots`
    per class drawn with `seed` — a task of a class split (Heur/Auto Learngene)."""

    def __init__(self, source: Source, classes: Sequence[int], shots: int = 0, seed: int = 0):
        classes = [int(c) for c in classes]
        bad = [c for c in classes if not 0 <= c < source.num_classes]
        if bad or len(set(classes)) != len(classes):
            fail(DataError, f"task classes {classes} must be distinct ids in 0..{source.num_classes - 1}")
        labels = source.labels()
        rng = np.random.default_rng([seed, 0x7A5C])
        picked = []
        for c in classes:
            members = np.flatnonzero(labels == c)
            if shots:
                if len(members) < shots:
                    fail(DataError, f"class {c} of {source.name} has {len(members)} examples, fewer than {shots} shots")
                members = np.sort(rng.choice(members, shots, replace=False))
            picked.append(members)
        self._base, self._index = source, np.concatenate(picked) if picked else np.zeros(0, np.int64)
        self._relabel = {c: i for i, c in enumerate(classes)}
        self.classes, self.num_classes = classes, len(classes)
        self.name = f"{source.name}[{len(classes)} classes" + (f", {shots} shots]" if shots else "]")

    @property
    def indices(self) -> np.ndarray:
        """Positions of the picked examples in the underlying source."""
        return self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, indices: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
        images, labels = self._base.get(self._index[np.asarray(indices, np.int64)])
        return images, np.asarray([self._relabel[int(label)] for label in labels], np.int32)

    def labels(self) -> np.ndarray:
        base = self._base.labels()[self._index]
        return np.asarray([self._relabel[int(label)] for label in base], np.int32)
