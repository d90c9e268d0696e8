"""`input`: images/s of the host input pipeline against timm's `create_transform` + torch `DataLoader` with the same
settings and workers, the CPU cores busy, the bytes per image and the peak RSS of every process."""

from __future__ import annotations

import argparse
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from learngene_jax.config_lib import load_config, with_changes
from learngene_jax.errors import UserError, fail

INPUT_FRAMEWORKS = ("learngene_jax", "timm")
DEFAULT_CONFIG = "configs/tleg_s.py"
MB = 2 ** 20


def _folder(args: argparse.Namespace) -> Path:
    kind, _, path = args.data.partition(":")
    if kind != "folder" or not path:
        fail(UserError, f"--data must be folder:DIR (DIR/<split>/<class>/<images>), got {args.data!r}")
    return Path(path).expanduser()


def input_config(args: argparse.Namespace) -> Any:
    """The config whose train transform is timed, reading the image folder with `--workers` workers."""
    config = with_changes(load_config(args.config), **{
        "data.name": "folder", "data.path": str(_folder(args)), "data.workers": args.workers})
    if args.img is not None:
        config.data.image_size = args.img
    return config


def check(args: argparse.Namespace) -> None:
    """A UserError for negative counts or a missing image folder, before any process starts."""
    if args.workers < 0 or args.warmup < 0:
        fail(UserError, "--workers and --warmup must be >= 0")
    split = input_config(args).data.train_split
    if not (_folder(args) / split).is_dir():
        fail(UserError, f"no image folder {_folder(args) / split}: make one with "
                        f"python -m learngene_jax.data.make_folder --out {_folder(args)} --count 1200")


def describe_transform(config: Any) -> str:
    """The train transform of `config` in timm's words (both frameworks run it)."""
    aug, d = config.aug, config.data
    parts = [f"{'RandomResizedCrop' if aug.random_resized_crop else 'resize'} {d.interpolation} {d.image_size}"]
    parts += ["flip"] if aug.flip else []
    parts += [timm_auto_augment(aug)] if aug.randaugment else []
    parts += [f"random erasing {aug.random_erasing:g}"] if aug.random_erasing else []
    parts += [f"repeated_aug={aug.repeated_aug}"] if aug.repeated_aug > 1 else []
    return ", ".join(parts)


def timm_auto_augment(aug: Any) -> str:
    """timm's RandAugment string for the config's settings (ours follows `rand-m9-mstd0.5-inc1`)."""
    return f"rand-m{aug.randaugment_magnitude:g}-n{aug.randaugment_ops}-mstd{aug.randaugment_mstd:g}-inc1"


