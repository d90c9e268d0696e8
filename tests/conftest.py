"""Test setup: 8 fake CPU devices (set before jax is imported) and shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def timm():
    """timm with its PyTorch reference models (skipped where torch/timm are not installed)."""
    pytest.importorskip("torch")
    from learngene_jax.torch_ref import import_timm

    return import_timm()


def randomize(params, seed=0, scale=0.1):
    """Every leaf perturbed (so that zero biases / unit norms do not hide mapping mistakes)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(
        tree, [np.asarray(x) + scale * rng.standard_normal(np.shape(x)).astype(np.float32) for x in leaves])


def lm_smoke_config(**changes):
    """A seconds-long LM run of the trainer: a Llama on stdlib's email/* documents, context 16, batch 8, 3 steps,
    lr 1e-2 (`changes` are with_changes overrides, dotted keys in a ** dict)."""
    from learngene_jax.config_lib import base_config, with_changes

    c = base_config()
    c.data.update(dict(name="stdlib", context=16, eval_windows=8, documents=("email/*",)))
    c.objective, c.batch_size, c.epochs, c.max_steps, c.log_every_steps = "lm", 8, 1, 3, 1
    c.model = {"name": "llama"}
    c.optim.update(dict(scale_lr=False, lr=1e-2))
    return with_changes(c, **changes)

def run_module(module: str, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m module args` from the repo root and return the finished process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env["XLA_FLAGS"] = env["XLA_FLAGS"].replace("--xla_force_host_platform_device_count=8", "").strip()
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test module, drop JAX's compiled programs: one pytest process compiles thousands of XLA CPU
    executables, each holding its own memory mappings, and a long suite must not run into the kernel's per-process
    map limit (vm.max_map_count) or hold every module's executables to the end."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
