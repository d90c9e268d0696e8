"""Host batches through grain: a deterministic order per epoch, this process's share of every global batch,
decoding and per-example transforms in worker processes, uint8 images out.

One grain element is one batch: element k of a training iterator is global step k (epoch k // steps_per_epoch),
so the stream is a pure function of (seed, step) and grain's iterator state — saved with each checkpoint —
resumes it mid-epoch. Augmentation randomness is keyed by (seed, epoch, position in the epoch), so results do not
depend on the number of workers, processes or devices, and DeiT's repeated copies of an example are augmented
independently. Copies are spread over the data-parallel devices as DeiT's RASampler spreads them over GPUs.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from learngene_jax.data.sources import Source
from learngene_jax.data.transforms import TransformConfig, augment, eval_image
from learngene_jax.errors import ConfigError, fail

Batch = dict[str, np.ndarray]
# Bounded buffers: a few batches per worker in flight, never an unbounded queue of decoded images.
WORKER_BUFFER = 2
READ_THREADS = 2


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


def batch_positions(step: int, global_batch: int, device_shards: int, interleave: bool) -> np.ndarray:
    """Positions in the epoch order of the rows of global batch `step`, rows in device order. Interleaved
    (training), device d takes every `device_shards`-th position from d, as DeiT's RASampler deals
    `indices[rank::world_size]`, so the adjacent copies of a repeated example land on different devices."""
    positions = step * global_batch + np.arange(global_batch)
    if interleave and device_shards > 1:
        positions = positions.reshape(-1, device_shards).T.reshape(-1)
    return positions


@dataclasses.dataclass
class BatchMaker:
    """Global step → this process's batch (a picklable function, run in grain's worker processes).

    Output: `images` uint8 (b, S, S, C), `labels` int32 (b,), `mask` float32 (b,) (0 on eval padding), `step`
    int64 () (the global step, for the consumer to check its position), and for training with random erasing
    `erase` int32 (b, 4) boxes for `data.device.erase`.
    """

    source: Source
    transform: TransformConfig
    seed: int
    train: bool
    global_batch: int
    local_batch: int
    process_index: int
    device_shards: int
    steps_per_epoch: int
    repeats: int
    _orders: dict[int, np.ndarray] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_orders": {}}  # workers compute their own orders

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's order, computed once per epoch and process (the last two are kept)."""
        orders = self._orders
        if epoch not in orders:
            if len(orders) >= 2:
                orders.pop(min(orders))
            orders[epoch] = epoch_order(len(self.source), self.seed, epoch, self.train, self.repeats)
        return orders[epoch]

    def __call__(self, step: int) -> Batch:
        epoch, within = divmod(int(step), self.steps_per_epoch)
        positions = batch_positions(within, self.global_batch, self.device_shards, self.train)
        positions = positions[self.process_index * self.local_batch:(self.process_index + 1) * self.local_batch]
        order = self.order(epoch)
        valid = positions < len(order)
        indices = order[np.where(valid, positions, 0)]
        images, labels = self.source.get(indices)
        out: Batch = {"labels": np.asarray(labels, np.int32), "mask": valid.astype(np.float32),
                      "step": np.asarray(step, np.int64)}
        if self.train:
            results = [augment(image, np.random.default_rng([self.seed, epoch, int(p)]), self.transform)
                       for image, p in zip(images, positions, strict=True)]
            out["images"] = np.stack([image for image, _ in results])
            if self.transform.random_erasing > 0:
                out["erase"] = np.asarray([box for _, box in results], np.int32)
        else:
            out["images"] = np.stack([eval_image(image, self.transform) for image in images])
        return out


def _die_with_parent(worker_index: int, worker_count: int) -> None:
    """In a worker process: exit when the training process is gone, even after a SIGKILL, instead of living on
    as an orphan that holds a core and the parent's output pipes (a thread watches the parent's pid; the
    kernel's PR_SET_PDEATHSIG would fire when the *thread* that started the worker ends, mid-batch)."""
    del worker_index, worker_count
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="learngene-parent-watch", daemon=True).start()


