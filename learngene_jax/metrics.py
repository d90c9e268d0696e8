"""Where a run reports: WORKDIR/metrics.jsonl (one JSON object per line), TensorBoard event files
(WORKDIR/tb), and a progress line with images/s and ETA on stderr."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from learngene_jax import logs


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
