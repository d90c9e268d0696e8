"""Data parallel and FSDP on 8 fake CPU devices: same numbers as one device, real sharding, restore across meshes,
and two processes over loopback with jax.distributed."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from conftest import REPO
from helpers import tiny_train_config
from ml_collections import ConfigDict

from learngene_jax import checkpointing, sharding
from learngene_jax.models import create_model
from learngene_jax.models.io import load_model
from learngene_jax.optim import build_optimizer
from learngene_jax.train import train

STEPS = 6


def run(tmp_path, name, strategy="dp", **mesh):
    """A few logged steps of the tiny ViT; returns (summary, per-step losses, final param leaves)."""
    cfg = tiny_train_config(**{"max_steps": STEPS, "log_every_steps": 1, "checkpoint.every_steps": 3,
                               "sharding.strategy": strategy, **{f"mesh.{k}": v for k, v in mesh.items()}})
    out = train(cfg, tmp_path / name)
    losses = [json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
              if '"train"' in line]
    return out, losses, jax.tree.leaves(load_model(out["model_dir"])[1])


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return run(tmp_path_factory.mktemp("single"), "one", num_devices=1)


@pytest.mark.parametrize("mesh,strategy", [(dict(data=8, fsdp=1), "dp"), (dict(data=2, fsdp=4), "fsdp"),
                                           (dict(data=1, fsdp=8), "fsdp")])
def test_dp_and_fsdp_match_one_device(tmp_path, single, mesh, strategy):
    _, want_losses, want_params = single
    _, losses, params = run(tmp_path, "many", strategy, **mesh)
    assert len(losses) == STEPS
    np.testing.assert_allclose(losses, want_losses, rtol=2e-5)
    # Adam divides each gradient by its own RMS, so summation-order noise in a near-zero gradient can move that
    # element by a sizeable fraction of one step (lr 1e-3); 1% of lr over 6 steps bounds it, and any real
    # sharding bug (a wrong shard, a missed all-reduce) moves whole tensors by ~lr.
    for a, b in zip(params, want_params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_fsdp_really_shards_params_and_optimizer_state():
    mesh = sharding.make_mesh(data=2, fsdp=4)
    tree = {"big": jax.ShapeDtypeStruct((128, 96), np.float32), "small": jax.ShapeDtypeStruct((7,), np.float32),
            "odd": jax.ShapeDtypeStruct((33, 129), np.float32)}
    shardings = sharding.tree_shardings(tree, mesh, "fsdp")
    assert shardings["big"].spec == jax.sharding.PartitionSpec("fsdp", None)
    assert shardings["small"].spec == jax.sharding.PartitionSpec()
    assert shardings["odd"].spec == jax.sharding.PartitionSpec()  # no axis divisible by 4
    x = jax.device_put(np.ones((128, 96), np.float32), shardings["big"])
    assert {s.data.shape for s in x.addressable_shards} == {(32, 96)}
    dp = sharding.tree_shardings(tree, mesh, "dp")
    assert dp["big"].spec == jax.sharding.PartitionSpec()
    rules = sharding.tree_shardings(tree, mesh, "dp", rules=[("big", ("fsdp", None))])
    assert rules["big"].spec == jax.sharding.PartitionSpec("fsdp", None)


def test_fsdp_train_state_is_sharded(tmp_path):
    cfg = tiny_train_config(**{"max_steps": 2, "sharding.strategy": "fsdp", "mesh.data": 1, "mesh.fsdp": 8,
                               "model.width": 64, "model.num_heads": 2, "checkpoint.every_steps": 2})
    train(cfg, tmp_path / "f")
    out, _ = restore_state(tmp_path / "f", sharding.make_mesh(data=1, fsdp=8), "fsdp")
    moments = [x for x in jax.tree.leaves(out["opt_state"]) if x.shape == (2, 64, 256)]  # Adam mu and nu
    assert len(moments) == 2
    for array in (out["params"]["blocks"]["fc1"]["kernel"], *moments):
        assert "fsdp" in array.sharding.spec  # (depth 2, 64, 256): the 256 axis is split 8 ways
        assert {shard.data.shape for shard in array.addressable_shards} == {(2, 64, 32)}


def restore_state(workdir, mesh, strategy):
    """Restore the latest train state of `workdir` onto `mesh` with `strategy` shardings."""
    cfg = json.loads((workdir / "config.json").read_text())
    model_kw = {k: v for k, v in cfg["model"].items() if k != "name"}
    model = create_model(cfg["model"]["name"], num_classes=10, image_size=16, in_chans=3, **model_kw)
    tx = build_optimizer(ConfigDict(cfg["optim"]), optax.constant_schedule(1e-3))

    def init(rng):
        params = model.init(rng, np.zeros((1, 16, 16, 3), np.float32))["params"]
        return {"step": np.int32(0), "params": params, "opt_state": tx.init(params)}

    abstract = jax.eval_shape(init, jax.random.key(0))
    shardings = sharding.tree_shardings(abstract, mesh, strategy)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    ckpt = checkpointing.TrainCheckpoints(workdir / "checkpoints")
    try:
        return ckpt.restore(ckpt.latest_step(), target)
    finally:
        ckpt.close()


def test_restore_onto_another_mesh(tmp_path):
    cfg = tiny_train_config(**{"max_steps": 3, "sharding.strategy": "fsdp", "mesh.data": 2, "mesh.fsdp": 4,
                               "model.width": 64, "checkpoint.every_steps": 3})
    train(cfg, tmp_path / "a")
    on_fsdp, _ = restore_state(tmp_path / "a", sharding.make_mesh(data=2, fsdp=4), "fsdp")
    one = sharding.make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])
    on_one, _ = restore_state(tmp_path / "a", one, "dp")
    for a, b in zip(jax.tree.leaves(on_fsdp), jax.tree.leaves(on_one), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert on_one["params"]["blocks"]["fc1"]["kernel"].sharding.device_set == {jax.devices()[0]}
    # and training resumes on a different mesh from that checkpoint
    cfg2 = tiny_train_config(**{"max_steps": 5, "sharding.strategy": "dp", "mesh.num_devices": 1,
                                "model.width": 64, "checkpoint.every_steps": 3})
    out = train(cfg2, tmp_path / "a")
    assert out["steps"] == 5


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_over_loopback_agree(tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    args = ["--config=configs/digits_vit.py:depth=2,epochs=1", f"--workdir={tmp_path / 'mp'}",
            "--config.model.width=32", "--config.model.num_heads=2", "--config.batch_size=32",
            "--config.max_steps=4", "--config.log_every_steps=1", "--config.checkpoint.every_steps=2",
            "--config.eval_batch_size=90", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    procs = [subprocess.Popen(["timeout", "-k", "10", "400", sys.executable, "-m", "learngene_jax.main", *args,
                               f"--process_id={i}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=450) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    sums = [next(line for line in err.splitlines() if "params checksum" in line).split()[-1] for _, err in outs]
    assert sums[0] == sums[1]
    assert json.loads((tmp_path / "mp" / "final.json").read_text())["steps"] == 4


def _two_processes(workdir, *extra, signal_process_1=()):
    """Start the two processes of one loopback run of the tiny ViT (1 CPU device each); `signal_process_1`
    (STEP, SIGNAL name) makes process 1 alone signal itself after that step (tests/signal_at_step.py)."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    args = ["--config=configs/digits_vit.py:depth=2,epochs=2", f"--workdir={workdir}", "--config.model.width=32",
            "--config.model.num_heads=2", "--config.batch_size=32", "--config.log_every_steps=1",
            "--config.checkpoint.every_steps=1000", "--config.eval_batch_size=90",
            f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", *extra]
    wrapped = [str(REPO / "tests" / "signal_at_step.py"), *map(str, signal_process_1)] if signal_process_1 else []
    programs = [["-m", "learngene_jax.main"], wrapped or ["-m", "learngene_jax.main"]]
    return [subprocess.Popen([sys.executable, *programs[i], *args, f"--process_id={i}"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]


def _finish(procs, timeout=400):
    try:
        return [p.communicate(timeout=timeout)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()


def _checksum(err):
    return next(line for line in err.splitlines() if "params checksum" in line).split()[-1]


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path):
    """JAX's preemption service and Orbax's reached_preemption: SIGTERM to process 1 alone → both processes save
    the same step (one checkpoint, both grain iterator states) and stop with the one-line message; running the
    same command again resumes to the params of an uninterrupted run, bit for bit."""
    straight = _two_processes(tmp_path / "straight")
    errs = _finish(straight)
    assert all(p.returncode == 0 for p in straight), errs[0][-2000:] + errs[1][-2000:]
    want = _checksum(errs[0])

    work = tmp_path / "pre"
    procs = _two_processes(work, signal_process_1=(8, "SIGTERM"))  # mid-training on every machine
    errs = _finish(procs)
    lasts = [err.strip().splitlines()[-1] for err in errs]
    assert [p.returncode for p in procs] == [2, 2], lasts
    steps = set()
    for last in lasts:
        assert last.startswith("error: stopped by a preemption notice (SIGTERM) at step"), last
        steps.add(int(last.split(" at step ")[1].split(";")[0]))
    assert len(steps) == 1
    step = steps.pop()
    assert 8 <= step < 84 and (work / "checkpoints" / str(step) / "commit_success.txt").exists()
    assert sorted(p.name for p in (work / "checkpoints" / str(step) / "data").glob("process_*.json")) == \
        ["process_0-of-2.json", "process_1-of-2.json"]
    resumed = _two_processes(work)
    errs = _finish(resumed)
    assert all(p.returncode == 0 for p in resumed), errs[0][-2000:]
    assert f"resumed from step {step}" in errs[0]
    assert _checksum(errs[0]) == _checksum(errs[1]) == want
