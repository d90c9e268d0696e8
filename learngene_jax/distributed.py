"""Multi-process start-up: `jax.distributed.initialize` called once, before any device is touched.

The same command runs on one CPU, one or several GPUs, and every worker of a multi-host TPU VM slice.
"""

from __future__ import annotations

import os

import jax

from learngene_jax.errors import ConfigError, fail

_initialized = False


def initialize(mode: str = "auto", coordinator: str = "", num_processes: int = 0, process_id: int = -1,
               local_device_ids: str = "") -> None:
    """Start jax.distributed once.

    mode 'off': single process. 'on': always (cluster auto-detection fills what is not given). 'auto': only
    when a coordinator is given or the environment is a multi-process cluster (TPU VM slice with several
    workers, SLURM with several tasks, JAX_COORDINATOR_ADDRESS set).
    """
    global _initialized
    if _initialized or mode == "off":
        return
    if mode not in ("auto", "on"):
        fail(ConfigError, f"--distributed must be auto, on or off, got {mode!r}")
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    if not num_processes and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id < 0 and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    multi = bool(coordinator) or _cluster_has_several_processes()
    if mode == "auto" and not multi:
        return
    kwargs = {}
    if coordinator:
        kwargs["coordinator_address"] = coordinator
    if num_processes:
        kwargs["num_processes"] = num_processes
    if process_id >= 0:
        kwargs["process_id"] = process_id
    if local_device_ids:
        kwargs["local_device_ids"] = [int(i) for i in local_device_ids.split(",")]
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
        # CPU processes exchange arrays through gloo (the default has no cross-process CPU collectives).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    _initialized = True


def _cluster_has_several_processes() -> bool:
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if hosts and len(hosts.split(",")) > 1:
        return True
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return True
    return bool(os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"))


def is_main_process() -> bool:
    """Process 0 writes logs, summaries and plots."""
    return jax.process_index() == 0


def preemption_service_running() -> bool:
    """Whether JAX's preemption service (started by `jax.distributed.initialize`) handles SIGTERM in this process
    and agrees a stop step with the others (Orbax's `reached_preemption` asks it)."""
    try:
        from jax._src import distributed as jax_distributed  # no public query exists; kept to this one module

        return getattr(jax_distributed.global_state, "preemption_sync_manager", None) is not None
    except ImportError:
        return jax.process_count() > 1
