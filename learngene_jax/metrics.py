"""Where a run reports: WORKDIR/metrics.jsonl (one JSON object per line; read back for the eval curve), TensorBoard
event files (WORKDIR/tb), a progress line with images/s and ETA on stderr, and profiler traces on request."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import jax

from learngene_jax import logs
from learngene_jax.errors import ConfigError, fail


class MetricWriter:
    """Appends {"step", "split", **values} to metrics.jsonl and writes scalars for TensorBoard."""

    def __init__(self, workdir: str | Path, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
        if enabled:
            self._file = open(Path(workdir) / "metrics.jsonl", "a")  # noqa: SIM115 - closed in close()
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(Path(workdir) / "tb"))
            except ImportError:
                self._tb = None

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        """Record the metrics of one step."""
        if not self.enabled:
            return
        row = {"step": int(step), "split": split, "time": round(time.time(), 3), **values}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, int | float):
                    self._tb.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        """Flush and close."""
        if self.enabled:
            self._file.close()
            if self._tb is not None:
                self._tb.close()


class Progress:
    """`[name] step 120/800 (15%) loss 1.234 | 812 img/s | ETA 1m04s` — rewritten in place on a terminal."""

    def __init__(self, total_steps: int, batch_size: int, enabled: bool = True, label: str = "train"):
        self.total, self.batch_size, self.enabled, self.label = total_steps, batch_size, enabled, label
        self._t0 = self._last_time = time.perf_counter()
        self._last_step: int | None = None
        self.images_per_s = 0.0
        self._tty = sys.stderr.isatty()

    def update(self, step: int, loss: float) -> None:
        """Report progress at `step` (throughput measured since the previous update)."""
        now = time.perf_counter()
        if self._last_step is not None and step > self._last_step:
            self.images_per_s = (step - self._last_step) * self.batch_size / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        if not self.enabled:
            return
        eta = (self.total - step) * self.batch_size / self.images_per_s if self.images_per_s else float("nan")
        line = (f"[{self.label}] step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%) loss {loss:.4f}"
                f" | {self.images_per_s:,.0f} img/s | ETA {_duration(eta)}")
        if self._tty:  # one progress line, rewritten in place
            print("\r" + line + "\033[K", end="", file=sys.stderr, flush=True)
        else:
            logs.info(line)

    def note(self, text: str) -> None:
        """A line of its own (e.g. an eval result)."""
        if self.enabled:
            if self._tty:
                print(file=sys.stderr, flush=True)  # end the progress line
            logs.info(f"[{self.label}] {text}")


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Profile:
    """A jax.profiler trace of `steps` steps from `start` on (nothing when steps is 0), written to `directory`."""

    def __init__(self, directory: Path, start: int, steps: int):
        if steps < 0:
            fail(ConfigError, f"profile_steps must be >= 0, got {steps}")
        self.directory, self.start, self.end, self.active = directory, start, start + steps, False

    def before(self, step: int) -> None:
        if step == self.start and self.end > self.start:
            jax.profiler.start_trace(str(self.directory))
            self.active = True

    def after(self, step: int, state: Any) -> None:
        if self.active and step >= self.end:
            jax.block_until_ready(state)  # the traced steps end on the device, not at dispatch
            self.stop()
            logs.info(f"profile of steps {self.start}-{self.end - 1} written to {self.directory} "
                      f"(tensorboard --logdir {self.directory})")

    def stop(self) -> None:
        if self.active:
            self.active = False
            jax.profiler.stop_trace()


def eval_curve(workdir: Path, last_step: int, steps_per_epoch: int) -> list[dict[str, float]]:
    """Every evaluation of the exported model recorded in this workdir up to `last_step` (resumed runs included,
    the newest record per step): [{'step', 'epoch', 'loss', 'top1'}, ...] in step order."""
    rows: dict[int, dict[str, float]] = {}
    path = workdir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else ():
        row = json.loads(line)
        if row.get("split") == "eval" and "phase" not in row and row["step"] <= last_step:
            rows[row["step"]] = {"step": row["step"], "epoch": row["step"] / steps_per_epoch, "loss": row["loss"],
                                 "top1": row["top1"]}
    return [rows[k] for k in sorted(rows)]


def first_eval(workdir: Path) -> dict[str, float] | None:
    """The step-0 eval recorded by an earlier (interrupted) run of this workdir."""
    path = workdir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("split") == "eval" and row.get("step") == 0:
                return {k: row[k] for k in ("loss", "top1", "top5")}
    return None
