"""Launch scripts: syntax, and the commands their dry runs would execute."""

import os
import subprocess

import pytest
from conftest import REPO

SCRIPTS = ["launch/tpu_vm.sh", "launch/gpu_host.sh", "launch/setup_venv.sh", "launch/shakespeare_char_ab.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", script], cwd=REPO).returncode == 0


def dry(script, *args, **env):
    proc = subprocess.run(["bash", script, *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "DRY_RUN": "1", **env})
    return proc


def test_tpu_vm_steps():
    env = dict(TPU_NAME="lg", ZONE="us-central2-b", ACCELERATOR="v4-32", RUNTIME="tpu-ubuntu2204-base",
               CONFIG="configs/tleg_s.py:stage=aux", WORKDIR="/gcs/b/run", SPOT="1")
    create = dry("launch/tpu_vm.sh", "create", **env)
    assert create.returncode == 0
    assert create.stdout.split() == ["gcloud", "compute", "tpus", "tpu-vm", "create", "lg", "--zone=us-central2-b",
                                     "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"]
    run = dry("launch/tpu_vm.sh", "run", **env).stdout
    assert "--worker=all" in run and "--distributed=on" in run and "--config=configs/tleg_s.py:stage=aux" in run
    assert "setup_venv.sh tpu" in dry("launch/tpu_vm.sh", "setup", **env).stdout
    missing = dry("launch/tpu_vm.sh", "run", TPU_NAME="lg", ZONE="z")
    assert missing.returncode != 0 and "set CONFIG" in missing.stderr


def test_gpu_host_single_and_multi():
    one = dry("launch/gpu_host.sh", CONFIG="configs/demo.py", WORKDIR="runs/d").stdout.split()
    assert one == ["python", "-m", "learngene_jax.main", "--config=configs/demo.py", "--workdir=runs/d",
                   "--distributed=off"]
    multi = dry("launch/gpu_host.sh", CONFIG="c", WORKDIR="w", COORDINATOR="10.0.0.1:1234", NUM_HOSTS="2",
                HOST_ID="1", EXTRA="--config.precision=bfloat16").stdout.split()
    assert multi[-5:] == ["--distributed=on", "--coordinator_address=10.0.0.1:1234", "--num_processes=2",
                          "--process_id=1", "--config.precision=bfloat16"]


def test_shakespeare_char_ab_alternates_the_arms_seed_by_seed(tmp_path):
    """ours, nanoGPT, ours, nanoGPT: one process each, nanoGPT with its README command, seed 1337 + S, passive OpenMP
    waits and the same pinned CPUs; a smoke length evaluates (and checkpoints) nanoGPT at its last step."""
    proc = dry("launch/shakespeare_char_ab.sh", str(tmp_path / "ab"), SEEDS="0 1", MAX_ITERS="5", THREADS="1",
               NANOGPT="/nowhere", INPUT="input.txt")
    assert proc.returncode == 0, proc.stderr
    runs = [line for line in proc.stdout.splitlines() if "learngene_jax.main" in line or "nanogpt-train" in line]
    assert ["learngene_jax.main" in line for line in runs] == [True, False, True, False]
    assert "--config.seed=1" in runs[2] and "nanogpt-train 1 config/train_shakespeare_char.py" in runs[3]
    for flag in ("--device=cpu", "--compile=False", "--eval_iters=20", "--block_size=64", "--batch_size=12",
                 "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=5", "--lr_decay_iters=5", "--dropout=0.0",
                 "--eval_interval=5", "--always_save_checkpoint=True", "OMP_WAIT_POLICY=PASSIVE", "OMP_NUM_THREADS=1"):
        assert flag in runs[1], flag
    assert all(line.split("&& ")[1].startswith("taskset -c ") for line in runs)
    assert "--config=configs/nanogpt_shakespeare_char.py" in runs[0] and "--config.max_steps=5" in runs[0]
