"""from_hf reads a checkpoint a tensor block at a time and, given a mesh, places each param on its sharding as it is
read (8 fake CPU devices, tests/conftest.py): the reads are per tensor and, for sharded params, per shard; the
shardings are the trainer's (`sharding.tree_shardings`); the values equal the plain read; host memory holds about
one param at a time, not the checkpoint."""

import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import randomize

from learngene_jax import sharding
from learngene_jax.convert import hf
from learngene_jax.convert.table import flatten
from learngene_jax.models.llama import Llama, abstract_lm_params

MODEL = Llama(vocab_size=128, width=128, depth=4, num_heads=4, num_kv_heads=2, mlp_dim=256, max_positions=32,
              qkv_bias=True, model_type="qwen2")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A sharded safetensors checkpoint of MODEL (written by to_hf) and its params."""
    directory = tmp_path_factory.mktemp("hf")
    params = randomize(MODEL.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"], seed=2)
    hf.to_hf(MODEL, {"params": params}, directory, max_shard_size="400KB")
    assert (directory / "model.safetensors.index.json").is_file()
    return directory, params


def test_plain_read_is_exact(checkpoint):
    directory, params = checkpoint
    model, variables = hf.from_hf(directory)
    assert model == MODEL
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables["params"], params)


@pytest.mark.parametrize("data, fsdp, strategy", [(1, 8, "fsdp"), (2, 4, "fsdp"), (8, 1, "dp")])
def test_each_param_lands_on_its_sharding_read_block_by_block(checkpoint, monkeypatch, data, fsdp, strategy):
    assert len(jax.devices()) == 8
    directory, params = checkpoint
    reads = []
    read = hf.CheckpointTensors.read

    def spy(self, key, index=()):
        block = read(self, key, index)
        reads.append((key, tuple((s.start, s.stop) for s in index), block.shape, self.shapes[key]))
        return block

    monkeypatch.setattr(hf.CheckpointTensors, "read", spy)
    monkeypatch.setattr(hf, "read_weights", lambda *a: pytest.fail("the whole checkpoint was read at once"))
    mesh = sharding.make_mesh(data=data, fsdp=fsdp)
    _, variables = hf.from_hf(directory, mesh, strategy)
    want = flatten(sharding.tree_shardings(abstract_lm_params(MODEL), mesh, strategy))
    got = flatten(variables["params"])
    assert set(got) == set(want)
    for path, array in got.items():
        assert array.sharding == want[path], path
        np.testing.assert_array_equal(np.asarray(array), flatten(params)[path])
    assert len(reads) == len(set(reads)), "a block was read twice (replicas share one read)"
    sharded = [(key, shape, full) for key, _, shape, full in reads if shape != full]
    if strategy == "fsdp":
        # every big tensor is read as fsdp blocks, never whole: 1/fsdp of it per read
        assert sharded and all(np.prod(shape) * fsdp == np.prod(full) for _, shape, full in sharded)
        assert {key for key, *_ in sharded} >= {"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"}
    else:
        assert not sharded and len(reads) == len({key for key, *_ in reads})  # each tensor once, whole


def test_host_memory_holds_about_one_param_not_the_checkpoint(checkpoint):
    directory, params = checkpoint
    total = sum(np.asarray(a).nbytes for a in jax.tree_util.tree_leaves(params))
    largest = max(np.asarray(a).nbytes for a in jax.tree_util.tree_leaves(params))
    mesh = sharding.make_mesh(data=1, fsdp=8)
    hf.from_hf(directory, mesh, "fsdp")  # compile and cache whatever jax needs first
    tracemalloc.start()
    try:
        _, variables = hf.from_hf(directory, mesh, "fsdp")
        placed, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # CPU devices may keep a placed block as their buffer (zero copy): what is still held at the end is the params
    # on the devices; the reads in flight above it stay under two of the largest param
    assert peak - placed < 2 * largest < total / 2, (peak, placed, largest, total)
    tracemalloc.start()
    try:
        hf.read_weights(directory)
        _, whole = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert whole >= total  # what from_hf no longer does
