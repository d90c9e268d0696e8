"""Every Orbax call of the toolkit: one-off artifacts (genes, converted models) and training checkpoints
(asynchronous, with the input pipeline's state and preemption handling).

An artifact is a directory with two items: `params` (a pytree of arrays) and `meta` (JSON). Orbax is
imported nowhere else, so a change of its API is a change of this file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from learngene_jax.distributed import preemption_service_running
from learngene_jax.errors import UserError, fail


def _checkpointer() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler(params=ocp.StandardCheckpointHandler(),
                                                           meta=ocp.JsonCheckpointHandler()))


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _check_artifact(path: Path, what: str) -> None:
    if not path.exists():
        fail(UserError, f"no {what} at {path}: check the path")
    if not path.is_dir() or not (path / "meta").is_dir() or not (path / "params").is_dir():
        fail(UserError, f"{path} is not a learngene_jax {what} (expected an Orbax directory with 'params' and "
                        f"'meta' items); convert foreign checkpoints with `python -m learngene_jax.convert`")


def save_artifact(path: str | Path, params: Any, meta: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Write params and JSON metadata to a new directory (atomically: Orbax renames a finished temp dir)."""
    path = Path(path).absolute()
    if path.exists():
        if not overwrite:
            fail(UserError, f"{path} already exists; choose another --out or delete it first")
        # Keep the old artifact until the new one is complete: write beside it, then swap.
        tmp = path.with_name(path.name + ".new")
        if tmp.exists():
            fail(UserError, f"{tmp} is left over from an interrupted save; delete it and try again")
        save_artifact(tmp, params, meta)
        old = path.with_name(path.name + ".old")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    params = jax.tree_util.tree_map(np.asarray, jax.device_get(params))
    _checkpointer().save(path, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                       meta=ocp.args.JsonSave(meta)))
    return path


def read_meta(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """The JSON metadata of an artifact."""
    path = Path(path).expanduser().absolute()
    _check_artifact(path, what)
    try:
        return _checkpointer().restore(path, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # noqa: BLE001 - any Orbax/IO failure is a corrupt artifact to the user
        fail(UserError, f"{what} metadata at {path} is unreadable (truncated or corrupt?): {_one_line(e)}")


def stored_shapes(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """Nested dict of the stored arrays' shapes, read without loading the arrays."""
    path = Path(path).absolute()
    _check_artifact(path, what)
    try:
        tree = _checkpointer().metadata(path).item_metadata["params"].tree
    except Exception as e:  # noqa: BLE001
        fail(UserError, f"{what} at {path} is unreadable (truncated or corrupt?): {_one_line(e)}")
    return jax.tree_util.tree_map(lambda m: tuple(m.shape), tree,
                                  is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))


def load_params(path: str | Path, target: Any, what: str = "checkpoint") -> Any:
    """Restore the params item onto `target` (a pytree of arrays or `jax.ShapeDtypeStruct`s, with
    shardings where the arrays should be placed)."""
    path = Path(path).absolute()
    _check_artifact(path, what)
    target = jax.tree_util.tree_map(
        lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else jax.ShapeDtypeStruct(np.shape(x), x.dtype), target)
    try:
        out = _checkpointer().restore(
            path, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))["params"]
        jax.block_until_ready(out)
    except Exception as e:  # noqa: BLE001
        fail(UserError, f"{what} at {path} is unreadable (truncated or corrupt?): {_one_line(e)}")
    return out


class TrainCheckpoints:
    """Periodic training checkpoints in `directory`, written by all processes together and asynchronously (a
    save copies the arrays to host memory and returns; files are written in the background); the latest `keep`
    are kept. Items: `state` (arrays), `meta` (JSON) and `data` (each process's grain iterator state).

    Preemption: `reached_preemption(step)` is Orbax's answer where `jax.distributed` runs JAX's preemption
    service (every process answers True at the same step after any of them got SIGTERM, so all save the same
    step); a single process without it answers from its own SIGTERM handler (`watch_preemption`).
    """

    def __init__(self, directory: str | Path, keep: int = 2):
        import grain

        self.directory = Path(directory).absolute()
        # A save cut short (killed, preempted mid-write) leaves a `<step>.orbax-checkpoint-tmp-*` directory that
        # Orbax skips on resume but, for a step never saved again, never deletes: removed here, so `keep` holds.
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True,
                                               cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler(),
                           "data": grain.checkpoint.CheckpointHandler()})
        self._grain = grain.checkpoint
        self._sigterm = False
        self._started: int | None = None  # the step of the newest save started by this process

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any], data_iterator: Any = None) -> None:
        """Start writing the checkpoint of `step` (a no-op if it exists); returns once the arrays are on the host,
        so the caller may donate or overwrite `state` at once."""
        if step == self._started or step in self._manager.all_steps():
            return
        self._started = step
        items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        if data_iterator is not None:
            items["data"] = self._grain.CheckpointSave(data_iterator)
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
        """(state, meta) of `step`, placed as `target`'s ShapeDtypeStructs (with shardings) say; the mesh may
        differ from the one it was saved under."""
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                      meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001
            fail(UserError, f"training checkpoint {step} in {self.directory} cannot be restored (corrupt, or saved "
                            f"for another model/optimizer; use a new --workdir): {_one_line(e)}")
        return out["state"], out["meta"]

    def restore_data(self, step: int, positioned: Any, fallback: Any) -> Any:
        """The input iterator of `step`: `positioned(state)` with the grain state saved beside it, or
        `fallback()` where the checkpoint has none (older checkpoints) or it does not fit this pipeline (e.g.
        another `data.workers`); the stream is a function of the step, so both give the same batches."""
        path = self.directory / str(step) / "data" / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if not path.is_file():
            return fallback()
        try:  # an iterator that `positioned` opened before failing is released with its loader
            return positioned(json.loads(path.read_text()))
        except Exception as e:  # noqa: BLE001 - a state of another pipeline shape
            logging.getLogger(__name__).warning("input state of step %d does not fit this pipeline (%s); "
                                                "restarting the stream at that step", step, _one_line(e))
            return fallback()

    @contextlib.contextmanager
    def watch_preemption(self):
        """Within `with`: a single process without JAX's preemption service turns SIGTERM into a preemption
        notice instead of dying (multi-process runs leave SIGTERM to JAX, which tells every process)."""
        previous = None
        if not preemption_service_running():
            try:
                previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            except ValueError:  # not the main thread: leave signals alone
                previous = None
        try:
            yield self
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self, signum, frame) -> None:
        del signum, frame
        self._sigterm = True

    def reached_preemption(self, step: int) -> bool:
        """Whether to save `step` and stop: the same answer on every process (see the class docstring)."""
        if preemption_service_running():
            return bool(self._manager.reached_preemption(step))
        return self._sigterm

    def close(self) -> None:
        """Finish pending writes."""
        self._manager.wait_until_finished()
        self._manager.close()
