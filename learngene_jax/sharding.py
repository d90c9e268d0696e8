"""The device mesh and every PartitionSpec rule: data parallel (replicated params) or FSDP (params and
optimizer state sharded over the 'fsdp' axis), batches split over all data axes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from learngene_jax.errors import ConfigError, fail

AXES = ("data", "fsdp")
BATCH = P(AXES)  # the batch dimension is split over every data-like axis
STRATEGIES = ("dp", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data', 'fsdp') mesh over all devices; -1 means "all the rest". Axis types are Auto, so XLA
    inserts the all-gathers that FSDP-sharded params need."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if data == -1 and fsdp == -1:
        fail(ConfigError, "at most one of mesh.data and mesh.fsdp can be -1")
    if data == -1:
        data = n // max(fsdp, 1)
    if fsdp == -1:
        fsdp = n // max(data, 1)
    if data * fsdp != n:
        fail(ConfigError, f"mesh data={data} x fsdp={fsdp} does not cover the {n} devices")
    return jax.make_mesh((data, fsdp), AXES, axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over all data axes, the rest replicated."""
    return NamedSharding(mesh, BATCH)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def fsdp_spec(shape: Sequence[int], size: int, min_size: int = 2**12) -> P:
    """Shard the largest axis that `size` divides (big_vision's fsdp rule); small arrays stay replicated."""
    if size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % size == 0:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return P(*spec)
    return P()


def tree_shardings(tree: Any, mesh: Mesh, strategy: str = "dp",
                   rules: Sequence[tuple[str, Sequence[str | None]]] = ()) -> Any:
    """NamedShardings for a pytree of arrays/ShapeDtypeStructs: `rules` (regex on 'a/b/c' paths → spec)
    first, then the strategy's default."""
    if strategy not in STRATEGIES:
        fail(ConfigError, f"sharding strategy must be one of {STRATEGIES}, got {strategy!r}")
    compiled = [(re.compile(pattern), P(*spec)) for pattern, spec in rules]
    size = mesh.shape["fsdp"]

    def one(path, leaf):
        name = _path_str(path)
        for rx, spec in compiled:
            if rx.search(name):
                return NamedSharding(mesh, spec)
        if strategy == "fsdp":
            return NamedSharding(mesh, fsdp_spec(np.shape(leaf), size))
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(one, tree)


def global_batch(mesh: Mesh, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Assemble this process's part of a batch into global arrays split over the data axes."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
