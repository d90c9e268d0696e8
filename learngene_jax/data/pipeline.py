"""Host batches: a deterministic per-epoch order, this process's share of each global batch, per-example
transforms on a thread pool, and a prefetching background thread."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np

from learngene_jax.data.sources import Source

Batch = dict[str, np.ndarray]


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool, repeats: int = 1) -> np.ndarray:
    """Example indices for one epoch. With `repeats` > 1 (DeiT's repeated augmentation) each of
    ceil(N / repeats) shuffled examples appears `repeats` times in a row, truncated to N."""
    if not shuffle:
        return np.arange(num_examples)
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    if repeats <= 1:
        return rng.permutation(num_examples)
    distinct = rng.permutation(num_examples)[: -(-num_examples // repeats)]
    return np.repeat(distinct, repeats)[:num_examples]


class Loader:
    """Global batches of `global_batch_size` split over `process_count` processes; yields this process's part.

    Training (`train=True`): shuffled, last partial batch dropped. Eval: in order, the last batch padded with
    copies of example 0 and `mask` = 0 on the padding.
    """

    def __init__(self, source: Source, transform: Callable[[np.ndarray, int, int], np.ndarray],
                 global_batch_size: int, *, seed: int, train: bool, process_index: int = 0,
                 process_count: int = 1, repeats: int = 1, workers: int = 4, prefetch: int = 2):
        if global_batch_size % process_count:
            raise ValueError(f"batch size {global_batch_size} is not divisible by {process_count} processes")
        self.source, self.transform = source, transform
        self.global_batch_size, self.local_batch_size = global_batch_size, global_batch_size // process_count
        self.seed, self.train, self.repeats = seed, train, repeats
        self.process_index, self.workers, self.prefetch = process_index, workers, prefetch
        n = len(source)
        self.steps_per_epoch = n // global_batch_size if train else -(-n // global_batch_size)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{source.name} has {n} examples, fewer than one batch of {global_batch_size}")

    def _indices(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        order = epoch_order(len(self.source), self.seed, epoch, self.train, self.repeats)
        start = step * self.global_batch_size + self.process_index * self.local_batch_size
        idx = order[start:start + self.local_batch_size]
        mask = np.ones(self.local_batch_size, np.float32)
        if len(idx) < self.local_batch_size:
            mask[len(idx):] = 0.0
            idx = np.concatenate([idx, np.zeros(self.local_batch_size - len(idx), idx.dtype)])
        return idx, mask

    def _load(self, pool: concurrent.futures.Executor, epoch: int, step: int) -> Batch:
        idx, mask = self._indices(epoch, step)
        images, labels = self.source.get(idx)
        out = list(pool.map(lambda a: self.transform(a[1], epoch, int(a[0])), zip(idx, images, strict=True)))
        return {"images": np.stack(out), "labels": labels.astype(np.int32), "mask": mask}

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """This process's batches of `epoch` from `start_step` on (prefetched in a background thread)."""
        results: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce():
            with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
                try:
                    for step in range(start_step, self.steps_per_epoch):
                        if stop.is_set():
                            return
                        results.put(self._load(pool, epoch, step))
                except BaseException as e:  # noqa: BLE001 - re-raised in the consumer thread
                    results.put(e)
                    return
            results.put(None)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while (item := results.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    results.get_nowait()
                except queue.Empty:
                    thread.join(0.01)
