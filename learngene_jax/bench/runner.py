"""The shared A/B process runner: each framework timed in its own process (`--framework NAME`), one process at
a time, A/B/A/B for `--rounds` rounds; and what every timed process shares (devices, the compile cache, timing
calls, the step row)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learngene_jax import hostmem
from learngene_jax.errors import UserError, fail

if TYPE_CHECKING:
    import jax


PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # holds learngene_jax/ (and configs/ in a checkout)
# Frameworks whose process keeps the accelerator; the others see JAX on the CPU only (where it builds weights).
JAX_FRAMEWORKS = ("jax",)
SYSTEM_MALLOC = "LEARNGENE_BENCH_SYSTEM_MALLOC"  # set by --system-malloc for the timed processes


def jax_device(kind: str) -> jax.Device:
    """The first JAX device of `kind` ('cpu' or 'gpu')."""
    import jax

    try:
        return jax.devices(kind)[0]
    except RuntimeError:
        fail(UserError, f"JAX sees no {kind} device (available: {', '.join(d.platform for d in jax.devices())})")


def jax_cache() -> None:
    """XLA's persistent compilation cache: a framework's second process (and the timm process, which builds the
    same weights) skips compiles that the timed steps never include anyway."""
    from learngene_jax.main import enable_compilation_cache

    enable_compilation_cache()


def time_calls(step: Callable[[], None], count: int, warmup: int) -> list[float]:
    """Seconds of each of `count` calls of `step`, after one untimed call (compilation, lazy set-up) and `warmup`
    more."""
    for _ in range(1 + warmup):
        step()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


# What one step processes, by throughput field of a step row: the rate is this count over the step time.
PER_STEP: dict[str, Callable[[dict[str, Any]], int]] = {
    "images_per_s": lambda row: row["batch"], "tokens_per_s": lambda row: row["batch"] * row["context"]}


def step_row(framework: str, seconds: list[float], batch: int, rate: str = "images_per_s",
             **fields: Any) -> dict[str, Any]:
    """One process's result: median and fastest step, and the throughput `rate` (a PER_STEP field)."""
    step = statistics.median(seconds)
    row = dict(framework=framework, **fields, batch=batch)
    return {**row, rate: round(PER_STEP[rate](row) / step, 2), "step_ms": round(1000 * step, 2),
            "step_ms_min": round(1000 * min(seconds), 2), "steps": len(seconds)}


def _child_env(framework: str) -> dict[str, str]:
    env = dict(os.environ)  # keeps XLA_FLAGS, ...
    # both frameworks run alike: with huge pages for malloc's big blocks where they help (hostmem), unless
    # --system-malloc asks for glibc's defaults
    if os.environ.get(SYSTEM_MALLOC):
        env.pop("GLIBC_TUNABLES", None)
    elif hostmem.can_use_huge_pages():
        env = hostmem.environment_with_huge_pages(env)
    # the same learngene_jax as this process, whatever the working directory
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    if framework not in JAX_FRAMEWORKS:
        env["JAX_PLATFORMS"] = "cpu"  # a PyTorch or input process must not take GPU memory for JAX
        # OpenMP's default active wait spins idle threads; under any other load on the host it made PyTorch's
        # step swing 2.9-11.2 s. Passive waiting is what a shared host needs; a value the user set is kept.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _run_child(argv: list[str], framework: str) -> tuple[dict[str, Any] | None, int, str]:
    """`python -m learngene_jax.bench ARGV --framework FRAMEWORK`: (its JSON row or None, exit code, last error
    line)."""
    proc = subprocess.run([sys.executable, "-m", "learngene_jax.bench", *argv, "--framework", framework],
                          env=_child_env(framework), capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines and lines[-1].startswith("{"):
        return json.loads(lines[-1]), 0, ""
    errors = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    last = errors[-1] if errors else (f"killed by signal {-proc.returncode}" if proc.returncode < 0 else "no output")
    message = next((line for line in reversed(errors) if line.startswith("error: ")), last)
    return None, proc.returncode, message.removeprefix("error: ")


def run_rounds(argv: list[str], frameworks: list[str], rounds: int,
               describe: Callable[[dict[str, Any]], str]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Rows per framework over `rounds` rounds of one process per framework in turn (A/B/A/B), and the failures
    (a framework that fails is not run again)."""
    results: dict[str, list[dict[str, Any]]] = {f: [] for f in frameworks}
    failures: list[tuple[str, int, str]] = []
    for r in range(rounds):
        for framework in frameworks:
            if any(f == framework for f, _, _ in failures):
                continue
            row, code, message = _run_child(argv, framework)
            if row is None:
                failures.append((framework, code, message))
                print(f"round {r + 1}/{rounds} {framework}: failed (exit {code}): {message}", file=sys.stderr)
                continue
            results[framework].append(row)
            print(f"round {r + 1}/{rounds} {framework}: {describe(row)}", file=sys.stderr, flush=True)
    if failures and all(code == 2 for _, code, _ in failures) and not any(results.values()):
        fail(UserError, "; ".join(message for _, _, message in failures))  # the same user error everywhere
    return ({f: rows for f, rows in results.items() if rows},
            [f"{f} failed (exit {code}): {message}" for f, code, message in failures])
