"""python -m learngene_jax.main --config=configs/X.py[:arg] --workdir=DIR [--config.key=value ...]

Flags → distributed start-up → dispatch to the task the config names (config.task).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from absl import app, flags
from ml_collections import config_flags

from learngene_jax import distributed, logs, registry
from learngene_jax.errors import UserError, make_dir

PROGRAM = "python -m learngene_jax.main"  # how commands.txt names this entry point (`learngene` sets its own)
_task: Callable[[Any, str], Any] | None = None  # runs instead of config.task (`learngene sweep`)
_recorded: list[str] | None = None  # the arguments commands.txt records (default: sys.argv[1:])

config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:arg]", lock_config=True)
flags.DEFINE_string("workdir", None, "where checkpoints, metrics, genes and summaries go (resumes if present)")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"], "jax.distributed start-up (see distributed.py)")
flags.DEFINE_string("coordinator_address", "", "host:port of process 0 for multi-process runs")
flags.DEFINE_integer("num_processes", 0, "number of processes (0: detect)")
flags.DEFINE_integer("process_id", -1, "this process's id (-1: detect)")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def resolve_task(name: str):
    """The function registered for config.task."""
    return registry.TASKS.get(name)


def enable_compilation_cache() -> None:
    """Reuse compiled XLA programs across runs and stages (CPU compiles of a ViT step take seconds)."""
    import jax

    path = os.environ.get("LEARNGENE_JAX_CACHE", str(Path("~/.cache/learngene_jax/xla").expanduser()))
    if path and path != "off":
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def record_command(workdir: str) -> None:
    """Append this invocation to WORKDIR/commands.txt (process 0), so results trace back to commands."""
    if distributed.is_main_process():
        path = make_dir(workdir)
        command = " ".join([PROGRAM, *(_recorded if _recorded is not None else sys.argv[1:])])
        with open(path / "commands.txt", "a") as f:
            f.write(command + "\n")


def main(argv: list[str]) -> None:
    """Run the configured task."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        distributed.initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        enable_compilation_cache()
        config = FLAGS.config
        task = _task or resolve_task(config.task)
        # after the task's imports, some of which (tfds, orbax) reset absl's level; -v N shows the libraries' logs
        logs.setup(FLAGS.verbosity if FLAGS["verbosity"].present else None)
        record_command(FLAGS.workdir)
        task(config, FLAGS.workdir)
    except UserError as e:
        _exit(str(e))


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with a bad config file, argument or --config.key override reported as one line."""
    try:
        remaining = FLAGS(argv)
        FLAGS.config.task  # noqa: B018 - config files load lazily; surface their errors here
        return remaining
    except UserError as e:
        _exit(str(e))
    except flags.Error as e:
        _exit(str(e))
    except OSError as e:
        _exit(f"cannot load the config file: {str(e).strip().splitlines()[-1].strip()}")
    except KeyError as e:
        _exit(f"unknown config key {e.args[0] if e.args else e}: this config does not define it, so it cannot be "
              f"overridden (add it to the config file)")
    except (AttributeError, TypeError, ValueError) as e:
        text = str(e.args[0] if e.args else e)
        typo = re.search(r'Did you mean "([\w.]+)" instead of "([\w.]+)"', text)
        if typo:
            _exit(f"unknown config key {typo.group(2)!r} (did you mean {typo.group(1)!r}?)")
        bare = re.fullmatch(r"[\"']*(\w+)[\"']*", text.strip())  # ml_collections names only the last part of the key
        keys = [a.removeprefix("--config.").split("=")[0] for a in argv if a.startswith("--config.")]
        named = [k for k in keys if bare and k.split(".")[-1] == bare.group(1)]
        _exit(f"unknown config key {named[0]!r}: this config does not define it, so it cannot be overridden (check "
              f"the spelling against the config file)" if named else f"bad config override: {text}")


def _exit(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


def run(program: str | None = None, task: Callable[[Any, str], Any] | None = None,
        recorded: list[str] | None = None) -> None:
    """Entry point (sys.argv holds the flags); `program` and `recorded` (its arguments) are what commands.txt
    records, so that the line reruns the job; `task` replaces config.task."""
    global PROGRAM, _task, _recorded
    PROGRAM, _task, _recorded = program or PROGRAM, task, recorded
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
