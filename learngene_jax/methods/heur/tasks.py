"""Class splits and task sequences of Heur/Auto Learngene, saved as a JSON manifest.

The classes of a labelled dataset are split into disjoint base / open-world / novel pools. The ancestor learns a
sequence of N-way "continual" tasks drawn from the base pool; each descendant learns one N-way "inheritable" task
drawn from the novel pool with K training images per class and is tested on all test images of its classes.
Everything is a function of the seed, so the same seed gives the same manifest.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from learngene_jax.data.sources import Source, SubsetSource
from learngene_jax.errors import ConfigError, DataError, fail

MANIFEST_FORMAT = 1
# CIFAR-100 protocol of Heur Learngene: 64 base, 16 open-world, 20 novel classes; 5-way tasks.
CIFAR100_SPLIT = (64, 16, 20)


@dataclasses.dataclass(frozen=True)
class ClassSplit:
    """Disjoint class pools (original class ids)."""

    base: tuple[int, ...]
    open_world: tuple[int, ...]
    novel: tuple[int, ...]


def split_classes(num_classes: int, sizes: Sequence[int], seed: int, shuffle: bool = True) -> ClassSplit:
    """Base / open-world / novel pools of `sizes` classes: consecutive slices of a seeded permutation of the class
    ids (or of 0..num_classes-1 in order when `shuffle` is False)."""
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) != 3 or min(sizes) < 0 or sum(sizes) > num_classes:
        fail(ConfigError, f"class split sizes {sizes} must be 3 non-negative counts (base, open-world, novel) "
                          f"summing to at most the {num_classes} classes of the dataset")
    order = np.random.default_rng([seed, 0xC1A55]).permutation(num_classes) if shuffle else np.arange(num_classes)
    a, b = sizes[0], sizes[0] + sizes[1]
    return ClassSplit(*(tuple(sorted(int(c) for c in order[i:j])) for i, j in ((0, a), (a, b), (b, b + sizes[2]))))


def sample_tasks(pool: Sequence[int], ways: int, count: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """`count` distinct N-way class sets from `pool`, each in a random order (its label order)."""
    pool = [int(c) for c in pool]
    if not 1 <= ways <= len(pool):
        fail(ConfigError, f"{ways}-way tasks need a pool of at least {ways} classes; it has {len(pool)}")
    if count > math.comb(len(pool), ways):
        fail(ConfigError, f"{count} distinct {ways}-way tasks do not exist in a pool of {len(pool)} classes "
                          f"(at most {math.comb(len(pool), ways)})")
    tasks: list[tuple[int, ...]] = []
    seen: set[frozenset[int]] = set()
    while len(tasks) < count:
        classes = tuple(int(c) for c in rng.choice(pool, ways, replace=False))
        if frozenset(classes) not in seen:
            seen.add(frozenset(classes))
            tasks.append(classes)
    return tasks


KINDS = {"continual": 1, "inheritable": 2}  # stream ids: each kind's draws are independent of the other's


def _task_seed(seed: int, kind: str, index: int) -> int:
    """The shot-sampling seed of one task (its data.subset_seed)."""
    return int(np.random.SeedSequence([seed, KINDS[kind], index]).generate_state(1)[0] % 2**31)


def build_manifest(num_classes: int, *, sizes: Sequence[int], continual_ways: int, continual_tasks: int,
                   continual_shots: int, inheritable_ways: int, inheritable_tasks: int, shots: int, seed: int,
                   shuffle: bool = True, dataset: str = "") -> dict[str, Any]:
    """The class split and both task sequences as a JSON-ready dict (examples not yet resolved)."""
    split = split_classes(num_classes, sizes, seed, shuffle)

    def tasks(kind: str, pool: tuple[int, ...], ways: int, count: int, task_shots: int) -> list[dict[str, Any]]:
        sets = sample_tasks(pool, ways, count, np.random.default_rng([seed, KINDS[kind], 0x7A5C5]))
        return [{"name": f"{kind}_{i:02d}", "classes": list(c), "shots": task_shots,
                 "subset_seed": _task_seed(seed, kind, i)} for i, c in enumerate(sets)]

    manifest = {"format": MANIFEST_FORMAT, "dataset": dataset, "num_classes": num_classes, "seed": seed,
                "shuffle": shuffle, "split": dataclasses.asdict(split),
                "continual": tasks("continual", split.base, continual_ways, continual_tasks, continual_shots),
                "inheritable": tasks("inheritable", split.novel, inheritable_ways, inheritable_tasks, shots)}
    return json.loads(json.dumps(manifest))  # plain JSON types, so a saved copy compares equal


class _Labels(Source):
    """The labels of a source, read once (SubsetSource picks examples by label alone)."""

    def __init__(self, source: Source):
        self.name, self.num_classes, self._labels = source.name, source.num_classes, source.labels()

    def __len__(self) -> int:
        return len(self._labels)

    def labels(self) -> np.ndarray:
        return self._labels


def resolve_examples(manifest: dict[str, Any], train: Source, test: Source) -> dict[str, Any]:
    """The manifest with each task's examples: the training-set positions it trains on (exactly what the trainer's
    SubsetSource picks for its classes, shots and subset_seed) and its test-set size (all test images)."""
    out = json.loads(json.dumps(manifest))  # a copy
    train, test = _Labels(train), _Labels(test)
    for task in out["continual"] + out["inheritable"]:
        picked = SubsetSource(train, task["classes"], task["shots"], task["subset_seed"])
        task["train_indices"] = [int(i) for i in picked.indices]
        task["test_count"] = len(SubsetSource(test, task["classes"]))
        if not task["test_count"]:
            fail(DataError, f"task {task['name']} has no test images for classes {task['classes']}")
    return out


def save_manifest(path: str | Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest; an existing different one is an error (a workdir keeps its tasks)."""
    path = Path(path)
    text = json.dumps(manifest, indent=1)
    if path.exists() and json.loads(path.read_text()) != manifest:
        fail(ConfigError, f"{path} holds other tasks (the split or task settings changed since this workdir was "
                          f"started); use a new --workdir")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read a manifest written by `save_manifest`."""
    path = Path(path)
    if not path.is_file():
        fail(DataError, f"no task manifest at {path}")
    manifest = json.loads(path.read_text())
    if manifest.get("format", 0) > MANIFEST_FORMAT:
        fail(DataError, f"task manifest {path} has format {manifest.get('format')}, newer than this learngene_jax")
    return manifest