def _parse_absl_flags() -> None:
    """grain's worker start-up reads absl flags; outside `absl.app.run` (tests, notebooks) mark them parsed."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class Loader:
    """Global batches of `global_batch_size` split over `process_count` processes; yields this process's part.

    Training (`train=True`): shuffled, last partial batch dropped, rows interleaved over `device_shards`.
    Eval: in order, the last batch padded with copies of example 0 and `mask` = 0 on the padding.
    `workers` > 0 decodes and transforms in that many grain worker processes; 0 runs in this process.
    """

    def __init__(self, source: Source, transform: TransformConfig, global_batch_size: int, *, seed: int,
                 train: bool, process_index: int = 0, process_count: int = 1, repeats: int = 1, workers: int = 0,
                 device_shards: int = 1):
        if global_batch_size % process_count:
            fail(ConfigError, f"batch size {global_batch_size} is not divisible by {process_count} processes")
        if workers < 0:
            fail(ConfigError, f"data.workers must be >= 0 (0: load in this process), got {workers}")
        if train and global_batch_size % device_shards:
            fail(ConfigError, f"batch size {global_batch_size} is not divisible by the {device_shards} devices "
                              f"that split it")
        self.source, self.transform, self.train, self.workers = source, transform, train, workers
        self.global_batch_size, self.local_batch_size = global_batch_size, global_batch_size // process_count
        n = len(source)
        self.steps_per_epoch = n // global_batch_size if train else -(-n // global_batch_size)
        if self.steps_per_epoch == 0:
            fail(ConfigError, f"{source.name} has {n} examples, fewer than one batch of {global_batch_size}")
        self.make_batch = BatchMaker(source, transform, seed, train, global_batch_size, self.local_batch_size,
                                     process_index, device_shards, self.steps_per_epoch, repeats)
        self._open: list[Any] = []

    @property
    def mean(self) -> tuple[float, ...]:
        return self.transform.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.transform.std

    def iterator(self, start: int, stop: int):
        """A grain iterator over global steps [start, stop) (checkpointable: `get_state` / `set_state`)."""
        import grain

        dataset = grain.MapDataset.range(start, stop).map(self.make_batch)
        dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=READ_THREADS,
                                                            prefetch_buffer_size=READ_THREADS))
        if self.workers:
            _parse_absl_flags()
            # Batches come back through pipes, not shared memory: grain 0.2.18 leaves shared-memory blocks
            # behind when an iterator stops (resource_tracker warnings at exit); a pipe carries a 224² uint8
            # batch of 64 (9.6 MB) in a few milliseconds.
            dataset = grain.experimental.WithOptionsIterDataset(
                dataset, grain.experimental.DatasetOptions(min_shm_size=1 << 62))
            dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers,
                                                                       per_worker_buffer_size=WORKER_BUFFER),
                                          worker_init_fn=_die_with_parent)
        it = iter(dataset)
        self._open.append(it)
        return it

    def steps(self, stop: int, state: dict[str, Any] | None = None, start: int = 0):
        """The training iterator over global steps [0, stop), positioned by a saved grain `state`, or at `start`
        when there is none (a checkpoint written without one)."""
        it = self.iterator(0 if state is not None else start, stop)
        if state is not None:
            it.set_state(state)
        return it

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """This process's batches of `epoch` from `start_step` on."""
        base = epoch * self.steps_per_epoch
        it = self.iterator(base + start_step, base + self.steps_per_epoch)
        try:
            yield from it
        finally:
            self.release(it)

    def release(self, it) -> None:
        """Stop an iterator's worker processes and free its shared memory."""
        if it in self._open:
            self._open.remove(it)
        close = getattr(it, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        """Release every open iterator."""
        for it in list(self._open):
            self.release(it)