class ProcessSampler:
    """Peak RSS and CPU seconds of this process and all its descendants, sampled every `interval` s in a thread
    (worker processes are children, grandchildren, ...)."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self.me, self.interval = psutil.Process(), interval
        self.cpu: dict[int, float] = {}  # pid → latest user + system seconds
        self.peak_main = self.peak_worker = self.peak_total = 0
        self.descendants: set[int] = set()
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        """Read every process of the tree once."""
        import psutil

        with self._lock:
            total = 0
            for p in [self.me, *self.me.children(recursive=True)]:
                try:
                    with p.oneshot():
                        times, rss = p.cpu_times(), p.memory_info().rss
                except psutil.Error:  # ended between listing and reading
                    continue
                self.cpu[p.pid] = times.user + times.system
                total += rss
                if p.pid == self.me.pid:
                    self.peak_main = max(self.peak_main, rss)
                else:
                    self.descendants.add(p.pid)
                    self.peak_worker = max(self.peak_worker, rss)
            self.peak_total = max(self.peak_total, total)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> ProcessSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_seconds(self) -> tuple[float, float]:
        """(this process, its descendants) CPU seconds so far (a fresh sample)."""
        self.sample()
        with self._lock:
            main = self.cpu.get(self.me.pid, 0.0)
            return main, sum(v for pid, v in self.cpu.items() if pid != self.me.pid)


def time_batches(epochs: Callable[[int], Iterable[Any]], nbytes: Callable[[Any], int],
                 args: argparse.Namespace) -> dict[str, Any]:
    """Images/s over `--steps` batches after `--warmup` untimed ones, epoch after epoch as needed; CPU cores busy
    over the timed window (this process and every worker process), bytes per image and peak RSS."""

    def endless() -> Iterator[Any]:
        for epoch in itertools.count():
            count = 0
            for batch in epochs(epoch):
                count += 1
                yield batch
            if not count:  # an epoch without a full batch would loop forever
                fail(UserError, f"epoch {epoch} gave no batch of {args.batch}: use a smaller --batch or more images")

    batches = endless()
    with ProcessSampler() as sampler:
        for _ in range(args.warmup):
            next(batches)
        cpu_main, cpu_workers = sampler.cpu_seconds()
        start = time.perf_counter()
        for _ in range(args.steps):
            batch = next(batches)
        wall = time.perf_counter() - start
        end_main, end_workers = sampler.cpu_seconds()
        batches.close()  # stops the epoch's iterator (and its workers) now, not when collected
    return dict(images_per_s=round(args.steps * args.batch / wall, 2),
                bytes_per_image=nbytes(batch) / args.batch,
                cores_busy=round((end_main - cpu_main + end_workers - cpu_workers) / wall, 2),
                cores_busy_main=round((end_main - cpu_main) / wall, 2),
                cores_busy_workers=round((end_workers - cpu_workers) / wall, 2),
                peak_rss_mb=round(sampler.peak_main / MB, 1), peak_worker_rss_mb=round(sampler.peak_worker / MB, 1),
                peak_total_rss_mb=round(sampler.peak_total / MB, 1), child_processes=len(sampler.descendants),
                timed_s=round(wall, 3))


def _learngene_batches(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    from absl import flags

    from learngene_jax import data

    if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags
        flags.FLAGS.mark_as_parsed()
    loader = data.make_loader(config, config.data.train_split, train=True, batch_size=args.batch)
    # the trainer's stream: one iterator over all steps, its worker processes kept across epochs
    stream = loader.steps(1 + args.warmup + args.steps)
    try:
        return time_batches(lambda epoch: stream if epoch == 0 else (), lambda batch: sum(
            v.nbytes for v in batch.values()), args)
    finally:
        close = getattr(loader, "close", None)
        if close is not None:
            close()


class ImageFolder:
    """`root/<class>/<image>` → (transform(RGB PIL image), class index), classes in sorted order (torchvision's)."""

    def __init__(self, root: Path, transform: Callable[[Any], Any]):
        from learngene_jax.data.sources import IMAGE_SUFFIXES

        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.samples = [(f, c) for c, name in enumerate(classes) for f in sorted((root / name).iterdir())
                        if f.suffix.lower() in IMAGE_SUFFIXES]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as im:
            return self.transform(im.convert("RGB")), label


def posterize_at_least_one_bit(img: Any, bits_to_keep: int, **_: Any) -> Any:
    """timm's posterize op keeping at least one bit (module level: DataLoader workers may pickle it)."""
    from PIL import ImageOps

    return img if bits_to_keep >= 8 else ImageOps.posterize(img, max(1, bits_to_keep))


POSTERIZE_NOTE = ("timm's RandAugment posterize is patched in the timm process to keep >= 1 bit: timm 1.0.31 asks "
                  "for 0 bits at magnitude 10, which Pillow >= 13 rejects; ours clamps the same way")


def _timm_batches(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    import torch

    from learngene_jax.torch_ref import import_timm

    timm = import_timm()
    ops = timm.data.auto_augment.NAME_TO_OP
    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        ops[name] = posterize_at_least_one_bit  # before create_transform: its ops look the function up once
    aug, d = config.aug, config.data
    transform = timm.data.create_transform(
        d.image_size, is_training=True, scale=(aug.rrc_scale_min, 1.0), hflip=0.5 if aug.flip else 0.0,
        color_jitter=None, auto_augment=timm_auto_augment(aug) if aug.randaugment else None,
        interpolation=d.interpolation, mean=tuple(d.mean), std=tuple(d.std), re_prob=aug.random_erasing,
        re_mode="pixel", re_count=1)
    dataset = ImageFolder(_folder(args) / d.train_split, transform)
    # DeiT's repeated augmentation: each of ceil(N / repeats) shuffled examples `repeats` times (as ours)
    repeats = max(1, aug.repeated_aug)
    order = np.random.default_rng(0).permutation(len(dataset))[: -(-len(dataset) // repeats)]
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, sampler=np.repeat(order, repeats)[
        :len(dataset)].tolist(), num_workers=args.workers, persistent_workers=args.workers > 0, drop_last=True)
    row = time_batches(lambda epoch: loader, lambda batch: sum(t.element_size() * t.numel() for t in batch), args)
    return {**row, "note": POSTERIZE_NOTE}


def frameworks(args: argparse.Namespace) -> list[str]:
    """Ours, then timm's."""
    return list(INPUT_FRAMEWORKS)


def run_one(args: argparse.Namespace, framework: str) -> dict[str, Any]:
    """Time `framework`'s input pipeline in this process; its row."""
    config = input_config(args)
    measure = _learngene_batches if framework == "learngene_jax" else _timm_batches
    row = measure(args, config)
    return dict(framework=framework, workers=args.workers, **row, batch=args.batch, img=config.data.image_size,
                steps=args.steps, warmup=args.warmup, transform=describe_transform(config))
